import {
  diag,
  SpanKind,
  SpanStatusCode,
  type Attributes,
  type AttributeValue,
  type Context,
  type Exception,
  type HrTime,
  type Link,
  type Span,
  type SpanContext,
  type SpanStatus,
  type TimeInput,
  type Tracer,
} from "@opentelemetry/api";
import {
  addHrTimes,
  hrTime,
  hrTimeDuration,
  isAttributeValue,
  isTimeInput,
  isTimeInputHrTime,
  millisToHrTime,
  otperformance,
  sanitizeAttributes,
  type InstrumentationScope,
} from "@opentelemetry/core";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan, SpanLimits, SpanProcessor, TimedEvent } from "@opentelemetry/sdk-trace";
import { writeKeyValueField, type ProtoWriter } from "./otlp-encoding.js";

/** What every ServerSpan of one tracer shares: where it goes when it ends, and what the SDK's span would carry. */
export interface ServerSpanSink {
  readonly limits: SpanLimits;
  readonly resource: Resource;
  readonly scope: InstrumentationScope;
  readonly processor: SpanProcessor;
}

/** The SDK Tracer's own fields ServerSpan needs (private in @opentelemetry/sdk-trace; read once, checked). */
interface SdkTracerFields {
  readonly _spanLimits?: SpanLimits;
  readonly _resource?: Resource;
  readonly instrumentationScope?: InstrumentationScope;
  readonly _spanProcessor?: { readonly _spanProcessors?: readonly SpanProcessor[] };
}

/**
 * The sink for ServerSpans of `tracer` (the SDK's), when its only span
 * processor is `processor`; undefined otherwise (another processor may want
 * the SDK's span object itself, or its onStart), and for an SDK whose Tracer
 * no longer has these fields: the server then starts SDK spans as before.
 */
export function serverSpanSink(tracer: Tracer, processor: SpanProcessor): ServerSpanSink | undefined {
  const fields = tracer as unknown as SdkTracerFields;
  const processors = fields._spanProcessor?._spanProcessors;
  const limits = fields._spanLimits;
  const resource = fields._resource;
  const scope = fields.instrumentationScope;
  if (!Array.isArray(processors) || processors.length !== 1 || processors[0] !== processor) return undefined;
  if (typeof limits !== "object" || limits === null || resource === undefined || typeof scope?.name !== "string") return undefined;
  return { limits, resource, scope, processor };
}

/** Shared by spans with none (frozen: a span's own list is made on its first add). */
const NO_EVENTS = Object.freeze([]) as unknown as TimedEvent[];
const NO_LINKS = Object.freeze([]) as unknown as Link[];

/** Attribute keys that a JavaScript object orders first, numerically (array indices): the SDK's attributes object does. */
function isArrayIndex(key: string): boolean {
  const c = key.charCodeAt(0);
  if (c < 48 || c > 57) return false;
  return /^(?:0|[1-9][0-9]*)$/.test(key) && Number(key) < 4294967295;
}

/** The most attributes, and bytes of them, LastAttributes keeps. */
const LAST_MAX_ATTRIBUTES = 64;
const LAST_MAX_BYTES = 4096;

/**
 * The attributes the last ServerSpan wrote, and their bytes. A server's spans
 * carry the same keys in the same order, most with the values of the span
 * before (the method, the protocol, the addresses): a run of those is copied
 * from the last span's bytes in one go, and only the others (the client's
 * port, a status) are encoded.
 */
class LastAttributes {
  private keys: readonly string[] = [];
  private values: readonly AttributeValue[] = [];
  private field = 0;
  count = 0;
  /** The bytes of the last span's attributes, and where each attribute ends in them. */
  private readonly bytes = Buffer.alloc(LAST_MAX_BYTES);
  private ends = new Int32Array(LAST_MAX_ATTRIBUTES);
  /** The same for the span being written (the two arrays swap when it is done). */
  private nextEnds = new Int32Array(LAST_MAX_ATTRIBUTES);

  write(w: ProtoWriter, field: number, keys: readonly string[], values: readonly AttributeValue[]): void {
    const n = keys.length;
    const start = w.pos;
    const count = field === this.field && n <= LAST_MAX_ATTRIBUTES ? this.count : 0;
    const ends = this.nextEnds;
    let run = -1; // the first of the unchanged attributes being passed over
    for (let i = 0; i < n; i++) {
      const value = values[i];
      if (i < count && keys[i] === this.keys[i] && value === this.values[i] && typeof value !== "object") {
        if (run < 0) run = i;
        continue;
      }
      if (run >= 0) this.copyRun(w, run, i, start, ends);
      run = -1;
      writeKeyValueField(w, field, keys[i], value);
      if (i < LAST_MAX_ATTRIBUTES) ends[i] = w.pos - start;
    }
    if (run >= 0) this.copyRun(w, run, n, start, ends);
    if (n > LAST_MAX_ATTRIBUTES || w.pos - start > LAST_MAX_BYTES) {
      this.count = 0;
      return;
    }
    w.buf.copy(this.bytes, 0, start, w.pos);
    this.nextEnds = this.ends;
    this.ends = ends;
    this.keys = keys;
    this.values = values;
    this.field = field;
    this.count = n;
  }

