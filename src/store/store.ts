import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { Change, ChangeListener, ChangeType } from "./change.js";
import { StoreError } from "./errors.js";

/**
 * Bytes counted per entry on top of its key and value: the entry record, the
 * value's Uint8Array header and its off-heap allocation, the lru-cache index
 * slots and the slot table. Measured with `node --expose-gc dist/bench/memory.js`
 * at 1,000,000 keys of 100-byte values: ~394 B/key of V8 heap beyond key and
 * value, ~622 B/key of RSS. We count the RSS figure, so --max-memory bounds
 * what the process really holds for its entries (see README, "Memory").
 */
export const ENTRY_OVERHEAD_BYTES = 620;

/** Longest TTL accepted: about 100 years, so expiry times stay exact in a double. */
export const MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000;

export interface StoreLimits {
  /** Bound on the bytes counted for all entries (keys, values, overhead). */
  readonly maxMemoryBytes: number;
  /** Longest key in UTF-8 bytes. */
  readonly maxKeyBytes: number;
  /** Longest value in bytes. */
  readonly maxValueBytes: number;
}

export const DEFAULT_LIMITS: StoreLimits = {
  maxMemoryBytes: 256 * 1024 * 1024,
  maxKeyBytes: 4096,
  maxValueBytes: 1024 * 1024,
};

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export interface StoreOptions {
  readonly limits?: Partial<StoreLimits>;
  readonly clock?: Clock;
}

/** The state of a live key as readers see it. */
export interface EntryView {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
  /** Remaining time to live in ms; 0 = no expiry. */
  readonly ttlMs: number;
  readonly flags: number;
}

export type SetCondition =
  | { readonly kind: "none" }
  | { readonly kind: "ifAbsent" }
  | { readonly kind: "ifPresent" }
  | { readonly kind: "ifRevision"; readonly revision: number };

export interface SetOptions {
  readonly ttlMs?: number;
  readonly flags?: number;
  readonly condition?: SetCondition;
}

export interface WriteResult {
  readonly applied: boolean;
  readonly revision: number;
}

export interface ScanPage {
  readonly entries: EntryView[];
  /** "" when the scan is complete. */
  readonly nextCursor: string;
}

export interface StoreStats {
  readonly revision: number;
  readonly keys: number;
  readonly bytesUsed: number;
  readonly bytesLimit: number;
  readonly hits: number;
  readonly misses: number;
  readonly evictions: number;
  readonly expirations: number;
}

/** An entry as a snapshot carries it between nodes. */
export interface SnapshotEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
  /** Absolute ms since epoch; 0 = no expiry. */
  readonly expiresAt: number;
  readonly flags: number;
}

/** One stored key. Mutated in place on overwrite so its slot never moves. */
interface Entry {
  readonly key: string;
  value: Uint8Array;
  revision: number;
  /** Absolute ms since epoch; 0 = no expiry. */
  expiresAt: number;
  flags: number;
  /** Bytes counted against the memory bound. */
  size: number;
  /** Index in the slot table; stable for the entry's life (Scan cursors rely on it). */
  readonly slot: number;
}

const SCAN_DEFAULT_LIMIT = 100;
const SCAN_MAX_LIMIT = 1000;
/** Slots a Scan page may examine, so a sparse prefix cannot make one call walk the whole table. */
const SCAN_MAX_EXAMINED = 16_384;
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const DECIMAL_INTEGER = /^-?[0-9]{1,20}$/;

/**
 * The in-memory dataset: a byte-bounded LRU of entries with TTLs, revisions and
 * conditional writes. Every change takes the next revision and is reported to
 * the change listeners synchronously, in revision order.
 *
 * Two indexes over the same entries:
 * - `lru` (lru-cache) maps key to entry and keeps recency for eviction;
 * - `slots` gives every entry a stable position. Scan cursors and the expiry
 *   sweep walk it, because a key that stays present keeps its slot.
 */
