import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { inspect } from "node:util";
import {
  context,
  createTraceState,
  diag,
  DiagLogLevel,
  propagation,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type Context,
  type DiagLogger,
  type Exception,
  type Link,
  type SpanContext,
  type SpanStatus,
  type TimeInput,
} from "@opentelemetry/api";
import { addHrTimes, hrTimeDuration, hrTimeToMilliseconds, millisToHrTime, type InstrumentationScope } from "@opentelemetry/core";
import { emptyResource, resourceFromAttributes, type Resource } from "@opentelemetry/resources";
import { TracerProvider, type ReadableSpan, type Span as SdkSpan, type SpanLimits, type SpanProcessor } from "@opentelemetry/sdk-trace";
import { ServerSpan, serverSpanSink, type ServerSpanSink } from "../src/telemetry/server-span.js";
import { startTracing } from "../src/telemetry/tracing.js";
import { assertSameBytes, EVERY_VALUE, ourBytes, pick, RECORD_UNSAMPLED, randomAttributes, randomInt, randomString, randomValue, sdkBytes, spanContext, type Rand } from "./helpers/otlp.js";
import { mulberry32 } from "./helpers/prng.js";

/**
 * ServerSpan (server-span.ts) stands in for the SDK's SpanImpl on the server's
 * sampled calls, so it must be indistinguishable from it: the same random
 * operations applied to an SDK span (TracerProvider.getTracer().startSpan) and
 * to a ServerSpan of the same span context must give the same return values,
 * diag messages, span processor calls, ReadableSpan fields after every step,
 * and OTLP bytes. Times are always explicit: with a startTime given, the SDK
 * reads Date.now() for a missing one, where ServerSpan measures from its start
 * (that path has a test of its own).
 */

/** A processor call or a diag message, in the order they happened; compared between the two spans. */
type Entry = readonly unknown[];

/** Records what reaches it (spans with flags NONE too, which a SimpleSpanProcessor would skip). */
class Recorder implements SpanProcessor {
  readonly log: Entry[] = [];
  onStart(span: SdkSpan, parentContext: Context): void {
    this.log.push(["onStart", span, parentContext]);
  }
  onEnding(span: SdkSpan): void {
    this.log.push(["onEnding", span, span.isRecording(), span.ended]);
  }
  onEnd(span: ReadableSpan): void {
    this.log.push(["onEnd", span, span.ended]);
  }
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** A diag logger appending to `log`; Errors as "name: message" (their stacks differ between the two). */
function capturingLogger(log: Entry[]): DiagLogger {
  const level =
    (name: string) =>
    (message: string, ...args: unknown[]): void => {
      log.push([name, message, ...args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : a))]);
    };
  return { error: level("error"), warn: level("warn"), info: level("info"), debug: level("debug"), verbose: level("verbose") };
}

/** `entries` with the span itself and its parent context named, so that the two spans' logs compare. */
const normalized = (entries: readonly Entry[], span: unknown, parent: Context): Entry[] =>
  entries.map((entry) => entry.map((x) => (x === span ? "<the span>" : x === parent ? "<parent context>" : x)));

/** Every ReadableSpan field (and isRecording), as the comparison sees them; attributeKeys checks their order. */
const fields = (span: SdkSpan): Record<string, unknown> => ({
  name: span.name,
  kind: span.kind,
  spanContext: span.spanContext(),
  parentSpanContext: span.parentSpanContext,
  startTime: span.startTime,
  endTime: span.endTime,
  duration: span.duration,
  status: span.status,
  // Own keys and values: the SDK's object takes an array set as "__proto__" as its prototype (no key, none exported),
  // which ServerSpan's (counted, not kept, as the SDK) does not.
  attributes: { ...span.attributes },
  attributeKeys: Object.keys(span.attributes),
  events: span.events,
  links: span.links,
  droppedAttributesCount: span.droppedAttributesCount,
  droppedEventsCount: span.droppedEventsCount,
  droppedLinksCount: span.droppedLinksCount,
  ended: span.ended,
  isRecording: span.isRecording(),
  resource: span.resource,
  instrumentationScope: span.instrumentationScope,
});

function assertSameExport(ours: ServerSpan, sdk: SdkSpan): void {
  const want = sdkBytes([sdk]);
  assertSameBytes(ourBytes([ours]), want, "otlp-encoding of the ServerSpan");
  assertSameBytes(sdkBytes([ours]), want, "the SDK serializer on the ServerSpan");
  assertSameBytes(ourBytes([sdk]), want, "otlp-encoding of the SDK's span");
}

