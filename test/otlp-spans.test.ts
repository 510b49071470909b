import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  createTraceState,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
  type Attributes,
  type Context,
  type HrTime,
  type Link,
  type Span,
  type SpanContext,
  type Tracer,
} from "@opentelemetry/api";
import { ExportResultCode, loggingErrorHandler, setGlobalErrorHandler, type ExportResult } from "@opentelemetry/core";
import { emptyResource, resourceFromAttributes } from "@opentelemetry/resources";
// sdk-node's reading of OTEL_TRACES_SAMPLER (not exported from its index): the reference for samplerFromEnv.
import { createSamplerFromEnv } from "@opentelemetry/sdk-node/build/src/create-from-env.js";
import {
  AlwaysOnSampler,
  InMemorySpanExporter,
  ParentBasedSampler,
  SamplingDecision,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type ReadableSpan,
  type Sampler,
  type SpanLimits,
} from "@opentelemetry/sdk-trace";
import { LEN, VARINT } from "../src/protobuf-wire.js";
import {
  batchOptionsFromEnv,
  EncodedSpanProcessor,
  encodedExportApplies,
  type BatchExporter,
  type BatchOptions,
  type EncodedBatch,
} from "../src/telemetry/encoded-span-processor.js";
import { exportRequest, ProtoWriter, writeSpan, type Scope } from "../src/telemetry/otlp-encoding.js";
import { samplerFromEnv, TraceIdRatioSampler } from "../src/telemetry/sampling.js";
import {
  assertSameBytes,
  BIG_WRITER,
  EVERY_VALUE,
  hex,
  ourBytes,
  pick,
  randomAttributes,
  randomInt,
  randomString,
  RECORD_UNSAMPLED,
  recordingProvider,
  sdkBytes,
  spanContext,
  type Rand,
} from "./helpers/otlp.js";
import { mulberry32 } from "./helpers/prng.js";

/**
 * Unit tests (in process, no server) of the span export path that stands in
 * for the SDK's:
 *  - otlp-encoding.ts writes the very bytes @opentelemetry/otlp-transformer's
 *    ProtobufTraceSerializer writes for spans of one resource and one scope
 *    (real SDK spans of every shape, hand-made spans with what the SDK's Span
 *    refuses, ~200 seeded random spans), at any buffer size;
 *  - sampling.ts decides as the SDK's TraceIdRatioBasedSampler, and reads
 *    OTEL_TRACES_SAMPLER(_ARG) as @opentelemetry/sdk-node does;
 *  - encoded-span-processor.ts keeps the BatchSpanProcessor's contract (batch
 *    size, delay, one export at a time, queue bound, timeout, flush, shutdown)
 *    with batches that are the SDK serializer's bytes, and reads OTEL_* as
 *    described.
 */

// ---------------------------------------------------------------- helpers

const hex8 = (n: number): string => (n >>> 0).toString(16).padStart(8, "0");
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(condition: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(1);
  }
}

