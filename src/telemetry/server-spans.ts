import {
  propagation,
  ROOT_CONTEXT,
  SamplingDecision,
  SpanKind,
  trace,
  TraceFlags,
  type Context,
  type Sampler,
  type Span,
  type TextMapGetter,
  type TraceState,
  type Tracer,
} from "@opentelemetry/api";
import type { PooledSpanIds } from "./span-ids.js";

const NO_ATTRIBUTES = Object.freeze({});
const NO_LINKS = Object.freeze([]) as unknown as [];

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
 * A sampled call goes through the SDK as before (tracer.startSpan, so span
 * processors, limits and the resource apply), on the trace id the sampler saw:
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

  /**
   * `tracer`: the SDK's own, asked for once the SDK is registered (the
   * API's ProxyTracer, taken earlier, looks its delegate up on every span).
   * `propagators`: OTEL_PROPAGATORS.
   */
  constructor(
    private readonly tracer: Tracer,
    private readonly sampler: Sampler,
    private readonly ids: PooledSpanIds,
    propagators: string | undefined,
  ) {
    this.fields = /jaeger/i.test(propagators ?? "") ? undefined : propagation.fields();
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
    const traceId = root ? this.ids.generateTraceId() : parentSpan.traceId;
    const decision = this.sampler.shouldSample(parent, traceId, name, SpanKind.SERVER, NO_ATTRIBUTES, NO_LINKS);
    if (decision.decision === SamplingDecision.NOT_RECORD) {
      return new UnsampledContext(parent, traceId, decision.traceState ?? (root ? undefined : parentSpan.traceState), this.ids);
    }
    if (root) this.ids.prefer(traceId);
    let span: Span;
    try {
      span = this.tracer.startSpan(name, { kind: SpanKind.SERVER }, parent);
    } finally {
      this.ids.prefer(undefined);
    }
    return trace.setSpan(parent, span);
  }

  private carriesContext(header: Headers): boolean {
    const fields = this.fields;
    if (fields === undefined) return true;
    for (let i = 0; i < fields.length; i++) if (header.has(fields[i])) return true;
    return false;
  }

  /** The call's span when it records, else undefined (an unsampled context stays unmade). */
  recording(context: Context): Span | undefined {
    if (context instanceof UnsampledContext) return undefined;
    const span = trace.getSpan(context);
    return span?.isRecording() === true ? span : undefined;
  }
}

/**
 * The trace context of a call the sampler dropped. It is what the SDK would
 * have made (the parent's context with a non-recording span of the call's
 * trace id and a new span id), made only when something reads it: a log line
 * (its trace_id), a span started under the call. Most calls end without.
 */
class UnsampledContext implements Context {
  private made: Context | undefined;

  constructor(
    private readonly parent: Context,
    private readonly traceId: string,
    private readonly traceState: TraceState | undefined,
    private readonly ids: PooledSpanIds,
  ) {}

  getValue(key: symbol): unknown {
    return this.context().getValue(key);
  }

  setValue(key: symbol, value: unknown): Context {
    return this.context().setValue(key, value);
  }

  deleteValue(key: symbol): Context {
    return this.context().deleteValue(key);
  }

  private context(): Context {
    return (this.made ??= trace.setSpan(
      this.parent,
      trace.wrapSpanContext({ traceId: this.traceId, spanId: this.ids.generateSpanId(), traceFlags: TraceFlags.NONE, traceState: this.traceState }),
    ));
  }
}
