import type { Change } from "./change.js";

export interface ChangeLogLimits {
  /** Most changes held. */
  readonly maxEvents: number;
  /** Most bytes held (keys, values and a fixed overhead per change). */
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

/**
 * The recent history of the dataset: every change in revision order, bounded
 * by count and bytes, oldest dropped first. It is the one spine of ordering:
 * watchers replay from it and replicas resync partially from it.
 *
 * Revisions are consecutive (every change takes the next one), so a revision's
 * position in the ring is its distance from the oldest revision held.
 */
export class ChangeLog {
  readonly limits: ChangeLogLimits;
  private ring: (Change | undefined)[];
  private head = 0; // ring index of the oldest change
  private count = 0;
  private bytes = 0;
  /** Revision of the oldest change held; with an empty log, the next revision to come. */
  private first: number;
  private readonly listeners = new Set<(change: Change) => void>();

  constructor(limits: Partial<ChangeLogLimits> = {}, startRevision = 0) {
    this.limits = { ...DEFAULT_CHANGE_LOG_LIMITS, ...limits };
    this.ring = new Array<Change | undefined>(Math.min(this.limits.maxEvents, 1024));
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
    const size = changeBytes(change);
    while (this.count > 0 && (this.count >= this.limits.maxEvents || this.bytes + size > this.limits.maxBytes)) {
      this.dropOldest();
    }
    if (this.count === this.ring.length) this.grow();
    this.ring[(this.head + this.count) % this.ring.length] = change;
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
      out.push(this.ring[(this.head + (r - this.first)) % this.ring.length]!);
    }
    return out;
  }

  /** Forgets everything and continues after `revision` (a replica that took a snapshot). */
  reset(revision: number): void {
    this.ring = new Array<Change | undefined>(Math.min(this.limits.maxEvents, 1024));
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

  private dropOldest(): void {
    const change = this.ring[this.head]!;
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.ring.length;
    this.count--;
    this.bytes -= changeBytes(change);
    this.first++;
  }

  private grow(): void {
    const bigger = new Array<Change | undefined>(Math.min(this.ring.length * 2, Math.max(this.limits.maxEvents, 1)));
    for (let i = 0; i < this.count; i++) bigger[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = bigger;
    this.head = 0;
  }
}
