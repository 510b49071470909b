import type { Attributes } from "@opentelemetry/api";
import { DataPointType, type MetricData, type ResourceMetrics } from "@opentelemetry/sdk-metrics";

/**
 * OpenTelemetry metrics in the Prometheus text exposition format (0.0.4),
 * for the admin port's /metrics, following the OpenTelemetry specification's
 * Prometheus compatibility rules:
 * - the name's characters outside [a-zA-Z0-9_:] become "_" (so dots do);
 * - the unit becomes a suffix ("s" -> "_seconds", "By" -> "_bytes";
 *   annotations in braces such as "{hit}" are dropped; "1" on a gauge -> "_ratio");
 * - monotonic sums are counters and end in "_total";
 * - histograms give _bucket{le=...} (cumulative), _sum and _count.
 * So `ripplecache.cache.hits` (a counter of unit {hit}) becomes
 * `ripplecache_cache_hits_total` and `rpc.server.call.duration` (seconds)
 * `rpc_server_call_duration_seconds`.
 */
export function prometheusText(metrics: ResourceMetrics): string {
  let out = "";
  for (const scope of metrics.scopeMetrics) {
    for (const metric of scope.metrics) out += family(metric);
  }
  return out;
}

function family(metric: MetricData): string {
  const type = prometheusType(metric);
  const name = prometheusName(metric.descriptor.name, metric.descriptor.unit, type);
  let out = `# HELP ${name} ${escapeHelp(metric.descriptor.description || metric.descriptor.name)}\n# TYPE ${name} ${type}\n`;
  if (metric.dataPointType === DataPointType.HISTOGRAM) {
    for (const p of metric.dataPoints) {
      const { buckets, sum, count } = p.value;
      let cumulative = 0;
      for (let i = 0; i < buckets.counts.length; i++) {
        cumulative += buckets.counts[i];
        const le = i < buckets.boundaries.length ? number(buckets.boundaries[i]) : "+Inf";
        out += `${name}_bucket${labels(p.attributes, le)} ${cumulative}\n`;
      }
      out += `${name}_sum${labels(p.attributes)} ${number(sum ?? 0)}\n`;
      out += `${name}_count${labels(p.attributes)} ${count}\n`;
    }
  } else if (metric.dataPointType === DataPointType.SUM || metric.dataPointType === DataPointType.GAUGE) {
    for (const p of metric.dataPoints) out += `${name}${labels(p.attributes)} ${number(p.value)}\n`;
  }
  return out;
}

type PrometheusType = "counter" | "gauge" | "histogram" | "untyped";

function prometheusType(metric: MetricData): PrometheusType {
  switch (metric.dataPointType) {
    case DataPointType.SUM:
      return metric.isMonotonic ? "counter" : "gauge";
    case DataPointType.GAUGE:
      return "gauge";
    case DataPointType.HISTOGRAM:
      return "histogram";
    default:
      return "untyped";
  }
}

const UNITS: Record<string, string> = {
  d: "days",
  h: "hours",
  min: "minutes",
  s: "seconds",
  ms: "milliseconds",
  us: "microseconds",
  ns: "nanoseconds",
  By: "bytes",
  KiBy: "kibibytes",
  MiBy: "mebibytes",
  GiBy: "gibibytes",
  KBy: "kilobytes",
  MBy: "megabytes",
  GBy: "gigabytes",
  m: "meters",
  Hz: "hertz",
  "%": "percent",
};

const PER_UNITS: Record<string, string> = { s: "second", m: "minute", h: "hour", d: "day", w: "week", mo: "month", y: "year" };

/** The Prometheus name of an OpenTelemetry instrument. */
export function prometheusName(otelName: string, unit: string, type: PrometheusType): string {
  let name = otelName.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/_+/g, "_");
  if (/^[0-9]/.test(name)) name = `_${name}`;
  const suffix = unitSuffix(unit, type);
  if (suffix !== "" && !name.endsWith(`_${suffix}`)) name += `_${suffix}`;
  if (type === "counter" && !name.endsWith("_total")) name += "_total";
  return name;
}

function unitSuffix(unit: string, type: PrometheusType): string {
  const u = unit.replace(/\{[^}]*\}/g, "").trim();
  if (u === "") return "";
  if (u === "1") return type === "gauge" ? "ratio" : "";
  const [num, per] = u.split("/", 2);
  const main = UNITS[num] ?? num;
  const text = per === undefined ? main : `${main}_per_${PER_UNITS[per] ?? per}`;
  return text.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/_+/g, "_").replace(/^_|_$/g, "");
}

function labels(attributes: Attributes, le?: string): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined) continue;
    let label = key.replace(/[^a-zA-Z0-9_]/g, "_");
    if (/^[0-9]/.test(label)) label = `key_${label}`;
    parts.push(`${label}="${escapeLabel(String(value))}"`);
  }
  if (le !== undefined) parts.push(`le="${le}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function number(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function escapeLabel(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}
