/**
 * Property and unit tests of CacheStore.
 *
 * The properties drive the store and a deliberately simple model (a Map, an LRU
 * order as an array, a fake clock) with the same random sequence of operations
 * and compare, after every operation: results, errors, the exact stream of
 * changes (type, key, revision, value, flags, expiry), the revision counter and
 * the stats counters. Operations whose expiries depend on the slot layout
 * (sweepExpired, scan pages) are checked by replaying the reported changes
 * against the model: each must be the expiry of a key the model holds as
 * expired, with the next revision.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import type { Change } from "../src/store/change.js";
import { StoreError, type StoreErrorKind } from "../src/store/errors.js";
import { ExpirySweeper, FULL_PASS_MS, TICK_MS } from "../src/store/expiry-sweeper.js";
import { LARGE_VALUE_BYTES, SLAB_BYTES, chargedValueBytes, LARGE_VALUE_OVERHEAD_BYTES } from "../src/store/arena.js";
import {
  CacheStore,
  DEFAULT_LIMITS,
  ENTRY_OVERHEAD_BYTES,
  MAX_TTL_MS,
  entryBytes,
  type EntryView,
  type SetCondition,
  type StoreLimits,
} from "../src/store/store.js";

// --- run budget ---------------------------------------------------------------

/** Runs of the model comparison with no eviction (0.5 to 1.5 s). */
const NUM_RUNS_MODEL = 300;
/** Runs of the small-memory (eviction) property (0.5 to 1 s). */
const NUM_RUNS_EVICTION = 300;
/** Longest operation sequence per run. */
const MAX_OPS = 60;

const T0 = 1_700_000_000_000;
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const encoder = new TextEncoder();

// --- operations ---------------------------------------------------------------

/** `"current"` is resolved when the operation runs to the key's live revision (0 when absent). */
type RevisionPick = "current" | number;

type CondSpec =
  | { readonly kind: "none" }
  | { readonly kind: "ifAbsent" }
  | { readonly kind: "ifPresent" }
  | { readonly kind: "ifRevision"; readonly pick: RevisionPick };

type InnerOp =
  | {
      readonly op: "set";
      readonly key: string;
      readonly value: Uint8Array;
      readonly ttl: number;
      readonly flags: number;
      readonly cond: CondSpec;
    }
  | { readonly op: "get"; readonly key: string }
  | { readonly op: "getMany"; readonly keys: readonly string[] }
  | { readonly op: "delete"; readonly key: string; readonly ifRevision?: RevisionPick }
  | { readonly op: "incr"; readonly key: string; readonly delta: bigint; readonly ttl: number }
  | { readonly op: "touch"; readonly key: string; readonly ttl: number }
  | { readonly op: "sweep"; readonly maxExamined: number; readonly maxExpired: number };

type Op =
  | InnerOp
  | { readonly op: "flush" }
  | { readonly op: "advance"; readonly ms: number }
  | {
      readonly op: "scan";
      readonly prefix: string;
      /** Page limits, used in turn (0 = the store's default, 5000 = over its cap). */
      readonly limits: readonly number[];
      readonly keysOnly: boolean;
      /** Run between pages: i after page i. */
      readonly between: readonly InnerOp[];
    };

const KEYS = ["a", "ab", "b", "k:1", "k:2", "é", "€x"] as const;
const PREFIXES = ["", "a", "k:", "é", "z"] as const;

function arbitraries(maxValueLength: number, keys: readonly string[] = KEYS) {
  const key = fc.constantFrom(...keys);
  const decimal = fc
    .oneof(
      fc.bigInt({ min: -5n, max: 5n }),
      fc.bigInt({ min: INT64_MIN - 2n, max: INT64_MAX + 2n }),
      fc.constantFrom(INT64_MAX, INT64_MIN, INT64_MAX + 1n, INT64_MIN - 1n),
    )
    .map((n) => encoder.encode(n.toString()));
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: maxValueLength }) },
    { weight: 2, arbitrary: decimal },
  );
  const ttl = fc.oneof(
    { weight: 5, arbitrary: fc.constant(0) },
    { weight: 5, arbitrary: fc.integer({ min: 1, max: 100 }) },
    { weight: 1, arbitrary: fc.constantFrom(-1, 2.5, MAX_TTL_MS + 1) },
  );
  const revisionPick: fc.Arbitrary<RevisionPick> = fc.oneof(fc.constant("current" as const), fc.nat(40));
  const cond: fc.Arbitrary<CondSpec> = fc.oneof(
    { weight: 3, arbitrary: fc.constant({ kind: "none" as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: "ifAbsent" as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: "ifPresent" as const }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("ifRevision" as const), pick: revisionPick }) },
  );
  const delta = fc.oneof(
    { weight: 4, arbitrary: fc.bigInt({ min: -5n, max: 5n }) },
    { weight: 1, arbitrary: fc.constantFrom(INT64_MAX, INT64_MIN, 1n << 62n, -(1n << 62n)) },
  );
  const inner: fc.Arbitrary<InnerOp> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        op: fc.constant("set" as const),
        key,
        value,
        ttl,
        flags: fc.integer({ min: 0, max: 0xffff }),
        cond,
      }),
    },
    { weight: 4, arbitrary: fc.record({ op: fc.constant("get" as const), key }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("getMany" as const), keys: fc.array(key, { maxLength: 5 }) }) },
    {
      weight: 2,
      arbitrary: fc.record(
        { op: fc.constant("delete" as const), key, ifRevision: revisionPick },
        { requiredKeys: ["op", "key"] },
      ),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("incr" as const), key, delta, ttl }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant("touch" as const), key, ttl }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant("sweep" as const),
        maxExamined: fc.integer({ min: 0, max: 10 }),
        maxExpired: fc.integer({ min: 0, max: 10 }),
      }),
    },
  );
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 24, arbitrary: inner },
    { weight: 1, arbitrary: fc.constant({ op: "flush" as const }) },
    { weight: 4, arbitrary: fc.record({ op: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 30 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant("scan" as const),
        prefix: fc.constantFrom(...PREFIXES),
        limits: fc.array(fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constantFrom(0, 5000)), {
          minLength: 1,
          maxLength: 4,
        }),
        keysOnly: fc.boolean(),
        between: fc.array(inner, { maxLength: 4 }),
      }),
    },
  );
  return { op, ops: fc.array(op, { maxLength: MAX_OPS, size: "max" }) };
}

// --- the model ----------------------------------------------------------------

interface ModelEntry {
  readonly value: Uint8Array;
  readonly revision: number;
  readonly expiresAt: number;
  readonly flags: number;
  readonly size: number;
}

/** A change as compared: bytes as hex so a mismatch prints readably. */
interface ChangeRecord {
  readonly type: string;
  readonly revision: number;
  readonly key: string;
  readonly value: string | undefined;
  readonly flags: number;
  readonly expiresAt: number;
}

