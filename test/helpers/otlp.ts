import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createTraceState, TraceFlags, type Attributes, type AttributeValue, type SpanContext } from "@opentelemetry/api";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { Resource } from "@opentelemetry/resources";
import { InMemorySpanExporter, SamplingDecision, SimpleSpanProcessor, TracerProvider, type ReadableSpan, type Sampler, type SpanLimits } from "@opentelemetry/sdk-trace";
import { exportRequest, ProtoWriter, writeSpan } from "../../src/telemetry/otlp-encoding.js";

/**
 * The reference side of the span export tests: the SDK serializer's bytes,
 * otlp-encoding's, and random attribute values of every shape. Copied from
 * test/otlp-spans.test.ts (which keeps its own copies), so that other span
 * tests (server-span.test.ts) compare against the same references.
 */

export type Rand = () => number;
export const pick = <T>(rand: Rand, items: readonly T[]): T => items[Math.floor(rand() * items.length)];
export const randomInt = (rand: Rand, below: number): number => Math.floor(rand() * below);
export const hex = (bytes: number): string => randomBytes(bytes).toString("hex");

/** What the SDK's serializer writes for these spans (an ExportTraceServiceRequest). */
export function sdkBytes(spans: readonly ReadableSpan[]): Buffer {
  const bytes = ProtobufTraceSerializer.serializeRequest([...spans]);
  assert.ok(bytes !== undefined, "the SDK serializer returned nothing");
  return Buffer.from(bytes);
}

/** One writer for the comparisons, large enough never to grow (growth has tests of its own). */
export const BIG_WRITER = new ProtoWriter(8 << 20);

/** What otlp-encoding writes for these spans (of one resource and scope): writeSpan each, then exportRequest. */
export function ourBytes(spans: readonly ReadableSpan[], writer: ProtoWriter = BIG_WRITER): Buffer {
  assert.ok(spans.length > 0, "no spans to encode");
  writer.reset();
  for (const span of spans) writeSpan(writer, span);
  return Buffer.from(exportRequest(spans[0].resource, spans[0].instrumentationScope, writer.view()));
}

/** Equal bytes, or a failure that shows where they part. */
export function assertSameBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  const a = Buffer.from(got);
  const b = Buffer.from(want);
  if (a.equals(b)) return;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const from = Math.max(0, i - 24);
  assert.fail(
    `${what}: ${a.length} bytes, the SDK's ${b.length}; first difference at byte ${i}\n` +
      `   got ...${a.subarray(from, i + 24).toString("hex")}\n` +
      `  want ...${b.subarray(from, i + 24).toString("hex")}`,
  );
}

/** Samples every span except those named "unsampled…", which are recorded with flags 0 (so still end and reach processors). */
export const RECORD_UNSAMPLED: Sampler = {
  shouldSample: (_context, _traceId, name) => ({
    decision: name.startsWith("unsampled") ? SamplingDecision.RECORD : SamplingDecision.RECORD_AND_SAMPLED,
  }),
  toString: () => "RecordUnsampled",
};

export interface Recording {
  readonly provider: TracerProvider;
  readonly memory: InMemorySpanExporter;
}

/** A TracerProvider whose sampled spans land in an InMemorySpanExporter (SimpleSpanProcessor: synchronously). */
export function recordingProvider(resource: Resource, spanLimits?: SpanLimits, sampler: Sampler = RECORD_UNSAMPLED): Recording {
  const memory = new InMemorySpanExporter();
  const provider = new TracerProvider({ resource, sampler, spanLimits, spanProcessors: [new SimpleSpanProcessor({ exporter: memory })] });
  return { provider, memory };
}

export function spanContext(options: { flags?: number; remote?: boolean; traceState?: string } = {}): SpanContext {
  return {
    traceId: hex(16),
    spanId: hex(8),
    traceFlags: options.flags ?? TraceFlags.SAMPLED,
    ...(options.remote === undefined ? {} : { isRemote: options.remote }),
    ...(options.traceState === undefined ? {} : { traceState: createTraceState(options.traceState) }),
  };
}