  /** The last span's attributes `from` to `to` (exclusive), as they were written; `ends` learns where they end now. */
  private copyRun(w: ProtoWriter, from: number, to: number, start: number, ends: Int32Array): void {
    const last = this.ends;
    const begin = from === 0 ? 0 : last[from - 1];
    const at = w.pos - start;
    w.copyFrom(this.bytes, begin, last[to - 1]);
    for (let j = from; j < to; j++) ends[j] = at + (last[j] - begin);
  }
}

const LAST = new LastAttributes();

/**
 * A call's SERVER span, made without the SDK's Tracer when ours is the only
 * span processor (serverSpanSink): the SDK's SpanImpl, operation for
 * operation (limits, truncation, status rules, times, what is ignored after
 * end, the diag messages; test/server-span.test.ts applies random operations
 * to both and compares what each exports), in fewer objects.
 *
 * Why: with 10% of calls sampled, a sampled Get's span cost ~20 µs of server
 * CPU, against ~13 µs for the whole untraced call. The SDK's path to a span
 * (context lookups, sanitized copies of empty attributes and links, a second
 * sampling decision, span metrics, a context holding a copied Map, an
 * attributes object grown key by key, hrtime arrays, three clock reads at the
 * end) ran cold between unsampled calls. Here attributes are two arrays,
 * times are read once each, and the span is written to OTLP bytes when it ends.
 *
 * Left out, as our setup never uses them: span metrics (sdk-node enables
 * them only with its own meter provider, which ours is not) and suppressed
 * tracing (a call's parent context comes from its headers alone).
 */
export class ServerSpan implements Span, ReadableSpan {
  readonly kind = SpanKind.SERVER;
  readonly resource: Resource;
  readonly instrumentationScope: InstrumentationScope;
  name: string;
  private readonly context: SpanContext;
  private readonly limits: SpanLimits;
  private readonly processor: SpanProcessor;
  private readonly keys: string[] = [];
  private readonly values: AttributeValue[] = [];
  /** Attributes counted against the limit (the SDK counts a "__proto__" key it never keeps). */
  private attributeCount = 0;
  private hasIndexKey = false;
  private droppedAttributes = 0;
  private eventList: TimedEvent[] = NO_EVENTS;
  private droppedEvents = 0;
  private linkList: Link[] = NO_LINKS;
  private droppedLinks = 0;
  status: SpanStatus = { code: SpanStatusCode.UNSET };
  private start: HrTime | undefined;
  private end_: HrTime | undefined;
  private done = false;

  /**
   * `startMillis`: the wall clock when the call started (Date.now()), as the
   * SDK's span start; `startPerformance`: performance.now() at that moment,
   * from which event and end times are measured.
   */
  constructor(
    sink: ServerSpanSink,
    name: string,
    context: SpanContext,
    readonly parentSpanContext: SpanContext | undefined,
    private readonly startMillis: number,
    private readonly startPerformance: number,
    parentContext: Context,
  ) {
    this.resource = sink.resource;
    this.instrumentationScope = sink.scope;
    this.limits = sink.limits;
    this.processor = sink.processor;
    this.name = name;
    this.context = context;
    this.processor.onStart(this, parentContext);
  }

  spanContext(): SpanContext {
    return this.context;
  }

  setAttribute(key: string, value: AttributeValue | undefined): this {
    if (value == null || this.isEnded()) return this;
    if (key.length === 0) {
      diag.warn(`Invalid attribute key: ${key}`);
      return this;
    }
    if (!isAttributeValue(value)) {
      diag.warn(`Invalid attribute value set for key: ${key}`);
      return this;
    }
    const at = this.keys.indexOf(key);
    const limit = this.limits.attributeCountLimit;
    if (at < 0 && limit !== undefined && this.attributeCount >= limit) {
      this.droppedAttributes++;
      return this;
    }
    const kept = this.truncated(value);
    if (at >= 0) {
      this.values[at] = kept;
      return this;
    }
    this.attributeCount++;
    if (key === "__proto__") return this;
    if (!this.hasIndexKey && isArrayIndex(key)) this.hasIndexKey = true;
    this.keys.push(key);
    this.values.push(kept);
    return this;
  }

