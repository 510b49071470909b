import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Replication } from "../replication/replication.js";
import type { RevisionWaiter } from "../replication/revision-waiter.js";
import {
  CacheService,
  Role,
  type SetRequest,
} from "../gen/ripplecache/v1/cache_pb.js";
import type { WatchHub } from "../watch/hub.js";
import { trackStream } from "../watch/track-stream.js";
import { watchStream } from "../watch/watch-stream.js";
import type { CacheStore, EntryView, SetCondition, SetOptions, WriteResult } from "../store/store.js";
import { getManyAnswer, toEntry } from "./entries.js";

/** Longest a read waits for its min_revision. */
const MAX_MIN_REVISION_WAIT_MS = 10_000;

export interface CacheServiceOptions {
  readonly store: CacheStore;
  readonly hub: WatchHub;
  readonly replication: Replication;
  readonly revisions: RevisionWaiter;
  /** Most keys in one GetMany, entries in one SetMany. */
  readonly maxBatch: number;
  readonly version: string;
  readonly startedAt: number;
}

/**
 * The CacheService handlers: translate messages to store calls and back.
 * Store errors become ConnectErrors in the `storeErrors` interceptor.
 */
export function cacheServiceImpl(options: CacheServiceOptions): ServiceImpl<typeof CacheService> {
  const { store, maxBatch, replication, revisions } = options;
  /** Read-your-writes: wait for `min_revision` within the call's deadline (at most 10 s), else UNAVAILABLE. */
  const applied = async (minRevision: bigint, ctx: HandlerContext) => {
    if (minRevision <= 0n) return;
    const revision = int(minRevision, "min_revision");
    const budget = Math.min(ctx.timeoutMs() ?? MAX_MIN_REVISION_WAIT_MS, MAX_MIN_REVISION_WAIT_MS);
    // Answer UNAVAILABLE before the deadline (a tenth of the budget, at least 50 ms), so the client sees why.
    if (!(await revisions.waitFor(revision, Math.max(0, budget - Math.max(50, budget / 10)), ctx.signal))) {
      throw new ConnectError(
        `this node has applied revision ${store.currentRevision}, not yet min_revision ${revision}; retry, or read from the primary`,
        Code.Unavailable,
      );
    }
  };
  /** Durability: wait for `min_replicas` acknowledgements of a write, as Redis WAIT. */
  const acked = async (revision: number, minReplicas: number, timeoutMs: number, ctx: HandlerContext) =>
    minReplicas === 0 ? 0 : replication.source.waitForAcks(revision, minReplicas, timeoutMs === 0 ? 1000 : timeoutMs, ctx.signal);
  const checkBatch = (n: number, what: string) => {
    if (n > maxBatch) {
      throw new ConnectError(`${what} has ${n} items, more than max-batch of ${maxBatch}: split it`, Code.InvalidArgument);
    }
  };
  return {
    async get(req, ctx) {
      await applied(req.minRevision, ctx);
      const found = store.get(req.key);
      return found === undefined ? {} : { found: true, ...fields(found) };
    },
    async getMany(req, ctx) {
      checkBatch(req.keys.length, "GetMany");
      await applied(req.minRevision, ctx);
      return getManyAnswer(req.keys, store.readMany(req.keys));
    },
    async set(req, ctx) {
      const r = store.set(req.key, req.value, setOptions(req));
      const replicasAcked = r.applied ? await acked(r.revision, req.minReplicas, req.replicaTimeoutMs, ctx) : 0;
      return { ...written(r), replicasAcked };
    },
    setMany(req) {
      checkBatch(req.entries.length, "SetMany");
      // Validate every entry before applying any, so a bad entry changes nothing.
      for (const entry of req.entries) store.validateSet(entry.key, entry.value, int(entry.ttlMs, "ttl_ms"));
      const results = req.entries.map((entry) => written(store.set(entry.key, entry.value, setOptions(entry))));
      return { results };
    },
    async delete(req, ctx) {
      const r = store.delete(req.key, req.ifRevision === undefined ? undefined : int(req.ifRevision, "if_revision"));
      const replicasAcked = r.deleted ? await acked(r.revision, req.minReplicas, req.replicaTimeoutMs, ctx) : 0;
      return { deleted: r.deleted, revision: BigInt(r.revision), replicasAcked };
    },
    increment(req) {
      const r = store.increment(req.key, req.delta, int(req.ttlMs, "ttl_ms"));
      return { value: r.value, revision: BigInt(r.revision) };
    },
    touch(req) {
      const r = store.touch(req.key, int(req.ttlMs, "ttl_ms"));
      return { found: r.found, revision: BigInt(r.revision) };
    },
    async scan(req, ctx) {
      await applied(req.minRevision, ctx);
      const page = store.scan(req.prefix, req.cursor, req.limit, req.keysOnly);
      return { entries: page.entries.map((e) => toEntry(e.key, e)), nextCursor: page.nextCursor };
    },
    async load(requests) {
      let count = 0;
      let bytes = 0;
      for await (const req of requests) {
        try {
          store.set(req.key, req.value, { ttlMs: int(req.ttlMs, "ttl_ms"), flags: req.flags });
        } catch (err) {
          if (err instanceof Error) err.message = `entry ${count + 1} of the load: ${err.message} (${count} entries before it were written)`;
          throw err;
        }
        count++;
        bytes += Buffer.byteLength(req.key) + req.value.byteLength;
      }
      return { count: BigInt(count), bytes: BigInt(bytes) };
    },
    flush() {
      return { revision: BigInt(store.flush()) };
    },
    watch(req, ctx) {
      return watchStream(options.hub, req, ctx.signal);
    },
    track(requests, ctx) {
      return trackStream(options.hub, requests, ctx.signal);
    },
    info() {
      const stats = store.stats();
      const role = replication.role;
      return {
        role: role.isReplica ? Role.REPLICA : Role.PRIMARY,
        replicationId: role.replicationId,
        primaryAddress: role.primaryAddress,
        linkState: role.linkState,
        replicas: replication.source.status().map((r) => ({
          address: r.address,
          ackedRevision: BigInt(r.ackedRevision),
          lagRevisions: BigInt(r.lagRevisions),
          lagMs: BigInt(r.lagMs),
          state: r.state,
          fullResyncs: BigInt(r.fullResyncs),
        })),
        streams: BigInt(options.hub.streams),
        oldestRevision: BigInt(options.hub.log.oldestRevision),
        version: options.version,
        revision: BigInt(stats.revision),
        keys: BigInt(stats.keys),
        bytesUsed: BigInt(stats.bytesUsed),
        bytesLimit: BigInt(stats.bytesLimit),
        hits: BigInt(stats.hits),
        misses: BigInt(stats.misses),
        evictions: BigInt(stats.evictions),
        expirations: BigInt(stats.expirations),
        uptimeMs: BigInt(Date.now() - options.startedAt),
      };
    },
  };
}

function fields(e: EntryView) {
  return { value: e.value, revision: BigInt(e.revision), ttlMs: BigInt(e.ttlMs), flags: e.flags };
}

function written(r: WriteResult) {
  return { applied: r.applied, revision: BigInt(r.revision) };
}

/**
 * int64 fields arrive as bigint; the store counts in safe integers. Values
 * beyond 2^53 are no revision or TTL this server can have: refuse them clearly.
 */
function int(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new ConnectError(`${field} ${value} is out of range`, Code.InvalidArgument);
  }
  return Number(value);
}

function setOptions(req: SetRequest): SetOptions {
  return { ttlMs: int(req.ttlMs, "ttl_ms"), flags: req.flags, condition: condition(req.condition) };
}

function condition(c: SetRequest["condition"]): SetCondition {
  switch (c.case) {
    case "ifAbsent":
      return c.value ? { kind: "ifAbsent" } : { kind: "none" };
    case "ifPresent":
      return c.value ? { kind: "ifPresent" } : { kind: "none" };
    case "ifRevision":
      return { kind: "ifRevision", revision: int(c.value, "if_revision") };
    default:
      return { kind: "none" };
  }
}