/** A varint as protobuf writes it, computed with BigInt (negatives as 64-bit two's complement). */
function varintRef(value: number): number[] {
  let v = BigInt(value);
  if (v < 0n) v += 1n << 64n;
  const out: number[] = [];
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

function assertMatchesSdk(spans: readonly ReadableSpan[], what: string): void {
  assertSameBytes(ourBytes(spans), sdkBytes(spans), what);
}

/** An SDK span, once ended, is the ReadableSpan processors see. */
const readable = (span: Span): ReadableSpan => span as unknown as ReadableSpan;

// ---------------------------------------------------------------- otlp-encoding.ts

describe("otlp-encoding: the SDK serializer's bytes", () => {
  const resource = resourceFromAttributes(
    {
      "service.name": "ripplecache-test",
      "service.instance.id": "é-1",
      "host.tags": ["a", "b", "ü"],
      "host.ports": [8080, 9090],
      "host.flags": [true, false],
    },
    { schemaUrl: "https://opentelemetry.io/schemas/1.30.0" },
  );

  test("every SpanKind; status OK, ERROR with and without message, UNSET", () => {
    const { provider, memory } = recordingProvider(resource);
    const tracer = provider.getTracer("ripplecache", "1.2.3");
    for (const kind of [SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER]) {
      tracer.startSpan(`kind-${kind}`, { kind }).end();
    }
    tracer.startSpan("ok").setStatus({ code: SpanStatusCode.OK }).end();
    tracer.startSpan("error-bare").setStatus({ code: SpanStatusCode.ERROR }).end();
    tracer.startSpan("error-message").setStatus({ code: SpanStatusCode.ERROR, message: "boom: ü 🚀" }).end();
    tracer.startSpan("error-long-message").setStatus({ code: SpanStatusCode.ERROR, message: "e".repeat(300) }).end();
    tracer.startSpan("unset").end();
    const spans = memory.getFinishedSpans();
    assert.equal(spans.length, 10);
    for (const span of spans) assertMatchesSdk([span], span.name);
    assertMatchesSdk(spans, "all ten in one request");
  });

  test("attributes of every type and length class, on spans, events and links", () => {
    const { provider, memory } = recordingProvider(resource);
    const tracer = provider.getTracer("ripplecache", "1.2.3");
    tracer.startSpan("attributes", { attributes: EVERY_VALUE }).end();

    const events = tracer.startSpan("events");
    events.addEvent("plain");
    events.addEvent("with-attributes", { a: 1, b: "x", arr: [1, 2], big: "z".repeat(200) });
    events.addEvent("timed", { k: true }, [1_700_000_000, 123_456_789]);
    events.addEvent("every-value", EVERY_VALUE);
    events.end();

    const links: Link[] = [
      { context: spanContext() },
      { context: spanContext({ flags: TraceFlags.NONE, remote: true }), attributes: { "link.kind": "follows", n: -7 } },
      { context: spanContext({ remote: false, traceState: "vendor=abc,other=1" }), attributes: EVERY_VALUE },
      { context: spanContext({ flags: 0xff, remote: true, traceState: "k=v" }) },
    ];
    tracer.startSpan("links", { links }).end();

    const spans = memory.getFinishedSpans();
    assert.equal(spans.length, 3);
    for (const span of spans) assertMatchesSdk([span], span.name);
    assertMatchesSdk(spans, "the three in one request");
  });

  test("parents: local child and grandchild, a remote parent (flags, trace state), a local parent context, unsampled flags", () => {
    const { provider, memory } = recordingProvider(resource);
    const tracer = provider.getTracer("ripplecache", "1.2.3");
    const parent = tracer.startSpan("parent");
    const child = tracer.startSpan("child", {}, trace.setSpan(ROOT_CONTEXT, parent));
    tracer.startSpan("grandchild", { kind: SpanKind.CLIENT }, trace.setSpan(ROOT_CONTEXT, child)).end();
    child.end();
    parent.end();

    const remote: Context = trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: true, traceState: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" }));
    tracer.startSpan("remote-child", { kind: SpanKind.SERVER }, remote).end();
    const local: Context = trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: false }));
    tracer.startSpan("local-context-child", {}, local).end();

    // Recorded but not sampled (flags 0): not in memory (SimpleSpanProcessor skips it), so taken from the span itself.
    const unsampled = tracer.startSpan("unsampled-recorded", {}, remote);
    unsampled.end();

    const spans = memory.getFinishedSpans();
    assert.equal(spans.length, 5);
    const byName = new Map(spans.map((s) => [s.name, s]));
    assert.equal(byName.get("child")?.parentSpanContext?.spanId, parent.spanContext().spanId);
    assert.equal(byName.get("remote-child")?.parentSpanContext?.isRemote, true);
    assert.equal(byName.get("remote-child")?.spanContext().traceState?.serialize(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    assert.equal(readable(unsampled).spanContext().traceFlags, TraceFlags.NONE);
    for (const span of [...spans, readable(unsampled)]) assertMatchesSdk([span], span.name);
    assertMatchesSdk(spans, "the five in one request");
  });

  test("scopes: a tracer with a version, one without, one with a schema url; resources: empty, and with arrays and a schema url", () => {
    for (const res of [resource, emptyResource(), resourceFromAttributes({ only: "one" })]) {
      const { provider, memory } = recordingProvider(res);
      const tracers: Tracer[] = [
        provider.getTracer("versioned", "9.8.7"),
        provider.getTracer("bare"),
        provider.getTracer("with-schema", "0.1.0", { schemaUrl: "https://opentelemetry.io/schemas/1.25.0" }),
      ];
      for (const tracer of tracers) {
        memory.reset();
        tracer.startSpan("a").end();
        tracer.startSpan("b", { attributes: { x: 1 } }).end();
        const spans = memory.getFinishedSpans();
        assertMatchesSdk(spans, `scope ${spans[0].instrumentationScope.name}, resource ${JSON.stringify(res.attributes)}`);
      }
    }
  });

  test("dropped attribute, event and link counts, and truncated values (span limits)", () => {
    const limits: SpanLimits = {
      attributeCountLimit: 2,
      attributeValueLengthLimit: 5,
      eventCountLimit: 1,
      linkCountLimit: 1,
      attributePerEventCountLimit: 1,
      attributePerLinkCountLimit: 1,
    };
    const { provider, memory } = recordingProvider(resource, limits);
    const tracer = provider.getTracer("limited");
    const span = tracer.startSpan("limited", {
      attributes: { a: "long-value-é😀", b: ["abcdefgh", "ok"], c: 3, d: 4 },
      links: [
        { context: spanContext(), attributes: { x: 1, y: 2, z: 3 } },
        { context: spanContext(), attributes: { x: 1, y: 2 } },
      ],
    });
    span.addEvent("e1", { p: 1, q: 2 });
    span.addEvent("e2", { p: 1, q: 2, r: 3 });
    span.end();
    const [ended] = memory.getFinishedSpans();
    assert.equal(ended.droppedAttributesCount, 2);
    assert.equal(ended.droppedEventsCount, 1);
    assert.equal(ended.droppedLinksCount, 1);
    assertMatchesSdk([ended], "limited span");
  });

  test("hand-made spans: values the SDK's Span refuses (bytes, maps, nulls), upper-case ids, times at the fixed64 limits, no kind", () => {
    const scope: Scope & { attributes: Attributes; droppedAttributesCount: number } = {
      name: "hand",
      version: "1",
      schemaUrl: "https://example.com/schema",
      attributes: { "scope.attr": "v", n: 2 },
      droppedAttributesCount: 3,
    };
    const oddValues = {
      bytes: new Uint8Array([0, 1, 127, 128, 255]),
      emptyBytes: new Uint8Array(0),
      map: { inner: "v", n: 3, nested: { deeper: [1, "two", null], none: undefined } },
      undef: undefined,
      nul: null,
      mixed: [1, "a", true, null, { k: "v" }, new Uint8Array([9])],
    } as unknown as Attributes;
    const times: HrTime[] = [
      [0, 0],
      [1, 999_999_999],
      [65_535, 1],
      [65_536, 0],
      [1_700_000_000, 123_456_789],
      [4_294_967_295, 999_999_999],
      [4_294_967_296, 0],
      [18_446_744_073, 709_551_615],
    ];
    const base: ReadableSpan = {
      name: "hand-made",
      kind: SpanKind.CLIENT,
      spanContext: () => ({
        traceId: "0AF7651916CD43DD8448EB211C80319C",
        spanId: "B7AD6B7169203331",
        traceFlags: 0xff,
        traceState: createTraceState("k=v"),
      }),
      parentSpanContext: { traceId: "0AF7651916CD43DD8448EB211C80319C", spanId: "00F067aa0BA902B7", traceFlags: 1, isRemote: true },
      startTime: [0, 0],
      endTime: [0, 0],
      status: { code: SpanStatusCode.OK, message: "fine, thanks" },
      attributes: oddValues,
      links: [{ context: { traceId: "ABCDEF0123456789abcdef0123456789", spanId: "FEDCBA9876543210", traceFlags: 0 }, attributes: oddValues, droppedAttributesCount: 3 }],
      events: [{ name: "e", time: [4_294_967_296, 999_999_999], attributes: oddValues, droppedAttributesCount: 4 }],
      duration: [0, 0],
      ended: true,
      resource: resourceFromAttributes({ svc: "x", arr: ["p", "q"] }),
      instrumentationScope: scope,
      droppedAttributesCount: 300,
      droppedEventsCount: 2 ** 31,
      droppedLinksCount: 16_384,
    };
    for (const start of times) {
      for (const end of times) assertMatchesSdk([{ ...base, startTime: start, endTime: end }], `times ${start} → ${end}`);
    }
    assertMatchesSdk([{ ...base, kind: undefined as unknown as SpanKind }], "no kind");
    assertMatchesSdk([{ ...base, parentSpanContext: undefined, status: { code: SpanStatusCode.UNSET } }], "no parent, unset status");
    assertMatchesSdk([{ ...base, events: [{ name: "bare", time: [1, 2] }], links: [{ context: base.parentSpanContext as SpanContext }] }], "event and link without attributes");
  });

  test("~200 seeded random spans, in random batches of one resource and scope", () => {
    const seed = Number(process.env.OTLP_SPANS_SEED ?? 0x5eed);
    const rand = mulberry32(seed);
    const limited = recordingProvider(resourceFromAttributes({ "service.name": "limited", tags: ["x", "y"] }), {
      attributeCountLimit: 6,
      attributeValueLengthLimit: 40,
      eventCountLimit: 2,
      linkCountLimit: 2,
      attributePerEventCountLimit: 3,
    });
    const open = recordingProvider(resource);
    const tracers: Tracer[] = [
      limited.provider.getTracer("limited", "1"),
      open.provider.getTracer("open-versioned", "2.0.0"),
      open.provider.getTracer("open-bare"),
      open.provider.getTracer("open-schema", undefined, { schemaUrl: "https://opentelemetry.io/schemas/1.26.0" }),
    ];
    let total = 0;
    for (let batch = 0; total < 200; batch++) {
      const tracer = pick(rand, tracers);
      const spans: Span[] = [];
      const size = 1 + randomInt(rand, 9);
      for (let i = 0; i < size; i++) spans.push(randomSpan(rand, tracer, spans));
      total += size;
      const ended = spans.map(readable);
      assertSameBytes(ourBytes(ended), sdkBytes(ended), `seed ${seed}, batch ${batch} (${size} spans)`);
    }
  });
});

