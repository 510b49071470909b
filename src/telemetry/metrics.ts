import type { BatchObservableResult, Meter } from "@opentelemetry/api";
import { MeterProvider, MetricReader, PeriodicExportingMetricReader, type IMetricReader } from "@opentelemetry/sdk-metrics";
import type { Resource } from "@opentelemetry/resources";
import type { Replication } from "../replication/replication.js";
import type { ChangeLog } from "../store/change-log.js";
import type { CacheStore } from "../store/store.js";
import type { WatchHub } from "../watch/hub.js";
import { VERSION } from "../version.js";
import { prometheusText } from "./prometheus-text.js";
import { CallDurations } from "./call-durations.js";

/** What the metrics observe. They read it when collected; nothing here is on the path of a request. */
export interface MetricSources {
  readonly store: CacheStore;
  readonly log: ChangeLog;
  readonly hub: WatchHub;
  readonly replication: Replication;
  /** Calls served by the fast path (src/server/fast-path/). */
  readonly fastPath?: { readonly calls: number };
}

export interface MetricsOptions {
  /** Also push metrics by OTLP/HTTP (protobuf), every OTEL_METRIC_EXPORT_INTERVAL ms (default 60000). */
  readonly otlp: boolean;
  /** The resource of the OTLP export (service.name...). */
  readonly resource?: Resource;
  readonly env?: NodeJS.ProcessEnv;
}

export interface ServerMetrics {
  /** rpc.server.call.duration, recorded by the RPC interceptor. */
  readonly callDuration: CallDurations;
  /** Every instrument, collected now, in the Prometheus text format. */
  prometheus(): Promise<string>;
  /** Pushes a last OTLP export (if on) and stops. */
  shutdown(): Promise<void>;
}

/** Attribute names of our own instruments. */
export const ATTR_STREAM_KIND = "ripplecache.stream.kind";
export const ATTR_RESYNC_REASON = "ripplecache.resync.reason";
export const ATTR_REPLICA = "ripplecache.replica.address";

/** Collects on demand, for /metrics. */
class PullReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/**
 * The server's instruments on an OpenTelemetry MeterProvider (sdk-metrics),
 * with a pull reader for Prometheus text and, when configured, a periodic
 * OTLP reader. The table of names, units and descriptions is in docs/TELEMETRY.md, "Metrics".
 */
export async function startMetrics(sources: MetricSources, options: MetricsOptions): Promise<ServerMetrics> {
  const env = options.env ?? process.env;
  // rpc.server.call.duration is ours (call-durations.ts): every reader also collects it.
  const callDuration = new CallDurations();
  const metricProducers = [callDuration];
  const pull = new PullReader({ metricProducers });
  const readers: IMetricReader[] = [pull];
  if (options.otlp) {
    const { OTLPMetricExporter } = await import("@opentelemetry/exporter-metrics-otlp-proto");
    const interval = positive(env.OTEL_METRIC_EXPORT_INTERVAL) ?? 60_000;
    const timeout = Math.min(positive(env.OTEL_METRIC_EXPORT_TIMEOUT) ?? 30_000, interval);
    readers.push(new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter(), exportIntervalMillis: interval, exportTimeoutMillis: timeout, metricProducers }));
  }
  const provider = new MeterProvider({ readers, ...(options.resource !== undefined ? { resource: options.resource } : {}) });
  const meter = provider.getMeter("ripplecache", VERSION);
  observeServer(meter, sources);
  return {
    callDuration,
    async prometheus() {
      const { resourceMetrics, errors } = await pull.collect();
      if (errors.length > 0) throw new AggregateError(errors, "metrics collection failed");
      return prometheusText(resourceMetrics);
    },
    shutdown: () => provider.shutdown(),
  };
}

