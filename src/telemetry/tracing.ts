import { diag, trace } from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { batchOptionsFromEnv, EncodedSpanProcessor, encodedExportApplies, otlpHttpBatchExporter } from "./encoded-span-processor.js";
import { samplerFromEnv } from "./sampling.js";
import { serverSpanSink } from "./server-span.js";
import { ServerSpans } from "./server-spans.js";
import { PooledSpanIds } from "./span-ids.js";
import { SyncContextManager } from "./sync-context.js";
import { VERSION } from "../version.js";

export interface Tracing {
  /** Starts each call's SERVER span (rpc.ts). */
  readonly spans: ServerSpans;
  /** True when those spans are ServerSpans (server-span.ts), not the SDK's. */
  readonly serverSpans: boolean;
  /** Flushes the spans still buffered, then stops the SDK. */
  shutdown(): Promise<void>;
}

/**
 * The tracing SDK (@opentelemetry/sdk-node), configured by the OTEL_*
 * environment: exporters, propagators and span limits are the SDK's; the
 * sampler, ids, context manager and, for OTLP over HTTP with protobuf (the
 * default), the span processor are ours, configured by the same variables
 * (each says why). Imported only when traces are configured.
 */
export function startTracing(resource: Resource | undefined, env: NodeJS.ProcessEnv): Tracing {
  const sampler = samplerFromEnv(env);
  const contextManager = new SyncContextManager();
  const ids = new PooledSpanIds();
  const processor = encodedExportApplies(env) ? new EncodedSpanProcessor(otlpHttpBatchExporter(), batchOptionsFromEnv(env)) : undefined;
  const sdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    // Metrics are ours (metrics.ts); logs are JSON lines on stdout; no auto-instrumentation
    // (instrumentation-http would not see HTTP/2 and would trace /metrics scrapes).
    metricReaders: [],
    // No AsyncLocalStorage (and so no promise hooks on every promise): see sync-context.ts.
    contextManager,
    sampler,
    idGenerator: ids,
    logRecordProcessors: [],
    instrumentations: [],
    ...(processor !== undefined ? { spanProcessors: [processor] } : {}),
  });
  sdk.start();
  const tracer = trace.getTracer("ripplecache", VERSION);
  const sink = processor === undefined ? undefined : serverSpanSink(tracer, processor);
  if (processor !== undefined && sink === undefined) diag.warn("the SDK's Tracer is not as server-span.ts expects: calls get the SDK's spans (slower)");
  return {
    serverSpans: sink !== undefined,
    spans: new ServerSpans(tracer, sampler, ids, env.OTEL_PROPAGATORS, sink, contextManager.isGlobal() ? contextManager : undefined),
    shutdown: () => sdk.shutdown(),
  };
}
