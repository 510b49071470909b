import {
  context,
  propagation,
  ROOT_CONTEXT,
  SamplingDecision,
  SpanKind,
  trace,
  TraceFlags,
  type Context,
  type Sampler,
  type SamplingResult,
  type Span,
  type SpanContext,
  type TextMapGetter,
  type TraceState,
  type Tracer,
} from "@opentelemetry/api";
import { sanitizeAttributes } from "@opentelemetry/core";
import { ServerSpan, type ServerSpanSink } from "./server-span.js";
import { rootRatioSampler, type TraceIdRatioSampler } from "./sampling.js";
import { traceIdIn, type PooledSpanIds } from "./span-ids.js";
import type { SyncContextManager } from "./sync-context.js";

const NO_ATTRIBUTES = Object.freeze({});
const NO_LINKS = Object.freeze([]) as unknown as [];
/** What the ratio sampler answers for a trace id it samples. */
const RATIO_SAMPLED: SamplingResult = Object.freeze({ decision: SamplingDecision.RECORD_AND_SAMPLED });

const headerGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
};

/**
 * Starts the SERVER span of each call. The sampler is asked first, here, and
 * a call it drops gets no SDK span at all: only an UnsampledContext, one
 * small object. Through the SDK a dropped call cost a span id, a
 * NonRecordingSpan, a context (a copied Map), the SDK's own span metrics'
 * attribute objects and more; that garbage was most of what tracing at 10%
 * cost the 90% of calls it does not trace (~1.5 of ~2.5 µs per call, a Get
 * being ~15 µs).
 *
 * A sampled call gets a ServerSpan (server-span.ts) when our
 * EncodedSpanProcessor is the only span processor: the SDK's span, made in
 * fewer steps and objects. Otherwise it goes through the SDK (tracer.startSpan,
 * so every processor sees the SDK's span), on the trace id the sampler saw:
 * the SDK asks the same sampler again and gets the same answer (sampling.ts).
 */
export class ServerSpans {
  /**
   * The request headers the propagators read, when they read no others: a
   * request with none of them continues no trace, and extract() (a closure
   * and a walk over the propagators per call) is skipped. Undefined when a
   * propagator may read more than it names (Jaeger's uberctx-* baggage).
   */
  private readonly fields: readonly string[] | undefined;
  /** The ratio sampler that decides for calls with no parent, if one does (sampling.ts). */
  private readonly rootRatio: TraceIdRatioSampler | undefined;

  /**
   * `tracer`: the SDK's own, asked for once the SDK is registered (the
   * API's ProxyTracer, taken earlier, looks its delegate up on every span).
   * `propagators`: OTEL_PROPAGATORS. `sink`: set when sampled calls get a
   * ServerSpan rather than the SDK's (serverSpanSink). `contextManager`: the
   * registered one, when it is ours (run() then skips the API).
   */
  constructor(
    private readonly tracer: Tracer,
    private readonly sampler: Sampler,
    private readonly ids: PooledSpanIds,
    propagators: string | undefined,
    private readonly sink?: ServerSpanSink,
    private readonly contextManager?: SyncContextManager,
  ) {
    this.fields = /jaeger/i.test(propagators ?? "") ? undefined : propagation.fields();
    this.rootRatio = rootRatioSampler(sampler);
  }

  /**
   * The call's trace context: it continues the caller's (W3C traceparent, or
   * whatever OTEL_PROPAGATORS names). `recording(context)` is the span to
   * fill in, or undefined when the call is not sampled.
   */
  start(name: string, header: Headers): Context {
    const parent = this.carriesContext(header) ? propagation.extract(ROOT_CONTEXT, header, headerGetter) : ROOT_CONTEXT;
    const parentSpan = trace.getSpanContext(parent);
    const root = parentSpan === undefined || !trace.isSpanContextValid(parentSpan);
    const ratio = this.rootRatio;
    if (root && ratio !== undefined) {
      // The ratio sampler's decision from the id's hash: a dropped call's trace id stays unmade.
      const at = this.ids.drawTraceId();
      const pool = this.ids.pool;
      if (!ratio.samples(this.ids.drawnHash)) return new UnsampledContext(parent, undefined, this.ids, pool, at);
      return this.sampled(name, parent, undefined, traceIdIn(pool, at), RATIO_SAMPLED, undefined);
    }
    const traceId = root ? this.ids.generateTraceId() : parentSpan.traceId;
    const decision = this.sampler.shouldSample(parent, traceId, name, SpanKind.SERVER, NO_ATTRIBUTES, NO_LINKS);
    const traceState = decision.traceState ?? (root ? undefined : parentSpan.traceState);
    if (decision.decision === SamplingDecision.NOT_RECORD) return new UnsampledContext(parent, traceState, this.ids, traceId);
    return this.sampled(name, parent, root ? undefined : parentSpan, traceId, decision, traceState);
  }

