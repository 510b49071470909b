import { Code, ConnectError } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Event, ResyncReason, WatchRequestSchema } from "../gen/ripplecache/v1/cache_pb.js";
import type { CacheClient } from "./client.js";

/** What a resuming watch yields: events in revision order, or a Resync to act on. */
export type WatchUpdate =
  | { readonly kind: "events"; readonly events: readonly Event[] }
  /** Drop what you derived for the watched range; the events after `revision` follow. */
  | { readonly kind: "resync"; readonly reason: ResyncReason; readonly revision: number };

export interface ResumingWatchOptions {
  /** Exactly this key; otherwise `prefix` ("" = every key). */
  readonly key?: string;
  readonly prefix?: string;
  readonly withValues?: boolean;
  /** Where to start: 0 (default) = changes from now on. */
  readonly startRevision?: number;
  /** The history `startRevision` belongs to (from an earlier watch), if known. */
  readonly startHistory?: string;
  readonly progressIntervalMs?: number;
  /** Stops the watch; the iteration then ends without an error. */
  readonly signal?: AbortSignal;
  /** Reconnection backoff, with full jitter (defaults 100 ms and 5 s). */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

/** Codes after which a reconnection can succeed; any other error ends the watch. */
const TRANSIENT = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Internal, Code.Unknown, Code.Aborted, Code.Canceled, Code.ResourceExhausted]);

/**
 * A Watch that survives disconnections: it reconnects with backoff and
 * resumes with `start_revision` = the last revision it was told it covers + 1
 * and `start_history` = the history that revision belongs to. So it yields
 * every event once, in order, or a Resync: COMPACTED when the server's log no
 * longer holds what was missed, HISTORY when the server's data is not the
 * history the watch had followed (it restarted empty, or another node was
 * promoted past the watch's revision). `position()` gives what to pass as
 * `startRevision`/`startHistory` to continue later from where this one stops.
 */
export class ResumingWatch implements AsyncIterable<WatchUpdate> {
  private revision: number;
  private history: string;
  /** Reconnections so far (for observability and tests). */
  reconnects = 0;

  constructor(
    private readonly client: CacheClient,
    private readonly options: ResumingWatchOptions = {},
  ) {
    this.revision = Math.max(0, (options.startRevision ?? 0) - 1);
    this.history = options.startHistory ?? "";
  }

  /** The last revision covered and its history: resume from revision + 1 in that history. */
  position(): { readonly revision: number; readonly history: string } {
    return { revision: this.revision, history: this.history };
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchUpdate> {
    const { signal } = this.options;
    // A function, not a narrowed property: the signal aborts between awaits.
    const stopped = () => signal?.aborted === true;
    let started = (this.options.startRevision ?? 0) > 0;
    let failures = 0;
    while (!stopped()) {
      const request: MessageInitShape<typeof WatchRequestSchema> = {
        target: this.options.key !== undefined ? { case: "key", value: this.options.key } : { case: "prefix", value: this.options.prefix ?? "" },
        startRevision: started ? BigInt(this.revision + 1) : 0n,
        startHistory: started ? this.history : "",
        withValues: this.options.withValues ?? false,
        progressIntervalMs: this.options.progressIntervalMs ?? 0,
      };
      try {
        for await (const m of this.client.rpc.watch(request, { signal, timeoutMs: 0 })) {
          const k = m.kind;
          switch (k.case) {
            case "created":
              failures = 0;
              // A watch from now covers everything up to Created's revision; a resumed one is owed the rest.
              if (!started) this.revision = Number(k.value.revision);
              started = true;
              if (k.value.history !== "") this.history = k.value.history;
              break;
            case "events":
              if (k.value.events.length === 0) break;
              this.revision = Math.max(this.revision, Number(k.value.events[k.value.events.length - 1].revision));
              yield { kind: "events", events: k.value.events };
              break;
            case "progress":
              this.revision = Math.max(this.revision, Number(k.value.revision));
              if (k.value.history !== "") this.history = k.value.history;
              break;
            case "resync":
              // After HISTORY the revision may go back: the new history is shorter.
              this.revision = Number(k.value.revision);
              this.history = k.value.history;
              yield { kind: "resync", reason: k.value.reason, revision: this.revision };
              break;
          }
        }
      } catch (err) {
        if (stopped()) return;
        if (!(err instanceof ConnectError) || !TRANSIENT.has(err.code)) throw err;
      }
      if (stopped()) return;
      const cap = Math.min(this.options.maxBackoffMs ?? 5000, (this.options.initialBackoffMs ?? 100) * 2 ** failures++);
      await sleep(Math.random() * cap, signal);
      this.reconnects++;
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
