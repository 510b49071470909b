import { Etcd3, type IOptions } from "etcd3";
import { ConflictError, parseCandidate, parseLease, type CandidateRecord, type LeaseRecord, type ResourceLock, type Versioned } from "./lock.js";

export interface EtcdLockOptions {
  /** http://HOST:PORT of each etcd member. */
  readonly endpoints: readonly string[];
  readonly group: string;
  readonly nodeId: string;
  /** Every key of ours starts with this. */
  readonly prefix?: string;
  /** Deadline of each etcd call (ms): a call that hangs must not outlive the renew deadline. */
  readonly callTimeoutMs: number;
}

/** The default key prefix: `/ripplecache/<group>/leader` and `/ripplecache/<group>/candidates/<node>`. */
export const ETCD_PREFIX = "/ripplecache";

/**
 * No retries and no circuit breaker inside etcd3 (its defaults retry three
 * times and then stop calling a member for 5 s after three failures, longer
 * than a lease): the elector retries every retry period itself.
 */
const NO_FAULT_HANDLING = { execute: <T>(fn: (context: { signal: AbortSignal; attempt: number }) => T) => fn({ signal: new AbortController().signal, attempt: 0 }) };

/**
 * The lease as an etcd key written with compare-and-swap on its mod revision
 * in a transaction (create: the key's create revision is 0; update: its mod
 * revision is the one read). No etcd lease (TTL) is attached: expiry is the
 * elector's, judged by each node's own clock as with a Kubernetes Lease, so
 * both backends share one fencing argument and one code path; etcd's TTLs
 * are whole seconds and follow its election timeout (leases under ~2 s are
 * rounded up), too coarse for a sub-2-second failover.
 */
export class EtcdLock implements ResourceLock {
  readonly description: string;
  private readonly client: Etcd3;
  private readonly leaderKey: string;
  private readonly candidatePrefix: string;

  constructor(private readonly options: EtcdLockOptions) {
    const prefix = `${options.prefix ?? ETCD_PREFIX}/${options.group}`;
    this.leaderKey = `${prefix}/leader`;
    this.candidatePrefix = `${prefix}/candidates/`;
    this.description = `etcd ${this.leaderKey} at ${options.endpoints.join(",")}`;
    const etcdOptions: IOptions = {
      hosts: [...options.endpoints],
      dialTimeout: options.callTimeoutMs,
      defaultCallOptions: () => ({ deadline: Date.now() + options.callTimeoutMs }),
      faultHandling: {
        host: () => NO_FAULT_HANDLING as unknown as NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>,
        global: NO_FAULT_HANDLING as unknown as NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>,
      },
    };
    this.client = new Etcd3(etcdOptions);
  }

  async get(): Promise<Versioned<LeaseRecord> | undefined> {
    const res = await this.client.get(this.leaderKey).exec();
    const kv = res.kvs[0];
    if (kv === undefined) return undefined;
    const value = parseLease(kv.value.toString("utf8"));
    if (value === undefined) throw new Error(`${this.leaderKey} does not hold a RippleCache lease record`);
    return { value, version: kv.mod_revision };
  }

  async create(record: LeaseRecord): Promise<string> {
    const res = await this.client.if(this.leaderKey, "Create", "==", 0).then(this.client.put(this.leaderKey).value(JSON.stringify(record))).commit();
    if (!res.succeeded) throw new ConflictError(`${this.leaderKey} exists`);
    return res.header.revision;
  }

  async update(record: LeaseRecord, version: string): Promise<string> {
    const res = await this.client.if(this.leaderKey, "Mod", "==", version).then(this.client.put(this.leaderKey).value(JSON.stringify(record))).commit();
    if (!res.succeeded) throw new ConflictError(`${this.leaderKey} changed since revision ${version}`);
    return res.header.revision;
  }

  async publish(candidate: CandidateRecord): Promise<void> {
    await this.client.put(this.candidatePrefix + this.options.nodeId).value(JSON.stringify(candidate)).exec();
  }

  async candidates(): Promise<Versioned<CandidateRecord>[]> {
    const res = await this.client.getAll().prefix(this.candidatePrefix).exec();
    const out: Versioned<CandidateRecord>[] = [];
    for (const kv of res.kvs) {
      const value = parseCandidate(kv.value.toString("utf8"));
      if (value !== undefined) out.push({ value, version: kv.mod_revision });
    }
    return out;
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