function record(change: Omit<Change, "revision"> & { revision: number }): ChangeRecord {
  return {
    type: change.type,
    revision: change.revision,
    key: change.key,
    value: change.value === undefined ? undefined : hex(change.value),
    flags: change.flags,
    expiresAt: change.expiresAt,
  };
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

function utf8Bytes(key: string): number {
  return Buffer.byteLength(key, "utf8");
}

function sizeOf(key: string, value: Uint8Array): number {
  return entryBytes(key, value.byteLength);
}

function validTtl(ttl: number): boolean {
  return Number.isInteger(ttl) && ttl >= 0 && ttl <= MAX_TTL_MS;
}

type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly kind: StoreErrorKind };

function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof StoreError) return { ok: false, kind: e.kind };
    throw e;
  }
}

function fail(kind: StoreErrorKind): Outcome<never> {
  return { ok: false, kind };
}

/**
 * The reference: every key in a Map (including keys past their deadline that
 * nothing has touched yet, which the store also still holds), recency as an
 * array from least to most recently used.
 */
class Model {
  now = T0;
  revision = 0;
  readonly entries = new Map<string, ModelEntry>();
  /** Least recently used first. */
  recency: string[] = [];
  hits = 0;
  misses = 0;
  evictions = 0;
  expirations = 0;
  /** Most keys held at once since the last flush: the slot table need never be larger. */
  peakKeys = 0;
  /** Changes the model made during the current operation. */
  changes: ChangeRecord[] = [];

  constructor(readonly maxMemoryBytes: number) {}

  bytes(): number {
    let total = 0;
    for (const e of this.entries.values()) total += e.size;
    return total;
  }

  isExpired(e: ModelEntry): boolean {
    return e.expiresAt !== 0 && e.expiresAt <= this.now;
  }

  /** The live entry without side effects. */
  peekLive(key: string): ModelEntry | undefined {
    const e = this.entries.get(key);
    return e === undefined || this.isExpired(e) ? undefined : e;
  }

  /** The live entry; a key past its deadline is removed with an "expire" change. */
  live(key: string): ModelEntry | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (this.isExpired(e)) {
      this.expirations++;
      this.remove(key, "expire");
      return undefined;
    }
    return e;
  }

  emit(type: Change["type"], key: string, value?: Uint8Array, flags = 0, expiresAt = 0): number {
    const revision = ++this.revision;
    this.changes.push(record({ type, revision, key, value, flags, expiresAt }));
    return revision;
  }

  remove(key: string, type: "delete" | "expire" | "evict"): number {
    assert.ok(this.entries.delete(key), `model: removing absent key ${key}`);
    this.recency = this.recency.filter((k) => k !== key);
    return this.emit(type, key);
  }

  use(key: string): void {
    this.recency = this.recency.filter((k) => k !== key);
    this.recency.push(key);
  }

  /**
   * Writes `key` (whose old entry, if any, is live), first evicting least
   * recently used keys other than `key` until the new size fits.
   */
  write(key: string, value: Uint8Array, flags: number, expiresAt: number): number {
    const size = sizeOf(key, value);
    const oldSize = this.entries.get(key)?.size ?? 0;
    while (this.bytes() - oldSize + size > this.maxMemoryBytes) {
      const victim = this.recency.find((k) => k !== key);
      assert.ok(victim !== undefined, "model: nothing left to evict");
      this.evictions++;
      this.remove(victim, "evict");
    }
    const revision = this.emit("put", key, value, flags, expiresAt);
    this.entries.set(key, { value, revision, expiresAt, flags, size });
    this.use(key);
    this.peakKeys = Math.max(this.peakKeys, this.entries.size);
    return revision;
  }

  expiryOf(ttl: number): number {
    return ttl === 0 ? 0 : this.now + ttl;
  }

  view(key: string, e: ModelEntry): ViewRecord {
    return { key, value: hex(e.value), revision: e.revision, ttlMs: e.expiresAt === 0 ? 0 : e.expiresAt - this.now, flags: e.flags };
  }

  resolve(pick: RevisionPick, key: string): number {
    return pick === "current" ? (this.peekLive(key)?.revision ?? 0) : pick;
  }

  // --- operations, mirroring CacheStore's API ---

  set(key: string, value: Uint8Array, ttl: number, flags: number, cond: SetCondition): Outcome<{ applied: boolean; revision: number }> {
    if (!validTtl(ttl)) return fail("invalid_argument");
    if (sizeOf(key, value) > this.maxMemoryBytes) return fail("resource_exhausted");
    const current = this.live(key);
    const holds =
      cond.kind === "none" ||
      (cond.kind === "ifAbsent" && current === undefined) ||
      (cond.kind === "ifPresent" && current !== undefined) ||
      (cond.kind === "ifRevision" && (current?.revision ?? 0) === cond.revision);
    if (!holds) return { ok: true, value: { applied: false, revision: current?.revision ?? 0 } };
    return { ok: true, value: { applied: true, revision: this.write(key, value, flags, this.expiryOf(ttl)) } };
  }

  get(key: string): ViewRecord | undefined {
    const current = this.live(key);
    if (current === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.use(key);
    return this.view(key, current);
  }

  delete(key: string, ifRevision: number | undefined): { deleted: boolean; revision: number } {
    const current = this.live(key);
    if (current === undefined) return { deleted: false, revision: 0 };
    if (ifRevision !== undefined && ifRevision !== current.revision) return { deleted: false, revision: current.revision };
    return { deleted: true, revision: this.remove(key, "delete") };
  }

  increment(key: string, delta: bigint, ttl: number): Outcome<{ value: bigint; revision: number }> {
    if (!validTtl(ttl)) return fail("invalid_argument");
    const current = this.live(key);
    let base = 0n;
    if (current !== undefined) {
      const text = Buffer.from(current.value).toString("latin1");
      if (!/^-?[0-9]+$/.test(text)) return fail("failed_precondition");
      base = BigInt(text);
      if (base > INT64_MAX || base < INT64_MIN) return fail("failed_precondition");
    }
    const result = base + delta;
    if (result > INT64_MAX || result < INT64_MIN) return fail("out_of_range");
    const value = encoder.encode(result.toString());
    if (sizeOf(key, value) > this.maxMemoryBytes) return fail("resource_exhausted");
    const expiresAt = current !== undefined ? current.expiresAt : this.expiryOf(ttl);
    const revision = this.write(key, value, current?.flags ?? 0, expiresAt);
    return { ok: true, value: { value: result, revision } };
  }

  touch(key: string, ttl: number): Outcome<{ found: boolean; revision: number }> {
    if (!validTtl(ttl)) return fail("invalid_argument");
    const current = this.live(key);
    if (current === undefined) return { ok: true, value: { found: false, revision: 0 } };
    return { ok: true, value: { found: true, revision: this.write(key, current.value, current.flags, this.expiryOf(ttl)) } };
  }

  flush(): number {
    this.entries.clear();
    this.recency = [];
    this.peakKeys = 0;
    return this.emit("flush", "");
  }

  /** Accepts a change the store made on its own schedule: it must expire a key the model holds as expired. */
  acceptExpiry(change: ChangeRecord, prefix = ""): void {
    assert.equal(change.type, "expire", `unexpected ${change.type} of "${change.key}" during a sweep or scan`);
    assert.ok(change.key.startsWith(prefix), `expired "${change.key}", outside the scanned prefix "${prefix}"`);
    const e = this.entries.get(change.key);
    assert.ok(e !== undefined, `expired "${change.key}", which is not held`);
    assert.ok(this.isExpired(e), `expired "${change.key}" before its deadline (expiresAt ${e.expiresAt}, now ${this.now})`);
    assert.equal(this.live(change.key), undefined);
  }

  expiredCount(prefix = ""): number {
    let n = 0;
    for (const [k, e] of this.entries) if (k.startsWith(prefix) && this.isExpired(e)) n++;
    return n;
  }
}

