import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EventType,
  ResyncReason,
  type Event,
  WatchResponseSchema,
  type WatchRequest,
  type WatchResponse,
} from "../gen/ripplecache/v1/cache_pb.js";
import type { Change, ChangeType } from "../store/change.js";
import { ChangeQueue } from "./change-queue.js";
import type { PullIterator } from "../pull-iterator.js";
import type { WatchHub } from "./hub.js";

type WatchResponseInit = MessageInitShape<typeof WatchResponseSchema>;
type EventInit = Omit<Event, "$typeName">;

/** Most events in one EventBatch message. */
export const MAX_BATCH_EVENTS = 512;
const DEFAULT_PROGRESS_MS = 10_000;
const MIN_PROGRESS_MS = 100;
const MAX_PROGRESS_MS = 3_600_000;

export const EVENT_TYPES: Record<Exclude<ChangeType, "flush">, EventType> = {
  put: EventType.PUT,
  delete: EventType.DELETE,
  expire: EventType.EXPIRE,
  evict: EventType.EVICT,
};

/**
 * One Watch stream, from its first message (Created) to its end. The order of
 * work, all of it synchronous between messages, is what makes it gap-free:
 * 1. register with the hub, so every later change is queued;
 * 2. note the log's latest revision R: changes after R arrive through the queue;
 * 3. replay start_revision..R from the log (or Resync COMPACTED when gone, or
 *    Resync HISTORY when start_revision belongs to data this node does not hold);
 * 4. send queued changes, Resync on overflow or flush, Progress when idle.
 *
 * Nothing happens until the first message is asked for (as with a generator:
 * connect-node and the fast path run the interceptors first). The stream
 * ends by throwing when its signal aborts (see endOfStream).
 */
export function watchStream(hub: WatchHub, req: WatchRequest, signal: AbortSignal): AsyncIterable<WatchResponseInit> & PullIterator<WatchResponseInit> {
  return new WatchMessages(hub, req, signal);
}

type Phase =
  /** Nothing asked for yet, nothing registered: a bad request fails at the first pull, as the generator did at its first next(). */
  | "new"
  /** Registered; start_revision..R comes from the log, a chunk at a time (changes after R wait in the queue). */
  | "replay"
  /** Sending what the queue holds; when it is empty, waiting on it (or on the progress timer). */
  | "live"
  /** Ended, failed or stopped by the consumer: unregistered, and every pull says done. */
  | "done";
const DONE: IteratorResult<WatchResponseInit> = { done: true, value: undefined };

/**
 * The Watch stream as an iterator that can be pulled (src/pull-iterator.ts):
 * a change wakes the writer by a callback instead of resolving a chain of
 * promises, which was most of what a fan-out to thousands of watchers cost
 * per watcher. `next()` is built on `pull` and `onReady`, for connect-node.
 * A class rather than a generator with closures: there can be tens of
 * thousands, so what each keeps matters.
 */
class WatchMessages implements AsyncIterable<WatchResponseInit>, PullIterator<WatchResponseInit> {
  readonly pullable = true;
  private phase: Phase = "new";
  /** Messages made and not yet handed over (a replayed chunk, a batch split by a flush). */
  private outbox: WatchResponseInit[] = [];
  private progressMs = DEFAULT_PROGRESS_MS;
  private progressDue = false;
  private scope: WatchScope | undefined;
  private queue: ChangeQueue | undefined;
  /** Replay: the next revision to read, and the last one the log had at registration. */
  private replayFrom = 0;
  private registeredAt = 0;
  private unregister: (() => void) | undefined;
  private ready: (() => void) | undefined;