function observeServer(meter: Meter, { store, log, hub, replication, fastPath }: MetricSources): void {
  const hits = meter.createObservableCounter("ripplecache.cache.hits", { unit: "{hit}", description: "Reads that found their key." });
  const misses = meter.createObservableCounter("ripplecache.cache.misses", { unit: "{miss}", description: "Reads that did not find their key." });
  const keys = meter.createObservableUpDownCounter("ripplecache.cache.keys", { unit: "{key}", description: "Keys held." });
  const used = meter.createObservableUpDownCounter("ripplecache.cache.memory.used", { unit: "By", description: "Bytes counted against the memory bound (keys, values, per-entry overhead)." });
  const limit = meter.createObservableUpDownCounter("ripplecache.cache.memory.limit", { unit: "By", description: "The memory bound (--max-memory)." });
  const evictions = meter.createObservableCounter("ripplecache.cache.evictions", { unit: "{key}", description: "Keys evicted to stay within the memory bound." });
  const expirations = meter.createObservableCounter("ripplecache.cache.expirations", { unit: "{key}", description: "Keys removed because their TTL ran out." });
  const revision = meter.createObservableGauge("ripplecache.revision", { unit: "{revision}", description: "The current revision (the last change applied)." });
  const oldest = meter.createObservableGauge("ripplecache.changelog.oldest_revision", { unit: "{revision}", description: "Oldest revision the change log can replay from." });
  const streams = meter.createObservableUpDownCounter("ripplecache.streams.active", { unit: "{stream}", description: "Open Watch and Track streams, by ripplecache.stream.kind." });
  const delivered = meter.createObservableCounter("ripplecache.stream.events.delivered", {
    unit: "{event}",
    description: "Events sent on Watch streams and invalidations sent on Track streams, by ripplecache.stream.kind.",
  });
  const resyncs = meter.createObservableCounter("ripplecache.stream.resyncs", {
    unit: "{resync}",
    description: "RESYNC messages sent on Watch and Track streams, by ripplecache.stream.kind and ripplecache.resync.reason.",
  });
  const isReplica = meter.createObservableGauge("ripplecache.replication.is_replica", { description: "1 on a replica, 0 on a primary." });
  const linkUp = meter.createObservableGauge("ripplecache.replication.link.up", { description: "On a replica: 1 while its link to the primary is streaming, else 0." });
  const connected = meter.createObservableUpDownCounter("ripplecache.replication.replica.connected", {
    unit: "{replica}",
    description: "On a primary: 1 while the replica (ripplecache.replica.address) is connected, 0 after it disconnected.",
  });
  const lag = meter.createObservableGauge("ripplecache.replication.replica.lag", { unit: "{revision}", description: "On a primary: revisions a connected replica has not acknowledged yet." });
  const lagTime = meter.createObservableGauge("ripplecache.replication.replica.lag_time", {
    unit: "s",
    description: "On a primary: age of the oldest change sent to a connected replica and not acknowledged yet (0 when it is caught up).",
  });
  const fullResyncs = meter.createObservableCounter("ripplecache.replication.replica.full_resyncs", { unit: "{resync}", description: "On a primary: full resyncs it sent to the replica." });
  const sent = meter.createObservableCounter("ripplecache.replication.sent", {
    unit: "By",
    description: "On a primary: bytes of keys and values sent to the replica (snapshot entries, and changes with a fixed overhead each).",
  });

  const term = meter.createObservableGauge("ripplecache.replication.term", { unit: "{term}", description: "The term of the history this node holds (0 without a coordinator)." });
  const leaseHeld = meter.createObservableGauge("ripplecache.coordination.lease.held", { description: "With a coordinator: 1 while this node holds a valid lease (it is the primary), else 0." });
  const renewLatency = meter.createObservableGauge("ripplecache.coordination.lease.renew_latency", { unit: "s", description: "With a coordinator: duration of the holder's last successful lease renewal." });
  const elections = meter.createObservableCounter("ripplecache.coordination.elections", { unit: "{term}", description: "With a coordinator: terms this node became primary of (acquired or handed the lease)." });

  const fastCalls = meter.createObservableCounter("ripplecache.rpc.fast_path.calls", {
    unit: "{call}",
    description: "Unary and server-streaming calls in binary over HTTP/2 served by the fast path rather than connect-node (the same answers, less CPU and memory).",
  });

  meter.addBatchObservableCallback(
    (o: BatchObservableResult) => {
      const s = store.stats();
      o.observe(fastCalls, fastPath?.calls ?? 0);
      o.observe(hits, s.hits);
      o.observe(misses, s.misses);
      o.observe(keys, s.keys);
      o.observe(used, s.bytesUsed);
      o.observe(limit, s.bytesLimit);
      o.observe(evictions, s.evictions);
      o.observe(expirations, s.expirations);
      o.observe(revision, s.revision);
      o.observe(oldest, log.oldestRevision);
      for (const kind of ["watch", "track"] as const) {
        o.observe(streams, hub.streamsOf(kind), { [ATTR_STREAM_KIND]: kind });
        o.observe(delivered, hub.counters.delivered[kind], { [ATTR_STREAM_KIND]: kind });
        for (const [reason, n] of hub.counters.resyncs[kind]) o.observe(resyncs, n, { [ATTR_STREAM_KIND]: kind, [ATTR_RESYNC_REASON]: reason });
      }
      const role = replication.role;
      o.observe(isReplica, role.isReplica ? 1 : 0);
      o.observe(term, role.term);
      const coordination = replication.coordinationStatus?.();
      if (coordination !== undefined) {
        o.observe(leaseHeld, coordination.holdsLease ? 1 : 0);
        o.observe(elections, coordination.elections);
        if (coordination.renewLatencyMs >= 0) o.observe(renewLatency, coordination.renewLatencyMs / 1000);
      }
      if (role.isReplica) o.observe(linkUp, role.linkState === "streaming" ? 1 : 0);
      for (const t of replication.source.totals()) {
        const a = { [ATTR_REPLICA]: t.address };
        o.observe(connected, t.connected ? 1 : 0, a);
        o.observe(fullResyncs, t.fullResyncs, a);
        o.observe(sent, t.bytesSent, a);
      }
      for (const st of replication.source.status()) {
        const a = { [ATTR_REPLICA]: st.address };
        o.observe(lag, st.lagRevisions, a);
        o.observe(lagTime, st.lagMs / 1000, a);
      }
    },
    [hits, misses, keys, used, limit, evictions, expirations, revision, oldest, streams, delivered, resyncs, isReplica, linkUp, connected, lag, lagTime, fullResyncs, sent, fastCalls, term, leaseHeld, renewLatency, elections],
  );
}

function positive(text: string | undefined): number | undefined {
  const n = Number(text);
  return text !== undefined && text.trim() !== "" && Number.isFinite(n) && n > 0 ? n : undefined;
}