// ---------------------------------------------------------------- the two spans

interface Setup {
  readonly limits: SpanLimits;
  /** Give the span `limits` as they are (undefined fields stay so) rather than as the TracerProvider fills them in. */
  readonly rawLimits: boolean;
  readonly resource: Resource;
  readonly scope: InstrumentationScope;
  readonly name: string;
  /** Epoch milliseconds, with a fraction. */
  readonly start: number;
  readonly parent: SpanContext | undefined;
}

interface Pair {
  readonly sdk: SdkSpan;
  readonly ours: ServerSpan;
  readonly parentContext: Context;
  /** What each logged while starting (onStart, diag). */
  readonly started: { readonly sdk: Entry[]; readonly ours: Entry[] };
}

/** The SDK's span (through a real TracerProvider) and a ServerSpan of the same span context, recording into `recorder`. */
function startPair(setup: Setup, recorder: Recorder): Pair {
  const { scope } = setup;
  const provider = new TracerProvider({ resource: setup.resource, sampler: RECORD_UNSAMPLED, spanLimits: setup.limits, spanProcessors: [recorder] });
  const tracer = provider.getTracer(scope.name, scope.version, { schemaUrl: scope.schemaUrl });
  // The provider fills unset limits with defaults; the SDK's span (and ServerSpan) also take limits left undefined,
  // which only a Tracer given them directly reaches: set on its (private) field.
  const tracerFields = tracer as unknown as { _spanLimits: SpanLimits };
  if (setup.rawLimits) tracerFields._spanLimits = setup.limits;
  const sink: ServerSpanSink = { limits: tracerFields._spanLimits, resource: setup.resource, scope, processor: recorder };
  const parentContext = setup.parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, setup.parent);
  const sdk = tracer.startSpan(setup.name, { kind: SpanKind.SERVER, startTime: setup.start }, parentContext) as SdkSpan;
  const sdkStarted = recorder.log.splice(0);
  const ours = new ServerSpan(sink, setup.name, sdk.spanContext(), setup.parent, setup.start, performance.now(), parentContext);
  return { sdk, ours, parentContext, started: { sdk: sdkStarted, ours: recorder.log.splice(0) } };
}

// ---------------------------------------------------------------- random scripts

/** One call on a span: a method of the API's Span and its arguments (often ones its types refuse). */
interface Op {
  readonly method: "setAttribute" | "setAttributes" | "addEvent" | "addLink" | "addLinks" | "setStatus" | "updateName" | "recordException" | "end";
  readonly args: readonly unknown[];
}
const op = (method: Op["method"], ...args: unknown[]): Op => ({ method, args });
const apply = (span: SdkSpan, { method, args }: Op): unknown => Reflect.apply(span[method], span, args) as unknown;
const describeOp = ({ method, args }: Op): string =>
  `${method}(${args.map((a) => inspect(a, { depth: 3, maxStringLength: 24, maxArrayLength: 8, breakLength: Infinity })).join(", ")})`;

const randomHex = (rand: Rand, bytes: number): string => Array.from({ length: bytes }, () => randomInt(rand, 256).toString(16).padStart(2, "0")).join("");

/** Keys repeat (values are replaced, counted once); some are array indices (an object orders them first); "" is invalid; "__proto__" is counted, never kept. */
const KEYS = ["__proto__", "a", "b", "http.route", "0", "7", "10", "01", "-1", "1.5", "4294967294", "4294967295", ""];
const randomKey = (rand: Rand): string => (rand() < 0.9 ? pick(rand, KEYS) : randomString(rand, true));
const INVALID_VALUES: readonly unknown[] = [null, undefined, { nested: 1 }, [1, "a"], [true, 2], [{}], [[1]], () => 1];
const EVERY = Object.values(EVERY_VALUE);
const randomAnyValue = (rand: Rand): unknown => (rand() < 0.2 ? pick(rand, INVALID_VALUES) : rand() < 0.15 ? pick(rand, EVERY) : randomValue(rand));

/** Attributes of events and links: random ones, or from the key pool with invalid values (built as own properties). */
const randomEventAttributes = (rand: Rand): Attributes =>
  rand() < 0.5 ? randomAttributes(rand) : (Object.fromEntries(Array.from({ length: randomInt(rand, 6) }, () => [randomKey(rand), randomAnyValue(rand)])) as Attributes);

