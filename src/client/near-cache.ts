import type { MessageInitShape } from "@bufbuild/protobuf";
import { LRUCache } from "lru-cache";
import { ResyncReason, type TrackRequestSchema, type TrackResponse } from "../gen/ripplecache/v1/cache_pb.js";
import type { CacheClient, ValueResult } from "./client.js";
import { PushQueue } from "./push-queue.js";

export interface NearCacheOptions {
  /** Most copies held locally; the least recently used is dropped (and untracked) beyond it. Default 10,000. */
  readonly maxEntries?: number;
  /** Most bytes of copies (keys, values and 100 bytes each) held locally, as maxEntries. Default 64 MiB. */
  readonly maxBytes?: number;
  /**
   * How long copies may still be served after the invalidation stream broke,
   * in ms. Beyond it every copy is dropped: the cache never serves a copy it
   * cannot vouch for. Default 0: copies are not served while disconnected.
   */
  readonly maxDisconnectedMs?: number;
  /** First reconnect delay; doubles per failure up to maxBackoffMs, with full jitter. Default 100. */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export interface NearCacheStats {
  hits: number;
  misses: number;
  invalidations: number;
  resyncs: number;
  reconnects: number;
}

interface Copy {
  readonly result: ValueResult;
  /** Local deadline from the TTL the server reported; 0 = none. */
  readonly expiresAt: number;
}

type TrackRequestInit = MessageInitShape<typeof TrackRequestSchema>;

/** What a copy costs beyond its key and value bytes (entry, result object, the value's buffer header), roughly. */
const COPY_OVERHEAD_BYTES = 100;

/** One Track stream and the keys the server tracks on it. */
interface Session {
  readonly requests: PushQueue<TrackRequestInit>;
  readonly abort: AbortController;
  /** Resolvers for Tracked acknowledgements, in the order the requests were sent. */
  readonly acks: ((revision: number) => void)[];
  readonly tracked: Set<string>;
  /** Until the server acknowledged the first track, the stream is not known to work. */
  live: boolean;
}

/**
 * A local copy of hot keys kept coherent by a Track stream.
 *
 * `get` answers from a local copy when it can vouch for it, otherwise it
 * tracks the key (and waits for the server's acknowledgement, so that every
 * later change is reported), then fetches it. The race to get right: a fetch
 * that returns after an invalidation for a newer revision is not stored.
 *
 * When the stream breaks, the cache reconnects with exponential backoff and
 * jitter and re-tracks its keys with `since_revision` = the last revision it
 * saw, so changes made while it was away are reported (or a Resync arrives
 * when the server's log no longer holds them). A Resync drops every copy.
 */
export class NearCache {
  readonly stats: NearCacheStats = { hits: 0, misses: 0, invalidations: 0, resyncs: 0, reconnects: 0 };
  /** The copies, least recently used dropped first (and untracked) beyond the entry or byte bound. */
  private readonly copies: LRUCache<string, Copy>;
  /** Highest invalidation revision seen per key while a fetch of it is in flight. */
  private readonly inflight = new Map<string, { invalidatedAt: number; count: number }>();
  private readonly maxDisconnectedMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private session: Session | undefined;
  private lastRevision = 0;
  /** The history lastRevision belongs to (Tracked.history), sent back when resuming. */
  private history = "";
  private disconnectedAt = 0;
  private failures = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Bumped on every Resync: fetches begun before it are not stored. */
  private epoch = 0;
  private readonly revisionWaiters = new Set<{ revision: number; resolve: () => void }>();

  constructor(
    private readonly client: CacheClient,
    options: NearCacheOptions = {},
  ) {
    this.copies = new LRUCache<string, Copy>({
      max: Math.max(1, options.maxEntries ?? 10_000),
      maxSize: Math.max(1, options.maxBytes ?? 64 * 1024 * 1024),
      sizeCalculation: (copy, key) => Buffer.byteLength(key) + copy.result.value.byteLength + COPY_OVERHEAD_BYTES,
      // A copy pushed out by the bound is no longer worth the server's tracking.
      dispose: (_copy, key, reason) => {
        if (reason === "evict") this.untrack(key);
      },
    });
    this.maxDisconnectedMs = options.maxDisconnectedMs ?? 0;
    this.initialBackoffMs = options.initialBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5000;
  }

  /** Keys with a local copy. */
  get size(): number {
    return this.copies.size;
  }

  /** True while the invalidation stream is established. */
  get connected(): boolean {
    return this.session?.live === true;
  }

  /** The newest revision the stream has reported (acknowledgement, invalidation or pong). */
  get revision(): number {
    return this.lastRevision;
  }

  async get(key: string): Promise<ValueResult | undefined> {
    const copy = this.copies.peek(key);
    if (copy !== undefined && this.canServe(copy)) {
      this.copies.get(key); // refreshes its recency
      this.stats.hits++;
      return copy.result;
    }
    this.stats.misses++;
    if (copy !== undefined) this.copies.delete(key);
    const session = await this.trackedSession(key);
    const epoch = this.epoch;
    const mark = this.inflight.get(key) ?? { invalidatedAt: 0, count: 0 };
    mark.count++;
    this.inflight.set(key, mark);
    try {
      const result = await this.client.get(key);
      // Store only what the stream can vouch for: the same live session, no
      // Resync since, and no invalidation newer than what the fetch returned.
      const fresh = session !== undefined && session === this.session && session.live && epoch === this.epoch && mark.invalidatedAt <= (result?.revision ?? 0);
      if (fresh && result !== undefined && session.tracked.has(key)) {
        this.store(key, result);
      }
      return result;
    } finally {
      if (--mark.count === 0) this.inflight.delete(key);
    }
  }