  /** The context of a call the sampler records: a ServerSpan's, or the SDK's span's. `parentSpan`: undefined for a root. */
  private sampled(name: string, parent: Context, parentSpan: SpanContext | undefined, traceId: string, decision: SamplingResult, traceState: TraceState | undefined): Context {
    const sink = this.sink;
    if (sink !== undefined) {
      const traceFlags = decision.decision === SamplingDecision.RECORD_AND_SAMPLED ? TraceFlags.SAMPLED : TraceFlags.NONE;
      const spanContext = { traceId, spanId: this.ids.generateSpanId(), traceFlags, traceState };
      const span = new ServerSpan(sink, name, spanContext, parentSpan, Date.now(), performance.now(), parent);
      if (decision.attributes !== undefined) span.setAttributes(sanitizeAttributes(decision.attributes));
      return new SampledContext(parent, span);
    }
    // The SDK asks the sampler again, about the same trace id: the same answer (sampling.ts).
    if (parentSpan === undefined) this.ids.prefer(traceId);
    let span: Span;
    try {
      span = this.tracer.startSpan(name, { kind: SpanKind.SERVER }, parent);
    } finally {
      this.ids.prefer(undefined);
    }
    return trace.setSpan(parent, span);
  }

  /** Ends a call's span (from recording()) at `performanceNow`, a performance.now() just read. */
  end(span: Span, performanceNow: number): void {
    if (span instanceof ServerSpan) span.endAt(performanceNow);
    else span.end();
  }

  /** fn(arg) with `ctx` active, as context.with(ctx, fn, undefined, arg). */
  run<A, R>(ctx: Context, fn: (arg: A) => R, arg: A): R {
    const manager = this.contextManager;
    return manager !== undefined ? manager.run(ctx, fn, arg) : context.with(ctx, fn, undefined, arg);
  }

  private carriesContext(header: Headers): boolean {
    const fields = this.fields;
    if (fields === undefined) return true;
    for (let i = 0; i < fields.length; i++) if (header.has(fields[i])) return true;
    return false;
  }

  /** The call's span when it records, else undefined (an unsampled context stays unmade). */
  recording(context: Context): Span | undefined {
    if (context instanceof SampledContext) return context.span();
    if (context instanceof UnsampledContext) return undefined;
    const span = trace.getSpan(context);
    return span?.isRecording() === true ? span : undefined;
  }
}

/** The key under which the API keeps a context's span (its own, not exported): found by asking it once. */
const SPAN_KEY: symbol = (() => {
  let found: symbol | undefined;
  const probe: Context = {
    getValue(key) {
      found = key;
      return undefined;
    },
    setValue: () => probe,
    deleteValue: () => probe,
  };
  trace.getSpan(probe);
  if (found === undefined) throw new Error("@opentelemetry/api's trace.getSpan read no context key");
  return found;
})();

/**
 * A call's trace context: its parent's, with the call's span. What
 * trace.setSpan(parent, span) gives, without copying the parent's values
 * (a Map) per call until something sets a value on it.
 */
abstract class CallContext implements Context {
  private full: Context | undefined;

  constructor(protected readonly parent: Context) {}

  abstract span(): Span;

  getValue(key: symbol): unknown {
    return key === SPAN_KEY ? this.span() : this.parent.getValue(key);
  }

  setValue(key: symbol, value: unknown): Context {
    return this.made().setValue(key, value);
  }

  deleteValue(key: symbol): Context {
    return this.made().deleteValue(key);
  }

  private made(): Context {
    return (this.full ??= trace.setSpan(this.parent, this.span()));
  }
}

/** The trace context of a sampled call: its ServerSpan. */
class SampledContext extends CallContext {
  constructor(
    parent: Context,
    private readonly serverSpan: ServerSpan,
  ) {
    super(parent);
  }

  span(): Span {
    return this.serverSpan;
  }
}

/**
 * The trace context of a call the sampler dropped. Its span is what the SDK
 * would have made (a non-recording span of the call's trace id and a new
 * span id), made only when something reads it: a log line (its trace_id), a
 * span started under the call. Most calls end without.
 */
class UnsampledContext extends CallContext {
  private nonRecording: Span | undefined;

  /** The trace id is `id`, or the one drawn at `at` of the pool `id` (PooledSpanIds.drawTraceId). */
  constructor(
    parent: Context,
    private readonly traceState: TraceState | undefined,
    private readonly ids: PooledSpanIds,
    private readonly id: string | Buffer,
    private readonly at = 0,
  ) {
    super(parent);
  }

  span(): Span {
    if (this.nonRecording === undefined) {
      const traceId = typeof this.id === "string" ? this.id : traceIdIn(this.id, this.at);
      this.nonRecording = trace.wrapSpanContext({ traceId, spanId: this.ids.generateSpanId(), traceFlags: TraceFlags.NONE, traceState: this.traceState });
    }
    return this.nonRecording;
  }
}
