import { createHash } from "node:crypto";
import { Arena, type ArenaStats, chargedValueBytes, isLargeValue } from "./arena.js";
import type { Change, ChangeListener, ChangeType } from "./change.js";
import { StoreError } from "./errors.js";

/**
 * Bytes counted per entry on top of its key and its value's share of the arena
 * (`chargedValueBytes`): the index's Map entry, the key string, the slot
 * table's typed arrays (revision, expiry, flags, value reference, recency
 * links), the key's pointer and the arena's per-chunk bookkeeping.
 *
 * A calibration, not a derivation: it is the RSS per key beyond key and
 * arena share that `node --expose-gc dist/bench/memory.js` measures at
 * 1,000,000 keys of 100-byte values (105 bytes each in the arena; the V8
 * heap and external memory alone are ~105 B/key, RSS adds the heap's free
 * space), so that --max-memory bounds what the process really holds at that
 * size. The bench checks it at 1 KiB values too (docs/PERFORMANCE.md).
 */
export const ENTRY_OVERHEAD_BYTES = 154;

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

/**
 * What `readMany` found, key by key (by position in the keys asked), read in
 * place: valid only until the store next changes.
 */
export interface BatchRead {
  /** False for a key that is absent or expired. The others below are for found keys only. */
  found(i: number): boolean;
  revision(i: number): number;
  /** Remaining time to live in ms; 0 = no expiry. */
  ttlMs(i: number): number;
  flags(i: number): number;
  valueLength(i: number): number;
  /** Copies the value's bytes into `target` at `at`. */
  copyValue(i: number, target: Uint8Array, at: number): void;
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

const SCAN_DEFAULT_LIMIT = 100;
const SCAN_MAX_LIMIT = 1000;
/** Slots a Scan page may examine, so a sparse prefix cannot make one call walk the whole table. */
const SCAN_MAX_EXAMINED = 16_384;
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const DECIMAL_INTEGER = /^-?[0-9]{1,20}$/;

const INITIAL_SLOTS = 1024;
const NONE = -1;
/** Value reference of a large value. */
const LARGE = -1;
/** Value references hold a small value's length (1 to LARGE_VALUE_BYTES) below this radix. */
const LENGTH_RADIX = 16384;
/**
 * A small value's length and arena location from its reference. Not `%`: a
 * float64 remainder is a call into C in V8, ~6x the cost of this (exact: the
 * radix is a power of two), and GetMany asks for each key's length twice.
 */
const lengthIn = (ref: number): number => ref - Math.floor(ref / LENGTH_RADIX) * LENGTH_RADIX;
const locationIn = (ref: number): number => Math.floor(ref / LENGTH_RADIX);
/** Flags slot value that sends a reader to `oddFlags` (a uint32 of the same value may be there too). */
const ODD_FLAGS = 0xffffffff;

/**
 * The in-memory dataset: a byte-bounded LRU of entries with TTLs, revisions and
 * conditional writes. Every change takes the next revision and is reported to
 * the change listeners synchronously, in revision order.
 *
 * Layout (no JS object per entry):
 * - every entry has a slot, a small integer stable for the entry's life: Scan
 *   cursors and the expiry sweep walk the slots, because a key that stays
 *   present keeps its slot;
 * - `index` maps key to slot;
 * - the metadata are typed arrays indexed by slot (revision, expiry, flags,
 *   value location and length, and the links of the recency list);
 * - values live in the slabs of an `Arena` (values over LARGE_VALUE_BYTES keep
 *   their own Uint8Array, in `large`).
 *
 * Values handed out (EntryView, SnapshotEntry, Change) are copies or buffers
 * the store never writes again: a later write, eviction or arena compaction
 * cannot change them.
 */
export class CacheStore {
  readonly limits: StoreLimits;
  private readonly clock: Clock;
  private readonly index = new Map<string, number>();
  private keys: (string | undefined)[] = [];
  private revisions = new Float64Array(INITIAL_SLOTS);
  private expiries = new Float64Array(INITIAL_SLOTS);
  private flagsOf = new Uint32Array(INITIAL_SLOTS);
  /** Flags that are not a uint32 (only a direct caller can give them), by slot. */
  private readonly oddFlags = new Map<number, number>();
  /**
   * Where the value is: 0 for an empty value, LARGE for a large one (in
   * `large`), else its arena location * LENGTH_RADIX + its length.
   */
  private values = new Float64Array(INITIAL_SLOTS);
  /** Recency list: toward the least / the most recently used; NONE at the ends. */
  private older = new Int32Array(INITIAL_SLOTS);
  private newer = new Int32Array(INITIAL_SLOTS);
  private capacity = INITIAL_SLOTS;
  /** Most recently used slot. */
  private head = NONE;
  /** Least recently used slot. */
  private tail = NONE;
  /** Slots in the table, live or free (the high-water mark since the last clear). */
  private slotEnd = 0;
  private freeSlots: number[] = [];
  private readonly large = new Map<number, Uint8Array>();
  private readonly arena = new Arena((slot, location) => {
    this.values[slot] = location * LENGTH_RADIX + lengthIn(this.values[slot]!);
  });
  private bytesUsed = 0;
  private readonly listeners: ChangeListener[] = [];
  private revision = 0;
  private follower = false;
  private sweepHand = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private expirations = 0;
  /** What a BatchRead reads of a slot (readMany), kept inside this module. */
  private readonly slotReader: SlotReader = {
    revision: (slot) => this.revisions[slot]!,
    ttlMs: (slot, now) => this.ttlLeft(slot, now),
    flags: (slot) => this.flagsAt(slot),
    valueLength: (slot) => this.lengthOf(slot),
    copyValue: (slot, target, at) => {
      const ref = this.values[slot]!;
      if (ref === LARGE) target.set(this.large.get(slot)!, at);
      else if (ref !== 0) this.arena.readInto(locationIn(ref), lengthIn(ref), target, at);
    },
  };

