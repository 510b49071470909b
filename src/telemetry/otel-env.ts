/**
 * Which OpenTelemetry signals the standard OTEL_* environment variables turn
 * on. Nothing is exported unless configured, and OTEL_SDK_DISABLED=true wins:
 *
 * - traces: OTEL_TRACES_EXPORTER names an exporter other than "none", or it is
 *   unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
 *   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
 * - OTLP metrics: OTEL_METRICS_EXPORTER includes "otlp", or it is unset and an
 *   OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
 *   OTEL_EXPORTER_OTLP_METRICS_ENDPOINT). Prometheus text on the admin port's
 *   /metrics is always served, whatever these say.
 *
 * Everything else (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_EXPORTER_OTLP_PROTOCOL, headers...)
 * is read by the SDK itself.
 */
export interface OtelSignals {
  readonly traces: boolean;
  readonly otlpMetrics: boolean;
}

export function otelSignals(env: NodeJS.ProcessEnv = process.env): OtelSignals {
  if (isTrue(env.OTEL_SDK_DISABLED)) return { traces: false, otlpMetrics: false };
  const endpoint = (specific: string | undefined) => nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT) || nonEmpty(specific);
  const traceExporters = list(env.OTEL_TRACES_EXPORTER);
  const metricExporters = list(env.OTEL_METRICS_EXPORTER);
  const traces =
    traceExporters === undefined ? endpoint(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) : traceExporters.length > 0 && !traceExporters.includes("none");
  const otlpMetrics =
    metricExporters === undefined ? endpoint(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) : metricExporters.includes("otlp") && !metricExporters.includes("none");
  return { traces, otlpMetrics };
}

function isTrue(v: string | undefined): boolean {
  return v?.trim().toLowerCase() === "true";
}

function nonEmpty(v: string | undefined): boolean {
  return v !== undefined && v.trim() !== "";
}

/** A variable's value, trimmed; undefined when it is unset or blank. */
export function envValue(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t === undefined || t === "" ? undefined : t;
}

/** A comma-separated list, lower-cased; undefined when the variable is unset or blank. */
export function list(v: string | undefined): string[] | undefined {
  if (!nonEmpty(v)) return undefined;
  return v!
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== "");
}
