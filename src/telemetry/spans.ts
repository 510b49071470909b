import { context, SpanStatusCode, trace, type Attributes, type Context, type Span } from "@opentelemetry/api";
import { VERSION } from "../version.js";

/**
 * The tracer of RippleCache's own spans. Until the SDK is started (tracing
 * configured: src/telemetry/tracing.ts) it is the API's no-op tracer, so the
 * spans below cost next to nothing when tracing is off; only the
 * @opentelemetry/api package is loaded then.
 */
export const tracer = trace.getTracer("ripplecache", VERSION);

/** A span around a rare operation (a full resync, a promotion), ended once. */
export interface Activity {
  /** Ends the span successfully, with optional attributes. */
  end(attributes?: Attributes): void;
  /** Ends the span with an error status (no-op once ended). */
  fail(error: unknown): void;
}

/**
 * Starts an internal span: a child of `parent` (a call's trace context, from
 * its context values: the active context does not last across awaits, see
 * sync-context.ts) or of the active span, or a new trace with `root` (for
 * work that outlives the call that started it, such as a replica's link to
 * its primary).
 */
export function startActivity(name: string, attributes: Attributes, root = false, parent?: Context): Activity {
  const span: Span = tracer.startSpan(name, { attributes, root }, parent ?? context.active());
  let ended = false;
  return {
    end(more) {
      if (ended) return;
      ended = true;
      if (more !== undefined) span.setAttributes(more);
      span.end();
    },
    fail(error) {
      if (ended) return;
      ended = true;
      const message = error instanceof Error ? error.message : String(error);
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      if (error instanceof Error) span.recordException(error);
      span.end();
    },
  };
}

/** Runs `fn` with `span` active, for what reads the active span (log lines' trace ids) after an await. */
export function inSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn);
}

/** Runs `fn` inside an internal span that ends with it (error status if it throws). */
export async function withActivity<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
      if (err instanceof Error) span.recordException(err);
      throw err;
    } finally {
      span.end();
    }
  });
}
