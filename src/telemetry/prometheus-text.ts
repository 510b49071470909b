import type { ReplicaStatus } from "../replication/source.js";
import type { StoreStats } from "../store/store.js";

export interface MetricsSnapshot {
  readonly stats: StoreStats;
  readonly role: "primary" | "replica";
  readonly streams: number;
  readonly oldestRevision: number;
  readonly replicas: readonly ReplicaStatus[];
  /** For a replica: 1 while its link to the primary is streaming. */
  readonly linkUp: boolean;
}

interface Family {
  readonly name: string;
  readonly type: "counter" | "gauge";
  readonly help: string;
  readonly samples: readonly { readonly labels?: Readonly<Record<string, string>>; readonly value: number }[];
}

/**
 * The node's state in the Prometheus text format (version 0.0.4), for the
 * admin port's /metrics. Names follow OpenTelemetry's Prometheus mapping of
 * our `ripplecache.*` instruments (dots become underscores, counters end in _total).
 */
export function prometheusText(m: MetricsSnapshot): string {
  const s = m.stats;
  const families: Family[] = [
    { name: "ripplecache_cache_hits_total", type: "counter", help: "Reads that found their key.", samples: [{ value: s.hits }] },
    { name: "ripplecache_cache_misses_total", type: "counter", help: "Reads that did not find their key.", samples: [{ value: s.misses }] },
    { name: "ripplecache_cache_keys", type: "gauge", help: "Keys held.", samples: [{ value: s.keys }] },
    { name: "ripplecache_cache_memory_used_bytes", type: "gauge", help: "Bytes counted against the memory bound.", samples: [{ value: s.bytesUsed }] },
    { name: "ripplecache_cache_memory_limit_bytes", type: "gauge", help: "The memory bound (--max-memory).", samples: [{ value: s.bytesLimit }] },
    { name: "ripplecache_cache_evictions_total", type: "counter", help: "Keys evicted to stay within the memory bound.", samples: [{ value: s.evictions }] },
    { name: "ripplecache_cache_expirations_total", type: "counter", help: "Keys removed because their TTL ran out.", samples: [{ value: s.expirations }] },
    { name: "ripplecache_revision", type: "gauge", help: "The current revision.", samples: [{ value: s.revision }] },
    { name: "ripplecache_changelog_oldest_revision", type: "gauge", help: "Oldest revision the change log can replay from.", samples: [{ value: m.oldestRevision }] },
    { name: "ripplecache_streams_active", type: "gauge", help: "Open Watch and Track streams.", samples: [{ value: m.streams }] },
    { name: "ripplecache_replication_is_replica", type: "gauge", help: "1 on a replica, 0 on a primary.", samples: [{ value: m.role === "replica" ? 1 : 0 }] },
    {
      name: "ripplecache_replication_link_up",
      type: "gauge",
      help: "On a replica: 1 while its link to the primary is streaming.",
      samples: m.role === "replica" ? [{ value: m.linkUp ? 1 : 0 }] : [],
    },
    {
      name: "ripplecache_replication_replica_lag_revisions",
      type: "gauge",
      help: "Revisions a connected replica is behind this primary.",
      samples: m.replicas.map((r) => ({ labels: { replica: r.address }, value: r.lagRevisions })),
    },
    {
      name: "ripplecache_replication_replica_lag_seconds",
      type: "gauge",
      help: "Age of the oldest change sent to a replica and not yet acknowledged.",
      samples: m.replicas.map((r) => ({ labels: { replica: r.address }, value: r.lagMs / 1000 })),
    },
    {
      name: "ripplecache_replication_full_resyncs_total",
      type: "counter",
      help: "Full resyncs a replica has needed.",
      samples: m.replicas.map((r) => ({ labels: { replica: r.address }, value: r.fullResyncs })),
    },
    { name: "ripplecache_replication_replicas_connected", type: "gauge", help: "Replicas connected to this primary.", samples: [{ value: m.replicas.length }] },
  ];
  let out = "";
  for (const f of families) {
    out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`;
    for (const sample of f.samples) out += `${f.name}${labels(sample.labels)} ${sample.value}\n`;
  }
  return out;
}

function labels(l: Readonly<Record<string, string>> | undefined): string {
  if (l === undefined) return "";
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")}"`);
  return `{${parts.join(",")}}`;
}