interface ViewRecord {
  readonly key: string;
  readonly value: string;
  readonly revision: number;
  readonly ttlMs: number;
  readonly flags: number;
}

function viewRecord(v: EntryView): ViewRecord {
  return { key: v.key, value: hex(v.value), revision: v.revision, ttlMs: v.ttlMs, flags: v.flags };
}

// --- the harness --------------------------------------------------------------

class Harness {
  readonly model: Model;
  readonly store: CacheStore;
  /** Changes the store reported during the current operation. */
  private reported: ChangeRecord[] = [];
  private lastReported = 0;

  constructor(
    maxMemoryBytes: number,
    private readonly checkBytes: boolean,
  ) {
    this.model = new Model(maxMemoryBytes);
    const model = this.model;
    this.store = new CacheStore({ limits: { maxMemoryBytes }, clock: { now: () => model.now } });
    this.store.onChange((c) => {
      // Every change once, in revision order, one revision each.
      assert.equal(c.revision, this.lastReported + 1, `change ${c.type} "${c.key}" out of revision order`);
      this.lastReported = c.revision;
      this.reported.push(record(c));
    });
  }

  private begin(): void {
    this.reported = [];
    this.model.changes = [];
  }

  /** Compares the changes of one operation and the state counters. */
  private settle(what: string): void {
    assert.deepEqual(this.reported, this.model.changes, `changes of ${what}`);
    this.check(what);
  }

  private check(what: string): void {
    const { store, model } = this;
    assert.equal(store.currentRevision, model.revision, `revision after ${what}`);
    const stats = store.stats();
    assert.deepEqual(
      { keys: stats.keys, size: store.size, hits: stats.hits, misses: stats.misses, evictions: stats.evictions, expirations: stats.expirations },
      { keys: model.entries.size, size: model.entries.size, hits: model.hits, misses: model.misses, evictions: model.evictions, expirations: model.expirations },
      `stats after ${what}`,
    );
    assert.ok(store.slotCount >= model.entries.size && store.slotCount <= model.peakKeys, `slot table of ${store.slotCount} after ${what}`);
    store.checkInvariants();
    if (this.checkBytes) {
      assert.equal(stats.bytesUsed, model.bytes(), `bytesUsed after ${what}`);
      assert.ok(stats.bytesUsed <= model.maxMemoryBytes, `bytesUsed ${stats.bytesUsed} over the bound ${model.maxMemoryBytes}`);
    }
  }

  run(op: Op): void {
    const { store, model } = this;
    const what = describeOp(op);
    this.begin();
    // The store's result and the model's, compared after the changes (which explain more).
    let actual: unknown;
    let expected: unknown;
    switch (op.op) {
      case "set": {
        const cond: SetCondition =
          op.cond.kind === "ifRevision" ? { kind: "ifRevision", revision: model.resolve(op.cond.pick, op.key) } : op.cond;
        const mine = op.value.slice();
        actual = attempt(() => store.set(op.key, mine, { ttlMs: op.ttl, flags: op.flags, condition: cond }));
        mine.fill(0xee); // the store must have copied the bytes
        expected = model.set(op.key, op.value, op.ttl, op.flags, cond);
        break;
      }
      case "get": {
        const got = store.get(op.key);
        actual = got === undefined ? undefined : viewRecord(got);
        expected = model.get(op.key);
        break;
      }
      case "getMany": {
        const got = store.getMany(op.keys);
        actual = got.map((g) => (g === undefined ? undefined : viewRecord(g)));
        for (const g of got) g?.value.fill(0xee); // copies: the store must not see this
        expected = op.keys.map((k) => model.get(k));
        break;
      }
      case "delete": {
        const ifRevision = op.ifRevision === undefined ? undefined : model.resolve(op.ifRevision, op.key);
        actual = store.delete(op.key, ifRevision);
        expected = model.delete(op.key, ifRevision);
        break;
      }
      case "incr":
        actual = attempt(() => store.increment(op.key, op.delta, op.ttl));
        expected = model.increment(op.key, op.delta, op.ttl);
        break;
      case "touch":
        actual = attempt(() => store.touch(op.key, op.ttl));
        expected = model.touch(op.key, op.ttl);
        break;
      case "flush":
        actual = store.flush();
        expected = model.flush();
        break;
      case "advance":
        model.now += op.ms;
        break;
      case "sweep": {
        const slots = store.slotCount;
        const due = model.expiredCount();
        const removed = store.sweepExpired(op.maxExamined, op.maxExpired);
        for (const c of this.reported) model.acceptExpiry(c);
        assert.equal(removed, this.reported.length, `${what}: return value vs changes`);
        assert.ok(removed <= op.maxExpired && removed <= op.maxExamined, `${what} removed ${removed}`);
        if (op.maxExamined >= slots && op.maxExpired >= due) {
          assert.equal(model.expiredCount(), 0, `${what} examined the whole table but left expired keys`);
        }
        break;
      }
      case "scan":
        this.scan(op);
        return; // checked page by page
    }
    this.settle(what);
    assert.deepEqual(actual, expected, `result of ${what}`);
  }

