import type { AttributeValue, Attributes, HrTime, Link, SpanContext } from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan, TimedEvent } from "@opentelemetry/sdk-trace";
import { BIT32, BIT64, LEN, VARINT } from "../protobuf-wire.js";

/**
 * OTLP's protobuf encoding of spans (opentelemetry/proto/trace/v1/trace.proto),
 * byte for byte what @opentelemetry/otlp-transformer's ProtobufTraceSerializer
 * writes (the test compares the two), in pieces: a span alone, when it ends
 * (EncodedSpanProcessor keeps its bytes, not the span), and the resource and
 * scope once per batch.
 */

/** An instrumentation scope as spans carry it. */
export type Scope = ReadableSpan["instrumentationScope"];

/** Span flags (trace.proto SpanFlags): the W3C flags, and whether the parent was remote. */
const HAS_IS_REMOTE = 0x100;
const IS_REMOTE = 0x200;

/** int64 bounds of an integer attribute (beyond them it is a double, as the SDK's serializer does). */
const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;

/**
 * A growable protobuf writer. Length-delimited fields are written with one
 * byte reserved for their length (fork) and moved up when it needs more
 * (join): the nested messages of a span are nearly all under 128 bytes.
 */
export class ProtoWriter {
  buf: Buffer;
  pos = 0;

  constructor(size = 1024) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** The bytes written so far (a view: valid until the next write). */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  reset(): void {
    this.pos = 0;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  /** A varint; negative numbers as 64-bit two's complement (int64). */
  varint(value: number): void {
    this.ensure(10);
    const buf = this.buf;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 0x7f) {
        buf[this.pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      buf[this.pos++] = v;
      return;
    }
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / 0x100000000) >>> 0;
    } else {
      const abs = Math.abs(value);
      low = ~(abs >>> 0) >>> 0;
      high = ~((abs / 0x100000000) >>> 0) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 0x7f) {
      buf[this.pos++] = (low & 0x7f) | 0x80;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    buf[this.pos++] = low & 0x7f;
  }

  fixed32(value: number): void {
    this.ensure(4);
    this.uint32(value);
  }

  fixed64(low: number, high: number): void {
    this.ensure(8);
    this.uint32(low);
    this.uint32(high);
  }

  /** Four bytes, little-endian, in room already ensured (Buffer#writeUInt32LE checks its arguments first). */
  private uint32(value: number): void {
    const buf = this.buf;
    let p = this.pos;
    buf[p++] = value & 0xff;
    buf[p++] = (value >>> 8) & 0xff;
    buf[p++] = (value >>> 16) & 0xff;
    buf[p++] = (value >>> 24) & 0xff;
    this.pos = p;
  }

  double(value: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
  }

  /** Nanoseconds since the epoch of an HrTime, exactly (seconds * 1e9 passes 2^53). */
  hrTime(time: HrTime): void {
    const [seconds, nanos] = time;
    const lowSecondsNanos = (seconds & 0xffff) * 1e9;
    const highSecondsNanos = ((seconds / 0x10000) >>> 0) * 1e9;
    const low = (lowSecondsNanos >>> 0) + (((highSecondsNanos & 0xffff) * 0x10000) >>> 0) + nanos;
    const high = Math.floor(lowSecondsNanos / 0x100000000) + ((highSecondsNanos / 0x10000) >>> 0) + Math.floor(low / 0x100000000);
    this.fixed64(low >>> 0, high >>> 0);
  }

