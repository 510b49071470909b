// The HTTP/2 engine's stream collections (src/server/h2/stream-table.ts) behave
// as the Map and Set they replace, for any sequence of operations.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { SendQueue, StreamTable } from "../src/server/h2/stream-table.js";

type Op = { kind: "add" | "delete" | "get"; id: number };

test("StreamTable: get, add, delete, size and values agree with a Map (growth, wrap-around, runs shifted back)", () => {
  // Ids as a connection sees them (odd, rising, a few live at once, some long-lived), and arbitrary ones.
  const id = fc.oneof(fc.integer({ min: 0, max: 200 }).map((n) => 2 * n + 1), fc.integer({ min: 1, max: 2 ** 31 - 1 }));
  const op = fc.record({ kind: fc.constantFrom("add" as const, "delete" as const, "get" as const), id });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 400 }), (ops: Op[]) => {
      const table = new StreamTable<{ id: number }>();
      const model = new Map<number, { id: number }>();
      for (const o of ops) {
        if (o.kind === "add") {
          if (model.has(o.id)) continue; // the connection never adds an id twice
          const s = { id: o.id };
          table.add(s);
          model.set(o.id, s);
        } else if (o.kind === "delete") {
          assert.equal(table.delete(o.id), model.delete(o.id));
        } else {
          assert.equal(table.get(o.id), model.get(o.id));
        }
        assert.equal(table.size, model.size);
      }
      for (const [k, v] of model) assert.equal(table.get(k), v);
      assert.deepEqual(new Set(table.values()), new Set(model.values()));
      table.clear();
      assert.equal(table.size, 0);
      for (const k of model.keys()) assert.equal(table.get(k), undefined);
    }),
    { numRuns: 500 },
  );
});

test("StreamTable: a connection's traffic (a window of live ids sliding over millions) keeps the table small", () => {
  const table = new StreamTable<{ id: number }>();
  const live: number[] = [];
  const watch = { id: 1 }; // one stream that stays open throughout
  table.add(watch);
  for (let id = 3; id < 2_000_000; id += 2) {
    table.add({ id });
    live.push(id);
    if (live.length > 10) assert.equal(table.delete(live.shift()!), true);
  }
  assert.equal(table.size, 11);
  assert.equal(table.get(1), watch);
  assert.equal(table.values().length, 11);
  // Grown only for the streams live at once (11, at most half the slots full), not for the ids seen.
  assert.ok((table as unknown as { slots: unknown[] }).slots.length <= 32);
});

type QueueOp = { kind: "add" | "delete"; s: number } | { kind: "iterate"; stopAfter: number; addDuring: number[]; deleteDuring: number[] };

test("SendQueue: the order, membership and iteration of a Set (adds and deletes during iteration included)", () => {
  const s = fc.integer({ min: 0, max: 15 });
  const op: fc.Arbitrary<QueueOp> = fc.oneof(
    fc.record({ kind: fc.constantFrom("add" as const, "delete" as const), s }),
    fc.record({ kind: fc.constant("iterate" as const), stopAfter: fc.integer({ min: 0, max: 20 }), addDuring: fc.array(s, { maxLength: 3 }), deleteDuring: fc.array(s, { maxLength: 3 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 100 }), (ops) => {
      const streams = Array.from({ length: 16 }, (_, i) => ({ i, sendQueued: false }));
      const queue = new SendQueue<(typeof streams)[number]>();
      const model = new Set<(typeof streams)[number]>();
      for (const o of ops) {
        if (o.kind === "add") {
          queue.add(streams[o.s]);
          model.add(streams[o.s]);
        } else if (o.kind === "delete") {
          queue.delete(streams[o.s]);
          model.delete(streams[o.s]);
        } else {
          // The same visits, with the same changes made at the first visit.
          const it = o as Extract<QueueOp, { kind: "iterate" }>;
          const visit = (mutateQueue: boolean, seen: number[]) => (x: { i: number }) => {
            if (seen.length === 0) {
              for (const a of it.addDuring) mutateQueue ? queue.add(streams[a]) : model.add(streams[a]);
              for (const d of it.deleteDuring) mutateQueue ? queue.delete(streams[d]) : model.delete(streams[d]);
            }
            seen.push(x.i);
            return seen.length < it.stopAfter;
          };
          const got: number[] = [];
          const want: number[] = [];
          queue.forEach(visit(true, got));
          const v = visit(false, want);
          for (const x of model) if (!v(x)) break;
          assert.deepEqual(got, want);
        }
        const order: number[] = [];
        queue.forEach((x) => (order.push(x.i), true));
        assert.deepEqual(order, [...model].map((x) => x.i));
        for (const x of streams) assert.equal(x.sendQueued, model.has(x));
      }
    }),
    { numRuns: 1000 },
  );
});
