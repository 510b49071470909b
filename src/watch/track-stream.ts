import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ResyncReason, type TrackRequest, type TrackResponseSchema } from "../gen/ripplecache/v1/cache_pb.js";
import type { Change, ChangeType } from "../store/change.js";
import { changeBytes } from "../store/change-log.js";
import type { StreamCounters, Subscriber, WatchHub } from "./hub.js";
import type { RevisionHistory } from "./history.js";
import { endOfStream, EVENT_TYPES, MAX_BATCH_EVENTS, releaseOnAbort } from "./watch-stream.js";

type TrackResponseInit = MessageInitShape<typeof TrackResponseSchema>;

/** Control answers (Tracked, Pong, Resync) waiting to be sent before the server stops reading requests. */
const MAX_PENDING_REPLIES = 64;

/**
 * Everything a Track stream owes its client, in the order it must arrive:
 * invalidations (changes to tracked keys) and replies (Tracked, Pong,
 * Resync) in one FIFO. Order is the contract: a Pong with revision R comes
 * after every invalidation up to R, and a Resync after every reply before it.
 * Invalidations are bounded in bytes; past the bound they are all dropped and
 * replaced by one Resync (OVERFLOW), and the stream forgets its keys.
 */
class TrackOutbox implements Subscriber {
  private items: (Change | TrackResponseInit)[] = [];
  private changeBytes = 0;
  private replies = 0;
  private waiter: (() => void) | undefined;

  constructor(
    private readonly maxBytes: number,
    private readonly onResync: () => void,
    private readonly latest: () => number,
    private readonly history: RevisionHistory,
    private readonly counters?: StreamCounters,
  ) {}

  get pendingReplies(): number {
    return this.replies;
  }

  get empty(): boolean {
    return this.items.length === 0;
  }

  deliver(change: Change): void {
    if (change.type === "flush") {
      this.resync(ResyncReason.FLUSH, change.revision);
      return;
    }
    const size = changeBytes(change);
    if (this.changeBytes + size > this.maxBytes) {
      this.resync(ResyncReason.OVERFLOW, this.latest());
      return;
    }
    this.items.push(change);
    this.changeBytes += size;
    this.wake();
  }

  /** Inserts replayed changes (older, in revision order) among the queued ones, keeping revision order. */
  insertReplayed(changes: readonly Change[]): void {
    if (changes.length === 0) return;
    const merged: (Change | TrackResponseInit)[] = [];
    let i = 0;
    for (const item of this.items) {
      if (isChange(item)) {
        while (i < changes.length && changes[i].revision < item.revision) merged.push(changes[i++]);
      }
      merged.push(item);
    }
    while (i < changes.length) merged.push(changes[i++]);
    for (const c of changes) this.changeBytes += changeBytes(c);
    this.items = merged;
    if (this.changeBytes > this.maxBytes) this.resync(ResyncReason.OVERFLOW, this.latest());
    this.wake();
  }

  reply(reply: TrackResponseInit): void {
    this.items.push(reply);
    this.replies++;
    this.wake();
  }

  /** Drops every queued invalidation, tells the stream to forget its keys, and queues the Resync. */
  resync(reason: ResyncReason, revision: number): void {
    this.counters?.resync("track", ResyncReason[reason]);
    this.items = this.items.filter((item) => !isChange(item));
    this.changeBytes = 0;
    this.onResync();
    this.reply({ kind: { case: "resync", value: { reason, revision: BigInt(revision), history: this.history.current } } });
  }

  /** The next message: a reply, or a batch of consecutive invalidations. */
  next(): TrackResponseInit | undefined {
    const first = this.items[0];
    if (first === undefined) return undefined;
    if (!isChange(first)) {
      this.items.shift();
      this.replies--;
      return first;
    }
    let n = 0;
    while (n < this.items.length && n < MAX_BATCH_EVENTS && isChange(this.items[n])) n++;
    const changes = this.items.splice(0, n) as Change[];
    const invalidations = changes.map((c) => {
      this.changeBytes -= changeBytes(c);
      return { key: c.key, revision: BigInt(c.revision), reason: EVENT_TYPES[c.type as Exclude<ChangeType, "flush">] };
    });
    if (this.counters !== undefined) this.counters.delivered.track += invalidations.length;
    return { kind: { case: "invalidations", value: { invalidations } } };
  }

  wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  wait(signal: AbortSignal): Promise<void> {
    if (this.items.length > 0 || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal.removeEventListener("abort", done);
        this.waiter = undefined;
        resolve();
      };
      this.waiter = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }
}

function isChange(item: Change | TrackResponseInit): item is Change {
  return "revision" in item && typeof (item as Change).revision === "number";
}

/**
 * One Track stream. A reader task applies the client's track, untrack and
 * ping messages as they arrive, each in one synchronous step: a track
 * registers its keys with the hub and takes the acknowledgement revision at
 * once, so every later change to them reaches the outbox. The generator sends
 * the outbox in order.
 *
 * On Resync (overflow, flush, a since_revision the log no longer holds, or
 * one of a history this node does not continue)
 * the server forgets every tracked key: the client has dropped its copies
 * and tracks again what it fetches again.
 *
 * Invalidations come in revision order, except that a since_revision replay
 * for newly tracked keys may report changes older than invalidations already
 * sent for other keys; per key, the order always holds.
 */
