import type { Attributes, HrTime } from "@opentelemetry/api";
import { ValueType } from "@opentelemetry/api";
import { emptyResource } from "@opentelemetry/resources";
import {
  AggregationTemporality,
  DataPointType,
  type CollectionResult,
  type DataPoint,
  type Histogram,
  type HistogramMetricData,
  type MetricProducer,
} from "@opentelemetry/sdk-metrics";
import { VERSION } from "../version.js";

/**
 * Buckets of rpc.server.call.duration, in seconds: the semantic conventions'
 * advice starts at 5 ms, too coarse for a cache answering in tens of
 * microseconds, so ours starts at 50 µs.
 */
export const DURATION_BUCKETS: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** One attribute set's cumulative histogram. */
export class DurationSeries {
  readonly counts = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;

  constructor(
    readonly attributes: Attributes,
    readonly startTime: HrTime,
  ) {}

  record(seconds: number): void {
    // Bucket i holds (bounds[i-1], bounds[i]], as sdk-metrics counts them.
    let i = 0;
    const bounds = DURATION_BUCKETS;
    while (i < bounds.length && seconds > bounds[i]) i++;
    this.counts[i]++;
    this.count++;
    this.sum += seconds;
    if (seconds < this.min) this.min = seconds;
    if (seconds > this.max) this.max = seconds;
  }
}

/**
 * rpc.server.call.duration, aggregated here and handed to OpenTelemetry's
 * readers as a MetricProducer: sdk-metrics' Histogram.record hashes the
 * attribute set (sorting its keys, JSON) on every call, ~5% of a cached Get's
 * server time, while our attribute sets are few and fixed. The caller keeps
 * the DurationSeries of its attribute set (see rpc.ts) and records into it
 * directly. Collection gives the cumulative histogram points sdk-metrics
 * would have given, to /metrics and to OTLP alike.
 */
export class CallDurations implements MetricProducer {
  private readonly series = new Map<string, DurationSeries>();
  private readonly slots = new WeakMap<object, (DurationSeries | undefined)[]>();

  /** A caller's own cache of series, kept per `owner` (a method descriptor, say) and filled by the caller. */
  slotsOf(owner: object): (DurationSeries | undefined)[] {
    let s = this.slots.get(owner);
    if (s === undefined) this.slots.set(owner, (s = []));
    return s;
  }

  /** The series of an attribute set, made on first use; `key` names the set (the same key, the same attributes). */
  seriesOf(key: string, attributes: () => Attributes): DurationSeries {
    let s = this.series.get(key);
    if (s === undefined) {
      s = new DurationSeries(attributes(), hrNow());
      this.series.set(key, s);
    }
    return s;
  }

  async collect(): Promise<CollectionResult> {
    const endTime = hrNow();
    const dataPoints: DataPoint<Histogram>[] = [];
    for (const s of this.series.values()) {
      dataPoints.push({
        attributes: s.attributes,
        startTime: s.startTime,
        endTime,
        value: {
          buckets: { boundaries: [...DURATION_BUCKETS], counts: [...s.counts] },
          count: s.count,
          sum: s.sum,
          ...(s.count > 0 ? { min: s.min, max: s.max } : {}),
        },
      });
    }
    const metric: HistogramMetricData = {
      descriptor: {
        name: "rpc.server.call.duration",
        unit: "s",
        description: "Duration of RPCs handled by this server; for a stream, its whole life.",
        valueType: ValueType.DOUBLE,
      },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints,
    };
    return {
      // Readers replace a producer's resource with their provider's.
      resourceMetrics: { resource: emptyResource(), scopeMetrics: dataPoints.length === 0 ? [] : [{ scope: { name: "ripplecache", version: VERSION }, metrics: [metric] }] },
      errors: [],
    };
  }
}

function hrNow(): HrTime {
  const ms = Date.now();
  return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
}
