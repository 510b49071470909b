import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import type { DescMessage, DescMethodStreaming, DescMethodUnary, MessageInitShape } from "@bufbuild/protobuf";
import type { ContextValues } from "@connectrpc/connect";
import { NOT_APPLIED_HEADER, PRIMARY_HEADER } from "../headers.js";

/** Unary methods that change data: a replica refuses them, so they go straight to the primary once it is known. */
const WRITES = new Set(["Set", "SetMany", "Delete", "Increment", "Touch", "Flush"]);
/** Socket errors raised before a request is sent: retrying elsewhere cannot apply a call twice. */
const NOT_CONNECTED = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN", "ECONNABORTED"]);
/** Errors of a connection that was up and is gone: a call on it may or may not have been applied. */
const CONNECTION_LOST = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ERR_HTTP2_SESSION_ERROR", "ERR_HTTP2_GOAWAY_SESSION", "ERR_HTTP2_STREAM_CANCEL", "ERR_HTTP2_INVALID_SESSION"]);
/** How long a call without a deadline keeps looking for a primary (an election takes about a lease duration). */
const FOLLOW_BUDGET_MS = 10_000;
/** Pause between attempts once every known address has refused, doubling up to the cap. */
const RETRY_PAUSE_MS = 50;
const RETRY_PAUSE_CAP_MS = 800;

export interface RoutingOptions {
  /** The addresses given (seeds): any node of the group, or a Service in front of them. */
  readonly seeds: readonly string[];
  /** A transport to one address (made on first use, and again after its connection was lost), and how to close it. */
  readonly transportTo: (addr: string) => { readonly transport: Transport; close(): void };
  /** Send refused writes to the primary a replica names, and find the primary again when it moves. */
  readonly followPrimary: boolean;
  /** The client's default deadline, which bounds the search for a primary too. */
  readonly defaultTimeoutMs: number | undefined;
}

/**
 * The client's transport: calls go to one of the seed addresses (the next one
 * when an address refuses connections), and writes to the primary. A write is
 * retried, within its deadline, only when the server said it applied nothing
 * (a replica's FAILED_PRECONDITION naming the primary, an UNAVAILABLE marked
 * `ripplecache-not-applied` while an election is under way) or the connection
 * was refused: so a primary that moved costs a retry, never a duplicate write.
 */
export class RoutingTransport implements Transport {
  private readonly transports = new Map<string, { readonly transport: Transport; close(): void }>();
  private seed = 0;
  /** The primary's address, learnt from a replica's refusal; writes go there. */
  primary: string | undefined;

  constructor(private readonly options: RoutingOptions) {}

  private to(addr: string): Transport {
    let t = this.transports.get(addr);
    if (t === undefined) this.transports.set(addr, (t = this.options.transportTo(addr)));
    return t.transport;
  }

  /** Forgets `addr`'s connection after it was lost, so that the next call connects afresh (or moves on). */
  private lost(addr: string): void {
    this.transports.get(addr)?.close();
    this.transports.delete(addr);
    if (addr === this.primary) this.primary = undefined;
    else this.nextSeed(addr);
  }

  close(): void {
    for (const t of this.transports.values()) t.close();
    this.transports.clear();
  }

  private currentSeed(): string {
    return this.options.seeds[this.seed % this.options.seeds.length];
  }

  private nextSeed(failed: string): void {
    if (this.currentSeed() === failed) this.seed++;
  }

  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ) {
    const timeout = timeoutMs ?? this.options.defaultTimeoutMs;
    const deadline = Date.now() + (timeout === undefined || timeout <= 0 ? FOLLOW_BUDGET_MS : timeout);
    const write = WRITES.has(method.name);
    let refusals = 0;
    for (;;) {
      const addr = write && this.options.followPrimary && this.primary !== undefined ? this.primary : this.currentSeed();
      const left = timeout === undefined || timeout <= 0 ? timeout : Math.max(1, deadline - Date.now());
      try {
        return await this.to(addr).unary(method, signal, left, header, input, contextValues);
      } catch (err) {
        const e = ConnectError.from(err);
        const retry = this.afterFailure(e, addr, write);
        if (!retry || signal?.aborted === true) throw err;
        // Straight on to a named primary or another seed; a pause once everything known has refused.
        if (retry === "pause") {
          const pause = Math.min(RETRY_PAUSE_CAP_MS, RETRY_PAUSE_MS * 2 ** refusals++);
          if (Date.now() + pause >= deadline) throw err;
          await new Promise((resolve) => setTimeout(resolve, pause));
        } else if (Date.now() >= deadline) {
          throw err;
        }
      }
    }
  }

  /** What to do after a failed unary call to `addr`: retry at once, retry after a pause, or give up (false). */
  private afterFailure(e: ConnectError, addr: string, write: boolean): "now" | "pause" | false {
    const cause = causeCode(e);
    // The call's outcome is unknown: report it; later calls go to a new connection or another address.
    if (CONNECTION_LOST.has(cause)) {
      this.lost(addr);
      return false;
    }
    const notConnected = e.code === Code.Unavailable && NOT_CONNECTED.has(cause);
    if (notConnected) {
      if (addr === this.primary) this.primary = undefined;
      else this.nextSeed(addr);
      // Every seed tried once in a row: wait for one to come back (or for an election to end).
      return this.seed % this.options.seeds.length === 0 || this.options.seeds.length === 1 ? "pause" : "now";
    }
    if (!write || !this.options.followPrimary) return false;
    const named = e.code === Code.FailedPrecondition ? e.metadata.get(PRIMARY_HEADER) : null;
    if (named !== null && named !== "") {
      // A replica names the primary; if that is where we just were, its news is stale: look again shortly.
      const stale = named === addr;
      this.primary = stale ? undefined : named;
      return stale ? "pause" : "now";
    }
    if (e.metadata.get(NOT_APPLIED_HEADER) !== null) {
      this.primary = undefined;
      return "pause";
    }
    return false;
  }

  async stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeadersInit | undefined,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ) {
    // A stream is not retried here (its input cannot be replayed): a refused address only moves the next call on.
    const addr = this.currentSeed();
    const onError = (err: unknown) => {
      const cause = causeCode(ConnectError.from(err));
      if (CONNECTION_LOST.has(cause)) this.lost(addr);
      else if (NOT_CONNECTED.has(cause)) this.nextSeed(addr);
    };
    try {
      const res = await this.to(addr).stream(method, signal, timeoutMs, header, input, contextValues);
      const messages = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* messages;
          } catch (err) {
            onError(err);
            throw err;
          }
        })(),
      };
    } catch (err) {
      onError(err);
      throw err;
    }
  }
}

/** The Node error code under a ConnectError (ECONNREFUSED, ECONNRESET...), or "". */
function causeCode(e: ConnectError): string {
  return (e.cause as NodeJS.ErrnoException | undefined)?.code ?? "";
}
