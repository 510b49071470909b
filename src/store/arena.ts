/**
 * Value storage for CacheStore: values live in large slab buffers, not in one
 * Uint8Array (and one off-heap allocation) each.
 *
 * - Values of 1 to LARGE_VALUE_BYTES bytes go in a chunk of a size class
 *   (multiples of 8 bytes up to 256, then steps of at most 1/8). Every slab is
 *   SLAB_BYTES long and holds chunks of one class only.
 * - Longer values keep their own Uint8Array (held by the store).
 *
 * Fragmentation stays bounded: a freed chunk is reused by the next value of its
 * class, a slab whose chunks are all free is released at once, and when a
 * class holds two slabs' worth of free chunks its emptiest slab is evacuated
 * (its values move to free chunks of the class's other slabs) and released. So
 * besides the chunks in use, each class holds less than two slabs of free
 * chunks. Evacuation moves at most one value per value freed, amortized.
 *
 * What an entry is charged for its value (`chargedValueBytes`) is its chunk's
 * share of its slab, SLAB_BYTES / chunks per slab, so the slabs in use are
 * counted exactly, the slab's tail included.
 */

export const SLAB_BYTES = 64 * 1024;
/** Values longer than this keep their own buffer. */
export const LARGE_VALUE_BYTES = 8 * 1024;
/**
 * Bytes charged for a large value besides its own: its Uint8Array and
 * ArrayBuffer objects, the backing store record and malloc's header, and its
 * entry in the store's map of large values.
 */
export const LARGE_VALUE_OVERHEAD_BYTES = 512;

/** Chunk size of each class, ascending; the last is LARGE_VALUE_BYTES. */
const CLASS_SIZES: readonly number[] = (() => {
  const sizes: number[] = [];
  for (let s = 8; s <= 256; s += 8) sizes.push(s);
  let s = 256;
  while (s < LARGE_VALUE_BYTES) {
    s = Math.min(LARGE_VALUE_BYTES, Math.ceil((s * 9) / 8 / 8) * 8);
    sizes.push(s);
  }
  return sizes;
})();

/** Class of a length, indexed by ceil(length / 8). */
const CLASS_OF: Uint8Array = (() => {
  const table = new Uint8Array(LARGE_VALUE_BYTES / 8 + 1);
  let c = 0;
  for (let units = 1; units < table.length; units++) {
    while (CLASS_SIZES[c]! < units * 8) c++;
    table[units] = c;
  }
  return table;
})();

const CHUNKS_PER_SLAB: readonly number[] = CLASS_SIZES.map((s) => Math.floor(SLAB_BYTES / s));
/** Bytes charged per chunk of each class: its share of the slab. */
const CHARGED: readonly number[] = CHUNKS_PER_SLAB.map((n) => Math.ceil(SLAB_BYTES / n));

/** Bytes counted against the memory bound for a value of `length` bytes. */
export function chargedValueBytes(length: number): number {
  if (length === 0) return 0;
  if (length > LARGE_VALUE_BYTES) return length + LARGE_VALUE_OVERHEAD_BYTES;
  return CHARGED[CLASS_OF[(length + 7) >>> 3]!]!;
}

export function isLargeValue(length: number): boolean {
  return length > LARGE_VALUE_BYTES;
}

/** Location of no chunk: an empty or a large value. */
export const NO_CHUNK = -1;

interface Slab {
  readonly id: number;
  readonly bytes: Uint8Array;
  readonly cls: number;
  readonly chunkBytes: number;
  readonly capacity: number;
  /** Chunks in use. */
  live: number;
  /** Chunks never handed out start here. */
  bump: number;
  /** Stack of freed chunk indexes. */
  readonly freed: Uint16Array;
  freedTop: number;
  /** Owner (the store's slot) of each chunk; -1 when free. */
  readonly owner: Int32Array;
  /** Index in its class's list of slabs with a free chunk; -1 when full. */
  partialIndex: number;
}

interface SizeClass {
  /** Slabs with at least one free chunk. */
  readonly partial: Slab[];
  /** Free chunks over all the class's slabs. */
  freeChunks: number;
}

export interface ArenaStats {
  readonly slabs: number;
  readonly slabBytes: number;
  /** Chunks in use, over all classes. */
  readonly chunks: number;
  /** Free chunks, over all classes. */
  readonly freeChunks: number;
  /** Bytes of free chunks (counted by no entry). */
  readonly freeBytes: number;
  /** Values moved by evacuations since the arena was made. */
  readonly moves: number;
}