export class CacheStore {
  readonly limits: StoreLimits;
  private readonly clock: Clock;
  private readonly lru: LRUCache<string, Entry>;
  private readonly slots: (Entry | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  private readonly listeners: ChangeListener[] = [];
  private revision = 0;
  private follower = false;
  private sweepHand = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private expirations = 0;

  constructor(options: StoreOptions = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.clock = options.clock ?? systemClock;
    // The store evicts by itself before each insert, so each eviction gets its
    // own revision and event, ordered before the write that caused it.
    // lru-cache's own bound is set out of reach: a replica applies its
    // primary's history and must never drop an entry on its own.
    this.lru = new LRUCache<string, Entry>({ maxSize: Number.MAX_SAFE_INTEGER });
  }

  /** Subscribes to every change. The listener must not call back into writes. */
  onChange(listener: ChangeListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  get currentRevision(): number {
    return this.revision;
  }

  get size(): number {
    return this.lru.size;
  }

  stats(): StoreStats {
    return {
      revision: this.revision,
      keys: this.lru.size,
      bytesUsed: this.lru.calculatedSize,
      bytesLimit: this.limits.maxMemoryBytes,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      expirations: this.expirations,
    };
  }

  get(key: string): EntryView | undefined {
    this.checkKey(key);
    const now = this.clock.now();
    const entry = this.lru.get(key);
    if (entry === undefined || this.expireIfDue(entry, now)) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    return view(entry, now);
  }

  /** Throws the error `set` would throw for these arguments, changing nothing. */
  validateSet(key: string, value: Uint8Array, ttlMs = 0): void {
    this.checkKey(key);
    this.checkValue(value);
    checkTtl(ttlMs);
    this.checkFits(entrySize(key, value));
  }

  set(key: string, value: Uint8Array, options: SetOptions = {}): WriteResult {
    const ttlMs = options.ttlMs ?? 0;
    this.validateSet(key, value, ttlMs);
    const flags = options.flags ?? 0;
    const now = this.clock.now();
    const current = this.live(key, now);
    if (!conditionHolds(options.condition ?? { kind: "none" }, current)) {
      return { applied: false, revision: current?.revision ?? 0 };
    }
    const entry = this.write(key, copy(value), flags, ttlMs === 0 ? 0 : now + ttlMs, current);
    return { applied: true, revision: entry.revision };
  }

  delete(key: string, ifRevision?: number): { deleted: boolean; revision: number } {
    this.checkKey(key);
    const current = this.live(key, this.clock.now());
    if (current === undefined) return { deleted: false, revision: 0 };
    if (ifRevision !== undefined && current.revision !== ifRevision) {
      return { deleted: false, revision: current.revision };
    }
    return { deleted: true, revision: this.remove(current, "delete") };
  }

  increment(key: string, delta: bigint, ttlMs = 0): { value: bigint; revision: number } {
    this.checkKey(key);
    checkTtl(ttlMs);
    const now = this.clock.now();
    const current = this.live(key, now);
    let base = 0n;
    if (current !== undefined) {
      const text = Buffer.from(current.value.buffer, current.value.byteOffset, current.value.byteLength).toString("latin1");
      if (!DECIMAL_INTEGER.test(text)) {
        throw new StoreError("failed_precondition", `value of key "${truncate(key)}" is not a decimal integer`);
      }
      base = BigInt(text);
      if (base > INT64_MAX || base < INT64_MIN) {
        throw new StoreError("failed_precondition", `value of key "${truncate(key)}" is out of the int64 range`);
      }
    }
    const result = base + delta;
    if (result > INT64_MAX || result < INT64_MIN) {
      throw new StoreError("out_of_range", `increment of key "${truncate(key)}" by ${delta} overflows int64`);
    }
    const value = copy(Buffer.from(result.toString(), "latin1"));
    // An existing key keeps its expiry and flags, as Redis INCR does.
    const expiresAt = current !== undefined ? current.expiresAt : ttlMs === 0 ? 0 : now + ttlMs;
    const entry = this.write(key, value, current?.flags ?? 0, expiresAt, current);
    return { value: result, revision: entry.revision };
  }

  touch(key: string, ttlMs: number): { found: boolean; revision: number } {
    this.checkKey(key);
    checkTtl(ttlMs);
    const now = this.clock.now();
    const current = this.live(key, now);
    if (current === undefined) return { found: false, revision: 0 };
    const entry = this.write(key, current.value, current.flags, ttlMs === 0 ? 0 : now + ttlMs, current);
    return { found: true, revision: entry.revision };
  }

  /**
   * One page of keys with `prefix`, in slot order. The cursor is the next slot
   * to examine: a key present for the whole scan keeps its slot, so it is
   * returned exactly once; keys added during the scan may land before the
   * cursor and be missed, as documented in the API.
   */
  scan(prefix: string, cursor: string, limit: number, keysOnly: boolean): ScanPage {
    let slot = 0;
    if (cursor !== "") {
      if (!/^[0-9]{1,15}$/.test(cursor)) {
        throw new StoreError("invalid_argument", `cursor "${truncate(cursor)}" is not one this server returned`);
      }
      slot = Number(cursor);
    }
    const max = limit === 0 ? SCAN_DEFAULT_LIMIT : Math.min(limit, SCAN_MAX_LIMIT);
    const now = this.clock.now();
    const entries: EntryView[] = [];
    const end = Math.min(this.slots.length, slot + SCAN_MAX_EXAMINED);
    for (; slot < end && entries.length < max; slot++) {
      const entry = this.slots[slot];
      if (entry === undefined || !entry.key.startsWith(prefix)) continue;
      if (this.expireIfDue(entry, now)) continue;
      entries.push(keysOnly ? { ...view(entry, now), value: EMPTY } : view(entry, now));
    }
    return { entries, nextCursor: slot < this.slots.length ? String(slot) : "" };
  }

  /** Removes every key. Returns the revision of the flush. */
  flush(): number {
    this.clear();
    return this.emit("flush", "", undefined, 0, 0);
  }

  private clear(): void {
    this.lru.clear();
    this.slots.length = 0;
    this.freeSlots.length = 0;
    this.sweepHand = 0;
  }

  /**
   * Active expiry: examines up to `maxExamined` slots from where the last sweep
   * stopped and removes up to `maxExpired` entries past their deadline.
   * Returns the number removed. Bounded work per call, no timer per key.
   */
  sweepExpired(maxExamined: number, maxExpired: number): number {
    const total = this.slots.length;
    if (total === 0) return 0;
    const now = this.clock.now();
    let removed = 0;
    for (let i = 0; i < maxExamined && i < total && removed < maxExpired; i++) {
      if (this.sweepHand >= this.slots.length) this.sweepHand = 0;
      const entry = this.slots[this.sweepHand++];
      if (entry !== undefined && this.expireIfDue(entry, now)) removed++;
    }
    return removed;
  }

  // --- following a primary ---------------------------------------------------

  /**
   * A follower applies its primary's changes and decides nothing itself: it
   * hides expired keys on reads but leaves their removal (and every eviction)
   * to the primary's events.
   */
  setFollower(follower: boolean): void {
    this.follower = follower;
  }

  get isFollower(): boolean {
    return this.follower;
  }

  /** Applies one change of the primary's history, with the primary's revision. */
  applyChange(change: Change): void {
    const current = change.type === "flush" ? undefined : this.lru.peek(change.key);
    switch (change.type) {
      case "put":
        this.write(change.key, copy(change.value!), change.flags, change.expiresAt, current, change.revision);
        return;
      case "delete":
      case "expire":
      case "evict":
        if (change.type === "expire") this.expirations++;
        if (change.type === "evict") this.evictions++;
        if (current !== undefined) this.unlink(current);
        this.emit(change.type, change.key, undefined, 0, 0, change.revision);
        return;
      case "flush":
        this.clear();
        this.emit("flush", "", undefined, 0, 0, change.revision);
        return;
    }
  }

  /**
   * Starts a full resync: drops every entry and continues from the snapshot's
   * revision. Subscribers see it as a flush at that revision (a Resync).
   */
  beginSnapshot(revision: number): void {
    this.clear();
    this.emit("flush", "", undefined, 0, 0, revision);
  }

  /** Adds one snapshot entry as the primary held it; publishes nothing (the snapshot's flush covered it). */
  loadSnapshotEntry(e: SnapshotEntry): void {
    const current = this.lru.peek(e.key);
    const size = entrySize(e.key, e.value);
    let entry = current;
    if (entry === undefined) {
      const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.slots.length;
      entry = { key: e.key, value: copy(e.value), revision: e.revision, expiresAt: e.expiresAt, flags: e.flags, size, slot };
      this.slots[slot] = entry;
    } else {
      entry.value = copy(e.value);
      entry.revision = e.revision;
      entry.expiresAt = e.expiresAt;
      entry.flags = e.flags;
      entry.size = size;
      this.lru.delete(e.key);
    }
    this.lru.set(e.key, entry, { size });
  }

  /**
   * A page of every entry (expired ones included: a snapshot carries the
   * primary's state, and the replica leaves expiry to the primary's events).
   */
  snapshotPage(cursor: number, max: number): { entries: SnapshotEntry[]; next: number } {
    const entries: SnapshotEntry[] = [];
    let slot = cursor;
    for (; slot < this.slots.length && entries.length < max; slot++) {
      const e = this.slots[slot];
      if (e !== undefined) entries.push({ key: e.key, value: e.value, revision: e.revision, expiresAt: e.expiresAt, flags: e.flags });
    }
    return { entries, next: slot < this.slots.length ? slot : -1 };
  }

  /**
   * An order-independent checksum of every entry (key, value, flags, expiry,
   * revision): the XOR of each entry's SHA-256, as hex. Equal on two nodes at
   * the same revision of the same history.
   */
  digest(): { revision: number; digest: string; keys: number } {
    const acc = Buffer.alloc(32);
    const meta = Buffer.alloc(20);
    for (const e of this.slots) {
      if (e === undefined) continue;
      meta.writeDoubleLE(e.revision, 0);
      meta.writeDoubleLE(e.expiresAt, 8);
      meta.writeUInt32LE(e.flags, 16);
      const h = createHash("sha256").update(e.key, "utf8").update("\0").update(e.value).update(meta).digest();
      for (let i = 0; i < 32; i++) acc[i] ^= h[i];
    }
    return { revision: this.revision, digest: acc.toString("hex"), keys: this.lru.size };
  }

  /** Slots in the table, live or free: the sweep's unit of work. */
  get slotCount(): number {
    return this.slots.length;
  }

  // --- internals -------------------------------------------------------------

  /** The live entry for `key` without touching recency; expires it lazily. */
  private live(key: string, now: number): Entry | undefined {
    const entry = this.lru.peek(key);
    if (entry === undefined || this.expireIfDue(entry, now)) return undefined;
    return entry;
  }

  private expireIfDue(entry: Entry, now: number): boolean {
    if (entry.expiresAt === 0 || entry.expiresAt > now) return false;
    // A follower hides the key but leaves its removal to the primary's EXPIRE.
    if (this.follower) return true;
    this.expirations++;
    this.remove(entry, "expire");
    return true;
  }

  /**
   * Writes a key (insert or in-place overwrite). A primary evicts LRU keys to
   * make room and takes the next revision; a follower applies `revision` as
   * its primary decided it and never evicts on its own.
   */
  private write(key: string, value: Uint8Array, flags: number, expiresAt: number, current: Entry | undefined, replicated?: number): Entry {
    const size = entrySize(key, value);
    if (replicated === undefined) this.checkFits(size);
    const entry = current;
    while (replicated === undefined && this.lru.calculatedSize - (entry?.size ?? 0) + size > this.limits.maxMemoryBytes) {
      // The key being written is never its own victim: evicting it frees
      // nothing it will not take back, and would move it to another slot.
      const victim = this.leastRecentlyUsed(key);
      if (victim === undefined) break;
      this.evictions++;
      this.remove(victim, "evict");
    }
    const revision = replicated ?? this.revision + 1;
    this.revision = revision;
    let written: Entry;
    if (entry === undefined) {
      const slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.slots.length;
      written = { key, value, revision, expiresAt, flags, size, slot };
      this.slots[slot] = written;
    } else {
      written = entry;
      written.value = value;
      written.revision = revision;
      written.expiresAt = expiresAt;
      written.flags = flags;
      written.size = size;
      // lru-cache only re-counts the size when the value object changes; the
      // entry is mutated in place (to keep its slot), so take it out first.
      this.lru.delete(key);
    }
    this.lru.set(key, written, { size });
    this.publish({ type: "put", revision, key, value, flags, expiresAt });
    return written;
  }

  /** The least recently used entry other than `except`'s. */
  private leastRecentlyUsed(except: string): Entry | undefined {
    // rvalues() walks from least to most recently used.
    for (const entry of this.lru.rvalues()) {
      if (entry !== undefined && entry.key !== except) return entry;
    }
    return undefined;
  }

  private remove(entry: Entry, type: "delete" | "expire" | "evict", revision?: number): number {
    this.unlink(entry);
    return this.emit(type, entry.key, undefined, 0, 0, revision);
  }

  private unlink(entry: Entry): void {
    this.lru.delete(entry.key);
    this.slots[entry.slot] = undefined;
    this.freeSlots.push(entry.slot);
  }

  /** Publishes a change at the next revision, or at `revision` when following a primary. */
  private emit(type: ChangeType, key: string, value: Uint8Array | undefined, flags: number, expiresAt: number, revision = this.revision + 1): number {
    this.revision = revision;
    this.publish({ type, revision, key, value, flags, expiresAt });
    return revision;
  }

  private publish(change: Change): void {
    for (const listener of this.listeners) listener(change);
  }

  private checkKey(key: string): void {
    if (key.length === 0) throw new StoreError("invalid_argument", "key is empty: give a key of 1 or more bytes");
    // A JS string of n UTF-16 units is at most 3n UTF-8 bytes: count only when it could be over.
    if (key.length * 3 > this.limits.maxKeyBytes) {
      const bytes = Buffer.byteLength(key, "utf8");
      if (bytes > this.limits.maxKeyBytes) {
        throw new StoreError("invalid_argument", `key of ${bytes} bytes exceeds max-key-bytes of ${this.limits.maxKeyBytes}`);
      }
    }
  }

  private checkFits(size: number): void {
    if (size > this.limits.maxMemoryBytes) {
      throw new StoreError(
        "resource_exhausted",
        `entry of ${size} bytes (key, value and ${ENTRY_OVERHEAD_BYTES} bytes overhead) exceeds max-memory of ${this.limits.maxMemoryBytes} bytes`,
      );
    }
  }

  private checkValue(value: Uint8Array): void {
    if (value.byteLength > this.limits.maxValueBytes) {
      throw new StoreError(
        "invalid_argument",
        `value of ${value.byteLength} bytes exceeds max-value-bytes of ${this.limits.maxValueBytes}`,
      );
    }
  }
}

const EMPTY = new Uint8Array(0);

function view(entry: Entry, now: number): EntryView {
  return {
    key: entry.key,
    value: entry.value,
    revision: entry.revision,
    ttlMs: entry.expiresAt === 0 ? 0 : Math.max(1, entry.expiresAt - now),
    flags: entry.flags,
  };
}

function conditionHolds(condition: SetCondition, current: Entry | undefined): boolean {
  switch (condition.kind) {
    case "none":
      return true;
    case "ifAbsent":
      return current === undefined;
    case "ifPresent":
      return current !== undefined;
    case "ifRevision":
      return (current?.revision ?? 0) === condition.revision;
  }
}

function checkTtl(ttlMs: number): number {
  if (!Number.isInteger(ttlMs) || ttlMs < 0) {
    throw new StoreError("invalid_argument", `ttl_ms ${ttlMs} is invalid: give 0 (no expiry) or a positive number of milliseconds`);
  }
  if (ttlMs > MAX_TTL_MS) {
    throw new StoreError("invalid_argument", `ttl_ms ${ttlMs} exceeds the maximum of ${MAX_TTL_MS} (100 years)`);
  }
  return ttlMs;
}

function entrySize(key: string, value: Uint8Array): number {
  return Buffer.byteLength(key, "utf8") + value.byteLength + ENTRY_OVERHEAD_BYTES;
}

/** Values arrive as views into request buffers: keep a copy of exactly the bytes. */
function copy(value: Uint8Array): Uint8Array {
  // Not value.slice(): on a Buffer that is a view, not a copy.
  const out = new Uint8Array(value.byteLength);
  out.set(value);
  return out;
}

function truncate(text: string): string {
  return text.length > 64 ? `${text.slice(0, 64)}...` : text;
}