export async function* trackStream(hub: WatchHub, requests: AsyncIterable<TrackRequest>, signal: AbortSignal): AsyncGenerator<TrackResponseInit> {
  const release = hub.admit("track");
  const tracked = new Set<string>();
  const forgetAll = () => {
    for (const key of tracked) hub.removeKey(key, outbox);
    tracked.clear();
  };
  const outbox = new TrackOutbox(hub.limits.streamBufferBytes, forgetAll, () => hub.log.latestRevision, hub.history, hub.counters);
  let replyRoom: (() => void) | undefined;
  let readerDone = false;
  let readerError: unknown;

  const trackedReply = (): TrackResponseInit => ({
    kind: { case: "tracked", value: { revision: BigInt(hub.log.latestRevision), trackedKeys: tracked.size, history: hub.history.current } },
  });

  const apply = (req: TrackRequest) => {
    const k = req.kind;
    switch (k.case) {
      case "track": {
        const keys = k.value.keys;
        for (const key of keys) if (key === "") throw new ConnectError("track: a key is empty", Code.InvalidArgument);
        const since = Number(k.value.sinceRevision);
        const added = new Set<string>();
        for (const key of keys) {
          if (tracked.has(key)) continue;
          if (tracked.size >= hub.limits.maxTrackKeys) {
            throw new ConnectError(`track: the stream would track more than ${hub.limits.maxTrackKeys} keys (--max-track-keys); untrack some first`, Code.ResourceExhausted);
          }
          tracked.add(key);
          added.add(key);
          hub.addKey(key, outbox);
        }
        if (since > 0 && k.value.sinceHistory !== "" && !hub.history.continues(k.value.sinceHistory, since)) {
          // The client's revisions name changes of data this node does not
          // hold (a restart or a failover): nothing to replay, drop everything.
          outbox.reply(trackedReply());
          outbox.resync(ResyncReason.HISTORY, hub.log.latestRevision);
          break;
        }
        if (since > 0 && since + 1 < hub.log.oldestRevision) {
          // The changes the client asks about are gone from the log: after the
          // acknowledgement, a Resync makes it drop everything and, as after
          // any Resync, track again from zero.
          outbox.reply(trackedReply());
          outbox.resync(ResyncReason.COMPACTED, hub.log.latestRevision);
          break;
        }
        if (since > 0) outbox.insertReplayed(replay(since, added));
        outbox.reply(trackedReply());
        break;
      }
      case "untrack":
        for (const key of k.value.keys) {
          if (tracked.delete(key)) hub.removeKey(key, outbox);
        }
        outbox.reply(trackedReply());
        break;
      case "ping":
        outbox.reply({ kind: { case: "pong", value: { id: k.value.id, revision: BigInt(hub.log.latestRevision) } } });
        break;
      default:
        throw new ConnectError("a TrackRequest must set track, untrack or ping", Code.InvalidArgument);
    }
  };

  /** Changes to `keys` after `since`, from the log (which holds them: checked by the caller). */
  const replay = (since: number, keys: ReadonlySet<string>): Change[] => {
    const out: Change[] = [];
    if (keys.size === 0) return out;
    for (let from = since + 1; from <= hub.log.latestRevision; ) {
      const chunk = hub.log.readFrom(from, 4096);
      if (chunk === "compacted" || chunk.length === 0) break;
      from += chunk.length;
      for (const c of chunk) if (c.type !== "flush" && keys.has(c.key)) out.push(c);
    }
    return out;
  };

  const reader = (async () => {
    try {
      for await (const req of requests) {
        // Once the stream is released, a late request must not subscribe keys again.
        if (signal.aborted) break;
        apply(req);
        // Backpressure: a client that sends pings without reading pongs is not read further.
        while (outbox.pendingReplies >= MAX_PENDING_REPLIES && !signal.aborted) {
          await new Promise<void>((resolve) => (replyRoom = resolve));
        }
      }
    } catch (err) {
      readerError = err;
    } finally {
      readerDone = true;
      outbox.wake();
    }
  })();

  hub.addSubscriber(outbox);
  // Released when the signal aborts even if this generator stays suspended (see releaseOnAbort).
  const unregister = releaseOnAbort(signal, () => {
    forgetAll();
    hub.removeSubscriber(outbox);
    release();
  });
  try {
    while (!signal.aborted) {
      if (readerError !== undefined) throw readerError;
      const message = outbox.next();
      if (message !== undefined) {
        yield message;
        replyRoom?.();
        replyRoom = undefined;
        continue;
      }
      // The client half-closed and everything it asked for has been answered.
      if (readerDone) return;
      await outbox.wait(signal);
    }
    endOfStream(signal);
  } finally {
    unregister();
    // Lets a reader parked on backpressure finish; it ends with the request stream.
    replyRoom?.();
    void reader;
  }
}
