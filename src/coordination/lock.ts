/**
 * What a coordinator backend provides: one lease record per replication
 * group, read and written with optimistic concurrency (a write names the
 * version it read and fails with ConflictError when the record changed
 * since), and one candidate record per node of the group. The backends
 * (etcd.ts, kubernetes.ts) store records; every decision is the elector's
 * (elector.ts), the same for all of them, as client-go's leaderelection over
 * its resource locks.
 */

/** The group's lease, as client-go's LeaderElectionRecord. */
export interface LeaseRecord {
  /** node id of the holder; "" when released. */
  readonly holder: string;
  /** A random id of the holder's process: a restarted node never renews its previous life's lease. */
  readonly incarnation: string;
  /** HOST:PORT clients and replicas reach the holder at. */
  readonly address: string;
  /** Acquisitions so far (Kubernetes' leaseTransitions): the term of the holder's primary. */
  readonly term: number;
  readonly leaseDurationMs: number;
  /** Wall-clock times, for people and tools only: the elector judges expiry by its own monotonic clock. */
  readonly acquireTime: string;
  readonly renewTime: string;
}

/** What a node publishes while it runs: how up to date its data is. */
export interface CandidateRecord {
  readonly node: string;
  readonly incarnation: string;
  readonly address: string;
  /** The term of the history its data belongs to; 0 for none (empty, or a snapshot half loaded). */
  readonly term: number;
  /** The replication id of that history ("" for none). */
  readonly history: string;
  /** The last revision it applied of that history. */
  readonly revision: number;
  /** Bumped on every publication, so that a live candidate's record always changes. */
  readonly beat: number;
}

export interface Versioned<T> {
  readonly value: T;
  /** Opaque: an etcd mod revision, a Kubernetes resourceVersion. */
  readonly version: string;
}

/** The record changed since it was read (etcd: the compare failed; Kubernetes: 409). */
export class ConflictError extends Error {
  override name = "ConflictError";
}

export interface ResourceLock {
  /** What names the lock in logs, e.g. "etcd /ripplecache/g1/leader". */
  readonly description: string;
  get(): Promise<Versioned<LeaseRecord> | undefined>;
  /** Creates the record; ConflictError when it exists. Returns the new version. */
  create(record: LeaseRecord): Promise<string>;
  /** Replaces the record read at `version`; ConflictError when it changed. Returns the new version. */
  update(record: LeaseRecord, version: string): Promise<string>;
  /** Writes this node's candidate record (last write wins: only this node writes it). */
  publish(candidate: CandidateRecord): Promise<void>;
  /** Every candidate record of the group, each with its version. */
  candidates(): Promise<Versioned<CandidateRecord>[]>;
  close(): Promise<void>;
  /** Told how to read this node's role, for backends that show it (the Kubernetes pod label). */
  observeRole?(role: () => "primary" | "replica"): void;
}

/** Parses a stored record, or undefined when it is not one of ours. */
export function parseLease(text: string): LeaseRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<LeaseRecord>;
    if (typeof r.holder !== "string" || typeof r.term !== "number") return undefined;
    return {
      holder: r.holder,
      incarnation: String(r.incarnation ?? ""),
      address: String(r.address ?? ""),
      term: r.term,
      leaseDurationMs: Number(r.leaseDurationMs ?? 0),
      acquireTime: String(r.acquireTime ?? ""),
      renewTime: String(r.renewTime ?? ""),
    };
  } catch {
    return undefined;
  }
}

export function parseCandidate(text: string): CandidateRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<CandidateRecord>;
    if (typeof r.node !== "string" || typeof r.revision !== "number" || typeof r.term !== "number") return undefined;
    return {
      node: r.node,
      incarnation: String(r.incarnation ?? ""),
      address: String(r.address ?? ""),
      term: r.term,
      history: String(r.history ?? ""),
      revision: r.revision,
      beat: Number(r.beat ?? 0),
    };
  } catch {
    return undefined;
  }
}