/** Epoch milliseconds (never a performance.now() value: the two spans' offsets differ), as a number, an HrTime or a Date. */
function timeInput(rand: Rand, ms: number): TimeInput {
  const form = randomInt(rand, 3);
  return form === 0 ? ms : form === 1 ? millisToHrTime(ms) : new Date(ms);
}

/** Mostly after the start; sometimes equal, sometimes before it (the SDK then ends the span at its start). */
function endTime(rand: Rand, start: number): TimeInput {
  const r = rand();
  return timeInput(rand, r < 0.1 ? start : r < 0.25 ? start - 0.001 - rand() * 5000 : start + rand() * 100_000);
}

function randomLink(rand: Rand): Link {
  const context: SpanContext = { traceId: randomHex(rand, 16), spanId: randomHex(rand, 8), traceFlags: pick(rand, [TraceFlags.NONE, TraceFlags.SAMPLED]) };
  if (rand() < 0.5) context.isRemote = rand() < 0.5;
  if (rand() < 0.3) context.traceState = createTraceState("vendor=abc,other=1");
  return rand() < 0.7 ? { context, attributes: randomEventAttributes(rand) } : { context };
}

function randomException(rand: Rand): Exception {
  const stack = (): string | undefined => (rand() < 0.5 ? `Error: boom\n    at f (file.js:${randomInt(rand, 99)}:1)` : undefined);
  switch (randomInt(rand, 7)) {
    case 0:
      return randomString(rand);
    case 1: {
      const error = new (pick(rand, [Error, TypeError, RangeError]))(randomString(rand));
      error.stack = stack(); // short, or none (then no exception.stacktrace): not this file's path and lines
      return error;
    }
    case 2:
      return { code: pick(rand, [0, 42, "ECONNRESET", ""]), message: pick(rand, ["", "refused"]), stack: stack() };
    case 3:
      return { name: pick(rand, ["", "Named"]), message: randomString(rand) };
    case 4:
      return { code: 7, name: "n", message: "", stack: "s" };
    case 5:
      return {} as Exception;
    default:
      return "";
  }
}

function randomOp(rand: Rand, start: number): Op {
  const time = (): TimeInput => timeInput(rand, start - 1000 + rand() * 20_000);
  switch (randomInt(rand, 11)) {
    case 0:
    case 1:
    case 2:
      return op("setAttribute", randomKey(rand), randomAnyValue(rand));
    case 3:
      return op("setAttributes", Object.fromEntries(Array.from({ length: randomInt(rand, 5) }, () => [randomKey(rand), randomAnyValue(rand)])));
    case 4:
    case 5: {
      const name = randomString(rand);
      const form = randomInt(rand, 4);
      if (form === 0) return op("addEvent", name, randomEventAttributes(rand), time());
      if (form === 1) return op("addEvent", name, time()); // the time as 2nd argument
      if (form === 2) return op("addEvent", name, undefined, time());
      return op("addEvent", name, time(), time()); // both: the 3rd wins
    }
    case 6:
      return op("addLink", randomLink(rand));
    case 7:
      return op("addLinks", Array.from({ length: randomInt(rand, 4) }, () => randomLink(rand)));
    case 8: {
      const status: SpanStatus = { code: pick(rand, [SpanStatusCode.UNSET, SpanStatusCode.OK, SpanStatusCode.ERROR, SpanStatusCode.ERROR]) };
      if (rand() < 0.7) status.message = pick(rand, [randomString(rand), "", undefined, null, 42, { m: 1 }]) as string;
      return op("setStatus", status);
    }
    case 9:
      return op("updateName", randomString(rand));
    default:
      return op("recordException", randomException(rand), time());
  }
}

/**
 * Random operations with one end() among them (mostly last), the rest then on an ended span. A second
 * end() has a test of its own: ServerSpan's diag output for it differs (see that test).
 */
function randomOps(rand: Rand, start: number): Op[] {
  const n = randomInt(rand, 24);
  const endAt = rand() < 0.7 ? n : randomInt(rand, n + 1);
  const ops: Op[] = [];
  for (let i = 0; i <= n; i++) {
    if (i === endAt) ops.push(op("end", endTime(rand, start)));
    if (i < n) ops.push(randomOp(rand, start));
  }
  return ops;
}

