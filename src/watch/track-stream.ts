import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ResyncReason, type TrackRequest, type TrackResponseSchema } from "../gen/ripplecache/v1/cache_pb.js";
import type { ChangeType } from "../store/change.js";
import { ChangeQueue } from "./change-queue.js";
import type { WatchHub } from "./hub.js";
import { EVENT_TYPES, MAX_BATCH_EVENTS } from "./watch-stream.js";

type TrackResponseInit = MessageInitShape<typeof TrackResponseSchema>;

/** Control answers (Tracked, Pong) waiting to be sent before the server stops reading requests. */
const MAX_PENDING_REPLIES = 64;

/**
 * One Track stream. A reader task applies the client's track, untrack and
 * ping messages as they arrive; this generator writes invalidations for
 * tracked keys, acknowledgements and pongs. Both run on one thread, so a
 * track request registers its keys and takes its acknowledgement revision in
 * one synchronous step: every change after that revision reaches the queue.
 *
 * On Resync (overflow, compaction of a since_revision, or flush) the server
 * forgets every tracked key of the stream: the client has dropped its copies
 * and tracks again what it fetches again.
 */
export async function* trackStream(hub: WatchHub, requests: AsyncIterable<TrackRequest>, signal: AbortSignal): AsyncGenerator<TrackResponseInit> {
  const release = hub.admit();
  const queue = new ChangeQueue(hub.limits.streamBufferBytes);
  const tracked = new Set<string>();
  const replies: TrackResponseInit[] = [];
  let replyRoom: (() => void) | undefined;
  let readerDone = false;
  let readerError: unknown;
  let pendingResync: { reason: ResyncReason; revision: number } | undefined;

  const forgetAll = () => {
    for (const key of tracked) hub.removeKey(key, queue);
    tracked.clear();
  };

  const apply = (req: TrackRequest) => {
    const k = req.kind;
    switch (k.case) {
      case "track": {
        for (const key of k.value.keys) {
          if (key === "") throw new ConnectError("track: a key is empty", Code.InvalidArgument);
          if (!tracked.has(key)) {
            if (tracked.size >= hub.limits.maxTrackKeys) {
              throw new ConnectError(`track: the stream would track more than ${hub.limits.maxTrackKeys} keys (--max-track-keys); untrack some first`, Code.ResourceExhausted);
            }
            tracked.add(key);
            hub.addKey(key, queue);
          }
        }
        const since = Number(k.value.sinceRevision);
        if (since > 0) replay(since, new Set(k.value.keys));
        replies.push({ kind: { case: "tracked", value: { revision: BigInt(hub.log.latestRevision), trackedKeys: tracked.size } } });
        break;
      }
      case "untrack":
        for (const key of k.value.keys) {
          if (tracked.delete(key)) hub.removeKey(key, queue);
        }
        replies.push({ kind: { case: "tracked", value: { revision: BigInt(hub.log.latestRevision), trackedKeys: tracked.size } } });
        break;
      case "ping":
        replies.push({ kind: { case: "pong", value: { id: k.value.id, revision: BigInt(hub.log.latestRevision) } } });
        break;
      default:
        throw new ConnectError("a TrackRequest must set track, untrack or ping", Code.InvalidArgument);
    }
    queue.wake();
  };

  /** Changes to `keys` after `since`, from the log, ahead of the live ones. */
  const replay = (since: number, keys: ReadonlySet<string>) => {
    const latest = hub.log.latestRevision;
    for (let from = since + 1; from <= latest; ) {
      const chunk = hub.log.readFrom(from, 4096);
      if (chunk === "compacted") {
        pendingResync = { reason: ResyncReason.COMPACTED, revision: latest };
        return;
      }
      if (chunk.length === 0) return;
      from += chunk.length;
      for (const c of chunk) {
        if (c.revision > latest) return;
        if (c.type === "flush") {
          pendingResync = { reason: ResyncReason.FLUSH, revision: c.revision };
          return;
        }
        if (keys.has(c.key)) queue.deliver(c);
      }
    }
  };

  const reader = (async () => {
    try {
      for await (const req of requests) {
        apply(req);
        // Backpressure: a client that sends pings without reading pongs is not read further.
        while (replies.length >= MAX_PENDING_REPLIES && !signal.aborted) {
          await new Promise<void>((resolve) => (replyRoom = resolve));
        }
      }
    } catch (err) {
      readerError = err;
    } finally {
      readerDone = true;
      queue.wake();
    }
  })();

  hub.addSubscriber(queue);
  try {
    while (!signal.aborted) {
      if (readerError !== undefined) throw readerError;
      if (replies.length > 0) {
        yield replies.shift()!;
        replyRoom?.();
        replyRoom = undefined;
        continue;
      }
      if (queue.takeOverflow()) pendingResync ??= { reason: ResyncReason.OVERFLOW, revision: hub.log.latestRevision };
      if (pendingResync !== undefined) {
        const r = pendingResync;
        pendingResync = undefined;
        forgetAll();
        queue.take(Number.MAX_SAFE_INTEGER);
        yield { kind: { case: "resync", value: { reason: r.reason, revision: BigInt(r.revision) } } };
        continue;
      }
      const changes = queue.take(MAX_BATCH_EVENTS);
      const flush = changes.find((c) => c.type === "flush");
      if (flush !== undefined) {
        pendingResync = { reason: ResyncReason.FLUSH, revision: flush.revision };
        // Invalidations before the flush are moot: the Resync drops everything.
        continue;
      }
      if (changes.length > 0) {
        const invalidations = changes.map((c) => ({ key: c.key, revision: BigInt(c.revision), reason: EVENT_TYPES[c.type as Exclude<ChangeType, "flush">] }));
        yield { kind: { case: "invalidations", value: { invalidations } } };
        continue;
      }
      // The client half-closed: everything it asked for has been answered.
      if (readerDone) return;
      await queue.wait(60_000, signal);
    }
  } finally {
    forgetAll();
    hub.removeSubscriber(queue);
    release();
    // Lets a reader parked on backpressure finish; it ends with the request stream.
    replyRoom?.();
    void reader;
  }
}