  /** Resolves once the stream has reported everything up to `revision` (a write's revision, say). */
  waitForRevision(revision: number, timeoutMs = 5000): Promise<void> {
    if (this.lastRevision >= revision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        revision,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.revisionWaiters.delete(waiter);
        reject(new Error(`near cache did not reach revision ${revision} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.revisionWaiters.add(waiter);
      // Ask for a pong so an idle stream reports the current revision.
      this.session?.requests.push({ kind: { case: "ping", value: { id: BigInt(revision) } } });
    });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    this.endSession();
    this.copies.clear();
  }

  // --- internals -------------------------------------------------------------

  private canServe(copy: Copy): boolean {
    if (copy.expiresAt !== 0 && copy.expiresAt <= Date.now()) return false;
    if (this.session?.live) return true;
    if (this.disconnectedAt !== 0 && Date.now() - this.disconnectedAt > this.maxDisconnectedMs) {
      this.copies.clear();
      return false;
    }
    return this.maxDisconnectedMs > 0;
  }

  private store(key: string, result: ValueResult): void {
    this.copies.set(key, { result, expiresAt: result.ttlMs === 0 ? 0 : Date.now() + result.ttlMs });
  }

  private untrack(key: string): void {
    if (this.session?.tracked.delete(key)) {
      this.session.requests.push({ kind: { case: "untrack", value: { keys: [key] } } });
      this.session.acks.push(() => {});
    }
  }

  /** The live session with `key` tracked, or undefined when the stream is down (fetch without caching). */
  private async trackedSession(key: string): Promise<Session | undefined> {
    const session = this.ensureSession();
    if (session.tracked.has(key)) return session.live ? session : undefined;
    session.tracked.add(key);
    try {
      await this.sendTrack(session, [key], 0);
    } catch {
      return undefined;
    }
    return session === this.session && session.live ? session : undefined;
  }

  private sendTrack(session: Session, keys: string[], sinceRevision: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      session.acks.push(resolve);
      session.abort.signal.addEventListener("abort", () => reject(new Error("track stream ended")), { once: true });
      const sinceHistory = sinceRevision > 0 ? this.history : "";
      session.requests.push({ kind: { case: "track", value: { keys, sinceRevision: BigInt(sinceRevision), sinceHistory } } });
    });
  }

  private ensureSession(): Session {
    if (this.session !== undefined) return this.session;
    const session: Session = { requests: new PushQueue<TrackRequestInit>(), abort: new AbortController(), acks: [], tracked: new Set(), live: false };
    this.session = session;
    // Keys with copies from before a disconnect: report what changed since.
    const resume = [...this.copies.keys()];
    for (const k of resume) session.tracked.add(k);
    void this.sendTrack(session, resume, this.lastRevision).then(
      () => {
        session.live = true;
        this.failures = 0;
        this.disconnectedAt = 0;
      },
      () => {},
    );
    void this.run(session);
    return session;
  }

  private async run(session: Session): Promise<void> {
    try {
      const stream = this.client.rpc.track(session.requests, { signal: session.abort.signal, timeoutMs: 0 });
      for await (const res of stream) this.onResponse(session, res);
    } catch {
      // The stream broke: handled below as a disconnect.
    }
    if (this.session !== session) return;
    this.endSession();
    if (this.closed) return;
    this.disconnectedAt = Date.now();
    const delay = Math.random() * Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** this.failures++);
    this.reconnectTimer = setTimeout(() => {
      if (this.closed || this.session !== undefined) return;
      this.stats.reconnects++;
      this.ensureSession();
    }, delay);
    this.reconnectTimer.unref();
  }

  private onResponse(session: Session, res: TrackResponse): void {
    const k = res.kind;
    switch (k.case) {
      case "tracked":
        this.history = k.value.history;
        this.advance(Number(k.value.revision));
        session.acks.shift()?.(Number(k.value.revision));
        break;
      case "invalidations":
        for (const inv of k.value.invalidations) {
          const revision = Number(inv.revision);
          this.copies.delete(inv.key);
          const mark = this.inflight.get(inv.key);
          if (mark !== undefined) mark.invalidatedAt = Math.max(mark.invalidatedAt, revision);
          this.stats.invalidations++;
          this.advance(revision);
        }
        break;
      case "pong":
        this.advance(Number(k.value.revision));
        break;
      case "resync":
        // Everything cached may be stale and the server forgot our keys.
        this.stats.resyncs++;
        this.epoch++;
        this.copies.clear();
        session.tracked.clear();
        this.history = k.value.history;
        // After a change of history (a restart, a failover) revisions may go back.
        if (k.value.reason === ResyncReason.HISTORY) this.lastRevision = Number(k.value.revision);
        this.advance(Number(k.value.revision));
        break;
    }
  }

  private advance(revision: number): void {
    if (revision <= this.lastRevision) return;
    this.lastRevision = revision;
    for (const w of this.revisionWaiters) {
      if (w.revision <= revision) {
        this.revisionWaiters.delete(w);
        w.resolve();
      }
    }
  }

  private endSession(): void {
    const session = this.session;
    if (session === undefined) return;
    this.session = undefined;
    session.live = false;
    session.requests.close();
    session.abort.abort();
    this.epoch++;
  }
}