/**
 * Slabs of size-classed chunks. A chunk's location is one number,
 * `slab id * SLAB_BYTES + byte offset`. The arena knows each chunk's owner (a
 * slot number) and reports moves through `relocate`.
 */
export class Arena {
  private slabs: (Slab | undefined)[] = [];
  private freeIds: number[] = [];
  private classes: SizeClass[] = CLASS_SIZES.map(() => ({ partial: [], freeChunks: 0 }));
  private slabCount = 0;
  private chunkCount = 0;
  private moves = 0;

  constructor(private readonly relocate: (owner: number, location: number) => void) {}

  /** A chunk for a value of 1 to LARGE_VALUE_BYTES bytes, owned by `owner`. */
  alloc(length: number, owner: number): number {
    const cls = CLASS_OF[(length + 7) >>> 3]!;
    const c = this.classes[cls]!;
    const slab = c.partial.length > 0 ? c.partial[c.partial.length - 1]! : this.newSlab(cls);
    return this.take(slab, c, owner);
  }

  /** Whether a value of `length` bytes fits the chunk at `location` (same class). */
  fits(location: number, length: number): boolean {
    const slab = this.slabs[Math.floor(location / SLAB_BYTES)]!;
    return slab.cls === CLASS_OF[(length + 7) >>> 3];
  }

  write(location: number, value: Uint8Array): void {
    const id = Math.floor(location / SLAB_BYTES);
    this.slabs[id]!.bytes.set(value, location - id * SLAB_BYTES);
  }

  /** A view of the bytes at `location`: valid only until the next change to the arena. */
  view(location: number, length: number): Uint8Array {
    const id = Math.floor(location / SLAB_BYTES);
    const offset = location - id * SLAB_BYTES;
    return this.slabs[id]!.bytes.subarray(offset, offset + length);
  }

  /** A copy of the bytes at `location` (a plain Uint8Array of its own). */
  read(location: number, length: number): Uint8Array {
    const id = Math.floor(location / SLAB_BYTES);
    const offset = location - id * SLAB_BYTES;
    return this.slabs[id]!.bytes.slice(offset, offset + length);
  }

  /** Copies a chunk's bytes into `target` at `at` (a batch of values sharing one buffer). */
  readInto(location: number, length: number, target: Uint8Array, at: number): void {
    const id = Math.floor(location / SLAB_BYTES);
    const offset = location - id * SLAB_BYTES;
    target.set(this.slabs[id]!.bytes.subarray(offset, offset + length), at);
  }

  free(location: number): void {
    const id = Math.floor(location / SLAB_BYTES);
    const slab = this.slabs[id]!;
    const c = this.classes[slab.cls]!;
    const chunk = (location - id * SLAB_BYTES) / slab.chunkBytes;
    slab.owner[chunk] = -1;
    slab.freed[slab.freedTop++] = chunk;
    slab.live--;
    this.chunkCount--;
    c.freeChunks++;
    if (slab.partialIndex < 0) {
      slab.partialIndex = c.partial.length;
      c.partial.push(slab);
    }
    if (slab.live === 0) {
      this.release(slab, c);
    } else if (c.freeChunks >= 2 * slab.capacity) {
      this.evacuate(c);
    }
  }

  clear(): void {
    this.slabs = [];
    this.freeIds = [];
    this.classes = CLASS_SIZES.map(() => ({ partial: [], freeChunks: 0 }));
    this.slabCount = 0;
    this.chunkCount = 0;
  }

  stats(): ArenaStats {
    let freeChunks = 0;
    let freeBytes = 0;
    this.classes.forEach((c, i) => {
      freeChunks += c.freeChunks;
      freeBytes += c.freeChunks * CLASS_SIZES[i]!;
    });
    return { slabs: this.slabCount, slabBytes: this.slabCount * SLAB_BYTES, chunks: this.chunkCount, freeChunks, freeBytes, moves: this.moves };
  }

