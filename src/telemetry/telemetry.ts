import type { ContextValues, Interceptor } from "@connectrpc/connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { Resource } from "@opentelemetry/resources";
import { VERSION } from "../version.js";
import { startMetrics, type MetricSources } from "./metrics.js";
import { otelSignals } from "./otel-env.js";
import { networkContextValues, nodeRequestContextValues, rpcTelemetry, type CallNetwork } from "./rpc.js";
import { tracer } from "./spans.js";
import { PooledSpanIds } from "./span-ids.js";
import { SyncContextManager } from "./sync-context.js";

export interface Telemetry {
  /** True when traces are exported (the SDK is started). */
  readonly tracing: boolean;
  /** The RPC interceptor: put it first in the list. */
  readonly interceptor: Interceptor;
  /** For connectNodeAdapter's `contextValues` (undefined when tracing is off: nothing runs per request). */
  readonly contextValues: ConnectNodeAdapterOptions["contextValues"];
  /** The same for calls served without a Node request (the fast path). */
  readonly networkContextValues: ((network: CallNetwork) => ContextValues) | undefined;
  /** /metrics: every instrument in the Prometheus text format. */
  prometheus(): Promise<string>;
  /** Flushes spans and metrics still buffered, then stops the SDK. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  readonly sources: MetricSources;
  /** True once the server is shutting down. */
  readonly shuttingDown: () => boolean;
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * Starts the server's telemetry from the OTEL_* environment (see otel-env.ts).
 * Metrics always exist (for /metrics). The tracing SDK (@opentelemetry/sdk-node
 * and its exporters) is imported only when traces are configured; when they
 * are not, no SDK, context manager or propagator is set up and the
 * interceptor records only the call duration.
 */
export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  const env = options.env ?? process.env;
  const signals = otelSignals(env);
  const resource = signals.traces || signals.otlpMetrics ? await serviceResource() : undefined;
  const metrics = await startMetrics(options.sources, { otlp: signals.otlpMetrics, resource, env });
  let sdk: { shutdown(): Promise<void> } | undefined;
  if (signals.traces) {
    const { NodeSDK } = await import("@opentelemetry/sdk-node");
    const node = new NodeSDK({
      resource,
      autoDetectResources: false,
      // Metrics are ours (above); logs are JSON lines on stdout; no auto-instrumentation
      // (instrumentation-http would not see HTTP/2 and would trace /metrics scrapes).
      metricReaders: [],
      // No AsyncLocalStorage (and so no promise hooks on every promise): see sync-context.ts.
      contextManager: new SyncContextManager(),
      idGenerator: new PooledSpanIds(),
      logRecordProcessors: [],
      instrumentations: [],
    });
    node.start();
    sdk = node;
  }
  return {
    tracing: sdk !== undefined,
    interceptor: rpcTelemetry({ callDuration: metrics.callDuration, tracer: sdk !== undefined ? tracer : undefined, shuttingDown: options.shuttingDown }),
    contextValues: sdk !== undefined ? nodeRequestContextValues : undefined,
    networkContextValues: sdk !== undefined ? networkContextValues : undefined,
    prometheus: () => metrics.prometheus(),
    async shutdown() {
      await Promise.allSettled([sdk?.shutdown(), metrics.shutdown()]);
    },
  };
}

/**
 * service.name "ripplecache" and service.version, under what OTEL_SERVICE_NAME,
 * OTEL_RESOURCE_ATTRIBUTES and the host and process detectors say (they win).
 */
async function serviceResource(): Promise<Resource> {
  const { defaultResource, detectResources, envDetector, hostDetector, processDetector, resourceFromAttributes } = await import("@opentelemetry/resources");
  return defaultResource()
    .merge(resourceFromAttributes({ "service.name": "ripplecache", "service.version": VERSION }))
    .merge(detectResources({ detectors: [hostDetector, processDetector, envDetector] }));
}