  constructor(
    private readonly hub: WatchHub,
    private readonly req: WatchRequest,
    private readonly signal: AbortSignal,
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  pull(): IteratorResult<WatchResponseInit> | undefined {
    if (this.phase === "done") return DONE;
    try {
      if (this.phase === "new") this.begin();
      for (;;) {
        if (this.outbox.length > 0) return { done: false, value: this.outbox.shift()! };
        if (this.phase === "replay") {
          this.replayChunk();
          continue;
        }
        const { queue, signal, hub } = this;
        // Once aborted, what is still queued is not sent: the stream ends with the abort's error.
        if (signal.aborted) endOfStream(signal);
        if (queue!.takeOverflow()) {
          hub.counters.resync("watch", "OVERFLOW");
          return { done: false, value: resync(ResyncReason.OVERFLOW, hub.log.latestRevision, hub.history.current) };
        }
        const changes = queue!.take(MAX_BATCH_EVENTS);
        if (changes.length > 0) {
          deliver(this.scope!, changes, this.outbox);
          continue;
        }
        if (this.progressDue) {
          this.progressDue = false;
          return { done: false, value: { kind: { case: "progress", value: { revision: BigInt(hub.log.latestRevision), history: hub.history.current } } } };
        }
        return undefined;
      }
    } catch (e) {
      this.finish();
      throw e;
    }
  }

  onReady(ready: () => void): void {
    if (this.phase !== "live") {
      // Before the first pull or after the end, pull has an answer at once.
      queueMicrotask(ready);
      return;
    }
    this.ready = ready;
    this.queue!.onWake(this.progressMs, this.signal, this.woken);
  }

  /** The queue's callback: one bound function per stream, not one closure per wait. */
  private readonly woken = (why: "woken" | "timeout") => {
    if (why === "timeout") this.progressDue = true;
    const ready = this.ready;
    this.ready = undefined;
    ready?.();
  };

  async next(): Promise<IteratorResult<WatchResponseInit>> {
    for (;;) {
      const r = this.pull();
      if (r !== undefined) return r;
      await new Promise<void>((resolve) => this.onReady(resolve));
    }
  }

  return(): Promise<IteratorResult<WatchResponseInit>> {
    this.finish();
    return Promise.resolve(DONE);
  }

  throw(error?: unknown): Promise<IteratorResult<WatchResponseInit>> {
    this.finish();
    return Promise.reject(error);
  }

  private begin(): void {
    const { hub, req, signal } = this;
    this.phase = "done";
    const progressMs = req.progressIntervalMs === 0 ? DEFAULT_PROGRESS_MS : req.progressIntervalMs;
    if (progressMs < MIN_PROGRESS_MS || progressMs > MAX_PROGRESS_MS) {
      throw new ConnectError(
        `progress_interval_ms ${progressMs} is out of range: give 0 (default ${DEFAULT_PROGRESS_MS}) or ${MIN_PROGRESS_MS} to ${MAX_PROGRESS_MS}`,
        Code.InvalidArgument,
      );
    }
    if (req.startRevision < 0n) throw new ConnectError(`start_revision ${req.startRevision} is negative`, Code.InvalidArgument);
    this.progressMs = progressMs;
    const start = req.startRevision > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(req.startRevision);
    const target = req.target;
    this.scope = new WatchScope(hub, target.case === "key", target.case === "key" ? target.value : (target.value ?? ""), req.withValues);

    // Revisions of another history: nothing to replay or wait for, every change from now on is owed.
    const otherHistory = start > 0 && req.startHistory !== "" && !hub.history.continues(req.startHistory, start - 1);
    const release = hub.admit("watch");
    const queue = (this.queue = new ChangeQueue(hub.limits.streamBufferBytes, otherHistory ? 0 : start));
    hub.addSubscriber(queue);
    if (target.case === "key") hub.addKey(target.value, queue);
    else hub.addPrefix(target.value ?? "", queue);
    this.unregister = releaseOnAbort(signal, () => {
      if (target.case === "key") hub.removeKey(target.value, queue);
      else hub.removePrefix(target.value ?? "", queue);
      hub.removeSubscriber(queue);
      queue.close();
      release();
    });

    const registeredAt = (this.registeredAt = hub.log.latestRevision);
    this.outbox.push({ kind: { case: "created", value: { revision: BigInt(registeredAt), history: hub.history.current } } });
    this.phase = "live";
    if (otherHistory) {
      // Replaying, or waiting for, revisions of another history would hand
      // the watcher different changes under numbers it has already seen.
      hub.counters.resync("watch", "HISTORY");
      this.outbox.push(resync(ResyncReason.HISTORY, registeredAt, hub.history.current));
    } else if (start > 0 && start <= registeredAt) {
      this.replayFrom = start;
      this.phase = "replay";
    }
  }

  /** The next chunk of start_revision..R from the log into the outbox; live once past R. */
  private replayChunk(): void {
    const { hub, registeredAt } = this;
    if (this.replayFrom > registeredAt) {
      this.phase = "live";
      return;
    }
    const chunk = hub.log.readFrom(this.replayFrom, MAX_BATCH_EVENTS);
    if (chunk !== "compacted" && chunk.length === 0) {
      this.phase = "live";
      return;
    }
    if (chunk === "compacted") {
      hub.counters.resync("watch", "COMPACTED");
      this.outbox.push(resync(ResyncReason.COMPACTED, registeredAt, hub.history.current));
      this.phase = "live";
      return;
    }
    const upTo = chunk.filter((c) => c.revision <= registeredAt);
    this.replayFrom += chunk.length;
    deliver(this.scope!, upTo, this.outbox);
    if (upTo.length < chunk.length) this.phase = "live";
  }

  /** The stream is over (ended, failed, or stopped by its consumer): leave the hub once. */
  private finish(): void {
    this.phase = "done";
    this.outbox = [];
    this.unregister?.();
    // A consumer waiting (a next() pending when return() came) learns that the stream is done.
    const ready = this.ready;
    this.ready = undefined;
    ready?.();
  }
}

/**
 * What a Watch delivers, and to whom it counts. An object rather than
 * closures inside the generator: a Watch lives long and there can be tens of
 * thousands of them, so what each one keeps matters.
 */
class WatchScope {
  constructor(
    readonly hub: WatchHub,
    private readonly exactKey: boolean,
    private readonly target: string,
    readonly withValues: boolean,
  ) {}

