/**
 * Property test of ChangeLog, which keeps changes encoded in segments: random
 * appends (puts with keys of any Unicode and values up to twice a segment,
 * deletes, flushes that jump the revision), reads from random revisions and
 * resets, compared after every operation with a model that keeps Change
 * objects in an array and drops the oldest by the same limits.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Change } from "../src/store/change.js";
import { ChangeLog, SEGMENT_BYTES, type ChangeLogLimits } from "../src/store/change-log.js";

const OVERHEAD = 64;

class ModelLog {
  changes: Change[] = [];
  first: number;
  constructor(
    readonly limits: ChangeLogLimits,
    start: number,
  ) {
    this.first = start + 1;
  }
  get latest(): number {
    return this.first + this.changes.length - 1;
  }
  get bytes(): number {
    return this.changes.reduce((n, c) => n + size(c), 0);
  }
  append(c: Change): void {
    if (c.type === "flush" && c.revision !== this.latest + 1) this.reset(c.revision - 1);
    while (this.changes.length > 0 && (this.changes.length >= this.limits.maxEvents || this.bytes + size(c) > this.limits.maxBytes)) {
      this.changes.shift();
      this.first++;
    }
    this.changes.push(c);
  }
  readFrom(from: number, max: number): Change[] | "compacted" {
    if (from < this.first) return "compacted";
    return this.changes.slice(from - this.first, from - this.first + max);
  }
  reset(revision: number): void {
    this.changes = [];
    this.first = revision + 1;
  }
}

function size(c: Change): number {
  return Buffer.byteLength(c.key, "utf8") + (c.value?.byteLength ?? 0) + OVERHEAD;
}

/** A change as plain data, values as arrays of numbers, for deepEqual. */
function plain(c: Change) {
  return { type: c.type, revision: c.revision, key: c.key, value: c.value === undefined ? undefined : Array.from(c.value), flags: c.flags, expiresAt: c.expiresAt };
}

type Op =
  | { readonly op: "put"; readonly key: string; readonly valueBytes: number; readonly fill: number; readonly flags: number; readonly expiresAt: number }
  | { readonly op: "delete" | "expire" | "evict"; readonly key: string }
  | { readonly op: "flush"; readonly jump: number }
  | { readonly op: "read"; readonly back: number; readonly max: number }
  | { readonly op: "reset"; readonly jump: number };

const key = fc.oneof(fc.string({ maxLength: 8 }), fc.string({ unit: "grapheme", maxLength: 6 }), fc.string({ unit: "binary", maxLength: 40 }));
const valueBytes = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 300 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 * SEGMENT_BYTES + 10 }) });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ op: fc.constant("put" as const), key, valueBytes, fill: fc.integer({ min: 0, max: 255 }), flags: fc.nat(0xffffffff), expiresAt: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 2 ** 50 })) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constantFrom("delete" as const, "expire" as const, "evict" as const), key }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("flush" as const), jump: fc.integer({ min: -20, max: 20 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("read" as const), back: fc.integer({ min: -2, max: 40 }), max: fc.integer({ min: 1, max: 50 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("reset" as const), jump: fc.integer({ min: 0, max: 1000 }) }) },
);
const limits = fc.record({ maxEvents: fc.integer({ min: 1, max: 40 }), maxBytes: fc.integer({ min: 1, max: 3 * SEGMENT_BYTES }) });

test("ChangeLog: encoded in segments, it holds and returns what a plain array model does", () => {
  fc.assert(
    fc.property(limits, fc.nat(1000), fc.array(op, { maxLength: 120 }), (lim, start, ops) => {
      const log = new ChangeLog(lim, start);
      const model = new ModelLog(lim, start);
      const heard: Change[] = [];
      log.subscribe((c) => heard.push(c));
      for (const o of ops) {
        const next = model.latest + 1;
        switch (o.op) {
          case "put": {
            const c: Change = { type: "put", revision: next, key: o.key, value: new Uint8Array(o.valueBytes).fill(o.fill), flags: o.flags, expiresAt: o.expiresAt };
            log.append(c);
            model.append(c);
            assert.equal(heard.at(-1), c, "listeners get the appended object");
            break;
          }
          case "delete":
          case "expire":
          case "evict": {
            const c: Change = { type: o.op, revision: next, key: o.key, flags: 0, expiresAt: 0 };
            log.append(c);
            model.append(c);
            break;
          }
          case "flush": {
            const c: Change = { type: "flush", revision: Math.max(1, next + o.jump), key: "", flags: 0, expiresAt: 0 };
            log.append(c);
            model.append(c);
            break;
          }
          case "read": {
            const from = model.latest + 1 - o.back;
            const got = log.readFrom(from, o.max);
            const want = model.readFrom(from, o.max);
            if (want === "compacted") assert.equal(got, "compacted");
            else {
              assert.notEqual(got, "compacted");
              assert.deepEqual((got as Change[]).map(plain), want.map(plain));
            }
            break;
          }
          case "reset":
            log.reset(model.latest + o.jump);
            model.reset(model.latest + o.jump);
            break;
        }
        assert.equal(log.oldestRevision, model.first);
        assert.equal(log.latestRevision, model.latest);
        assert.equal(log.size, model.changes.length);
        assert.equal(log.byteSize, model.bytes);
      }
      // Everything held reads back, also after later appends overwrote nothing.
      const all = log.readFrom(log.oldestRevision, Number.MAX_SAFE_INTEGER);
      assert.deepEqual(all === "compacted" ? all : all.map(plain), model.changes.map(plain));
    }),
    { numRuns: 300 },
  );
});

test("ChangeLog: values read earlier stay intact while later changes fill and drop segments", () => {
  const log = new ChangeLog({ maxEvents: 1000, maxBytes: 2 * SEGMENT_BYTES });
  const value = (r: number) => new Uint8Array(1000).fill(r & 0xff);
  log.append({ type: "put", revision: 1, key: "k1", value: value(1), flags: 0, expiresAt: 0 });
  const early = log.readFrom(1, 1);
  assert.notEqual(early, "compacted");
  for (let r = 2; r <= 2000; r++) log.append({ type: "put", revision: r, key: `k${r}`, value: value(r), flags: 0, expiresAt: 0 });
  assert.equal(log.readFrom(1, 1), "compacted");
  assert.deepEqual(Array.from((early as Change[])[0].value!), Array.from(value(1)));
  assert.ok(log.size < 2 * SEGMENT_BYTES / 1000, `held ${log.size} changes within the byte limit`);
});