function randomTime(rand: Rand, after?: HrTime): HrTime {
  if (after === undefined) return [1_500_000_000 + randomInt(rand, 400_000_000), randomInt(rand, 1e9)];
  return [after[0] + randomInt(rand, 3), randomInt(rand, 1e9)];
}

/** One random span (ended), maybe the child of one of `earlier` or of a remote parent; its name ending "unsampled…" when flags are 0. */
function randomSpan(rand: Rand, tracer: Tracer, earlier: readonly Span[]): Span {
  let parent: Context = ROOT_CONTEXT;
  const p = rand();
  if (p < 0.3 && earlier.length > 0) parent = trace.setSpan(ROOT_CONTEXT, pick(rand, earlier));
  else if (p < 0.5) parent = trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: rand() < 0.7, flags: pick(rand, [0, 1, 3]), traceState: rand() < 0.5 ? "a=1,b=two" : undefined }));
  const links: Link[] = Array.from({ length: randomInt(rand, 4) }, () => ({
    context: spanContext({ flags: pick(rand, [0, 1, 0xff]), remote: pick(rand, [true, false, undefined]), traceState: rand() < 0.3 ? "x=y" : undefined }),
    ...(rand() < 0.6 ? { attributes: randomAttributes(rand) } : {}),
  }));
  const start = randomTime(rand);
  const name = (rand() < 0.15 ? "unsampled-" : "") + randomString(rand);
  const span = tracer.startSpan(name, { kind: randomInt(rand, 5) as SpanKind, attributes: randomAttributes(rand), links, startTime: start }, parent);
  let time = start;
  for (let i = randomInt(rand, 4); i > 0; i--) {
    time = randomTime(rand, time);
    span.addEvent(randomString(rand), rand() < 0.7 ? randomAttributes(rand) : undefined, time);
  }
  const status = randomInt(rand, 4);
  if (status === 1) span.setStatus({ code: SpanStatusCode.OK });
  else if (status === 2) span.setStatus({ code: SpanStatusCode.ERROR });
  else if (status === 3) span.setStatus({ code: SpanStatusCode.ERROR, message: randomString(rand) });
  span.end(randomTime(rand, time));
  return span;
}