  private scan(op: Extract<Op, { op: "scan" }>): void {
    const { store, model } = this;
    const what = describeOp(op);
    const atStart = [...model.entries.keys()].filter((k) => k.startsWith(op.prefix) && model.peekLive(k) !== undefined);
    const absentAtSomePoint = new Set<string>();
    const seen = new Map<string, number>();
    let cursor = "";
    for (let page = 0; ; page++) {
      assert.ok(page < 10_000, `${what}: no end after 10000 pages`);
      const limit = op.limits[page % op.limits.length]!;
      this.begin();
      const result = store.scan(op.prefix, cursor, limit, op.keysOnly);
      for (const c of this.reported) model.acceptExpiry(c, op.prefix);
      this.check(`${what} page ${page}`);
      const max = limit === 0 ? 100 : Math.min(limit, 1000);
      assert.ok(result.entries.length <= max, `${what}: page of ${result.entries.length} over limit ${limit}`);
      for (const entry of result.entries) {
        const e = model.peekLive(entry.key);
        assert.ok(e !== undefined, `${what}: returned "${entry.key}", which is not live (expired or absent)`);
        assert.ok(entry.key.startsWith(op.prefix), `${what}: returned "${entry.key}"`);
        const expected = model.view(entry.key, e);
        assert.deepEqual(viewRecord(entry), op.keysOnly ? { ...expected, value: "" } : expected, `${what}: entry`);
        seen.set(entry.key, (seen.get(entry.key) ?? 0) + 1);
      }
      cursor = result.nextCursor;
      if (cursor === "") break;
      const inner = op.between[page];
      if (inner !== undefined) {
        this.run(inner);
        for (const k of atStart) if (model.peekLive(k) === undefined) absentAtSomePoint.add(k);
      }
    }
    for (const k of atStart) {
      if (!absentAtSomePoint.has(k)) assert.equal(seen.get(k) ?? 0, 1, `${what}: "${k}", present throughout, returned ${seen.get(k) ?? 0} times`);
    }
    // The scan examined every slot: nothing with the prefix is left past its deadline.
    assert.equal(model.expiredCount(op.prefix), 0, `${what}: expired keys with the prefix left behind`);
  }
}

function describeOp(op: Op): string {
  return JSON.stringify(op, (_k, v: unknown) =>
    typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? `0x${hex(v)}` : v,
  );
}

// --- properties -----------------------------------------------------------------

describe("CacheStore against a model", () => {
  test("results, revisions, changes and expiry match the model (no eviction)", () => {
    const { ops } = arbitraries(12);
    fc.assert(
      fc.property(ops, (list) => {
        // Large enough that nothing in these runs is ever evicted.
        const h = new Harness(DEFAULT_LIMITS.maxMemoryBytes, false);
        for (const op of list) h.run(op);
        assert.equal(h.store.stats().evictions, 0);
      }),
      { numRuns: NUM_RUNS_MODEL, includeErrorInReport: true },
    );
  });

  test("small memory bound: bytes counted exactly, never over the bound, LRU keys evicted with an evict change", () => {
    // Fewer keys, so writes often overwrite the least recently used one.
    const { ops } = arbitraries(40, ["a", "k:1", "k:2", "é"]);
    // Room for the overhead of one to four entries and some of their bytes
    // (keys and values are 0 to 42 bytes): writes that grow a value evict too.
    const maxMemory = fc
      .integer({ min: 1, max: 4 })
      .chain((n) => fc.integer({ min: n * ENTRY_OVERHEAD_BYTES + 20, max: n * (ENTRY_OVERHEAD_BYTES + 56) }));
    fc.assert(
      fc.property(maxMemory, ops, (maxMemoryBytes, list) => {
        const h = new Harness(maxMemoryBytes, true);
        for (const op of list) h.run(op);
      }),
      { numRuns: NUM_RUNS_EVICTION, includeErrorInReport: true },
    );
  });
});

// --- unit tests -----------------------------------------------------------------------

function expectStoreError(fn: () => unknown, kind: StoreErrorKind, ...patterns: RegExp[]): StoreError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof StoreError, `expected a StoreError ${kind}, got ${caught === undefined ? "no error" : String(caught)}`);
  assert.equal(caught.kind, kind, caught.message);
  for (const p of patterns) assert.match(caught.message, p);
  return caught;
}

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

function text(value: Uint8Array | undefined): string | undefined {
  return value === undefined ? undefined : Buffer.from(value).toString("utf8");
}

/** A store on a fake clock that records its changes. */
function fixture(limits: Partial<StoreLimits> = {}) {
  const clock = { t: T0, now: () => clock.t };
  const store = new CacheStore({ limits, clock });
  const changes: Change[] = [];
  store.onChange((c) => changes.push(c));
  return { store, clock, changes };
}