  matches(key: string): boolean {
    return this.exactKey ? key === this.target : key.startsWith(this.target);
  }

  /** An events message, counted as delivered. */
  sent(events: EventInit[]): WatchResponseInit {
    this.hub.counters.delivered.watch += events.length;
    return { kind: { case: "events", value: { events } } };
  }
}

/** Changes as messages into `out`, in batches; a flush splits the run and becomes a Resync. */
function deliver(scope: WatchScope, changes: readonly Change[], out: WatchResponseInit[]): void {
  const { hub, withValues } = scope;
  // The common case of a fan-out: one change, matched. Every watcher of it gets the same message
  // object, which the fast path encodes once for all of them.
  if (changes.length === 1 && changes[0].type !== "flush" && scope.matches(changes[0].key)) {
    hub.counters.delivered.watch += 1;
    out.push(singleEvent(changes[0], withValues));
    return;
  }
  let events: EventInit[] = [];
  for (const c of changes) {
    if (c.type === "flush") {
      if (events.length > 0) out.push(scope.sent(events));
      events = [];
      hub.counters.resync("watch", "FLUSH");
      out.push(resync(ResyncReason.FLUSH, c.revision, hub.history.current));
    } else if (scope.matches(c.key)) {
      events.push(toEvent(c, withValues));
    }
  }
  if (events.length > 0) out.push(scope.sent(events));
}

/**
 * Runs `cleanup` (a stream's unregistering from the hub and its slot) once:
 * when `signal` aborts, or when the returned function is called (the
 * generator's finally), whichever comes first.
 *
 * The finally alone is not enough. A generator suspended at a `yield` runs
 * its finally only when its consumer resumes or returns it, and connect-node
 * never does when an HTTP/1.1 client goes away while the response waits for
 * "drain": its write() listens for "drain" and "error", and a closed socket
 * emits neither. The stream then held its --max-streams slot and its hub
 * subscription forever (found by test/soak.test.ts: a canceled Connect
 * HTTP/1.1 watch, in a replay, stayed counted in Info.streams). The signal
 * does abort (connect-node listens for "close"), so cleanup hangs on it.
 */
export function releaseOnAbort(signal: AbortSignal, cleanup: () => void): () => void {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    signal.removeEventListener("abort", run);
    cleanup();
  };
  signal.addEventListener("abort", run, { once: true });
  return run;
}

/**
 * Ends a stream whose signal aborted with the reason's error: UNAVAILABLE on
 * server shutdown (clients reconnect elsewhere), DEADLINE_EXCEEDED at the
 * deadline. Returning instead would end it with OK, as if it were complete.
 */
export function endOfStream(signal: AbortSignal): never {
  const reason: unknown = signal.reason;
  throw reason instanceof ConnectError ? reason : new ConnectError("the stream was canceled", Code.Canceled);
}

function resync(reason: ResyncReason, revision: number, history: string): WatchResponseInit {
  return { kind: { case: "resync", value: { reason, revision: BigInt(revision), history } } };
}

const NO_VALUE = new Uint8Array(0);

/** The one-event response of a change, with and without its value, made once per change. */
const singleEvents = new WeakMap<Change, { with?: WatchResponse; without?: WatchResponse }>();

function singleEvent(c: Change, withValues: boolean): WatchResponse {
  let cached = singleEvents.get(c);
  if (cached === undefined) singleEvents.set(c, (cached = {}));
  const key = withValues ? "with" : "without";
  return (cached[key] ??= create(WatchResponseSchema, { kind: { case: "events", value: { events: [toEvent(c, withValues)] } } }));
}

function toEvent(c: Change, withValues: boolean): EventInit {
  const put = c.type === "put" && withValues;
  return {
    type: EVENT_TYPES[c.type as Exclude<ChangeType, "flush">],
    key: c.key,
    revision: BigInt(c.revision),
    value: put ? c.value! : NO_VALUE,
    flags: put ? c.flags : 0,
    expiresAtMs: put ? BigInt(c.expiresAt) : 0n,
  };
}