  setAttributes(attributes: Attributes): this {
    for (const key in attributes) {
      if (Object.prototype.hasOwnProperty.call(attributes, key)) this.setAttribute(key, attributes[key]);
    }
    return this;
  }

  addEvent(name: string, attributesOrStartTime?: Attributes | TimeInput, timeStamp?: TimeInput): this {
    if (this.isEnded()) return this;
    const { eventCountLimit, attributePerEventCountLimit } = this.limits;
    if (eventCountLimit === 0) {
      diag.warn("No events allowed.");
      this.droppedEvents++;
      return this;
    }
    if (this.eventList === NO_EVENTS) this.eventList = [];
    if (eventCountLimit !== undefined && this.eventList.length >= eventCountLimit) {
      if (this.droppedEvents === 0) diag.debug("Dropping extra events.");
      this.eventList.shift();
      this.droppedEvents++;
    }
    if (isTimeInput(attributesOrStartTime)) {
      if (!isTimeInput(timeStamp)) timeStamp = attributesOrStartTime;
      attributesOrStartTime = undefined;
    }
    const { attributes, droppedAttributesCount } = this.limited(sanitizeAttributes(attributesOrStartTime), attributePerEventCountLimit);
    this.eventList.push({ name, attributes, time: this.time(timeStamp), droppedAttributesCount });
    return this;
  }

  addLink(link: Link): this {
    if (this.isEnded()) return this;
    const { linkCountLimit, attributePerLinkCountLimit } = this.limits;
    if (linkCountLimit === 0) {
      this.droppedLinks++;
      return this;
    }
    if (this.linkList === NO_LINKS) this.linkList = [];
    if (linkCountLimit !== undefined && this.linkList.length >= linkCountLimit) {
      if (this.droppedLinks === 0) diag.debug("Dropping extra links.");
      this.linkList.shift();
      this.droppedLinks++;
    }
    const { attributes, count, droppedAttributesCount } = this.limited(sanitizeAttributes(link.attributes), attributePerLinkCountLimit);
    const kept: Link & { droppedAttributesCount?: number } = { context: link.context };
    if (count > 0) kept.attributes = attributes;
    if (droppedAttributesCount > 0) kept.droppedAttributesCount = droppedAttributesCount;
    this.linkList.push(kept);
    return this;
  }

  addLinks(links: Link[]): this {
    for (const link of links) this.addLink(link);
    return this;
  }

  setStatus(status: SpanStatus): this {
    if (this.isEnded()) return this;
    if (status.code === SpanStatusCode.UNSET || this.status.code === SpanStatusCode.OK) return this;
    const next: SpanStatus = { code: status.code };
    if (status.code === SpanStatusCode.ERROR) {
      if (typeof status.message === "string") next.message = status.message;
      else if (status.message != null) diag.warn(`Dropping invalid status.message of type '${typeof status.message}', expected 'string'`);
    }
    this.status = next;
    return this;
  }

  updateName(name: string): this {
    if (!this.isEnded()) this.name = name;
    return this;
  }

  end(endTime?: TimeInput): void {
    if (this.endedTwice()) return;
    this.finish(this.time(endTime));
  }

  /**
   * end() as it would be at `performanceNow`, a performance.now() the caller
   * has just read (rpc.ts, for the call's duration): one clock read fewer.
   */
  endAt(performanceNow: number): void {
    if (this.endedTwice()) return;
    this.finish(this.since(performanceNow));
  }

  private endedTwice(): boolean {
    if (!this.isEnded()) return false;
    diag.error(`${this.name} ${this.context.traceId}-${this.context.spanId} - You can only call end() on a span once.`);
    return true;
  }

  private finish(end: HrTime): void {
    if (hrTimeDuration(this.startTime, end)[0] < 0) {
      diag.warn("Inconsistent start and end time, startTime > endTime. Setting span duration to 0ms.", this.startTime, end);
      end = this.startTime.slice() as HrTime;
    }
    this.end_ = end;
    if (this.droppedEvents > 0) diag.warn(`Dropped ${this.droppedEvents} events because eventCountLimit reached`);
    if (this.droppedLinks > 0) diag.warn(`Dropped ${this.droppedLinks} links because linkCountLimit reached`);
    this.processor.onEnding?.(this);
    this.done = true;
    this.processor.onEnd(this);
  }

