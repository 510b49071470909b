import assert from "node:assert/strict";
import { test } from "node:test";
import { PooledSpanIds } from "../src/telemetry/span-ids.js";

test("PooledSpanIds: lowercase hex of W3C lengths, never all zero, no repeats across pool refills", () => {
  const ids = new PooledSpanIds();
  const traces = new Set<string>();
  const spans = new Set<string>();
  // 3 pools' worth of trace ids, with span ids drawn in between (the pool is shared).
  for (let i = 0; i < 9_000; i++) {
    const t = ids.generateTraceId();
    const s = ids.generateSpanId();
    assert.match(t, /^[0-9a-f]{32}$/);
    assert.match(s, /^[0-9a-f]{16}$/);
    assert.notEqual(t, "0".repeat(32));
    assert.notEqual(s, "0".repeat(16));
    traces.add(t);
    spans.add(s);
  }
  assert.equal(traces.size, 9_000);
  assert.equal(spans.size, 9_000);
});

test("PooledSpanIds: trace ids are uniform enough for ratio sampling (the SDK samples on their first 32 bits xor'd)", () => {
  const ids = new PooledSpanIds();
  const n = 40_000;
  let below = 0;
  for (let i = 0; i < n; i++) {
    const t = ids.generateTraceId();
    let acc = 0;
    for (let j = 0; j < 32; j += 8) acc = (acc ^ parseInt(t.slice(j, j + 8), 16)) >>> 0;
    if (acc < 0.1 * 0xffffffff) below++;
  }
  // 10% expected; 4,000 +- 5 standard deviations (60 each).
  assert.ok(Math.abs(below - n * 0.1) < 300, `${below} of ${n} under 10%`);
});