  /** A string's length and UTF-8 bytes. */
  string(s: string): void {
    const n = s.length;
    this.ensure(5 + n * 3);
    const buf = this.buf;
    if (n < 128) {
      // Short and (nearly always) ASCII: one length byte, then the characters.
      const start = this.pos;
      let p = start + 1;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 127) {
          p = -1;
          break;
        }
        buf[p++] = c;
      }
      if (p >= 0) {
        buf[start] = n;
        this.pos = p;
        return;
      }
    }
    const bytes = Buffer.byteLength(s, "utf8");
    this.varint(bytes);
    // varint() may have grown the buffer: write into the current one.
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.raw(b);
  }

  /** Bytes as they are (already encoded fields). */
  raw(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** Bytes `begin` to `end` of `b` (Buffer#copy: no view made for them). */
  copyFrom(b: Buffer, begin: number, end: number): void {
    const n = end - begin;
    this.ensure(n);
    b.copy(this.buf, this.pos, begin, end);
    this.pos += n;
  }

  /** The first `n` bytes of `b`, a few dozen at most: copied in a loop, cheaper than a native call at that size. */
  small(b: Uint8Array, n: number): void {
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = b[i];
    this.pos = p;
  }

  /**
   * A trace or span id: its hex as bytes. In a loop: Buffer's native hex
   * decoding is faster warm, but a span is written between untraced calls,
   * when the call into C++ costs more than the loop.
   */
  id(hex: string): void {
    const n = hex.length >> 1;
    this.ensure(1 + n);
    const buf = this.buf;
    let p = this.pos;
    buf[p++] = n;
    for (let i = 0; i < n; i++) {
      const hi = hex.charCodeAt(2 * i);
      const lo = hex.charCodeAt(2 * i + 1);
      buf[p++] = ((hi < 128 ? HEX_VALUES[hi] : hexValue(hi)) << 4) | (lo < 128 ? HEX_VALUES[lo] : hexValue(lo));
    }
    this.pos = p;
  }

  /** Starts a length-delimited field's content (its tag written): returns where its length goes. */
  fork(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Ends the field started at `at` (fork), writing its length. */
  join(at: number): void {
    const len = this.pos - at - 1;
    if (len < 0x80) {
      this.buf[at] = len;
      return;
    }
    let extra = 0;
    for (let v = len >>> 7; v > 0; v >>>= 7) extra++;
    this.ensure(extra);
    this.buf.copyWithin(at + 1 + extra, at + 1, this.pos);
    const end = this.pos + extra;
    this.pos = at;
    this.varint(len);
    this.pos = end;
  }
}

/** A hex digit's value, as the SDK's serializer reads it (ids are valid hex by then). */
function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  return c - 55;
}

/** hexValue of the ASCII characters, looked up: digits and letters come in random order, which branches mispredict. */
const HEX_VALUES = Int16Array.from({ length: 128 }, (_, c) => hexValue(c));

/** ScopeSpans.spans (field 2): one ended span. */
export function writeSpan(w: ProtoWriter, span: ReadableSpan): void {
  w.tag(2, LEN);
  const at = w.fork();
  const ctx = span.spanContext();
  writeIds(w, ctx);
  const parent = span.parentSpanContext;
  if (parent?.spanId) {
    w.tag(4, LEN);
    w.id(parent.spanId);
  }
  w.tag(5, LEN);
  w.string(span.name);
  // SpanKind is one more on the wire (0 is UNSPECIFIED there).
  const kind = span.kind == null ? 0 : span.kind + 1;
  if (kind !== 0) {
    w.tag(6, VARINT);
    w.varint(kind);
  }
  w.tag(7, BIT64);
  w.hrTime(span.startTime);
  w.tag(8, BIT64);
  w.hrTime(span.endTime);
  if (hasAttributeWriter(span)) span.writeAttributes(w, 9);
  else writeAttributes(w, span.attributes, 9);
  w.tag(10, VARINT);
  w.varint(span.droppedAttributesCount);
  for (const event of span.events) writeEvent(w, event);
  w.tag(12, VARINT);
  w.varint(span.droppedEventsCount);
  for (const link of span.links) writeLink(w, link);
  w.tag(14, VARINT);
  w.varint(span.droppedLinksCount);
  w.tag(15, LEN);
  const status = w.fork();
  if (span.status.message) {
    w.tag(2, LEN);
    w.string(span.status.message);
  }
  w.tag(3, VARINT);
  w.varint(span.status.code);
  w.join(status);
  w.tag(16, BIT32);
  w.fixed32(spanFlags(ctx.traceFlags, parent?.isRemote));
  w.join(at);
}

/** trace_id, span_id and trace_state (fields 1-3 of both Span and Span.Link). */
function writeIds(w: ProtoWriter, ctx: SpanContext): void {
  w.tag(1, LEN);
  w.id(ctx.traceId);
  w.tag(2, LEN);
  w.id(ctx.spanId);
  const traceState = ctx.traceState?.serialize();
  if (traceState) {
    w.tag(3, LEN);
    w.string(traceState);
  }
}

function spanFlags(traceFlags: number, remote: boolean | undefined): number {
  return (traceFlags & 0xff) | HAS_IS_REMOTE | (remote === true ? IS_REMOTE : 0);
}

function writeEvent(w: ProtoWriter, event: TimedEvent): void {
  w.tag(11, LEN);
  const at = w.fork();
  w.tag(1, BIT64);
  w.hrTime(event.time);
  w.tag(2, LEN);
  w.string(event.name);
  if (event.attributes) writeAttributes(w, event.attributes, 3);
  w.tag(4, VARINT);
  w.varint(event.droppedAttributesCount ?? 0);
  w.join(at);
}

function writeLink(w: ProtoWriter, link: Link & { droppedAttributesCount?: number }): void {
  w.tag(13, LEN);
  const at = w.fork();
  const ctx = link.context;
  writeIds(w, ctx);
  if (link.attributes) writeAttributes(w, link.attributes, 4);
  w.tag(5, VARINT);
  w.varint(link.droppedAttributesCount ?? 0);
  w.tag(6, BIT32);
  w.fixed32(spanFlags(ctx.traceFlags, ctx.isRemote));
  w.join(at);
}

/** A span that writes its own attributes (ServerSpan keeps them in arrays, not in an object). */
interface AttributeWriter {
  writeAttributes(w: ProtoWriter, field: number): void;
}

function hasAttributeWriter(span: object): span is AttributeWriter {
  return typeof (span as Partial<AttributeWriter>).writeAttributes === "function";
}

/** Repeated KeyValue at `field`. */
export function writeAttributes(w: ProtoWriter, attributes: Attributes, field: number): void {
  for (const key in attributes) {
    if (Object.prototype.hasOwnProperty.call(attributes, key)) writeKeyValueField(w, field, key, attributes[key]);
  }
}

/** One KeyValue at `field`. */
export function writeKeyValueField(w: ProtoWriter, field: number, key: string, value: unknown): void {
  const known = keys.get(key);
  if (known !== undefined && known.holds(field, value)) {
    w.small(known.lastField, known.lastLength);
    return;
  }
  const start = w.pos;
  w.tag(field, LEN);
  const at = w.fork();
  writeKeyValue(w, key, value, known);
  w.join(at);
  (known ?? keys.get(key))?.remember(field, value, w.buf, start, w.pos);
}

/** The most keys remembered (beyond it, keys are written each time). */
const KEYS_MAX = 1024;
/** The longest KeyValue field remembered whole. */
const LAST_FIELD_MAX = 64;

/**
 * What the writer remembers of an attribute key: its KeyValue.key bytes, and
 * the last KeyValue field written under it, with its value. A server span has
 * the same dozen keys every time, and most hold what they held in the last
 * span (the method, the protocol, the server's address): that field is copied
 * whole rather than encoded again. Only strings, numbers and booleans.
 */
class KnownKey {
  readonly lastField = Buffer.alloc(LAST_FIELD_MAX);
  lastLength = -1;
  private field = 0;
  private value: unknown;

  constructor(readonly keyField: Buffer) {}

  holds(field: number, value: unknown): boolean {
    return this.lastLength >= 0 && this.value === value && this.field === field;
  }

  remember(field: number, value: unknown, buf: Uint8Array, start: number, end: number): void {
    const type = typeof value;
    if (end - start > LAST_FIELD_MAX || (type !== "string" && type !== "number" && type !== "boolean")) {
      this.lastLength = -1;
      return;
    }
    for (let i = start; i < end; i++) this.lastField[i - start] = buf[i];
    this.lastLength = end - start;
    this.field = field;
    this.value = value;
  }
}

const keys = new Map<string, KnownKey>();

function writeKeyValue(w: ProtoWriter, key: string, value: unknown, known = keys.get(key)): void {
  if (known !== undefined) {
    w.small(known.keyField, known.keyField.length);
  } else {
    const start = w.pos;
    w.tag(1, LEN);
    w.string(key);
    if (keys.size < KEYS_MAX) keys.set(key, new KnownKey(Buffer.from(w.buf.subarray(start, w.pos))));
  }
  w.tag(2, LEN);
  const at = w.fork();
  writeAnyValue(w, value);
  w.join(at);
}

/** AnyValue's content; a value of no OTLP type writes nothing (an empty AnyValue), as the SDK does. */
function writeAnyValue(w: ProtoWriter, value: AttributeValue | unknown): void {
  if (typeof value === "string") {
    w.tag(1, LEN);
    w.string(value);
  } else if (typeof value === "boolean") {
    w.tag(2, VARINT);
    w.varint(value ? 1 : 0);
  } else if (typeof value === "number") {
    if (Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64) {
      w.tag(3, VARINT);
      w.varint(value);
    } else {
      w.tag(4, BIT64);
      w.double(value);
    }
  } else if (value instanceof Uint8Array) {
    w.tag(7, LEN);
    w.bytes(value);
  } else if (Array.isArray(value)) {
    w.tag(5, LEN);
    const at = w.fork();
    for (const item of value) {
      w.tag(1, LEN);
      const itemAt = w.fork();
      writeAnyValue(w, item);
      w.join(itemAt);
    }
    w.join(at);
  } else if (typeof value === "object" && value !== null) {
    w.tag(6, LEN);
    const at = w.fork();
    const record = value as Record<string, unknown>;
    for (const k in record) {
      if (!Object.prototype.hasOwnProperty.call(record, k)) continue;
      w.tag(1, LEN);
      const kvAt = w.fork();
      writeKeyValue(w, k, record[k]);
      w.join(kvAt);
    }
    w.join(at);
  }
}

/**
 * An ExportTraceServiceRequest of one resource and one scope, around spans
 * already encoded by writeSpan (`spans`: their bytes, one after another).
 */
export function exportRequest(resource: Resource, scope: Scope, spans: Uint8Array): Uint8Array {
  const w = new ProtoWriter(spans.length + 4096);
  w.tag(1, LEN); // ResourceSpans
  const resourceSpans = w.fork();
  w.tag(1, LEN); // Resource
  const r = w.fork();
  writeAttributes(w, resource.attributes, 1);
  w.tag(2, VARINT);
  w.varint(0);
  w.join(r);
  w.tag(2, LEN); // ScopeSpans
  const scopeSpans = w.fork();
  writeScope(w, scope);
  w.raw(spans);
  if (scope.schemaUrl) {
    w.tag(3, LEN);
    w.string(scope.schemaUrl);
  }
  w.join(scopeSpans);
  if (resource.schemaUrl) {
    w.tag(3, LEN);
    w.string(resource.schemaUrl);
  }
  w.join(resourceSpans);
  return w.view();
}

/** ScopeSpans.scope (field 1). */
function writeScope(w: ProtoWriter, scope: Scope & { attributes?: Attributes; droppedAttributesCount?: number }): void {
  w.tag(1, LEN);
  const at = w.fork();
  w.tag(1, LEN);
  w.string(scope.name);
  if (scope.version) {
    w.tag(2, LEN);
    w.string(scope.version);
  }
  if (scope.attributes) writeAttributes(w, scope.attributes, 3);
  if (scope.droppedAttributesCount) {
    w.tag(4, VARINT);
    w.varint(scope.droppedAttributesCount);
  }
  w.join(at);
}