  isRecording(): boolean {
    return !this.done;
  }

  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: Attributes = {};
    if (typeof exception === "string") {
      attributes["exception.message"] = exception;
    } else if (exception) {
      if (exception.code) attributes["exception.type"] = exception.code.toString();
      else if (exception.name) attributes["exception.type"] = exception.name;
      if (exception.message) attributes["exception.message"] = exception.message;
      if (exception.stack) attributes["exception.stacktrace"] = exception.stack;
    }
    if (attributes["exception.type"] || attributes["exception.message"]) this.addEvent("exception", attributes, time);
    else diag.warn(`Failed to record an exception ${String(exception)}`);
  }

  // --- ReadableSpan, for the span processor ---

  get startTime(): HrTime {
    return (this.start ??= millisToHrTime(this.startMillis));
  }

  get endTime(): HrTime {
    return this.end_ ?? [0, 0];
  }

  get duration(): HrTime {
    return this.end_ === undefined ? [-1, -1] : hrTimeDuration(this.startTime, this.end_);
  }

  get ended(): boolean {
    return this.done;
  }

  /** As an object, in the order the SDK's would list its keys (made on each read: the export path uses writeAttributes). */
  get attributes(): Attributes {
    const out: Attributes = {};
    for (let i = 0; i < this.keys.length; i++) out[this.keys[i]] = this.values[i];
    return out;
  }

  get events(): TimedEvent[] {
    return this.eventList;
  }

  get links(): Link[] {
    return this.linkList;
  }

  get droppedAttributesCount(): number {
    return this.droppedAttributes;
  }

  get droppedEventsCount(): number {
    return this.droppedEvents;
  }

  get droppedLinksCount(): number {
    return this.droppedLinks;
  }

  /** The span's attributes as repeated KeyValue at `field`, in the attributes object's key order. */
  writeAttributes(w: ProtoWriter, field: number): void {
    const keys = this.keys;
    const values = this.values;
    if (this.hasIndexKey) {
      LAST.count = 0;
      const order = keys.map((_, i) => i);
      const index = (i: number): number => (isArrayIndex(keys[i]) ? Number(keys[i]) : -1);
      const indexed = order.filter((i) => index(i) >= 0).sort((a, b) => index(a) - index(b));
      for (const i of [...indexed, ...order.filter((i) => index(i) < 0)]) writeKeyValueField(w, field, keys[i], values[i]);
      return;
    }
    LAST.write(w, field, keys, values);
  }

  // --- the SDK span's private helpers, as they are ---

  private isEnded(): boolean {
    if (this.done) {
      const { traceId, spanId } = this.context;
      diag.warn(`Cannot execute the operation on ended Span {traceId: ${traceId}, spanId: ${spanId}}`, new Error(`Operation attempted on ended Span {traceId: ${traceId}, spanId: ${spanId}}`));
    }
    return this.done;
  }

  /** An event's or the end's time: a performance timestamp, epoch milliseconds, a Date, an HrTime, or now. */
  private time(input: TimeInput | undefined): HrTime {
    if (typeof input === "number" && input <= otperformance.now()) {
      return hrTime(input + (this.startMillis - (this.startPerformance + otperformance.timeOrigin)));
    }
    if (typeof input === "number") return millisToHrTime(input);
    if (input instanceof Date) return millisToHrTime(input.getTime());
    if (isTimeInputHrTime(input)) return input;
    return this.since(otperformance.now());
  }

  /** The time at `performanceNow`: the start, plus what the performance clock measured since. */
  private since(performanceNow: number): HrTime {
    return addHrTimes(this.startTime, millisToHrTime(performanceNow - this.startPerformance));
  }

  private limited(sanitized: Attributes, limit: number | undefined): { attributes: Attributes; count: number; droppedAttributesCount: number } {
    const attributes: Attributes = {};
    let droppedAttributesCount = 0;
    let count = 0;
    for (const key in sanitized) {
      if (!Object.prototype.hasOwnProperty.call(sanitized, key)) continue;
      if (limit !== undefined && count >= limit) {
        droppedAttributesCount++;
        continue;
      }
      attributes[key] = this.truncated(sanitized[key]!);
      count++;
    }
    return { attributes, count, droppedAttributesCount };
  }

  private truncated(value: AttributeValue): AttributeValue {
    const limit = this.limits.attributeValueLengthLimit ?? 0;
    if (limit <= 0) {
      diag.warn(`Attribute value limit must be positive, got ${limit}`);
      return value;
    }
    if (typeof value === "string") return value.length <= limit ? value : value.substring(0, limit);
    if (Array.isArray(value)) return value.map((v) => (typeof v === "string" && v.length > limit ? v.substring(0, limit) : v)) as AttributeValue;
    return value;
  }
}
