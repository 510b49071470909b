import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";
import { CacheService } from "../gen/ripplecache/v1/cache_pb.js";

export { Status as ServingStatus };

/**
 * The serving status the gRPC health protocol reports, for the whole server
 * ("") and for CacheService. One status for both: the cache serves or it doesn't.
 */
export class HealthState {
  private status: Status = Status.SERVING;
  private readonly watchers = new Set<(s: Status) => void>();
  static readonly SERVICES: ReadonlySet<string> = new Set(["", CacheService.typeName]);
  /**
   * For liveness probes: SERVING whenever the process answers. Readiness
   * ("" and CacheService) goes NOT_SERVING while a replica syncs or has lost
   * its primary, which must not get a pod restarted; a wedged process does
   * not answer at all, and that is what fails a liveness probe.
   */
  static readonly LIVENESS = "liveness";

  /** `evaluate` computes the status afresh on every Check, so probes never see a stale one. */
  constructor(private readonly evaluate?: () => Status) {}

  get current(): Status {
    if (this.evaluate !== undefined) this.set(this.evaluate());
    return this.status;
  }

  set(status: Status): void {
    if (status === this.status) return;
    this.status = status;
    for (const w of this.watchers) w(status);
  }

  /** Calls `fn` on every change until the returned function is called. */
  subscribe(fn: (s: Status) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
}

export function registerHealth(router: ConnectRouter, health: HealthState): void {
  router.service(Health, {
    check(req) {
      if (req.service === HealthState.LIVENESS) return { status: Status.SERVING };
      if (!HealthState.SERVICES.has(req.service)) {
        throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      }
      return { status: health.current };
    },
    async *watch(req, ctx) {
      if (!HealthState.SERVICES.has(req.service)) {
        // The spec: Watch answers SERVICE_UNKNOWN and keeps the stream open.
        yield { status: Status.SERVICE_UNKNOWN };
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        return;
      }
      // Only the latest status matters: a slow reader skips intermediate ones.
      let pending: Status | undefined = health.current;
      let wake: (() => void) | undefined;
      const unsubscribe = health.subscribe((s) => {
        pending = s;
        wake?.();
      });
      const onAbort = () => wake?.();
      ctx.signal.addEventListener("abort", onAbort);
      try {
        while (!ctx.signal.aborted) {
          if (pending !== undefined) {
            const status: Status = pending;
            pending = undefined;
            yield { status };
            continue;
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        unsubscribe();
        ctx.signal.removeEventListener("abort", onAbort);
      }
    },
  });
}
