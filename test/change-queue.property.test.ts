/**
 * Property test of ChangeQueue (one Watch's or replica's buffer), which keeps
 * its array and empties it slot by slot: random deliveries (some before the
 * queue's minimum revision, some large enough to overflow it) and takes of
 * random sizes, compared after every operation with a model that keeps a
 * plain array and replaces it as the queue once did. Arrays handed out by
 * take must stay as they were whatever the queue does next.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Change } from "../src/store/change.js";
import { changeBytes } from "../src/store/change-log.js";
import { ChangeQueue } from "../src/watch/change-queue.js";

class ModelQueue {
  items: Change[] = [];
  bytes = 0;
  overflow = false;
  constructor(
    readonly maxBytes: number,
    readonly minRevision: number,
  ) {}

  deliver(change: Change): void {
    if (change.revision < this.minRevision || this.overflow) return;
    const size = changeBytes(change);
    if (this.bytes + size > this.maxBytes) {
      this.overflow = true;
      this.items = [];
      this.bytes = 0;
    } else {
      this.items.push(change);
      this.bytes += size;
    }
  }

  take(max: number): Change[] {
    const out = this.items.slice(0, max);
    this.items = this.items.slice(max);
    for (const c of out) this.bytes -= changeBytes(c);
    return out;
  }

  takeOverflow(): boolean {
    const o = this.overflow;
    this.overflow = false;
    return o;
  }
}

type Op = { kind: "deliver"; valueBytes: number; times: number } | { kind: "take"; max: number } | { kind: "takeOverflow" };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("deliver" as const),
      valueBytes: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 3000 })),
      // Bursts build backlogs past the slots an empty queue keeps.
      times: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 150 })),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("take" as const), max: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 200 })) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("takeOverflow" as const) }) },
);

test("ChangeQueue: deliveries, takes of any size and overflows as a plain array would; handed-out arrays never change", () => {
  fc.assert(
    fc.property(fc.integer({ min: 200, max: 50_000 }), fc.integer({ min: 0, max: 5 }), fc.array(op, { maxLength: 300, size: "max" }), (maxBytes, minRevision, ops) => {
      const queue = new ChangeQueue(maxBytes, minRevision);
      const model = new ModelQueue(maxBytes, minRevision);
      const handedOut: { got: Change[]; want: Change[] }[] = [];
      let revision = 0;
      for (const o of ops) {
        if (o.kind === "deliver") {
          for (let i = 0; i < o.times; i++) {
            const change: Change = { type: "put", revision: revision++, key: `k${revision % 7}`, value: new Uint8Array(o.valueBytes), flags: 0, expiresAt: 0 };
            queue.deliver(change);
            model.deliver(change);
          }
        } else if (o.kind === "take") {
          const got = queue.take(o.max);
          const want = model.take(o.max);
          assert.deepStrictEqual(got, want);
          handedOut.push({ got, want: [...want] });
        } else {
          assert.equal(queue.takeOverflow(), model.takeOverflow());
        }
        assert.equal(queue.length, model.items.length);
      }
      // Everything left comes out in order, and what was handed out earlier is untouched.
      assert.deepStrictEqual(queue.take(Number.MAX_SAFE_INTEGER), model.take(Number.MAX_SAFE_INTEGER));
      assert.equal(queue.length, 0);
      for (const { got, want } of handedOut) assert.deepStrictEqual(got, want);
    }),
    { numRuns: 300 },
  );
});

test("ChangeQueue.wait: a timeout counts from the start of each wait, also when a wait before it left its timer running", async () => {
  const queue = new ChangeQueue(1 << 20);
  const signal = new AbortController().signal;
  // A wait with nothing delivered ends in "timeout", not before its time.
  let t = performance.now();
  assert.equal(await queue.wait(100, signal), "timeout");
  assert.ok(performance.now() - t >= 95, `timed out after ${performance.now() - t} ms`);
  // A wait woken early, then another at once: the second's timeout runs its full time from its own start.
  const first = queue.wait(300, signal);
  await new Promise((r) => setTimeout(r, 150));
  queue.deliver({ type: "put", revision: 1, key: "k", value: new Uint8Array(1), flags: 0, expiresAt: 0 });
  assert.equal(await first, "woken");
  assert.equal(queue.take(10).length, 1);
  t = performance.now();
  assert.equal(await queue.wait(300, signal), "timeout");
  const waited = performance.now() - t;
  assert.ok(waited >= 290, `the second wait timed out after ${waited.toFixed(0)} ms, not 300 (its timer must not be the first wait's)`);
  queue.close();
});