function randomLimits(rand: Rand): SpanLimits {
  const maybe = (make: () => number): number | undefined => (rand() < 0.3 ? undefined : make());
  return {
    attributeCountLimit: maybe(() => randomInt(rand, 6)),
    attributeValueLengthLimit: maybe(() => pick(rand, [1, 2, 3, 5, 8, 10, Infinity, Infinity, 0, -1])),
    eventCountLimit: maybe(() => randomInt(rand, 4)),
    linkCountLimit: maybe(() => randomInt(rand, 4)),
    attributePerEventCountLimit: maybe(() => randomInt(rand, 4)),
    attributePerLinkCountLimit: maybe(() => randomInt(rand, 4)),
  };
}

const RESOURCES: readonly Resource[] = [
  resourceFromAttributes({ "service.name": "server-span-test", tags: ["a", "é"] }, { schemaUrl: "https://opentelemetry.io/schemas/1.30.0" }),
  emptyResource(),
];
// As the Tracer makes its instrumentationScope: all three keys, undefined when not given.
const SCOPES: readonly InstrumentationScope[] = [
  { name: "ripplecache", version: "1.2.3", schemaUrl: undefined },
  { name: "bare", version: undefined, schemaUrl: undefined },
  { name: "with-schema", version: "0.1.0", schemaUrl: "https://opentelemetry.io/schemas/1.25.0" },
];

function randomSetup(rand: Rand): Setup {
  const parent: SpanContext | undefined =
    rand() < 0.4
      ? undefined
      : {
          traceId: randomHex(rand, 16),
          spanId: randomHex(rand, 8),
          traceFlags: pick(rand, [TraceFlags.NONE, TraceFlags.SAMPLED]),
          isRemote: true,
          ...(rand() < 0.5 ? { traceState: createTraceState("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") } : {}),
        };
  return {
    limits: randomLimits(rand),
    rawLimits: rand() < 0.5,
    resource: pick(rand, RESOURCES),
    scope: pick(rand, SCOPES),
    // RECORD_UNSAMPLED records "unsampled…" spans with flags NONE.
    name: (rand() < 0.2 ? "unsampled-" : "") + randomString(rand),
    start: 1.7e12 + randomInt(rand, 1e10) + rand(),
    parent,
  };
}

/**
 * Applies the operations `makeOps` makes to an SDK span and a ServerSpan of `setup`, comparing after every one;
 * a failure names `what` and the operations so far. The ops are made twice (at one call site, so that Errors
 * match): neither span sees what the other may have kept or changed.
 */
function compareScript(what: string, setup: Setup, makeOps: () => Op[]): Pair {
  const [sdkOps, ourOps] = [0, 1].map(() => makeOps());
  const recorder = new Recorder();
  const log = recorder.log;
  let done = 0;
  diag.setLogger(capturingLogger(log), { logLevel: DiagLogLevel.ALL, suppressOverrideMessage: true });
  log.length = 0; // the API's own "Registered a global for diag"
  try {
    const pair = startPair(setup, recorder);
    const { sdk, ours, parentContext, started } = pair;
    assert.deepStrictEqual(normalized(started.ours, ours, parentContext), normalized(started.sdk, sdk, parentContext));
    assert.deepStrictEqual(fields(ours), fields(sdk));
    for (; done < sdkOps.length; done++) {
      const want = apply(sdk, sdkOps[done]);
      const wantLog = normalized(log.splice(0), sdk, parentContext);
      const got = apply(ours, ourOps[done]);
      const gotLog = normalized(log.splice(0), ours, parentContext);
      assert.deepStrictEqual(got === ours ? "this" : got, want === sdk ? "this" : want, "return value");
      assert.deepStrictEqual(gotLog, wantLog);
      assert.deepStrictEqual(fields(ours), fields(sdk));
    }
    if (sdk.ended) assertSameExport(ours, sdk);
    return pair;
  } catch (error) {
    if (error instanceof Error) {
      const ops = sdkOps.slice(0, done + 1).map((o, i) => `  ${i}. ${describeOp(o)}`);
      const parent = setup.parent ? "remote" : "none";
      error.message = `${what}: limits ${inspect(setup.limits)}${setup.rawLimits ? " (raw)" : ""}, parent ${parent}, operations:\n${ops.join("\n")}\n${error.message}`;
    }
    throw error;
  } finally {
    diag.disable();
  }
}

// ---------------------------------------------------------------- tests