  /** Checks the arena's bookkeeping; for tests. Throws on the first inconsistency. */
  check(): void {
    let slabs = 0;
    let chunks = 0;
    const freeByClass = CLASS_SIZES.map(() => 0);
    for (const slab of this.slabs) {
      if (slab === undefined) continue;
      slabs++;
      let live = 0;
      for (let i = 0; i < slab.capacity; i++) if (slab.owner[i]! >= 0) live++;
      if (live !== slab.live) throw new Error(`slab ${slab.id}: ${live} owned chunks, live says ${slab.live}`);
      if (live === 0) throw new Error(`slab ${slab.id}: empty but not released`);
      if (slab.capacity - slab.bump + slab.freedTop !== slab.capacity - live) throw new Error(`slab ${slab.id}: free chunks do not add up`);
      const c = this.classes[slab.cls]!;
      if ((slab.live < slab.capacity) !== (slab.partialIndex >= 0) || (slab.partialIndex >= 0 && c.partial[slab.partialIndex] !== slab)) {
        throw new Error(`slab ${slab.id}: partial list out of step`);
      }
      chunks += live;
      freeByClass[slab.cls]! += slab.capacity - live;
    }
    if (slabs !== this.slabCount) throw new Error(`${slabs} slabs, count says ${this.slabCount}`);
    if (chunks !== this.chunkCount) throw new Error(`${chunks} chunks, count says ${this.chunkCount}`);
    this.classes.forEach((c, i) => {
      if (c.freeChunks !== freeByClass[i]) throw new Error(`class ${CLASS_SIZES[i]}: ${freeByClass[i]} free chunks, count says ${c.freeChunks}`);
      if (c.freeChunks >= 2 * CHUNKS_PER_SLAB[i]!) throw new Error(`class ${CLASS_SIZES[i]}: ${c.freeChunks} free chunks, over two slabs' worth`);
    });
  }

  // --- internals -------------------------------------------------------------

  private newSlab(cls: number): Slab {
    const id = this.freeIds.length > 0 ? this.freeIds.pop()! : this.slabs.length;
    const capacity = CHUNKS_PER_SLAB[cls]!;
    const slab: Slab = {
      id,
      bytes: new Uint8Array(SLAB_BYTES),
      cls,
      chunkBytes: CLASS_SIZES[cls]!,
      capacity,
      live: 0,
      bump: 0,
      freed: new Uint16Array(capacity),
      freedTop: 0,
      owner: new Int32Array(capacity).fill(-1),
      partialIndex: -1,
    };
    this.slabs[id] = slab;
    this.slabCount++;
    const c = this.classes[cls]!;
    slab.partialIndex = c.partial.length;
    c.partial.push(slab);
    c.freeChunks += capacity;
    return slab;
  }

  /** Hands out a free chunk of `slab` (which has one). */
  private take(slab: Slab, c: SizeClass, owner: number): number {
    const chunk = slab.freedTop > 0 ? slab.freed[--slab.freedTop]! : slab.bump++;
    slab.owner[chunk] = owner;
    slab.live++;
    this.chunkCount++;
    c.freeChunks--;
    if (slab.live === slab.capacity) this.unlinkPartial(slab, c);
    return slab.id * SLAB_BYTES + chunk * slab.chunkBytes;
  }

  private unlinkPartial(slab: Slab, c: SizeClass): void {
    const last = c.partial.pop()!;
    if (last !== slab) {
      c.partial[slab.partialIndex] = last;
      last.partialIndex = slab.partialIndex;
    }
    slab.partialIndex = -1;
  }

  private release(slab: Slab, c: SizeClass): void {
    if (slab.partialIndex >= 0) this.unlinkPartial(slab, c);
    c.freeChunks -= slab.capacity - slab.live;
    this.slabs[slab.id] = undefined;
    this.freeIds.push(slab.id);
    this.slabCount--;
  }

  /**
   * Moves the values of the class's emptiest slab into free chunks of its other
   * slabs and releases it. Called with two slabs' worth of free chunks, so the
   * others have room for all of them.
   */
  private evacuate(c: SizeClass): void {
    let victim = c.partial[0]!;
    for (const slab of c.partial) if (slab.live < victim.live) victim = slab;
    this.unlinkPartial(victim, c);
    // Its free chunks are no longer available to take.
    c.freeChunks -= victim.capacity - victim.live;
    for (let chunk = 0; chunk < victim.capacity && victim.live > 0; chunk++) {
      const owner = victim.owner[chunk]!;
      if (owner < 0) continue;
      const target = c.partial[c.partial.length - 1]!;
      // take() counts the target chunk in (one free chunk fewer); the victim's
      // chunk is counted out below and was never in freeChunks any more.
      const location = this.take(target, c, owner);
      const from = chunk * victim.chunkBytes;
      const to = location - target.id * SLAB_BYTES;
      target.bytes.set(victim.bytes.subarray(from, from + victim.chunkBytes), to);
      victim.owner[chunk] = -1;
      victim.live--;
      this.chunkCount--;
      this.moves++;
      this.relocate(owner, location);
    }
    this.slabs[victim.id] = undefined;
    this.freeIds.push(victim.id);
    this.slabCount--;
  }
}
