import { trace } from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { batchOptionsFromEnv, EncodedSpanProcessor, encodedExportApplies, otlpHttpBatchExporter } from "./encoded-span-processor.js";
import { samplerFromEnv } from "./sampling.js";
import { ServerSpans } from "./server-spans.js";
import { PooledSpanIds } from "./span-ids.js";
import { SyncContextManager } from "./sync-context.js";
import { VERSION } from "../version.js";

export interface Tracing {
  /** Starts each call's SERVER span (rpc.ts). */
  readonly spans: ServerSpans;
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
  const ids = new PooledSpanIds();
  const sdk = new NodeSDK({
    resource,
    autoDetectResources: false,
    // Metrics are ours (metrics.ts); logs are JSON lines on stdout; no auto-instrumentation
    // (instrumentation-http would not see HTTP/2 and would trace /metrics scrapes).
    metricReaders: [],
    // No AsyncLocalStorage (and so no promise hooks on every promise): see sync-context.ts.
    contextManager: new SyncContextManager(),
    sampler,
    idGenerator: ids,
    logRecordProcessors: [],
    instrumentations: [],
    ...(encodedExportApplies(env) ? { spanProcessors: [new EncodedSpanProcessor(otlpHttpBatchExporter(), batchOptionsFromEnv(env))] } : {}),
  });
  sdk.start();
  return {
    spans: new ServerSpans(trace.getTracer("ripplecache", VERSION), sampler, ids, env.OTEL_PROPAGATORS),
    shutdown: () => sdk.shutdown(),
  };
}
