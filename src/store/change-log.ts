import type { Change, ChangeType } from "./change.js";

export interface ChangeLogLimits {
  /** Most changes held. */
  readonly maxEvents: number;
  /** Most bytes held (keys in UTF-8, values and a fixed overhead per change; the buffers holding them are at most two segments more). */
  readonly maxBytes: number;
}

export const DEFAULT_CHANGE_LOG_LIMITS: ChangeLogLimits = {
  maxEvents: 100_000,
  maxBytes: 64 * 1024 * 1024,
};

/** Bytes counted per change besides its key and value. */
const CHANGE_OVERHEAD_BYTES = 64;

export function changeBytes(change: Change): number {
  return change.key.length + (change.value?.byteLength ?? 0) + CHANGE_OVERHEAD_BYTES;
}

/** Bytes of one stored record before its key and value (see ChangeLog's layout). */
const RECORD_HEADER_BYTES = 21;
/** A segment's size; a record larger than this gets a segment of its own. */
export const SEGMENT_BYTES = 256 * 1024;
/** valueBytes of a change without a value (delete, expire, evict, flush). */
const NO_VALUE = 0xffffffff;

const TYPE_CODES: Readonly<Record<ChangeType, number>> = { put: 0, delete: 1, expire: 2, evict: 3, flush: 4 };
const TYPES: readonly ChangeType[] = ["put", "delete", "expire", "evict", "flush"];

/** A buffer the log appends records to; never reused once dropped, so values read from it stay valid. */
interface Segment {
  readonly bytes: Buffer;
  /** Where the next record goes. */
  used: number;
}

/**
 * The recent history of the dataset: every change in revision order, bounded
 * by count and bytes, oldest dropped first. It is the one spine of ordering:
 * watchers replay from it and replicas resync partially from it.
 *
 * Revisions are consecutive (every change takes the next one), so a revision's
 * position in the ring is its distance from the oldest revision held.
 *
 * Changes are kept encoded in large buffers (segments), not as objects. A
 * change lives in the log for seconds to minutes: long enough to survive the
 * young generation, so as objects (a Change, its key string, its value's
 * Uint8Array) 100,000 of them were promoted and died in old space at the write
 * rate, and the major collections that followed paused a primary at 20,000
 * writes/s by tens of ms (replication lag p99 28 ms; 4 ms with a 1,000-change
 * log). A segment is one object however many changes it holds.
 *
 * Record layout: type u8, flags u32, expiresAt f64, key bytes u32, value bytes
 * u32 (NO_VALUE: none), then the key (UTF-8) and the value. The index is two
 * typed-array rings parallel to the revisions: the record's segment (a
 * sequence number) and its offset. Listeners get the appended Change object
 * itself; readFrom decodes (a resuming watcher or replica; values are views of
 * the segment, not copies, which is why segments are never reused).
 */
export class ChangeLog {
  readonly limits: ChangeLogLimits;
  private segmentOf: Float64Array;
  private offsetOf: Int32Array;
  private head = 0; // ring index of the oldest change
  private count = 0;
  private bytes = 0;
  /** Revision of the oldest change held; with an empty log, the next revision to come. */
  private first: number;
  /** Segments from the oldest one still holding a change to the one being written. */
  private segments: Segment[] = [];
  /** Sequence number of segments[0]. */
  private firstSegment = 0;
  private readonly listeners = new Set<(change: Change) => void>();

  constructor(limits: Partial<ChangeLogLimits> = {}, startRevision = 0) {
    this.limits = { ...DEFAULT_CHANGE_LOG_LIMITS, ...limits };
    const slots = this.initialSlots();
    this.segmentOf = new Float64Array(slots);
    this.offsetOf = new Int32Array(slots);
    this.first = startRevision + 1;
  }

  /** The oldest revision the log can replay from. */
  get oldestRevision(): number {
    return this.first;
  }

  /** The newest revision appended; `oldestRevision - 1` when empty. */
  get latestRevision(): number {
    return this.first + this.count - 1;
  }

  get size(): number {
    return this.count;
  }

  get byteSize(): number {
    return this.bytes;
  }

  /** Appends the next change (its revision must follow the latest) and tells the listeners. */
  append(change: Change): void {
    // A replica's full resync is a flush at the snapshot's revision, which may
    // be anywhere (even lower, for a new history): the log restarts there.
    if (change.type === "flush" && change.revision !== this.latestRevision + 1) this.reset(change.revision - 1);
    if (change.revision !== this.latestRevision + 1) {
      throw new Error(`change log: revision ${change.revision} does not follow ${this.latestRevision}`);
    }
    const keyBytes = change.key.length === 0 ? 0 : Buffer.byteLength(change.key, "utf8");
    const size = keyBytes + (change.value?.byteLength ?? 0) + CHANGE_OVERHEAD_BYTES;
    while (this.count > 0 && (this.count >= this.limits.maxEvents || this.bytes + size > this.limits.maxBytes)) {
      this.dropOldest();
    }
    if (this.count === this.segmentOf.length) this.grow();
    this.store((this.head + this.count) % this.segmentOf.length, change, keyBytes);
    this.count++;
    this.bytes += size;
    for (const listener of this.listeners) listener(change);
  }