describe("otlp-encoding: ProtoWriter", () => {
  test("varint: every magnitude, both signs, as protobuf's int64 (BigInt reference)", () => {
    const rand = mulberry32(7);
    const values = [0, 1, 127, 128, 255, 16_383, 16_384, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 60, 2 ** 63 - 1024, -1, -127, -128, -(2 ** 31), -(2 ** 32), -(2 ** 32) - 1, -(2 ** 53), -(2 ** 63)];
    for (let i = 0; i < 2000; i++) values.push(Math.floor((rand() - 0.5) * 2 ** randomInt(rand, 64)));
    const w = new ProtoWriter(4);
    for (const v of values) {
      w.reset();
      w.varint(v);
      assert.deepEqual([...w.view()], varintRef(v), `varint(${v})`);
    }
  });

  test("hrTime: nanoseconds since the epoch, exactly, up to the fixed64 limit (BigInt reference)", () => {
    const rand = mulberry32(11);
    const times: HrTime[] = [[0, 0], [1, 999_999_999], [65_535, 999_999_999], [65_536, 0], [2 ** 32 - 1, 999_999_999], [2 ** 32, 0], [18_446_744_073, 709_551_615]];
    for (let i = 0; i < 5000; i++) times.push([randomInt(rand, 18_446_744_073), randomInt(rand, 1e9)]);
    const w = new ProtoWriter(1);
    for (const [seconds, nanos] of times) {
      w.reset();
      w.hrTime([seconds, nanos]);
      const want = Buffer.alloc(8);
      want.writeBigUInt64LE(BigInt(seconds) * 1_000_000_000n + BigInt(nanos));
      assert.deepEqual(w.view(), want, `hrTime([${seconds}, ${nanos}])`);
    }
  });

  test("join: a nested message that outgrows its one reserved length byte moves up, at each varint length boundary and buffer size", () => {
    const content = (n: number): Buffer => {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
      return b;
    };
    const prefix = Buffer.from([1, 2, 3]);
    const suffix = Buffer.from([0x08, 0x96, 0x01]);
    for (const initial of [1, 3, 64, 130, 16_390, 4 << 20]) {
      for (const n of [0, 1, 127, 128, 129, 200, 16_383, 16_384, 20_000, 2_097_151, 2_097_152]) {
        const w = new ProtoWriter(initial);
        w.raw(prefix);
        w.tag(5, LEN);
        const at = w.fork();
        w.raw(content(n));
        w.join(at);
        w.raw(suffix);
        const want = Buffer.concat([prefix, Buffer.from([0x2a, ...varintRef(n)]), content(n), suffix]);
        assert.ok(w.view().equals(want), `initial ${initial}, length ${n}`);
      }
    }
  });

  test("join: nested messages that each cross a boundary (inner past 127, outer past 16383), in any order", () => {
    const lengthDelimited = (field: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([(field << 3) | LEN, ...varintRef(body.length)]), body]);
    for (const initial of [1, 17, 1024, 1 << 20]) {
      const w = new ProtoWriter(initial);
      w.tag(1, LEN);
      const outer = w.fork();
      w.tag(2, LEN);
      const inner = w.fork();
      w.string("a".repeat(200));
      w.join(inner);
      w.tag(3, VARINT);
      w.varint(150);
      w.tag(4, LEN);
      const inner2 = w.fork();
      w.tag(1, LEN);
      const innermost = w.fork();
      w.string("é".repeat(9000));
      w.join(innermost);
      w.join(inner2);
      w.tag(5, LEN);
      const empty = w.fork();
      w.join(empty);
      w.join(outer);
      const stringBody = (s: string): Buffer => Buffer.concat([Buffer.from(varintRef(Buffer.byteLength(s))), Buffer.from(s)]);
      const want = lengthDelimited(
        1,
        Buffer.concat([
          lengthDelimited(2, stringBody("a".repeat(200))),
          Buffer.from([(3 << 3) | VARINT, ...varintRef(150)]),
          lengthDelimited(4, lengthDelimited(1, stringBody("é".repeat(9000)))),
          lengthDelimited(5, Buffer.alloc(0)),
        ]),
      );
      assert.ok(w.view().equals(want), `initial ${initial}: ${w.view().length} bytes, want ${want.length}`);
    }
  });

  test("writeSpan's bytes do not depend on where the writer's buffer ends (every initial size)", () => {
    const { provider, memory } = recordingProvider(resourceFromAttributes({ a: "b" }));
    const tracer = provider.getTracer("sizes", "1");
    const span = tracer.startSpan("sizes", {
      kind: SpanKind.SERVER,
      attributes: { s: "héllo wörld", cjk: "缓存", e: "🚀🎉", long: "q".repeat(200), n: -5, big: 2 ** 60, d: 0.25, arr: ["x", null, "yz"], b: true },
      links: [{ context: spanContext({ remote: true, traceState: "k=v" }), attributes: { l: "link ü" } }],
    }, trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: true })));
    span.addEvent("ev", { ea: "event ä", eb: [1, 2, 3] });
    span.setStatus({ code: SpanStatusCode.ERROR, message: "bad ß" });
    span.end();
    const [ended] = memory.getFinishedSpans();
    const ref = ourBytes([ended]);
    assertSameBytes(ref, sdkBytes([ended]), "reference");
    BIG_WRITER.reset();
    writeSpan(BIG_WRITER, ended);
    const spanBytes = Buffer.from(BIG_WRITER.view());
    for (let size = 1; size <= spanBytes.length + 16; size++) {
      const w = new ProtoWriter(size);
      writeSpan(w, ended);
      assertSameBytes(w.view(), spanBytes, `writer of initial size ${size}`);
    }
  });

  test(
    "a one-character non-ASCII string written 9 bytes before the buffer's end",
    () => {
      // Minimal: 6 bytes, a tag (its varint ensure(10) fits), then "é": string's ensure(5 + 3) fits, its varint's ensure(10) grows.
      const w = new ProtoWriter(16);
      w.raw(Buffer.alloc(6, 0xaa));
      w.tag(1, LEN);
      w.string("é");
      assert.equal(Buffer.from(w.view()).toString("hex"), "aaaaaaaaaaaa" + "0a" + "02c3a9", "ProtoWriter(16): 6 bytes, tag, string('é')");

      // Through writeSpan, as EncodedSpanProcessor's 64 KiB writer meets it when a span ends near its end.
      const { provider, memory } = recordingProvider(resourceFromAttributes({ a: "b" }));
      provider.getTracer("one-char").startSpan("one-char", { attributes: { k: "é", deg: "°", euro: "€" } }).end();
      const [ended] = memory.getFinishedSpans();
      BIG_WRITER.reset();
      writeSpan(BIG_WRITER, ended);
      const spanBytes = Buffer.from(BIG_WRITER.view());
      const bad: number[] = [];
      for (let size = 1; size <= spanBytes.length + 16; size++) {
        const sized = new ProtoWriter(size);
        writeSpan(sized, ended);
        if (!Buffer.from(sized.view()).equals(spanBytes)) bad.push(size);
      }
      assert.deepEqual(bad, [], "initial writer sizes whose output differs from the SDK's");
    },
  );
});

// ---------------------------------------------------------------- sampling.ts

/** Runs `fn` with these OTEL_TRACES_SAMPLER* variables in process.env (sdk-node reads process.env), restoring them after. */
function withSamplerEnv<T>(env: NodeJS.ProcessEnv, fn: () => T): T {
  const keys = ["OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"] as const;
  const saved = keys.map((k) => process.env[k]);
  try {
    for (const k of keys) {
      if (env[k] === undefined) delete process.env[k];
      else process.env[k] = env[k];
    }
    return fn();
  } finally {
    keys.forEach((k, i) => {
      if (saved[i] === undefined) delete process.env[k];
      else process.env[k] = saved[i];
    });
  }
}

/** The sampler sdk-node would use for this environment: createSamplerFromEnv, or the TracerProvider's default. */
function sdkSamplerFor(env: NodeJS.ProcessEnv): Sampler {
  return withSamplerEnv(env, () => createSamplerFromEnv()) ?? new ParentBasedSampler({ root: new AlwaysOnSampler() });
}

const decide = (sampler: Sampler, traceId: string, ctx: Context = ROOT_CONTEXT): number =>
  sampler.shouldSample(ctx, traceId, "span", SpanKind.SERVER, {}, []).decision;