/** Attribute values of every type and size class the API allows. */
export const EVERY_VALUE: Attributes = {
  "str.empty": "",
  "str.ascii": "hello",
  "str.latin": "héllo wörld",
  "str.cjk": "缓存服务器",
  "str.emoji": "🚀 ripple 🎉",
  "str.lone-surrogate": "a\ud800b",
  "str.127": "x".repeat(127),
  "str.128": "x".repeat(128),
  "str.100-chars-200-bytes": "é".repeat(100),
  "str.16383": "y".repeat(16383),
  "str.16384": "y".repeat(16384),
  "str.emoji-20000-bytes": "😀".repeat(5000),
  "bool.true": true,
  "bool.false": false,
  "int.zero": 0,
  "int.negative-zero": -0,
  "int.one": 1,
  "int.minus-one": -1,
  "int.127": 127,
  "int.128": 128,
  "int.2^31": 2 ** 31,
  "int.-2^31": -(2 ** 31),
  "int.2^32": 2 ** 32,
  "int.2^53-1": Number.MAX_SAFE_INTEGER,
  "int.-(2^53-1)": Number.MIN_SAFE_INTEGER,
  "int.2^60": 2 ** 60,
  "int.-2^60": -(2 ** 60),
  "int.-2^63": -(2 ** 63),
  "int.2^63-1024": 2 ** 63 - 1024,
  "double.2^63": 2 ** 63,
  "double.1e21": 1e21,
  "double.half": 0.5,
  "double.negative": -1.25,
  "double.pi": Math.PI,
  "double.nan": NaN,
  "double.infinity": Infinity,
  "double.-infinity": -Infinity,
  "double.min": Number.MIN_VALUE,
  "double.max": Number.MAX_VALUE,
  "array.strings": ["a", "é", "😀", ""],
  "array.numbers": [1, 2.5, -3, 2 ** 60, NaN],
  "array.bools": [true, false, true],
  "array.empty": [],
  "array.strings-with-null": ["a", null, "b", undefined],
  "array.numbers-with-null": [null, 1, undefined, 2],
  "array.only-null": [null],
  "array.long": Array.from({ length: 300 }, (_, i) => `item-${i}`),
};

export function randomString(rand: Rand, nonEmpty = false): string {
  let length = pick(rand, [0, 1, 1, 2, 3, 5, 8, 16, 40, 100, 127, 128, 129, 300]);
  if (rand() < 0.01) length += 16_380;
  if (nonEmpty && length === 0) length = 1;
  const alphabet = pick(rand, ["ascii", "ascii", "ascii", "latin", "cjk", "emoji", "mixed"]);
  let s = "";
  for (let i = 0; i < length; i++) {
    const kind = alphabet === "mixed" ? pick(rand, ["ascii", "latin", "cjk", "emoji", "surrogate"]) : alphabet;
    if (kind === "ascii") s += String.fromCharCode(32 + randomInt(rand, 95));
    else if (kind === "latin") s += String.fromCharCode(0xa0 + randomInt(rand, 0xe0));
    else if (kind === "cjk") s += String.fromCharCode(0x4e00 + randomInt(rand, 0x5000));
    else if (kind === "emoji") s += String.fromCodePoint(0x1f300 + randomInt(rand, 0x300));
    else s += String.fromCharCode(0xd800 + randomInt(rand, 0x800));
  }
  return s;
}

export function randomNumber(rand: Rand): number {
  switch (randomInt(rand, 6)) {
    case 0:
      return randomInt(rand, 256) - 128;
    case 1:
      return Math.floor((rand() - 0.5) * 2 ** randomInt(rand, 65));
    case 2:
      return pick(rand, [2 ** 31, -(2 ** 31), 2 ** 32, 2 ** 53, 2 ** 60, 2 ** 63, -(2 ** 63), 2 ** 64, -(2 ** 64), 0, -0]);
    case 3:
      return (rand() - 0.5) * 10 ** (randomInt(rand, 40) - 20);
    case 4:
      return pick(rand, [NaN, Infinity, -Infinity, Number.MIN_VALUE, Number.MAX_VALUE, Number.EPSILON]);
    default:
      return rand();
  }
}

export function randomValue(rand: Rand): AttributeValue {
  const withNulls = <T>(item: () => T): (T | null | undefined)[] =>
    Array.from({ length: randomInt(rand, 6) }, () => (rand() < 0.15 ? pick(rand, [null, undefined]) : item()));
  switch (randomInt(rand, 6)) {
    case 0:
    case 1:
      return randomString(rand);
    case 2:
      return randomNumber(rand);
    case 3:
      return rand() < 0.5;
    case 4:
      return pick(rand, [() => withNulls(() => randomString(rand)), () => withNulls(() => randomNumber(rand)), () => withNulls(() => rand() < 0.5)])();
    default:
      return randomInt(rand, 1000);
  }
}

export function randomAttributes(rand: Rand): Attributes {
  const attributes: Attributes = {};
  const n = randomInt(rand, 9);
  for (let i = 0; i < n; i++) attributes[rand() < 0.5 ? `k${randomInt(rand, 20)}` : randomString(rand, true)] = randomValue(rand);
  return attributes;
}