  /**
   * Changes with revision >= `from`, at most `max` of them, or "compacted" when
   * the log no longer holds `from`.
   */
  readFrom(from: number, max: number): Change[] | "compacted" {
    if (from < this.first) return "compacted";
    const out: Change[] = [];
    for (let r = from; r <= this.latestRevision && out.length < max; r++) {
      out.push(this.load((this.head + (r - this.first)) % this.segmentOf.length, r));
    }
    return out;
  }

  /** Forgets everything and continues after `revision` (a replica that took a snapshot). */
  reset(revision: number): void {
    const slots = this.initialSlots();
    this.segmentOf = new Float64Array(slots);
    this.offsetOf = new Int32Array(slots);
    this.segments = [];
    this.head = 0;
    this.count = 0;
    this.bytes = 0;
    this.first = revision + 1;
  }

  /** Calls `listener` with every change appended from now on. */
  subscribe(listener: (change: Change) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private initialSlots(): number {
    return Math.max(1, Math.min(this.limits.maxEvents, 1024));
  }

  /** Encodes `change` at the end of the newest segment (a new one if it does not fit) and indexes it at ring `slot`. */
  private store(slot: number, change: Change, keyBytes: number): void {
    const value = change.value;
    const recordBytes = RECORD_HEADER_BYTES + keyBytes + (value?.byteLength ?? 0);
    let segment = this.segments[this.segments.length - 1];
    if (segment === undefined || segment.bytes.length - segment.used < recordBytes) {
      segment = { bytes: Buffer.allocUnsafeSlow(Math.max(SEGMENT_BYTES, recordBytes)), used: 0 };
      this.segments.push(segment);
    }
    const b = segment.bytes;
    let at = segment.used;
    this.segmentOf[slot] = this.firstSegment + this.segments.length - 1;
    this.offsetOf[slot] = at;
    b[at] = TYPE_CODES[change.type];
    b.writeUInt32LE(change.flags >>> 0, at + 1);
    b.writeDoubleLE(change.expiresAt, at + 5);
    b.writeUInt32LE(keyBytes, at + 13);
    b.writeUInt32LE(value === undefined ? NO_VALUE : value.byteLength, at + 17);
    at += RECORD_HEADER_BYTES;
    if (keyBytes > 0) at += b.write(change.key, at, keyBytes, "utf8");
    if (value !== undefined) {
      b.set(value, at);
      at += value.byteLength;
    }
    segment.used = at;
  }

  /** Decodes the change at ring `slot`, whose revision is `revision`. */
  private load(slot: number, revision: number): Change {
    const segment = this.segments[this.segmentOf[slot] - this.firstSegment];
    const b = segment.bytes;
    let at = this.offsetOf[slot];
    const type = TYPES[b[at]];
    const flags = b.readUInt32LE(at + 1);
    const expiresAt = b.readDoubleLE(at + 5);
    const keyBytes = b.readUInt32LE(at + 13);
    const valueBytes = b.readUInt32LE(at + 17);
    at += RECORD_HEADER_BYTES;
    const key = keyBytes === 0 ? "" : b.toString("utf8", at, at + keyBytes);
    at += keyBytes;
    const value = valueBytes === NO_VALUE ? undefined : new Uint8Array(b.buffer, b.byteOffset + at, valueBytes);
    return value === undefined ? { type, revision, key, flags, expiresAt } : { type, revision, key, value, flags, expiresAt };
  }

  private dropOldest(): void {
    const b = this.segments[this.segmentOf[this.head] - this.firstSegment].bytes;
    const at = this.offsetOf[this.head];
    const valueBytes = b.readUInt32LE(at + 17);
    this.bytes -= b.readUInt32LE(at + 13) + (valueBytes === NO_VALUE ? 0 : valueBytes) + CHANGE_OVERHEAD_BYTES;
    this.head = (this.head + 1) % this.segmentOf.length;
    this.count--;
    this.first++;
    // Segments before the new oldest change hold nothing the log still needs.
    const keepFrom = this.count === 0 ? this.firstSegment + this.segments.length - 1 : this.segmentOf[this.head];
    while (this.firstSegment < keepFrom) {
      this.segments.shift();
      this.firstSegment++;
    }
  }

  private grow(): void {
    const slots = Math.min(this.segmentOf.length * 2, Math.max(this.limits.maxEvents, 1));
    const segmentOf = new Float64Array(slots);
    const offsetOf = new Int32Array(slots);
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) % this.segmentOf.length;
      segmentOf[i] = this.segmentOf[from];
      offsetOf[i] = this.offsetOf[from];
    }
    this.segmentOf = segmentOf;
    this.offsetOf = offsetOf;
    this.head = 0;
  }
}