describe("sampling: TraceIdRatioSampler decides as TraceIdRatioBasedSampler", () => {
  const RATIOS = [0, 0.001, 0.1, 0.5, 0.999, 1];
  const ids = Array.from({ length: 20_000 }, () => hex(16));

  function assertSameDecisions(ratio: number, traceIds: readonly string[], what: string): number {
    const ours = new TraceIdRatioSampler(ratio);
    const sdk = new TraceIdRatioBasedSampler(ratio);
    let sampled = 0;
    for (const id of traceIds) {
      const d = decide(ours, id);
      assert.equal(d, decide(sdk, id), `${what}: ratio ${ratio}, trace id ${JSON.stringify(id)}`);
      if (d === SamplingDecision.RECORD_AND_SAMPLED) sampled++;
    }
    assert.equal(ours.toString(), sdk.toString());
    return sampled;
  }

  test("20,000 random trace ids at each ratio", () => {
    for (const ratio of RATIOS) {
      const sampled = assertSameDecisions(ratio, ids, "random id");
      // Not vacuous: the share sampled is the ratio (±5σ).
      const sigma = Math.sqrt(ids.length * ratio * (1 - ratio));
      assert.ok(Math.abs(sampled - ids.length * ratio) <= 5 * sigma + 1, `ratio ${ratio}: ${sampled} of ${ids.length} sampled`);
    }
  });

  test("ids whose hash sits at the bound (bound - 1, bound, bound + 1) and at the extremes", () => {
    for (const ratio of RATIOS) {
      const bound = ratio === 1 ? 2 ** 32 : Math.floor(ratio * 0xffffffff);
      const hashes = [bound - 1, bound, bound + 1, 0, 1, 0xffffffff].filter((h) => h >= 0 && h <= 0xffffffff);
      const crafted: string[] = [];
      for (const h of hashes) {
        crafted.push(hex8(h) + "0".repeat(24)); // h = 0: all zeros, invalid
        crafted.push("0".repeat(24) + hex8(h));
        const x = (Math.random() * 2 ** 32) >>> 0;
        const y = (Math.random() * 2 ** 32) >>> 0;
        crafted.push(hex8(h ^ x ^ y) + hex8(x) + hex8(y) + "00000000"); // the four words XOR to h
      }
      assertSameDecisions(ratio, crafted, "boundary id");
    }
  });

  test("upper- and mixed-case hex ids decide as their lower-case form", () => {
    const upper = ids.slice(0, 5000).map((id) => id.toUpperCase());
    const mixed = ids.slice(0, 5000).map((id) => [...id].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join(""));
    for (const ratio of [0.1, 0.5, 0.999]) {
      assertSameDecisions(ratio, upper, "upper-case id");
      assertSameDecisions(ratio, mixed, "mixed-case id");
      const ours = new TraceIdRatioSampler(ratio);
      upper.forEach((id, i) => assert.equal(decide(ours, id), decide(ours, ids[i]), `${id} vs ${ids[i]}`));
    }
  });

  test("invalid ids are never sampled (wrong length, non-hex, all zeros, empty), as the SDK", () => {
    const valid = "4bf92f3577b34da6a3ce929d0e0e4736";
    const invalid = [
      "",
      "0".repeat(32),
      "0".repeat(31),
      valid.slice(0, 31),
      valid + "0",
      "4bf92f3577b34da6",
      "g" + valid.slice(1),
      valid.slice(0, 31) + "g",
      valid.slice(0, 16) + "-" + valid.slice(17),
      " " + valid.slice(1),
      valid.slice(0, 31) + " ",
      "0x" + valid.slice(2),
      valid.slice(0, 31) + "é",
      valid.slice(0, 31) + "\u0660", // ARABIC-INDIC DIGIT ZERO
      valid.slice(0, 31) + String.fromCharCode(0x130), // a code > 127 whose low byte is '0'
      valid.slice(0, 30) + "😀", // 32 UTF-16 units, 31 characters
      "😀".repeat(16),
      "G".repeat(32),
      ":".repeat(32),
      "@".repeat(32),
      "`".repeat(32),
    ];
    for (const ratio of RATIOS) {
      assertSameDecisions(ratio, invalid, "invalid id");
      const ours = new TraceIdRatioSampler(ratio);
      for (const id of invalid) assert.equal(decide(ours, id), SamplingDecision.NOT_RECORD, `ratio ${ratio}: ${JSON.stringify(id)}`);
    }
    assert.equal(decide(new TraceIdRatioSampler(1), valid), SamplingDecision.RECORD_AND_SAMPLED);
  });

  test("ratios out of range or not numbers are clamped as the SDK clamps them", () => {
    for (const ratio of [NaN, -1, -0, 1.5, Infinity, -Infinity, 1e-12, 0.9999999999, 1 / 3]) {
      assertSameDecisions(ratio, ids.slice(0, 2000), "clamped ratio");
    }
  });
});

describe("sampling: samplerFromEnv reads OTEL_TRACES_SAMPLER as sdk-node", () => {
  const parents: readonly [string, Context][] = [
    ["root", ROOT_CONTEXT],
    ["remote sampled parent", trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: true, flags: TraceFlags.SAMPLED }))],
    ["remote unsampled parent", trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: true, flags: TraceFlags.NONE }))],
    ["local sampled parent", trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: false, flags: TraceFlags.SAMPLED }))],
    ["local unsampled parent", trace.setSpanContext(ROOT_CONTEXT, spanContext({ remote: false, flags: TraceFlags.NONE }))],
    ["invalid parent context", trace.setSpanContext(ROOT_CONTEXT, { traceId: "0".repeat(32), spanId: "0".repeat(16), traceFlags: 1, isRemote: true })],
  ];
  const ids = Array.from({ length: 1000 }, () => hex(16));

  const ENVS: NodeJS.ProcessEnv[] = [
    {},
    { OTEL_TRACES_SAMPLER: "" },
    { OTEL_TRACES_SAMPLER: "always_on" },
    { OTEL_TRACES_SAMPLER: "always_off" },
    { OTEL_TRACES_SAMPLER: "parentbased_always_on" },
    { OTEL_TRACES_SAMPLER: "parentbased_always_off" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: " 0.25 " },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1e-3" },
    { OTEL_TRACES_SAMPLER: "traceidratio" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "   " },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "1.5" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "-0.1" },
    { OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "abc" },
    { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" },
    { OTEL_TRACES_SAMPLER: "parentbased_traceidratio" },
    { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" },
    { OTEL_TRACES_SAMPLER: "unknown_sampler" },
    { OTEL_TRACES_SAMPLER: "AlwaysOff" },
    { OTEL_TRACES_SAMPLER: "jaeger_remote" },
  ];

  for (const env of ENVS) {
    test(`${JSON.stringify(env)}`, () => {
      const ours = samplerFromEnv(env);
      const sdk = sdkSamplerFor(env);
      assert.equal(ours.toString(), sdk.toString());
      for (const [what, ctx] of parents) {
        for (const id of ids) assert.equal(decide(ours, id, ctx), decide(sdk, id, ctx), `${what}, trace id ${id}`);
      }
    });
  }

  test("the documented defaults, stated directly", () => {
    const parentBasedOn = new ParentBasedSampler({ root: new AlwaysOnSampler() }).toString();
    assert.equal(samplerFromEnv({}).toString(), parentBasedOn, "unset");
    assert.equal(samplerFromEnv({ OTEL_TRACES_SAMPLER: "nope" }).toString(), parentBasedOn, "unknown");
    for (const arg of [undefined, "", "1.5", "-1", "x"]) {
      const sampler = samplerFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: arg });
      assert.equal(sampler.toString(), "TraceIdRatioBased{1}", `arg ${JSON.stringify(arg)}`);
      for (const id of ids.slice(0, 100)) assert.equal(decide(sampler, id), SamplingDecision.RECORD_AND_SAMPLED);
    }
    const off = samplerFromEnv({ OTEL_TRACES_SAMPLER: "parentbased_always_off" });
    assert.equal(decide(off, ids[0]), SamplingDecision.NOT_RECORD, "parentbased_always_off, root");
    assert.equal(decide(off, ids[0], parents[1][1]), SamplingDecision.RECORD_AND_SAMPLED, "parentbased_always_off, sampled parent");
  });
});