/** Runs `fn` with `env` in process.env (sdk-node reads it there), restoring it after. */
function withEnv<T>(env: NodeJS.ProcessEnv, fn: () => T): T {
  const saved = Object.keys(env).map((k) => [k, process.env[k]] as const);
  try {
    Object.assign(process.env, env);
    return fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const DEFAULT_LIMITS: SpanLimits = { attributeCountLimit: 128, attributeValueLengthLimit: Infinity, eventCountLimit: 128, linkCountLimit: 128, attributePerEventCountLimit: 128, attributePerLinkCountLimit: 128 };
const FIXED: Setup = { limits: DEFAULT_LIMITS, rawLimits: false, resource: RESOURCES[0], scope: SCOPES[0], name: "Get", start: 1.7e12 + 0.25, parent: undefined };

describe("ServerSpan: the SDK's span, operation for operation", () => {
  test("300 seeded random scripts: same return values, diag messages, processor calls, fields after each step, OTLP bytes", () => {
    const first = Number(process.env.SERVER_SPAN_SEED ?? 0x5e7e);
    for (let seed = first; seed < first + 300; seed++) {
      const rand = mulberry32(seed);
      const setup = randomSetup(rand);
      const opsSeed = randomInt(rand, 2 ** 32);
      compareScript(`seed ${seed}`, setup, () => randomOps(mulberry32(opsSeed), setup.start));
    }
  });

  test("array-index attribute keys: first and ascending, as in the SDK's attributes object, in the bytes too", () => {
    const keys = ["b", "2", "a", "1", "10"];
    const { ours } = compareScript("index keys", FIXED, () => [...keys.map((key, i) => op("setAttribute", key, i)), op("end", FIXED.start + 5)]);
    assert.deepStrictEqual(Object.keys(ours.attributes), ["1", "2", "10", "b", "a"]);
  });

  test("consecutive spans with mostly the attributes of the one before (copied from its bytes in runs), changed in every position and way", () => {
    const base: [string, string | number | boolean][] = [
      ["rpc.system", "grpc"],
      ["rpc.service", "ripplecache.v1.CacheService"],
      ["rpc.method", "Get"],
      ["server.port", 7420],
      ["client.port", 40001],
      ["flag", true],
      ["rpc.grpc.status_code", 0],
    ];
    const variants: [string, string | number | boolean][][] = [base, base];
    for (let i = 0; i < base.length; i++) {
      const [key, value] = base[i];
      const changed = typeof value === "number" ? String(value) : typeof value === "boolean" ? !value : `${value}-x`;
      variants.push(base.map((kv, j) => (j === i ? [key, changed] : kv)), base); // one value changed (even its type), then back
      variants.push(base.filter((_, j) => j !== i), base); // one attribute left out
      variants.push([...base.slice(0, i), ["inserted", "x"], ...base.slice(i)], base); // one more in between
    }
    variants.push([...base].reverse(), base.slice(0, 3), [...base, ...base.map(([k, v]): [string, string | number | boolean] => [`${k}.2`, v])], base);
    variants.forEach((attributes, n) => {
      compareScript(`variant ${n}`, FIXED, () => [...attributes.map(([key, value]) => op("setAttribute", key, value)), op("end", FIXED.start + 5)]);
    });
  });

  test("end() a second time: the SDK's diag messages (a warning of an operation on an ended span, then the error)", () => {
    compareScript("end twice", FIXED, () => [op("end", FIXED.start + 5), op("end", FIXED.start + 6)]);
  });

  test("without explicit times, event and end times are the clock's, measured from the start", async () => {
    const recorder = new Recorder();
    const sink: ServerSpanSink = { limits: DEFAULT_LIMITS, resource: RESOURCES[0], scope: SCOPES[0], processor: recorder };
    const span = new ServerSpan(sink, "Get", spanContext(), undefined, Date.now(), performance.now(), ROOT_CONTEXT);
    await sleep(10);
    span.addEvent("middle");
    await sleep(10);
    span.end();
    const start = hrTimeToMilliseconds(span.startTime);
    const end = hrTimeToMilliseconds(span.endTime);
    assert.ok(end - start >= 15 && end - start <= 1000, `end - start: ${end - start} ms, after waiting ~20 ms`);
    assert.deepStrictEqual(span.duration, hrTimeDuration(span.startTime, span.endTime));
    const event = hrTimeToMilliseconds(span.events[0].time);
    assert.ok(event >= start && event <= end, `event at ${event - start} ms, span ${end - start} ms long`);
    assert.deepStrictEqual(
      recorder.log.map((entry) => entry[0]),
      ["onStart", "onEnding", "onEnd"],
    );
  });

  test("endAt(performance time): end() as at that reading, measured from the start; a second end is refused as end() refuses it", () => {
    const recorder = new Recorder();
    const sink: ServerSpanSink = { limits: DEFAULT_LIMITS, resource: RESOURCES[0], scope: SCOPES[0], processor: recorder };
    const startMillis = 1.7e12 + 0.5;
    const startPerformance = 1234.25;
    const span = new ServerSpan(sink, "Get", spanContext(), undefined, startMillis, startPerformance, ROOT_CONTEXT);
    span.endAt(startPerformance + 12.5);
    assert.deepStrictEqual(span.startTime, millisToHrTime(startMillis));
    assert.deepStrictEqual(span.endTime, addHrTimes(millisToHrTime(startMillis), millisToHrTime(12.5)));
    assert.deepStrictEqual(span.duration, [0, 12_500_000]);
    const log: Entry[] = [];
    diag.setLogger(capturingLogger(log), DiagLogLevel.ALL);
    try {
      span.endAt(startPerformance + 20);
    } finally {
      diag.disable();
    }
    // (setLogger and disable log at debug level themselves.)
    assert.deepStrictEqual(
      log.filter((entry) => entry[0] !== "debug").map((entry) => entry[0]),
      ["warn", "error"],
    );
    assert.deepStrictEqual(span.duration, [0, 12_500_000], "the first end stands");
    assert.deepStrictEqual(
      recorder.log.map((entry) => entry[0]),
      ["onStart", "onEnding", "onEnd"],
    );
  });

  test("serverSpanSink: the Tracer's limits, resource and scope when `processor` is its only span processor; else undefined", () => {
    const only = new Recorder();
    const resource = RESOURCES[0];
    const provider = new TracerProvider({ resource, spanLimits: { attributeCountLimit: 3 }, spanProcessors: [only] });
    const tracer = provider.getTracer("x", "1");
    const sdkTracer = tracer as unknown as { _spanLimits: SpanLimits; _resource: Resource; instrumentationScope: InstrumentationScope };
    const sink = serverSpanSink(tracer, only);
    assert.ok(sink !== undefined, "no sink for a tracer whose only processor is the one given");
    assert.equal(sink.limits, sdkTracer._spanLimits);
    assert.equal(sink.limits.attributeCountLimit, 3);
    assert.equal(sink.resource, sdkTracer._resource);
    assert.equal(sink.resource, resource);
    assert.equal(sink.scope, sdkTracer.instrumentationScope);
    assert.deepStrictEqual(sink.scope, { name: "x", version: "1", schemaUrl: undefined });
    assert.equal(sink.processor, only);

    assert.equal(serverSpanSink(tracer, new Recorder()), undefined, "another processor");
    const two = new TracerProvider({ resource, spanProcessors: [only, new Recorder()] });
    assert.equal(serverSpanSink(two.getTracer("x", "1"), only), undefined, "two processors");
    assert.equal(serverSpanSink(new TracerProvider({ resource }).getTracer("x", "1"), only), undefined, "no processor");
    assert.equal(serverSpanSink(new ProxyTracerProvider().getTracer("x", "1"), only), undefined, "not the SDK's Tracer");
  });

  test("startTracing: ServerSpans when OTLP over HTTP/protobuf is the only exporter, the SDK's spans with the console exporter", async () => {
    const resource = resourceFromAttributes({ "service.name": "server-span-test" });
    for (const [exporter, serverSpans] of [["otlp", true], ["console", false]] as const) {
      const env: NodeJS.ProcessEnv = { OTEL_TRACES_EXPORTER: exporter, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", OTEL_TRACES_SAMPLER: "always_on" };
      const tracing = withEnv(env, () => startTracing(resource, env));
      try {
        assert.equal(tracing.serverSpans, serverSpans, `serverSpans with OTEL_TRACES_EXPORTER=${exporter}`);
        // Left unended: nothing is exported (nothing listens at the endpoint).
        const span = tracing.spans.recording(tracing.spans.start("Get", new Headers()));
        assert.ok(span !== undefined && span.isRecording(), "always_on: the call's span records");
        assert.equal(span instanceof ServerSpan, serverSpans, `a ServerSpan with OTEL_TRACES_EXPORTER=${exporter}`);
      } finally {
        await tracing.shutdown();
        // NodeSDK.start registers these globals; a second registration would be refused.
        trace.disable();
        context.disable();
        propagation.disable();
      }
    }
  });
});
