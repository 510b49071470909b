/**
 * The open streams of a connection by id, and the streams with output to
 * send: the two collections a connection changes on every call. They are not
 * a Map and a Set. A busy connection adds and deletes an entry per call, so V8
 * rehashes a Map's table every few calls, and a replaced table keeps pointers
 * to its entries and to the table that replaced it (for live iterators). Once
 * one such table is in the old generation (a full GC under load promotes the
 * current one), each scavenge finds every later table, and every stream it
 * held, alive through that dead table until the next full GC. Measured with
 * `--trace-gc-nvp` on a cached Get: from the first full GC under load on,
 * 10x as much promoted per scavenge (1.6 MB instead of 0.17), a full GC every
 * ~40 scavenges instead of none, and 17 instead of 14.5 µs of server CPU per
 * call, for as long as the process ran. These keep arrays that are cleared
 * slot by slot and reallocated only to grow.
 */

/** What the table needs of a stream. */
export interface TableStream {
  readonly id: number;
}

const INITIAL_SLOTS = 16;

/**
 * Open addressing on the stream id (client stream ids are odd and rise by 2:
 * the live ones land in neighbouring slots), linear probing, and deletion by
 * shifting the rest of the run back, so no tombstones build up.
 */
export class StreamTable<S extends TableStream> {
  private slots: (S | undefined)[] = new Array<S | undefined>(INITIAL_SLOTS).fill(undefined);
  private mask = INITIAL_SLOTS - 1;
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(id: number): S | undefined {
    const slots = this.slots;
    for (let i = this.home(id); ; i = (i + 1) & this.mask) {
      const s = slots[i];
      if (s === undefined || s.id === id) return s;
    }
  }

  /** Adds a stream whose id is not in the table. */
  add(stream: S): void {
    if ((this.count + 1) * 2 > this.slots.length) this.grow();
    this.place(stream);
    this.count++;
  }

  delete(id: number): boolean {
    const slots = this.slots;
    const mask = this.mask;
    let i = this.home(id);
    for (; ; i = (i + 1) & mask) {
      const s = slots[i];
      if (s === undefined) return false;
      if (s.id === id) break;
    }
    slots[i] = undefined;
    this.count--;
    // Move back each later entry of the run that may sit in the hole (its home slot is not in (i, j]).
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const s = slots[j];
      if (s === undefined) return true;
      const k = this.home(s.id);
      const stays = i <= j ? i < k && k <= j : i < k || k <= j;
      if (stays) continue;
      slots[i] = s;
      slots[j] = undefined;
      i = j;
    }
  }

  /** The streams, in no particular order (a copy: the caller may change the table meanwhile). */
  values(): S[] {
    const out: S[] = [];
    for (const s of this.slots) if (s !== undefined) out.push(s);
    return out;
  }

  clear(): void {
    this.slots.fill(undefined);
    this.count = 0;
  }

  private home(id: number): number {
    return (id >>> 1) & this.mask;
  }

  private place(stream: S): void {
    const slots = this.slots;
    let i = this.home(stream.id);
    while (slots[i] !== undefined) i = (i + 1) & this.mask;
    slots[i] = stream;
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new Array<S | undefined>(old.length * 2).fill(undefined);
    this.mask = this.slots.length - 1;
    for (const s of old) if (s !== undefined) this.place(s);
  }
}

/** What the send queue needs of a stream: a flag of its own that says it is queued. */
export interface QueueableStream {
  sendQueued: boolean;
}

/**
 * Streams with output waiting, in the order they asked, each once: a Set's
 * semantics (a stream added during iteration is visited by it) over an array
 * whose entries are cleared as they leave.
 */
export class SendQueue<S extends QueueableStream> {
  private readonly queue: (S | undefined)[] = [];

  add(stream: S): void {
    if (stream.sendQueued) return;
    stream.sendQueued = true;
    this.queue.push(stream);
  }

  delete(stream: S): void {
    if (!stream.sendQueued) return;
    stream.sendQueued = false;
    const i = this.queue.indexOf(stream);
    if (i >= 0) this.queue[i] = undefined;
  }

  /**
   * Calls `visit` for each stream in order, including streams added meanwhile,
   * until it returns false. `visit` may delete any stream.
   */
  forEach(visit: (stream: S) => boolean): void {
    const q = this.queue;
    for (let i = 0; i < q.length; i++) {
      const s = q[i];
      if (s !== undefined && !visit(s)) break;
    }
    // Drop the cleared entries, keeping the order of the rest, in place.
    let w = 0;
    for (let r = 0; r < q.length; r++) {
      const s = q[r];
      if (s !== undefined) q[w++] = s;
    }
    q.length = w;
  }
}