  constructor(options: StoreOptions = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.clock = options.clock ?? systemClock;
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
    return this.index.size;
  }

  stats(): StoreStats {
    return {
      revision: this.revision,
      keys: this.index.size,
      bytesUsed: this.bytesUsed,
      bytesLimit: this.limits.maxMemoryBytes,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      expirations: this.expirations,
    };
  }

  /** The value arena's occupancy (slabs, chunks in use and free). */
  arenaStats(): ArenaStats {
    return this.arena.stats();
  }

  get(key: string): EntryView | undefined {
    this.checkKey(key);
    const now = this.clock.now();
    const slot = this.index.get(key);
    if (slot === undefined) {
      this.misses++;
      return undefined;
    }
    this.use(slot);
    if (this.expireIfDue(slot, now)) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    return this.view(slot, now, true);
  }

  /**
   * `get` of each key, in order, with the same effects (hits, misses,
   * recency, expiry). The values found share one new buffer: one allocation
   * for the batch instead of one per value, which was a sixth of a
   * GetMany(100)'s server time. Like `get`'s, the values are copies.
   */
  getMany(keys: readonly string[]): (EntryView | undefined)[] {
    const read = this.readMany(keys);
    let bytes = 0;
    for (let i = 0; i < keys.length; i++) if (read.found(i)) bytes += read.valueLength(i);
    const batch = new Uint8Array(bytes);
    let at = 0;
    const out: (EntryView | undefined)[] = new Array<EntryView | undefined>(keys.length);
    for (let i = 0; i < keys.length; i++) {
      if (!read.found(i)) {
        out[i] = undefined;
        continue;
      }
      const length = read.valueLength(i);
      read.copyValue(i, batch, at);
      out[i] = { key: keys[i]!, value: batch.subarray(at, at + length), revision: read.revision(i), ttlMs: read.ttlMs(i), flags: read.flags(i) };
      at += length;
    }
    return out;
  }

  /**
   * `get` of each key, in order, with the same effects as `getMany`, read in
   * place: no object or copy per key, for a caller that writes the entries
   * straight out (GetMany's answer is encoded from this). The batch reads the
   * store's own tables, so it is valid only until the store next changes: use
   * it synchronously.
   */
  readMany(keys: readonly string[]): BatchRead {
    const now = this.clock.now();
    const slots: number[] = new Array<number>(keys.length);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      this.checkKey(key);
      const slot = this.index.get(key);
      if (slot !== undefined) this.use(slot);
      if (slot === undefined || this.expireIfDue(slot, now)) {
        this.misses++;
        slots[i] = NONE;
        continue;
      }
      this.hits++;
      slots[i] = slot;
    }
    return new StoreBatchRead(this.slotReader, slots, now);
  }

