import type { ContextValues, Interceptor } from "@connectrpc/connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { Resource } from "@opentelemetry/resources";
import { VERSION } from "../version.js";
import { startMetrics, type MetricSources } from "./metrics.js";
import { otelSignals } from "./otel-env.js";
import { networkContextValues, nodeRequestContextValues, rpcTelemetry, type CallNetwork } from "./rpc.js";

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
  const tracing = signals.traces ? (await import("./tracing.js")).startTracing(resource, env) : undefined;
  return {
    tracing: tracing !== undefined,
    interceptor: rpcTelemetry({ callDuration: metrics.callDuration, spans: tracing?.spans, shuttingDown: options.shuttingDown }),
    contextValues: tracing !== undefined ? nodeRequestContextValues : undefined,
    networkContextValues: tracing !== undefined ? networkContextValues : undefined,
    prometheus: () => metrics.prometheus(),
    async shutdown() {
      await Promise.allSettled([tracing?.shutdown(), metrics.shutdown()]);
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