// ---------------------------------------------------------------- encoded-span-processor.ts

interface ExportCall {
  readonly batch: EncodedBatch;
  readonly done: (result: ExportResult) => void;
  readonly at: number;
}

const SUCCESS: ExportResult = { code: ExportResultCode.SUCCESS };

/** A BatchExporter that records each batch; the test answers (done) when it likes, or at once with `answer`. */
class TestExporter implements BatchExporter {
  readonly calls: ExportCall[] = [];
  readonly log: string[] = [];
  shutdowns = 0;
  answer: ExportResult | undefined;
  throwOnExport = false;

  export(batch: EncodedBatch, done: (result: ExportResult) => void): void {
    this.calls.push({ batch, done, at: performance.now() });
    this.log.push(`export ${batch.count}`);
    if (this.throwOnExport) throw new Error("exporter exploded");
    if (this.answer !== undefined) done(this.answer);
  }

  async shutdown(): Promise<void> {
    this.shutdowns++;
    this.log.push("shutdown");
  }

  get counts(): number[] {
    return this.calls.map((c) => c.batch.count);
  }
}

/** Options for the processor under test: nothing goes by timer unless the test asks. */
const QUIET: BatchOptions = { maxQueueSize: 100, maxExportBatchSize: 10, scheduledDelayMillis: 60_000, exportTimeoutMillis: 60_000 };

interface ProcessorHarness {
  readonly processor: EncodedSpanProcessor;
  readonly exporter: TestExporter;
  readonly memory: InMemorySpanExporter;
  readonly tracer: Tracer;
  readonly provider: TracerProvider;
  /** Ends `n` spans named `${prefix}${i}`, with a few attributes. */
  end(n: number, prefix?: string, tracer?: Tracer): void;
}

const PROCESSOR_RESOURCE = resourceFromAttributes({ "service.name": "processor-test", "host.tags": ["a", "b"] });

function processorHarness(options: Partial<BatchOptions> = {}): ProcessorHarness {
  const exporter = new TestExporter();
  const processor = new EncodedSpanProcessor(exporter, { ...QUIET, ...options });
  const memory = new InMemorySpanExporter();
  const provider = new TracerProvider({
    resource: PROCESSOR_RESOURCE,
    sampler: RECORD_UNSAMPLED,
    spanProcessors: [processor, new SimpleSpanProcessor({ exporter: memory })],
  });
  const tracer = provider.getTracer("processor-test", "1.0.0");
  let serial = 0;
  return {
    processor,
    exporter,
    memory,
    tracer,
    provider,
    end(n, prefix = "s", t = tracer) {
      for (let i = 0; i < n; i++) t.startSpan(`${prefix}${serial++}`, { kind: SpanKind.SERVER, attributes: { i, who: "é" } }).end();
    },
  };
}

/** A batch, wrapped (exportRequest), is the SDK serializer's request for `spans`. */
function assertBatchIs(batch: EncodedBatch, spans: readonly ReadableSpan[], what: string): void {
  assert.equal(batch.count, spans.length, `${what}: count`);
  assert.equal(batch.resource, spans[0].resource, `${what}: resource`);
  assert.equal(batch.scope, spans[0].instrumentationScope, `${what}: scope`);
  assertSameBytes(exportRequest(batch.resource, batch.scope, batch.spans), sdkBytes(spans), what);
}

const spansNamed = (memory: InMemorySpanExporter, names: readonly string[]): ReadableSpan[] =>
  names.map((n) => {
    const span = memory.getFinishedSpans().find((s) => s.name === n);
    assert.ok(span, `no span ${n}`);
    return span;
  });

