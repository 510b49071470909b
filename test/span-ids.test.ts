import assert from "node:assert/strict";
import { test } from "node:test";
import { ROOT_CONTEXT, SamplingDecision, SpanKind } from "@opentelemetry/api";
import { rootRatioSampler, samplerFromEnv, TraceIdRatioSampler } from "../src/telemetry/sampling.js";
import { PooledSpanIds, traceIdIn } from "../src/telemetry/span-ids.js";

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

test("PooledSpanIds.drawTraceId: the id traceIdIn makes, valid and unrepeated, with drawnHash deciding as the ratio sampler decides on it", () => {
  const ids = new PooledSpanIds();
  const samplers = [0, 0.001, 0.1, 0.5, 0.999, 1].map((ratio) => new TraceIdRatioSampler(ratio));
  const seen = new Set<string>();
  let sampled = 0;
  // 3 pools' worth, with span ids and generated trace ids drawn in between (the pool is shared).
  for (let i = 0; i < 6_000; i++) {
    const at = ids.drawTraceId();
    const traceId = traceIdIn(ids.pool, at);
    const hash = ids.drawnHash;
    assert.match(traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(traceId, "0".repeat(32));
    seen.add(traceId);
    seen.add(ids.generateTraceId());
    ids.generateSpanId();
    for (const sampler of samplers) {
      const decision = sampler.shouldSample(ROOT_CONTEXT, traceId).decision;
      assert.equal(sampler.samples(hash) ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.NOT_RECORD, decision, `${sampler} on ${traceId}`);
    }
    if (samplers[2].samples(hash)) sampled++;
  }
  assert.equal(seen.size, 12_000);
  // 10% expected: 600 +- 5 standard deviations (~23 each).
  assert.ok(Math.abs(sampled - 600) < 120, `${sampled} of 6,000 sampled at 10%`);
});

test("rootRatioSampler: the ratio sampler that decides for calls with no parent, for the samplers samplerFromEnv makes", () => {
  const root = (name: string): TraceIdRatioSampler | undefined => rootRatioSampler(samplerFromEnv({ OTEL_TRACES_SAMPLER: name, OTEL_TRACES_SAMPLER_ARG: "0.25" }));
  assert.equal(root("traceidratio")?.toString(), "TraceIdRatioBased{0.25}");
  const parentBased = samplerFromEnv({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" });
  const found = rootRatioSampler(parentBased);
  assert.equal(found?.toString(), "TraceIdRatioBased{0.25}");
  // It is the root the ParentBasedSampler asks: the same decisions for root spans.
  const ids = new PooledSpanIds();
  for (let i = 0; i < 2_000; i++) {
    const traceId = ids.generateTraceId();
    assert.equal(parentBased.shouldSample(ROOT_CONTEXT, traceId, "Get", SpanKind.SERVER, {}, []).decision, found?.shouldSample(ROOT_CONTEXT, traceId).decision);
  }
  for (const name of ["always_on", "always_off", "parentbased_always_on", "parentbased_always_off"]) assert.equal(root(name), undefined, name);
});