  /** Throws the error `set` would throw for these arguments, changing nothing. */
  validateSet(key: string, value: Uint8Array, ttlMs = 0): void {
    this.checkKey(key);
    this.checkValue(value);
    checkTtl(ttlMs);
    this.checkFits(entryBytes(key, value.byteLength));
  }

  set(key: string, value: Uint8Array, options: SetOptions = {}): WriteResult {
    const ttlMs = options.ttlMs ?? 0;
    this.validateSet(key, value, ttlMs);
    const flags = options.flags ?? 0;
    const now = this.clock.now();
    const current = this.live(key, now);
    if (!conditionHolds(options.condition ?? { kind: "none" }, current === NONE ? undefined : this.revisions[current]!)) {
      return { applied: false, revision: current === NONE ? 0 : this.revisions[current]! };
    }
    const revision = this.write(key, value, flags, ttlMs === 0 ? 0 : now + ttlMs, current);
    return { applied: true, revision };
  }

  delete(key: string, ifRevision?: number): { deleted: boolean; revision: number } {
    this.checkKey(key);
    const current = this.live(key, this.clock.now());
    if (current === NONE) return { deleted: false, revision: 0 };
    if (ifRevision !== undefined && this.revisions[current] !== ifRevision) {
      return { deleted: false, revision: this.revisions[current]! };
    }
    return { deleted: true, revision: this.remove(current, "delete") };
  }