describe("EncodedSpanProcessor", () => {
  const errors: Error[] = [];
  before(() => setGlobalErrorHandler((e) => errors.push(e instanceof Error ? e : new Error(String(e)))));
  after(() => setGlobalErrorHandler(loggingErrorHandler()));
  const errorsMatching = (re: RegExp): number => errors.filter((e) => re.test(e.message)).length;

  test("unsampled spans (flags 0) are ignored", async () => {
    const h = processorHarness();
    h.exporter.answer = SUCCESS;
    h.end(3, "unsampled-");
    await h.processor.forceFlush();
    assert.equal(h.exporter.calls.length, 0, "an export of unsampled spans");
    h.end(1, "sampled-");
    h.end(2, "unsampled-");
    await h.processor.forceFlush();
    assert.deepEqual(h.exporter.counts, [1]);
    assertBatchIs(h.exporter.calls[0].batch, h.memory.getFinishedSpans(), "the sampled span");
  });

  test("a batch goes as soon as it has maxExportBatchSize spans", () => {
    const h = processorHarness({ maxExportBatchSize: 3 });
    h.end(2);
    assert.equal(h.exporter.calls.length, 0, "exported before the batch was full");
    h.end(1);
    assert.deepEqual(h.exporter.counts, [3], "not exported when the third span ended");
    assertBatchIs(h.exporter.calls[0].batch, h.memory.getFinishedSpans(), "full batch");
  });

  test("otherwise it goes scheduledDelayMillis after its first span", async () => {
    const h = processorHarness({ scheduledDelayMillis: 30 });
    h.exporter.answer = SUCCESS;
    const t0 = performance.now();
    h.end(1);
    await sleep(5);
    h.end(1);
    assert.equal(h.exporter.calls.length, 0);
    await waitFor(() => h.exporter.calls.length === 1, "the timed export");
    assert.ok(h.exporter.calls[0].at - t0 >= 29, `exported after ${(h.exporter.calls[0].at - t0).toFixed(1)} ms, before the 30 ms delay`);
    assertBatchIs(h.exporter.calls[0].batch, h.memory.getFinishedSpans(), "timed batch");
    // And again for spans ended after it.
    h.end(2);
    await waitFor(() => h.exporter.calls.length === 2, "the second timed export");
    assert.deepEqual(h.exporter.counts, [2, 2]);
  });

  test("one export in flight at a time: the next waits for done", () => {
    const h = processorHarness({ maxExportBatchSize: 2 });
    h.end(6);
    assert.deepEqual(h.exporter.counts, [2], "three full batches, but only the first may go");
    h.exporter.calls[0].done(SUCCESS);
    assert.deepEqual(h.exporter.counts, [2, 2]);
    h.exporter.calls[1].done({ code: ExportResultCode.FAILED, error: new Error("collector said no") });
    assert.deepEqual(h.exporter.counts, [2, 2, 2], "a failed export holds up the next no more than a successful one");
    assert.equal(errorsMatching(/collector said no/), 1, "the failure is reported");
    h.exporter.calls[2].done(SUCCESS);
    assert.equal(h.exporter.calls.length, 3);
    const spans = h.memory.getFinishedSpans();
    h.exporter.calls.forEach((c, i) => assertBatchIs(c.batch, spans.slice(2 * i, 2 * i + 2), `batch ${i}`));
  });

  test("past maxQueueSize waiting spans, new ones are dropped and counted, and accepted again once an export finishes", () => {
    const h = processorHarness({ maxQueueSize: 4, maxExportBatchSize: 2 });
    const before = errorsMatching(/queue full/);
    h.end(2, "a"); // in flight
    h.end(2, "b"); // sealed, waiting
    assert.equal(h.processor.dropped, 0);
    h.end(3, "c"); // the queue holds 4: dropped
    assert.equal(h.processor.dropped, 3);
    assert.equal(errorsMatching(/queue full/) - before, 1, "reported once for the episode, not per span");
    h.exporter.calls[0].done(SUCCESS); // 2 leave; the b batch goes
    h.end(2, "d"); // accepted
    h.end(1, "e"); // full again
    assert.equal(h.processor.dropped, 4);
    assert.equal(errorsMatching(/queue full/) - before, 2, "a new episode is reported again");
    h.exporter.calls[1].done(SUCCESS);
    h.exporter.calls[2].done(SUCCESS);
    assert.deepEqual(h.exporter.counts, [2, 2, 2]);
    const names = h.memory.getFinishedSpans().map((s) => s.name);
    const accepted = names.filter((n) => /^[abd]/.test(n));
    h.exporter.calls.forEach((c, i) => assertBatchIs(c.batch, spansNamed(h.memory, accepted.slice(2 * i, 2 * i + 2)), `batch ${i}`));
  });

  test("past 8 MiB of encoded spans waiting, new ones are dropped too", () => {
    const h = processorHarness({ maxQueueSize: 1000, maxExportBatchSize: 1000 });
    const mib = "m".repeat(1 << 20);
    for (let i = 0; i < 8; i++) h.tracer.startSpan(`big${i}`, { attributes: { mib } }).end();
    assert.equal(h.processor.dropped, 0, "8 spans of 1 MiB were dropped");
    h.tracer.startSpan("one-too-many", { attributes: { mib } }).end();
    h.end(1);
    assert.equal(h.processor.dropped, 2);
  });

  test("an export that never calls done is abandoned after exportTimeoutMillis, and the next goes", async () => {
    const h = processorHarness({ maxQueueSize: 4, maxExportBatchSize: 2, exportTimeoutMillis: 30 });
    const t0 = performance.now();
    h.end(2); // never answered
    h.end(2);
    assert.deepEqual(h.exporter.counts, [2]);
    await waitFor(() => h.exporter.calls.length === 2, "the export after the timeout");
    assert.ok(h.exporter.calls[1].at - t0 >= 29, `next export after ${(h.exporter.calls[1].at - t0).toFixed(1)} ms, before the 30 ms timeout`);
    assert.ok(errorsMatching(/timed out after 30 ms/) >= 1, "the timeout is reported");
    // A late answer to the abandoned export changes nothing: no export, no second release of its spans.
    h.exporter.calls[0].done(SUCCESS);
    assert.equal(h.exporter.calls.length, 2);
    h.end(2); // 2 in flight + 2 = 4: full
    h.end(1);
    assert.equal(h.processor.dropped, 1, "the late done released the abandoned batch's spans a second time");
  });

  test("an exporter that throws fails that export only", () => {
    const h = processorHarness({ maxExportBatchSize: 2 });
    h.exporter.throwOnExport = true;
    h.end(2);
    assert.equal(errorsMatching(/exporter exploded/), 1);
    h.exporter.throwOnExport = false;
    h.exporter.answer = SUCCESS;
    h.end(2);
    assert.deepEqual(h.exporter.counts, [2, 2]);
  });

  test("forceFlush resolves once everything waiting (in flight, sealed, unsealed) was exported", async () => {
    const h = processorHarness({ maxExportBatchSize: 2 });
    await h.processor.forceFlush(); // nothing waiting: resolves at once
    h.end(5); // [2] in flight, [2] sealed, [1] open
    let flushed = false;
    const flush = h.processor.forceFlush().then(() => {
      flushed = true;
    });
    for (let i = 0; i < 3; i++) {
      await sleep(2);
      assert.equal(flushed, false, `flushed with ${3 - i} exports unanswered`);
      assert.equal(h.exporter.calls.length, i + 1);
      h.exporter.calls[i].done(SUCCESS);
    }
    await flush;
    assert.deepEqual(h.exporter.counts, [2, 2, 1]);
    const spans = h.memory.getFinishedSpans();
    assertBatchIs(h.exporter.calls[2].batch, spans.slice(4), "the open batch, sealed by the flush");
  });

  test("shutdown flushes, then shuts the exporter down once; spans ended after it are ignored", async () => {
    const h = processorHarness({ scheduledDelayMillis: 20 });
    h.end(3);
    let done = false;
    const shutdown = h.processor.shutdown().then(() => {
      done = true;
    });
    await sleep(5);
    assert.deepEqual(h.exporter.log, ["export 3"], "the exporter was shut down before the flush's export was answered");
    assert.equal(done, false);
    h.exporter.calls[0].done(SUCCESS);
    await shutdown;
    assert.deepEqual(h.exporter.log, ["export 3", "shutdown"]);
    assertBatchIs(h.exporter.calls[0].batch, h.memory.getFinishedSpans(), "the flushed batch");
    h.exporter.answer = SUCCESS;
    h.end(2);
    await h.processor.forceFlush();
    await sleep(40);
    await h.processor.shutdown();
    assert.deepEqual(h.exporter.log, ["export 3", "shutdown"], "exported or shut down again after shutdown");
  });

  test(
    "a span ended while shutdown is flushing is not exported after the exporter is shut down",
    async () => {
      const h = processorHarness({ scheduledDelayMillis: 20 });
      h.end(1);
      const shutdown = h.processor.shutdown(); // its flush exports the span; the test answers later
      h.end(1, "late");
      h.exporter.calls[0].done(SUCCESS);
      await shutdown;
      await sleep(50);
      h.exporter.calls.slice(1).forEach((c) => c.done(SUCCESS));
      assert.deepEqual(h.exporter.log, ["export 1", "shutdown"]);
    },
  );

  test(
    "two overlapping shutdowns shut the exporter down once",
    async () => {
      const h = processorHarness();
      h.exporter.answer = SUCCESS;
      h.end(1);
      await Promise.all([h.processor.shutdown(), h.processor.shutdown()]);
      assert.equal(h.exporter.shutdowns, 1);
    },
  );

  test("spans of different instrumentation scopes go in different batches, each the SDK's bytes", async () => {
    const h = processorHarness();
    h.exporter.answer = SUCCESS;
    const a = h.provider.getTracer("scope-a", "1");
    const b = h.provider.getTracer("scope-b");
    h.end(2, "a", a);
    h.end(1, "b", b);
    h.end(1, "a", a);
    await h.processor.forceFlush();
    assert.deepEqual(h.exporter.counts, [2, 1, 1]);
    assert.deepEqual(h.exporter.calls.map((c) => c.batch.scope.name), ["scope-a", "scope-b", "scope-a"]);
    const spans = h.memory.getFinishedSpans();
    assertBatchIs(h.exporter.calls[0].batch, spans.slice(0, 2), "scope-a batch");
    assertBatchIs(h.exporter.calls[1].batch, spans.slice(2, 3), "scope-b batch");
    assertBatchIs(h.exporter.calls[2].batch, spans.slice(3), "second scope-a batch");
  });

  test(
    "spans of two scopes ending alternately still go scheduledDelayMillis after the first",
    async () => {
      const h = processorHarness({ scheduledDelayMillis: 30, maxQueueSize: 1000 });
      h.exporter.answer = SUCCESS;
      const tracers = [h.provider.getTracer("alt-a"), h.provider.getTracer("alt-b")];
      const t0 = performance.now();
      for (let i = 0; performance.now() - t0 < 150; i++) {
        h.end(1, "alt", tracers[i % 2]);
        await sleep(5);
      }
      assert.ok(h.exporter.calls.length > 0, `no export in ${(performance.now() - t0).toFixed(0)} ms with a 30 ms delay`);
    },
  );
});