describe("CacheStore limits", () => {
  test("empty key", () => {
    const { store } = fixture();
    for (const fn of [
      () => store.set("", bytes("v")),
      () => store.get(""),
      () => store.delete(""),
      () => store.increment("", 1n),
      () => store.touch("", 10),
    ]) {
      expectStoreError(fn, "invalid_argument", /empty/);
    }
  });

  test("key over maxKeyBytes, counted in UTF-8 bytes", () => {
    const { store } = fixture({ maxKeyBytes: 8 });
    // At the limit: 8 ASCII, 4 × 2-byte, 2 × 4-byte (surrogate pairs).
    for (const key of ["abcdefgh", "éééé", "😀😀"]) assert.equal(store.set(key, bytes("v")).applied, true, key);
    // Over it, though each is at most 8 UTF-16 units.
    for (const [key, size] of [
      ["abcdefghi", 9],
      ["ééééé", 10],
      ["€€€", 9],
      ["😀😀a", 9],
    ] as const) {
      for (const fn of [
        () => store.set(key, bytes("v")),
        () => store.get(key),
        () => store.delete(key),
        () => store.increment(key, 1n),
        () => store.touch(key, 1),
      ]) {
        expectStoreError(fn, "invalid_argument", new RegExp(`\\b${size} bytes`), /max-key-bytes/, /\b8\b/);
      }
    }
  });

  test("value over maxValueBytes", () => {
    const { store } = fixture({ maxValueBytes: 16 });
    assert.equal(store.set("k", new Uint8Array(16)).applied, true);
    expectStoreError(() => store.set("k", new Uint8Array(17)), "invalid_argument", /\b17 bytes/, /max-value-bytes/, /\b16\b/);
    expectStoreError(() => store.validateSet("k", new Uint8Array(17)), "invalid_argument", /\b17 bytes/);
  });

  test("negative, non-integer and too long TTLs", () => {
    const { store } = fixture();
    store.set("k", bytes("1"));
    for (const ttl of [-1, -1000, 0.5, 2.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const seen = new RegExp(String(ttl).replace(/[.+]/g, "\\$&"));
      expectStoreError(() => store.set("k", bytes("v"), { ttlMs: ttl }), "invalid_argument", /ttl_ms/, seen);
      expectStoreError(() => store.increment("k", 1n, ttl), "invalid_argument", /ttl_ms/, seen);
      expectStoreError(() => store.touch("k", ttl), "invalid_argument", /ttl_ms/, seen);
    }
    expectStoreError(() => store.set("k", bytes("v"), { ttlMs: MAX_TTL_MS + 1 }), "invalid_argument", new RegExp(String(MAX_TTL_MS + 1)), new RegExp(String(MAX_TTL_MS)));
    assert.equal(store.set("k", bytes("v"), { ttlMs: MAX_TTL_MS }).applied, true);
  });

  test("entry larger than maxMemoryBytes is resource_exhausted", () => {
    const max = entryBytes("k", 99);
    const { store } = fixture({ maxMemoryBytes: max });
    // key 1 byte + value 99 bytes (as the arena holds them) + overhead = exactly the bound: fits.
    assert.equal(store.set("k", new Uint8Array(99)).applied, true);
    const size = entryBytes("k", 200);
    assert.ok(size > max);
    expectStoreError(() => store.set("k", new Uint8Array(200)), "resource_exhausted", new RegExp(`\\b${size} bytes`), new RegExp(`\\b${max} bytes`));
    expectStoreError(() => store.validateSet("k", new Uint8Array(200)), "resource_exhausted");
  });
});

describe("CacheStore increment", () => {
  test("non-integer value is failed_precondition", () => {
    const { store } = fixture();
    for (const v of ["", "abc", "1.5", " 1", "1 ", "+1", "0x10", "1e3", "9223372036854775808", "-9223372036854775809"]) {
      store.set("k", bytes(v));
      expectStoreError(() => store.increment("k", 1n), "failed_precondition", /"k"/);
    }
  });

  test("int64 overflow is out_of_range", () => {
    const { store } = fixture();
    store.set("max", bytes(INT64_MAX.toString()));
    store.set("min", bytes(INT64_MIN.toString()));
    expectStoreError(() => store.increment("max", 1n), "out_of_range", /overflow/);
    expectStoreError(() => store.increment("min", -1n), "out_of_range", /overflow/);
    expectStoreError(() => store.increment("absent", INT64_MAX + 1n), "out_of_range");
    assert.equal(store.increment("max", -1n).value, INT64_MAX - 1n);
    assert.equal(store.increment("min", INT64_MAX).value, -1n);
    assert.equal(store.increment("absent", INT64_MIN).value, INT64_MIN);
  });

  test("missing key starts at 0 with the given TTL; an existing key keeps its TTL and flags", () => {
    const { store, clock } = fixture();
    assert.deepEqual(store.increment("n", 5n, 1000), { value: 5n, revision: 1 });
    assert.equal(store.get("n")?.ttlMs, 1000);
    store.set("c", bytes("10"), { ttlMs: 1000, flags: 7 });
    clock.t += 400;
    assert.equal(store.increment("c", 2n, 5).value, 12n);
    assert.deepEqual({ ...store.get("c"), value: text(store.get("c")?.value) }, { key: "c", value: "12", revision: 3, ttlMs: 600, flags: 7 });
    store.set("p", bytes("1"));
    store.increment("p", 1n, 50);
    assert.equal(store.get("p")?.ttlMs, 0, "a key without expiry stays without one");
    clock.t += 600;
    assert.equal(store.get("c"), undefined, "expired at the original deadline");
    assert.equal(store.increment("c", 1n).value, 1n, "expired key counts from 0");
  });
});

describe("CacheStore writes", () => {
  test("a failed write changes nothing", () => {
    // Room for "k" and "n" (825 bytes with 400 of overhead) but not for a 600-byte value.
    const { store, changes } = fixture({ maxKeyBytes: 16, maxValueBytes: 1024, maxMemoryBytes: 2 * ENTRY_OVERHEAD_BYTES + 200 });
    store.set("k", bytes("text"), { ttlMs: 5000, flags: 3 });
    store.set("n", bytes(INT64_MAX.toString()));
    const before = { stats: store.stats(), changes: changes.length };
    const failures: [() => unknown, StoreErrorKind][] = [
      [() => store.set("k", new Uint8Array(1025)), "invalid_argument"],
      [() => store.set("k", bytes("v"), { ttlMs: -1 }), "invalid_argument"],
      [() => store.set("", bytes("v")), "invalid_argument"],
      [() => store.set("k".repeat(17), bytes("v")), "invalid_argument"],
      [() => store.set("kk", new Uint8Array(ENTRY_OVERHEAD_BYTES + 200), { condition: { kind: "ifAbsent" } }), "resource_exhausted"],
      [() => store.increment("k", 1n), "failed_precondition"],
      [() => store.increment("n", 1n), "out_of_range"],
      [() => store.increment("k", 1n, 1.5), "invalid_argument"],
      [() => store.touch("k", -5), "invalid_argument"],
    ];
    for (const [fn, kind] of failures) {
      expectStoreError(fn, kind);
      assert.deepEqual(store.stats(), before.stats);
      assert.equal(store.currentRevision, before.stats.revision);
      assert.equal(changes.length, before.changes);
    }
    // Unapplied conditions change nothing either.
    assert.deepEqual(store.set("k", bytes("x"), { condition: { kind: "ifAbsent" } }), { applied: false, revision: 1 });
    assert.deepEqual(store.set("k", bytes("x"), { condition: { kind: "ifRevision", revision: 99 } }), { applied: false, revision: 1 });
    assert.deepEqual(store.set("z", bytes("x"), { condition: { kind: "ifPresent" } }), { applied: false, revision: 0 });
    assert.deepEqual(store.delete("k", 99), { deleted: false, revision: 1 });
    assert.equal(store.currentRevision, before.stats.revision);
    assert.equal(changes.length, before.changes);
    const k = store.get("k");
    assert.deepEqual({ value: text(k?.value), revision: k?.revision, ttlMs: k?.ttlMs, flags: k?.flags }, { value: "text", revision: 1, ttlMs: 5000, flags: 3 });
    assert.equal(text(store.get("n")?.value), INT64_MAX.toString());
  });

  test("the store copies values", () => {
    const { store, changes } = fixture();
    const plain = bytes("hello");
    store.set("plain", plain);
    plain.fill(0);
    assert.equal(text(store.get("plain")?.value), "hello");

    // A Buffer subarray: a view into a larger (here pooled) buffer.
    const parent = Buffer.from("xxxhelloyyy");
    const view = parent.subarray(3, 8);
    store.set("view", view);
    parent.fill(0x21);
    const got = store.get("view")!;
    assert.equal(text(got.value), "hello");
    assert.equal(got.value.byteLength, 5);
    assert.equal(got.value.buffer.byteLength, 5, "the copy holds exactly the bytes, not the parent buffer");
    assert.notEqual(got.value.buffer, parent.buffer);
    assert.equal(text(changes.at(-1)?.value), "hello", "the change carries the copy too");

    // Overwrite and a conditional write copy as well.
    const again = Buffer.from("__world__").subarray(2, 7);
    store.set("view", again, { condition: { kind: "ifPresent" } });
    again.fill(0x21);
    assert.equal(text(store.get("view")?.value), "world");
  });

  test("bytesUsed follows overwrites, increments and touches", () => {
    const { store } = fixture();
    const size = entryBytes;
    store.set("a", new Uint8Array(10));
    assert.equal(store.stats().bytesUsed, size("a", 10));
    store.set("a", new Uint8Array(1000));
    assert.equal(store.stats().bytesUsed, size("a", 1000), "after growing a value");
    store.set("a", new Uint8Array(1));
    assert.equal(store.stats().bytesUsed, size("a", 1), "after shrinking a value");
    store.set("n", bytes("9"));
    store.increment("n", 1n);
    assert.equal(store.stats().bytesUsed, size("a", 1) + size("n", 2), "after an increment that adds a digit");
    store.delete("a");
    store.delete("n");
    assert.equal(store.stats().bytesUsed, 0);
  });

  test("the memory bound holds when values grow in place", () => {
    const max = 4 * (ENTRY_OVERHEAD_BYTES + 101);
    const { store } = fixture({ maxMemoryBytes: max });
    for (let round = 0; round < 3; round++) {
      for (const key of ["a", "b", "c", "d"]) store.set(key, new Uint8Array(round === 0 ? 1 : 100 * round));
    }
    let counted = 0;
    for (const e of store.scan("", "", 1000, false).entries) counted += entryBytes(e.key, e.value.byteLength);
    assert.equal(store.stats().bytesUsed, counted, "bytesUsed vs the bytes of the entries held");
    assert.ok(counted <= max, `holding ${counted} bytes over the bound of ${max}`);
  });

  test("a key overwritten during a scan, by a write that evicts, is returned once", () => {
    const entry = (valueBytes: number) => entryBytes("k", valueBytes);
    const { store, changes } = fixture({ maxMemoryBytes: 4 * entry(10) + 50 });
    for (const key of ["a", "b", "c", "d"]) store.set(key, new Uint8Array(10));
    store.get("b");
    store.get("d"); // recency, least recent first: a, c, b, d
    const first = store.scan("", "", 1, true);
    assert.deepEqual(first.entries.map((e) => e.key), ["a"]);
    changes.length = 0;
    store.set("a", new Uint8Array(100)); // needs room: "c" goes; "a" is overwritten, never absent
    const rest = store.scan("", first.nextCursor, 100, true);
    assert.equal(rest.nextCursor, "");
    assert.deepEqual([...first.entries, ...rest.entries].map((e) => e.key), ["a", "b", "d"], "each key present throughout, once");
    assert.deepEqual(changes.map((c) => `${c.type} ${c.key}`), ["evict c", "put a"]);
  });

  test("overwriting the least recently used key evicts other keys, not the key written", () => {
    const entry = (valueBytes: number) => entryBytes("k", valueBytes);
    const { store, changes } = fixture({ maxMemoryBytes: entry(100) + entry(10) + entry(10) - 1 });
    store.set("a", new Uint8Array(10));
    store.set("b", new Uint8Array(10));
    store.set("c", new Uint8Array(10));
    // "a" is least recently used; growing it needs room: "b" goes, "a" stays.
    changes.length = 0;
    store.set("a", new Uint8Array(100));
    assert.deepEqual(
      changes.map((c) => `${c.type} ${c.key}`),
      ["evict b", "put a"],
    );
    assert.equal(store.stats().evictions, 1);
  });
});

describe("CacheStore active expiry", () => {
  const N = 100_000;
  const PERSISTENT = 1_000;
  // The sweeper's promise: the whole table examined at least once per FULL_PASS_MS, a tick every TICK_MS.

  function loaded(ttlOf: (i: number) => number) {
    const fx = fixture();
    const value = new Uint8Array(8);
    const deadline = new Map<string, number>();
    for (let i = 0; i < N; i++) {
      const ttl = ttlOf(i);
      fx.store.set(`ttl:${i}`, value, { ttlMs: ttl });
      deadline.set(`ttl:${i}`, fx.clock.t + ttl);
    }
    for (let i = 0; i < PERSISTENT; i++) fx.store.set(`keep:${i}`, value);
    let keptBytes = 0;
    for (let i = 0; i < PERSISTENT; i++) keptBytes += sizeOf(`keep:${i}`, value);
    fx.changes.length = 0;
    return { ...fx, sweeper: new ExpirySweeper(fx.store), deadline, keptBytes };
  }

  function checkDrained(fx: ReturnType<typeof loaded>): void {
    const { store, changes, keptBytes } = fx;
    assert.equal(store.size, PERSISTENT);
    assert.equal(changes.length, N);
    const expired = new Set<string>();
    for (const c of changes) {
      assert.equal(c.type, "expire");
      expired.add(c.key);
    }
    assert.equal(expired.size, N, "each key expired once");
    const stats = store.stats();
    assert.deepEqual(
      { expirations: stats.expirations, hits: stats.hits, misses: stats.misses, bytesUsed: stats.bytesUsed },
      { expirations: N, hits: 0, misses: 0, bytesUsed: keptBytes },
    );
  }

  test("100,000 keys with spread TTLs expire through sweeper ticks within a full pass of their deadline, unread", () => {
    const fx = loaded((i) => 1 + ((i * 7919) % 1000));
    const { store, clock, changes, sweeper, deadline } = fx;
    const start = clock.t;
    let ticks = 0;
    while (store.size > PERSISTENT) {
      assert.ok(ticks < 1000 / TICK_MS + FULL_PASS_MS / TICK_MS + 1, `${store.size - PERSISTENT} keys left after ${ticks} ticks`);
      const before = changes.length;
      clock.t += TICK_MS;
      sweeper.tick();
      ticks++;
      for (let i = before; i < changes.length; i++) {
        const key = changes[i]!.key;
        const due = deadline.get(key)!;
        if (due > clock.t) assert.fail(`"${key}" expired before its deadline`);
        if (clock.t - due > FULL_PASS_MS + TICK_MS) assert.fail(`"${key}" expired ${clock.t - due} ms after its deadline`);
      }
    }
    assert.ok(clock.t - start <= 1000 + FULL_PASS_MS + TICK_MS);
    checkDrained(fx);
  });

  test("100,000 keys expiring at once are all removed by sweeper ticks, unread", () => {
    const fx = loaded(() => 1000);
    const { store, clock, sweeper } = fx;
    assert.equal(sweeper.tick(), 0, "nothing is due yet");
    clock.t += 1000;
    let ticks = 0;
    let removed = 0;
    // A mass expiry is spread over ticks (at most 20,000 a tick): allow twice a full pass.
    while (store.size > PERSISTENT && ticks < (2 * FULL_PASS_MS) / TICK_MS) {
      removed += sweeper.tick();
      ticks++;
    }
    assert.equal(store.size, PERSISTENT, `${store.size - PERSISTENT} keys still held after ${ticks} ticks`);
    assert.equal(removed, N);
    checkDrained(fx);
    assert.equal(sweeper.tick(), 0);
  });
});

// --- the value arena ------------------------------------------------------------

describe("CacheStore value arena", () => {
  /** Deterministic value bytes for (key, version, length). */
  function valueOf(key: string, version: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let x = (version * 2654435761) ^ key.length;
    for (let i = 0; i < key.length; i++) x = Math.imul(x ^ key.charCodeAt(i), 16777619);
    for (let i = 0; i < length; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out[i] = x >>> 24;
    }
    return out;
  }

  function assertHolds(store: CacheStore, expected: Map<string, Uint8Array>, what: string): void {
    store.checkInvariants();
    assert.equal(store.size, expected.size, `keys after ${what}`);
    let bytes = 0;
    for (const [key, value] of expected) {
      const got = store.get(key);
      assert.ok(got !== undefined, `"${key}" missing after ${what}`);
      assert.ok(Buffer.from(got.value).equals(Buffer.from(value)), `value of "${key}" after ${what}`);
      bytes += entryBytes(key, value.byteLength);
    }
    assert.equal(store.stats().bytesUsed, bytes, `bytesUsed after ${what}`);
  }

  const lengths = fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 6, arbitrary: fc.integer({ min: 1, max: 300 }) },
    { weight: 3, arbitrary: fc.integer({ min: 301, max: LARGE_VALUE_BYTES }) },
    { weight: 1, arbitrary: fc.integer({ min: LARGE_VALUE_BYTES - 2, max: LARGE_VALUE_BYTES + 2 }) },
    { weight: 1, arbitrary: fc.integer({ min: LARGE_VALUE_BYTES + 1, max: 3 * LARGE_VALUE_BYTES }) },
  );

  // Values of the largest class (8 chunks a slab), so a few dozen keys make the arena evacuate slabs.
  const bigLengths = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: LARGE_VALUE_BYTES - 800, max: LARGE_VALUE_BYTES }) }, { weight: 1, arbitrary: fc.constant(0) });

  for (const [name, length] of [["lengths of every kind", lengths], ["values of 7 to 8 KiB (compaction)", bigLengths]] as const) test(`random writes, overwrites across size classes, deletes and flushes, ${name}: values intact, bookkeeping exact`, () => {
    const op = fc.oneof(
      { weight: 160, arbitrary: fc.record({ op: fc.constant("set" as const), key: fc.nat(60), length }) },
      { weight: 60, arbitrary: fc.record({ op: fc.constant("delete" as const), key: fc.nat(60) }) },
      { weight: 20, arbitrary: fc.record({ op: fc.constant("touch" as const), key: fc.nat(60) }) },
      { weight: 20, arbitrary: fc.record({ op: fc.constant("incr" as const), key: fc.nat(60) }) },
      { weight: 10, arbitrary: fc.record({ op: fc.constant("deleteEvery" as const), key: fc.nat(3), step: fc.integer({ min: 2, max: 4 }) }) },
      { weight: 1, arbitrary: fc.constant({ op: "flush" as const }) },
    );
    let moves = 0;
    fc.assert(
      fc.property(fc.array(op, { minLength: 100, maxLength: 300 }), (ops) => {
        const { store } = fixture({ maxValueBytes: 4 * LARGE_VALUE_BYTES, maxMemoryBytes: Number.MAX_SAFE_INTEGER });
        const expected = new Map<string, Uint8Array>();
        let version = 0;
        for (const o of ops) {
          if (o.op === "flush") {
            store.flush();
            expected.clear();
            continue;
          }
          if (o.op === "deleteEvery") {
            // Scattered deletes: every step-th key, leaving slabs partly used.
            for (let k = o.key; k <= 60; k += o.step) {
              store.delete(`k${k}`);
              expected.delete(`k${k}`);
            }
            store.checkInvariants();
            continue;
          }
          const key = `k${o.key}`;
          if (o.op === "set") {
            const value = valueOf(key, ++version, o.length);
            store.set(key, value);
            expected.set(key, value);
          } else if (o.op === "delete") {
            store.delete(key);
            expected.delete(key);
          } else if (o.op === "touch") {
            store.touch(key, 0);
          } else {
            store.set(key, bytes(String(o.key)));
            store.increment(key, 1n);
            expected.set(key, bytes(String(o.key + 1)));
          }
          store.checkInvariants();
        }
        assertHolds(store, expected, "the sequence");
        moves += store.arenaStats().moves;
      }),
      { numRuns: 60, includeErrorInReport: true },
    );
    if (length === bigLengths) assert.ok(moves > 0, "the runs moved values");
  });

  test("an overwrite with a value of the same size class reuses its chunk: no new slab, nothing moved", () => {
    const { store } = fixture({ maxMemoryBytes: Number.MAX_SAFE_INTEGER });
    for (let i = 0; i < 5000; i++) store.set(`k${i}`, valueOf(`k${i}`, 0, 100));
    const before = store.arenaStats();
    const expected = new Map<string, Uint8Array>();
    for (let round = 1; round <= 5; round++) {
      for (let i = 0; i < 5000; i++) {
        const value = valueOf(`k${i}`, round, 97 + (i % 8)); // 97..104: one class
        store.set(`k${i}`, value);
        expected.set(`k${i}`, value);
      }
    }
    const after = store.arenaStats();
    assert.deepEqual({ slabs: after.slabs, chunks: after.chunks, moves: after.moves }, { slabs: before.slabs, chunks: 5000, moves: 0 });
    assertHolds(store, expected, "overwrites");
  });

  test("deletes are compacted: free space stays under two slabs per size class, values survive the moves", () => {
    const { store } = fixture({ maxMemoryBytes: Number.MAX_SAFE_INTEGER });
    const N = 40_000;
    const expected = new Map<string, Uint8Array>();
    for (let i = 0; i < N; i++) {
      const value = valueOf(`k${i}`, 0, i % 2 === 0 ? 100 : 1000);
      store.set(`k${i}`, value);
      expected.set(`k${i}`, value);
    }
    const full = store.arenaStats();
    // Delete 90% in a scattered order, so every slab keeps a few values.
    let x = 12345;
    for (let i = 0; i < N; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      if (x % 10 !== 0) {
        store.delete(`k${i}`);
        expected.delete(`k${i}`);
      }
    }
    const after = store.arenaStats();
    assert.ok(after.moves > 0, "scattered deletes make the arena move values");
    // Live chunk bytes plus under two slabs of free chunks per class in use (two here).
    let liveBytes = 0;
    for (const value of expected.values()) liveBytes += chargedValueBytes(value.byteLength);
    assert.ok(after.slabBytes <= liveBytes + 2 * 2 * SLAB_BYTES, `${after.slabBytes} bytes of slabs for ${liveBytes} bytes of values`);
    assert.ok(after.slabBytes < full.slabBytes / 5, `slabs shrank from ${full.slabBytes} to only ${after.slabBytes}`);
    assertHolds(store, expected, "the deletes");
    // Deleting the rest releases every slab.
    for (const key of [...expected.keys()]) store.delete(key);
    assert.deepEqual({ slabs: store.arenaStats().slabs, chunks: store.arenaStats().chunks }, { slabs: 0, chunks: 0 });
    store.checkInvariants();
  });

  test("values handed out stay intact through later overwrites, evictions and compaction", () => {
    const { store, changes } = fixture({ maxMemoryBytes: 3000 * entryBytes("k0000", 100) });
    const read: [Uint8Array, Uint8Array][] = [];
    for (let i = 0; i < 3000; i++) {
      const key = `k${String(i).padStart(4, "0")}`;
      const value = valueOf(key, 0, 100);
      store.set(key, value);
      if (i % 100 === 0) read.push([store.get(key)!.value, value]);
    }
    const scanned = store.scan("k00", "", 50, false).entries.map((e) => [e.value, Buffer.from(e.value)] as const);
    const snapshot = store.snapshotPage(0, 50).entries.map((e) => [e.value, Buffer.from(e.value)] as const);
    const published = changes.map((c) => [c.value!, Buffer.from(c.value!)] as const);
    // Overwrite in place, delete most (compaction moves the rest), then write
    // enough new keys to evict.
    for (let i = 0; i < 3000; i++) store.set(`k${String(i).padStart(4, "0")}`, valueOf("other", i, 100));
    for (let i = 0; i < 3000; i++) if (i % 7 !== 0) store.delete(`k${String(i).padStart(4, "0")}`);
    for (let i = 0; i < 4000; i++) store.set(`n${String(i).padStart(4, "0")}`, valueOf("n", i, 100));
    assert.ok(store.stats().evictions > 0 && store.arenaStats().moves > 0);
    for (const [got, want] of read) assert.ok(Buffer.from(got).equals(Buffer.from(want)), "a value from get changed");
    for (const [got, want] of [...scanned, ...snapshot, ...published]) assert.ok(Buffer.from(got).equals(want), "a value from scan, a snapshot or a change changed");
    store.checkInvariants();
  });

  test("large values keep their own buffer and are counted with their overhead", () => {
    const { store } = fixture({ maxValueBytes: 1 << 20 });
    const big = valueOf("big", 1, LARGE_VALUE_BYTES + 1);
    store.set("big", big);
    assert.equal(store.stats().bytesUsed, utf8Bytes("big") + LARGE_VALUE_BYTES + 1 + LARGE_VALUE_OVERHEAD_BYTES + ENTRY_OVERHEAD_BYTES);
    assert.equal(store.arenaStats().slabs, 0, "a large value takes no slab");
    assert.ok(Buffer.from(store.get("big")!.value).equals(Buffer.from(big)));
    // Large -> small -> empty -> large.
    store.set("big", valueOf("big", 2, 10));
    assert.equal(store.arenaStats().chunks, 1);
    store.set("big", new Uint8Array(0));
    assert.deepEqual({ chunks: store.arenaStats().chunks, slabs: store.arenaStats().slabs }, { chunks: 0, slabs: 0 });
    assert.equal(store.get("big")!.value.byteLength, 0);
    const huge = valueOf("big", 3, 1 << 20);
    store.set("big", huge);
    assert.ok(Buffer.from(store.get("big")!.value).equals(Buffer.from(huge)));
    assert.equal(store.stats().bytesUsed, entryBytes("big", 1 << 20));
    store.checkInvariants();
    store.delete("big");
    assert.equal(store.stats().bytesUsed, 0);
    store.checkInvariants();
  });

  test("eviction under the byte bound: counted bytes never over the bound, slabs within it", () => {
    const max = 2_000_000;
    const { store } = fixture({ maxMemoryBytes: max, maxValueBytes: 4 * LARGE_VALUE_BYTES });
    let x = 99;
    for (let i = 0; i < 20_000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const length = x % 50 === 0 ? LARGE_VALUE_BYTES + (x % 5000) : 1 + (x % 2000);
      store.set(`k${x % 5000}`, valueOf("v", i, length));
      const stats = store.stats();
      assert.ok(stats.bytesUsed <= max, `bytesUsed ${stats.bytesUsed} over ${max}`);
      if (i % 1000 === 0) store.checkInvariants();
    }
    assert.ok(store.stats().evictions > 0);
    // Chunks are charged their share of a slab: slabs in use are at most the
    // bytes counted plus the free chunks (under two slabs per class).
    const arena = store.arenaStats();
    assert.ok(arena.slabBytes - arena.freeBytes <= store.stats().bytesUsed, `${arena.slabBytes - arena.freeBytes} bytes of chunks in use`);
    store.checkInvariants();
  });

  test("expiry (sweep and lazy) frees arena space", () => {
    const { store, clock } = fixture();
    for (let i = 0; i < 20_000; i++) store.set(`t${i}`, valueOf("t", i, 50 + (i % 200)), { ttlMs: 1000 });
    for (let i = 0; i < 100; i++) store.set(`keep${i}`, valueOf("keep", i, 100));
    const loaded = store.arenaStats();
    assert.ok(loaded.slabs > 20);
    clock.t += 1000;
    const sweeper = new ExpirySweeper(store);
    for (let i = 0; i < 40 && store.size > 100; i++) sweeper.tick();
    assert.equal(store.size, 100);
    const after = store.arenaStats();
    assert.equal(after.chunks, 100);
    assert.ok(after.slabs <= 3, `${after.slabs} slabs left for 100 values of one class`);
    for (let i = 0; i < 100; i++) assert.ok(Buffer.from(store.get(`keep${i}`)!.value).equals(Buffer.from(valueOf("keep", i, 100))));
    store.checkInvariants();
  });

  test("flags that are not a uint32 are kept exactly; digests agree through a snapshot", () => {
    const { store } = fixture();
    store.set("a", bytes("1"), { flags: 0xffffffff });
    store.set("b", bytes("2"), { flags: 7 });
    store.set("c", valueOf("c", 0, 5000));
    store.set("odd", bytes("3"), { flags: -1 });
    assert.equal(store.get("odd")!.flags, -1);
    assert.equal(store.get("a")!.flags, 0xffffffff);
    store.set("odd", bytes("3"), { flags: 2 ** 40 });
    assert.equal(store.get("odd")!.flags, 2 ** 40);
    store.set("odd", bytes("3"), { flags: 5 });
    assert.equal(store.get("odd")!.flags, 5);
    store.checkInvariants();
    const replica = fixture().store;
    replica.beginSnapshot(store.currentRevision);
    for (const e of store.snapshotPage(0, 100).entries) replica.loadSnapshotEntry(e);
    replica.checkInvariants();
    assert.equal(replica.digest().digest, store.digest().digest);
  });
});