  increment(key: string, delta: bigint, ttlMs = 0): { value: bigint; revision: number } {
    this.checkKey(key);
    checkTtl(ttlMs);
    const now = this.clock.now();
    const current = this.live(key, now);
    let base = 0n;
    if (current !== NONE) {
      const bytes = this.valueView(current);
      const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
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
    const value = Buffer.from(result.toString(), "latin1");
    // An existing key keeps its expiry and flags, as Redis INCR does.
    const expiresAt = current !== NONE ? this.expiries[current]! : ttlMs === 0 ? 0 : now + ttlMs;
    const revision = this.write(key, value, current !== NONE ? this.flagsAt(current) : 0, expiresAt, current);
    return { value: result, revision };
  }

  touch(key: string, ttlMs: number): { found: boolean; revision: number } {
    this.checkKey(key);
    checkTtl(ttlMs);
    const now = this.clock.now();
    const current = this.live(key, now);
    if (current === NONE) return { found: false, revision: 0 };
    const revision = this.write(key, undefined, this.flagsAt(current), ttlMs === 0 ? 0 : now + ttlMs, current);
    return { found: true, revision };
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
    const end = Math.min(this.slotEnd, slot + SCAN_MAX_EXAMINED);
    for (; slot < end && entries.length < max; slot++) {
      const key = this.keys[slot];
      if (key === undefined || !key.startsWith(prefix)) continue;
      if (this.expireIfDue(slot, now)) continue;
      entries.push(this.view(slot, now, !keysOnly));
    }
    return { entries, nextCursor: slot < this.slotEnd ? String(slot) : "" };
  }

  /** Removes every key. Returns the revision of the flush. */
  flush(): number {
    this.clear();
    return this.emit("flush", "", undefined, 0, 0);
  }

  private clear(): void {
    this.index.clear();
    this.large.clear();
    this.oddFlags.clear();
    this.arena.clear();
    this.keys = [];
    this.allocateTables(INITIAL_SLOTS, 0);
    this.head = NONE;
    this.tail = NONE;
    this.slotEnd = 0;
    this.freeSlots = [];
    this.bytesUsed = 0;
    this.sweepHand = 0;
  }

  /**
   * Active expiry: examines up to `maxExamined` slots from where the last sweep
   * stopped and removes up to `maxExpired` entries past their deadline.
   * Returns the number removed. Bounded work per call, no timer per key.
   */
  sweepExpired(maxExamined: number, maxExpired: number): number {
    const total = this.slotEnd;
    if (total === 0) return 0;
    const now = this.clock.now();
    let removed = 0;
    for (let i = 0; i < maxExamined && i < total && removed < maxExpired; i++) {
      if (this.sweepHand >= this.slotEnd) this.sweepHand = 0;
      const slot = this.sweepHand++;
      if (this.keys[slot] !== undefined && this.expireIfDue(slot, now)) removed++;
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
    const current = change.type === "flush" ? NONE : (this.index.get(change.key) ?? NONE);
    switch (change.type) {
      case "put":
        this.write(change.key, change.value!, change.flags, change.expiresAt, current, change.revision);
        return;
      case "delete":
      case "expire":
      case "evict":
        if (change.type === "expire") this.expirations++;
        if (change.type === "evict") this.evictions++;
        if (current !== NONE) this.unlink(current);
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
    const current = this.index.get(e.key) ?? NONE;
    this.place(e.key, e.value, e.revision, e.flags, e.expiresAt, current);
  }

  /**
   * A page of every entry (expired ones included: a snapshot carries the
   * primary's state, and the replica leaves expiry to the primary's events).
   */
  snapshotPage(cursor: number, max: number): { entries: SnapshotEntry[]; next: number } {
    const entries: SnapshotEntry[] = [];
    let slot = cursor;
    for (; slot < this.slotEnd && entries.length < max; slot++) {
      const key = this.keys[slot];
      if (key !== undefined) {
        entries.push({ key, value: this.readValue(slot), revision: this.revisions[slot]!, expiresAt: this.expiries[slot]!, flags: this.flagsAt(slot) });
      }
    }
    return { entries, next: slot < this.slotEnd ? slot : -1 };
  }

  /**
   * An order-independent checksum of every entry (key, value, flags, expiry,
   * revision): the XOR of each entry's SHA-256, as hex. Equal on two nodes at
   * the same revision of the same history.
   */
  digest(): { revision: number; digest: string; keys: number } {
    const acc = Buffer.alloc(32);
    const meta = Buffer.alloc(20);
    for (let slot = 0; slot < this.slotEnd; slot++) {
      const key = this.keys[slot];
      if (key === undefined) continue;
      meta.writeDoubleLE(this.revisions[slot]!, 0);
      meta.writeDoubleLE(this.expiries[slot]!, 8);
      meta.writeUInt32LE(this.flagsAt(slot), 16);
      const h = createHash("sha256").update(key, "utf8").update("\0").update(this.valueView(slot)).update(meta).digest();
      for (let i = 0; i < 32; i++) acc[i] ^= h[i]!;
    }
    return { revision: this.revision, digest: acc.toString("hex"), keys: this.index.size };
  }

  /** Slots in the table, live or free: the sweep's unit of work. */
  get slotCount(): number {
    return this.slotEnd;
  }

  /**
   * Checks the store's internal bookkeeping (index, slots, recency list, byte
   * count, arena). For tests; O(keys). Throws on the first inconsistency.
   */
  checkInvariants(): void {
    let live = 0;
    let bytes = 0;
    for (let slot = 0; slot < this.slotEnd; slot++) {
      const key = this.keys[slot];
      if (key === undefined) continue;
      live++;
      if (this.index.get(key) !== slot) throw new Error(`slot ${slot}: index maps "${key}" elsewhere`);
      bytes += this.entrySizeOf(slot);
      const length = this.lengthOf(slot);
      if ((this.values[slot] === LARGE) !== isLargeValue(length)) throw new Error(`slot ${slot}: value of ${length} bytes stored as the wrong kind`);
      if (isLargeValue(length) !== this.large.has(slot)) throw new Error(`slot ${slot}: large value map out of step`);
      if (this.oddFlags.has(slot) && this.flagsAt(slot) >>> 0 === this.flagsAt(slot)) throw new Error(`slot ${slot}: uint32 flags held as odd`);
    }
    if (live !== this.index.size) throw new Error(`${live} live slots, ${this.index.size} keys`);
    if (bytes !== this.bytesUsed) throw new Error(`entries add up to ${bytes} bytes, bytesUsed says ${this.bytesUsed}`);
    if (this.large.size > live || this.oddFlags.size > live) throw new Error("large values or flags of dead slots");
    let n = 0;
    let prev = NONE;
    for (let slot = this.head; slot !== NONE; slot = this.older[slot]!) {
      if (this.keys[slot] === undefined) throw new Error(`recency list holds free slot ${slot}`);
      if (this.newer[slot] !== prev) throw new Error(`recency list broken at slot ${slot}`);
      prev = slot;
      if (++n > live) throw new Error("recency list has a cycle");
    }
    if (n !== live || prev !== this.tail) throw new Error(`recency list holds ${n} of ${live} keys`);
    this.arena.check();
  }

  // --- internals -------------------------------------------------------------

  /** The live entry's slot for `key` without touching recency, or NONE; expires it lazily. */
  private live(key: string, now: number): number {
    const slot = this.index.get(key);
    if (slot === undefined || this.expireIfDue(slot, now)) return NONE;
    return slot;
  }

  private expireIfDue(slot: number, now: number): boolean {
    const expiresAt = this.expiries[slot]!;
    if (expiresAt === 0 || expiresAt > now) return false;
    // A follower hides the key but leaves its removal to the primary's EXPIRE.
    if (this.follower) return true;
    this.expirations++;
    this.remove(slot, "expire");
    return true;
  }

  /**
   * Writes a key (insert, or overwrite of `current`'s slot, which never moves;
   * `value` undefined keeps the current value). A primary evicts LRU keys to
   * make room and takes the next revision; a follower applies `revision` as
   * its primary decided it and never evicts on its own. Returns the revision.
   */
  private write(key: string, value: Uint8Array | undefined, flags: number, expiresAt: number, current: number, replicated?: number): number {
    const size = entryBytes(key, value === undefined ? this.lengthOf(current) : value.byteLength);
    if (replicated === undefined) {
      this.checkFits(size);
      const oldSize = current === NONE ? 0 : this.entrySizeOf(current);
      while (this.bytesUsed - oldSize + size > this.limits.maxMemoryBytes) {
        // The key being written is never its own victim: evicting it frees
        // nothing it will not take back, and would move it to another slot.
        const victim = this.tail === current ? this.newer[this.tail]! : this.tail;
        if (victim === NONE) break;
        this.evictions++;
        this.remove(victim, "evict");
      }
    }
    const revision = replicated ?? this.revision + 1;
    this.revision = revision;
    const slot = this.place(key, value, revision, flags, expiresAt, current);
    if (this.listeners.length > 0) {
      // The change carries a value of its own: the arena's bytes are reused.
      const published = value === undefined ? this.readValue(slot) : isLargeValue(value.byteLength) ? this.large.get(slot)! : copy(value);
      this.publish({ type: "put", revision, key, value: published, flags, expiresAt });
    }
    return revision;
  }

  /** Stores an entry (new, or over `current`) as most recently used, and counts its bytes. */
  private place(key: string, value: Uint8Array | undefined, revision: number, flags: number, expiresAt: number, current: number): number {
    let slot = current;
    if (slot === NONE) {
      slot = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.slotEnd++;
      if (slot >= this.capacity) this.allocateTables(this.capacity * 2, slot);
      this.keys[slot] = key;
      this.values[slot] = 0;
      this.flagsOf[slot] = 0;
      this.index.set(key, slot);
      this.pushNewest(slot);
    } else {
      this.bytesUsed -= this.entrySizeOf(slot);
      this.use(slot);
    }
    if (value !== undefined) this.storeValue(slot, value);
    this.revisions[slot] = revision;
    this.expiries[slot] = expiresAt;
    this.setFlags(slot, flags);
    this.bytesUsed += this.entrySizeOf(slot);
    return slot;
  }

  /** Copies `value` into the slot's storage, reusing its chunk when the size class is the same. */
  private storeValue(slot: number, value: Uint8Array): void {
    const length = value.byteLength;
    const ref = this.values[slot]!;
    const small = length > 0 && !isLargeValue(length);
    if (small && ref > 0) {
      const location = locationIn(ref);
      if (this.arena.fits(location, length)) {
        this.arena.write(location, value);
        this.values[slot] = location * LENGTH_RADIX + length;
        return;
      }
    }
    this.releaseValue(slot);
    if (small) {
      const location = this.arena.alloc(length, slot);
      this.arena.write(location, value);
      this.values[slot] = location * LENGTH_RADIX + length;
    } else if (length > 0) {
      this.large.set(slot, copy(value));
      this.values[slot] = LARGE;
    }
  }

  private releaseValue(slot: number): void {
    const ref = this.values[slot]!;
    if (ref === LARGE) this.large.delete(slot);
    else if (ref > 0) this.arena.free(locationIn(ref));
    this.values[slot] = 0;
  }

  /** Length of the slot's value. */
  private lengthOf(slot: number): number {
    const ref = this.values[slot]!;
    if (ref === LARGE) return this.large.get(slot)!.byteLength;
    return lengthIn(ref);
  }

  private flagsAt(slot: number): number {
    const flags = this.flagsOf[slot]!;
    return flags === ODD_FLAGS && this.oddFlags.size > 0 ? (this.oddFlags.get(slot) ?? flags) : flags;
  }

  private setFlags(slot: number, flags: number): void {
    if (this.oddFlags.size > 0) this.oddFlags.delete(slot);
    if (flags >>> 0 === flags) {
      this.flagsOf[slot] = flags;
    } else {
      this.flagsOf[slot] = ODD_FLAGS;
      this.oddFlags.set(slot, flags);
    }
  }

  /** The slot's value as a view: valid only until the next change to the store. */
  private valueView(slot: number): Uint8Array {
    const ref = this.values[slot]!;
    if (ref === 0) return EMPTY;
    if (ref === LARGE) return this.large.get(slot)!;
    return this.arena.view(locationIn(ref), lengthIn(ref));
  }

  /**
   * The slot's value for a caller: a copy of arena bytes, or the large value's
   * own buffer, which the store never writes again (an overwrite replaces it).
   */
  private readValue(slot: number): Uint8Array {
    const ref = this.values[slot]!;
    if (ref === 0) return new Uint8Array(0);
    if (ref === LARGE) return this.large.get(slot)!;
    return this.arena.read(locationIn(ref), lengthIn(ref));
  }

  private view(slot: number, now: number, withValue: boolean): EntryView {
    return {
      key: this.keys[slot]!,
      value: withValue ? this.readValue(slot) : EMPTY,
      revision: this.revisions[slot]!,
      ttlMs: this.ttlLeft(slot, now),
      flags: this.flagsAt(slot),
    };
  }

  /** Remaining time to live in ms, at least 1 while the key lives; 0 = no expiry. */
  private ttlLeft(slot: number, now: number): number {
    const expiresAt = this.expiries[slot]!;
    return expiresAt === 0 ? 0 : Math.max(1, expiresAt - now);
  }

  private entrySizeOf(slot: number): number {
    return entryBytes(this.keys[slot]!, this.lengthOf(slot));
  }

  private remove(slot: number, type: "delete" | "expire" | "evict", revision?: number): number {
    const key = this.keys[slot]!;
    this.unlink(slot);
    return this.emit(type, key, undefined, 0, 0, revision);
  }

  private unlink(slot: number): void {
    this.bytesUsed -= this.entrySizeOf(slot);
    this.index.delete(this.keys[slot]!);
    this.unlinkRecency(slot);
    this.releaseValue(slot);
    if (this.oddFlags.size > 0) this.oddFlags.delete(slot);
    this.keys[slot] = undefined;
    this.freeSlots.push(slot);
  }

  /** Marks the slot most recently used. */
  private use(slot: number): void {
    if (this.head === slot) return;
    this.unlinkRecency(slot);
    this.pushNewest(slot);
  }

  private pushNewest(slot: number): void {
    this.older[slot] = this.head;
    this.newer[slot] = NONE;
    if (this.head !== NONE) this.newer[this.head] = slot;
    else this.tail = slot;
    this.head = slot;
  }

  private unlinkRecency(slot: number): void {
    const older = this.older[slot]!;
    const newer = this.newer[slot]!;
    if (newer !== NONE) this.older[newer] = older;
    else this.head = older;
    if (older !== NONE) this.newer[older] = newer;
    else this.tail = newer;
  }

  /** (Re)allocates the per-slot tables with `capacity` slots, keeping the first `keep`. */
  private allocateTables(capacity: number, keep: number): void {
    const grow = <T extends Float64Array | Uint32Array | Int32Array>(old: T, make: (n: number) => T): T => {
      const next = make(capacity);
      next.set(old.subarray(0, keep));
      return next;
    };
    this.revisions = grow(this.revisions, (n) => new Float64Array(n));
    this.expiries = grow(this.expiries, (n) => new Float64Array(n));
    this.flagsOf = grow(this.flagsOf, (n) => new Uint32Array(n));
    this.values = grow(this.values, (n) => new Float64Array(n));
    this.older = grow(this.older, (n) => new Int32Array(n));
    this.newer = grow(this.newer, (n) => new Int32Array(n));
    this.capacity = capacity;
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

function conditionHolds(condition: SetCondition, currentRevision: number | undefined): boolean {
  switch (condition.kind) {
    case "none":
      return true;
    case "ifAbsent":
      return currentRevision === undefined;
    case "ifPresent":
      return currentRevision !== undefined;
    case "ifRevision":
      return (currentRevision ?? 0) === condition.revision;
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

/**
 * Bytes counted against --max-memory for an entry: the key's UTF-8 bytes, what
 * its value takes in the arena (`chargedValueBytes`: the value rounded up to its
 * size class's share of a slab, or a large value's bytes and its buffer's
 * overhead) and ENTRY_OVERHEAD_BYTES.
 */
export function entryBytes(key: string, valueBytes: number): number {
  return Buffer.byteLength(key, "utf8") + chargedValueBytes(valueBytes) + ENTRY_OVERHEAD_BYTES;
}

/** Small copies are cut from slabs of this size (see `copy`); larger ones get their own buffer. */
const COPY_SLAB_BYTES = 8 * 1024;
let copySlab = new Uint8Array(COPY_SLAB_BYTES);
let copyOffset = 0;

/**
 * A copy of `value` that no caller's buffer can change (values arrive as views
 * into request buffers, which get reused or pin more). A small one is cut
 * from a shared 8 KiB slab rather than given an ArrayBuffer of its own: every
 * write publishes one, and at 20,000 writes/s those 20,000 ArrayBuffers a
 * second were swept in the scavenges' pauses (1-3 ms of them, `--trace-gc-nvp`
 * scavenge.sweep_array_buffers), which showed as replication lag. A copy keeps
 * its slab alive while it lives, as a Buffer keeps Node's 8 KiB pool.
 */
function copy(value: Uint8Array): Uint8Array {
  const length = value.byteLength;
  let out: Uint8Array;
  if (length > COPY_SLAB_BYTES / 2) {
    out = new Uint8Array(length);
  } else {
    if (copyOffset + length > COPY_SLAB_BYTES) {
      copySlab = new Uint8Array(COPY_SLAB_BYTES);
      copyOffset = 0;
    }
    out = copySlab.subarray(copyOffset, copyOffset + length);
    copyOffset = (copyOffset + length + 7) & ~7;
  }
  // Not value.slice(): on a Buffer that is a view, not a copy.
  out.set(value);
  return out;
}

function truncate(text: string): string {
  return text.length > 64 ? `${text.slice(0, 64)}...` : text;
}

/** The reads of one slot that a BatchRead makes. */
interface SlotReader {
  revision(slot: number): number;
  ttlMs(slot: number, now: number): number;
  flags(slot: number): number;
  valueLength(slot: number): number;
  copyValue(slot: number, target: Uint8Array, at: number): void;
}

/** readMany's answer: the slots found (NONE for a miss), read when asked. */
class StoreBatchRead implements BatchRead {
  constructor(
    private readonly slot: SlotReader,
    private readonly slots: readonly number[],
    private readonly now: number,
  ) {}

  found(i: number): boolean {
    return this.slots[i] !== NONE;
  }

  revision(i: number): number {
    return this.slot.revision(this.slots[i]!);
  }

  ttlMs(i: number): number {
    return this.slot.ttlMs(this.slots[i]!, this.now);
  }

  flags(i: number): number {
    return this.slot.flags(this.slots[i]!);
  }

  valueLength(i: number): number {
    return this.slot.valueLength(this.slots[i]!);
  }

  copyValue(i: number, target: Uint8Array, at: number): void {
    this.slot.copyValue(this.slots[i]!, target, at);
  }
}