describe("EncodedSpanProcessor: configuration from the environment", () => {
  test("encodedExportApplies: OTLP alone, over HTTP with protobuf", () => {
    const applies: NodeJS.ProcessEnv[] = [
      {},
      { OTEL_TRACES_EXPORTER: "" },
      { OTEL_TRACES_EXPORTER: "otlp" },
      { OTEL_TRACES_EXPORTER: "otlp,null" },
      { OTEL_TRACES_EXPORTER: "null, otlp" },
      { OTEL_TRACES_EXPORTER: " otlp " },
      { OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" },
      { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf" },
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" },
      { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "", OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" },
      { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "  " },
    ];
    const doesNot: NodeJS.ProcessEnv[] = [
      { OTEL_TRACES_EXPORTER: "console" },
      { OTEL_TRACES_EXPORTER: "zipkin" },
      { OTEL_TRACES_EXPORTER: "none" },
      { OTEL_TRACES_EXPORTER: "otlp,console" },
      { OTEL_TRACES_EXPORTER: "console,otlp" },
      { OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" },
      { OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" },
      { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc" },
      { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" },
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" },
    ];
    for (const env of applies) assert.equal(encodedExportApplies(env), true, JSON.stringify(env));
    for (const env of doesNot) assert.equal(encodedExportApplies(env), false, JSON.stringify(env));
  });

  test("batchOptionsFromEnv: the spec's defaults, fallbacks for invalid values, a batch no larger than the queue", () => {
    const DEFAULTS: BatchOptions = { maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMillis: 5000, exportTimeoutMillis: 30000 };
    assert.deepEqual(batchOptionsFromEnv({}), DEFAULTS);
    for (const bad of ["", "  ", "abc", "-1", "12ms", "NaN", "Infinity"]) {
      const env: NodeJS.ProcessEnv = {
        OTEL_BSP_MAX_QUEUE_SIZE: bad,
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: bad,
        OTEL_BSP_SCHEDULE_DELAY: bad,
        OTEL_BSP_EXPORT_TIMEOUT: bad,
      };
      assert.deepEqual(batchOptionsFromEnv(env), DEFAULTS, `all set to ${JSON.stringify(bad)}`);
    }
    assert.deepEqual(
      batchOptionsFromEnv({ OTEL_BSP_MAX_QUEUE_SIZE: "100", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: " 10 ", OTEL_BSP_SCHEDULE_DELAY: "250", OTEL_BSP_EXPORT_TIMEOUT: "1e3" }),
      { maxQueueSize: 100, maxExportBatchSize: 10, scheduledDelayMillis: 250, exportTimeoutMillis: 1000 },
    );
    assert.deepEqual(batchOptionsFromEnv({ OTEL_BSP_MAX_QUEUE_SIZE: "100" }), { ...DEFAULTS, maxQueueSize: 100, maxExportBatchSize: 100 }, "default batch capped at the queue");
    assert.deepEqual(batchOptionsFromEnv({ OTEL_BSP_MAX_QUEUE_SIZE: "8", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "9" }), { ...DEFAULTS, maxQueueSize: 8, maxExportBatchSize: 8 });
    assert.deepEqual(batchOptionsFromEnv({ OTEL_BSP_MAX_QUEUE_SIZE: "abc", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "4096" }), { ...DEFAULTS, maxExportBatchSize: 2048 });
  });
});
