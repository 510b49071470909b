import { ApiException, CoordinationV1Api, CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Lease } from "@kubernetes/client-node";
import { ConflictError, parseCandidate, type CandidateRecord, type LeaseRecord, type ResourceLock, type Versioned } from "./lock.js";

export interface KubernetesLockOptions {
  readonly group: string;
  readonly nodeId: string;
  readonly namespace: string;
  /** This node's pod, labelled ripplecache.io/role=primary|replica ("" = no label). */
  readonly podName: string;
  /** Bound on each API call (ms): a hung call must not outlive the renew deadline. */
  readonly callTimeoutMs: number;
  /** Default: KUBECONFIG, ~/.kube/config, else the pod's service account (in-cluster). */
  readonly kubeConfig?: KubeConfig;
}

/** The pod label the write Service selects. */
export const ROLE_LABEL = "ripplecache.io/role";

/**
 * Every Kubernetes API call this backend makes, for RBAC: k8s/rbac.yaml grants
 * exactly these (test/k8s.test.ts checks both against the calls in this file).
 * `on`: the objects a call touches ("lease": leaseName, "candidate": this
 * node's candidateLeaseName, "pod": this node's pod), or "any" where RBAC
 * cannot restrict by name (a create, a list by label selector).
 */
export const API_CALLS: readonly { readonly apiGroup: string; readonly resource: string; readonly verb: string; readonly on: readonly ("lease" | "candidate" | "pod")[] | "any" }[] = [
  { apiGroup: "coordination.k8s.io", resource: "leases", verb: "get", on: ["lease", "candidate"] },
  { apiGroup: "coordination.k8s.io", resource: "leases", verb: "create", on: "any" },
  { apiGroup: "coordination.k8s.io", resource: "leases", verb: "update", on: ["lease", "candidate"] },
  { apiGroup: "coordination.k8s.io", resource: "leases", verb: "list", on: "any" },
  { apiGroup: "", resource: "pods", verb: "patch", on: ["pod"] },
];
/** Label on every Lease of ours: the group it belongs to. */
const GROUP_LABEL = "ripplecache.io/group";
/** Label telling the group's Lease from the candidates' Leases. */
const KIND_LABEL = "ripplecache.io/lease";
const ADDRESS_ANNOTATION = "ripplecache.io/address";
const INCARNATION_ANNOTATION = "ripplecache.io/incarnation";
const CANDIDATE_ANNOTATION = "ripplecache.io/candidate";

/** The Lease's name for a group, and for one node's candidacy. */
export function leaseName(group: string): string {
  return `ripplecache-${group}`;
}
export function candidateLeaseName(group: string, node: string): string {
  return `ripplecache-${group}-candidate-${node}`;
}

/**
 * The group's lease as a coordination.k8s.io/v1 Lease, written with
 * optimistic concurrency on metadata.resourceVersion (a stale replace is a
 * 409 Conflict), as client-go's LeaseLock: holderIdentity, leaseTransitions
 * (the term), leaseDurationSeconds, acquireTime and renewTime; the holder's
 * address and incarnation are annotations. Each candidate publishes its rank
 * in a Lease of its own (ripplecache-<group>-candidate-<node>). The holder
 * labels its own pod ripplecache.io/role=primary, the others =replica.
 */
export class KubernetesLock implements ResourceLock {
  readonly description: string;
  private readonly leases: CoordinationV1Api;
  private readonly core: CoreV1Api;
  private readonly name: string;
  private candidateVersion: string | undefined;
  private labelled = "";
  private role: (() => "primary" | "replica") | undefined;

  constructor(private readonly options: KubernetesLockOptions) {
    const kc = options.kubeConfig ?? defaultKubeConfig();
    this.leases = kc.makeApiClient(CoordinationV1Api);
    this.core = kc.makeApiClient(CoreV1Api);
    this.name = leaseName(options.group);
    this.description = `Lease ${options.namespace}/${this.name}`;
  }

  async get(): Promise<Versioned<LeaseRecord> | undefined> {
    try {
      const lease = await this.bounded(this.leases.readNamespacedLease({ name: this.name, namespace: this.options.namespace }));
      return { value: fromLease(lease), version: lease.metadata?.resourceVersion ?? "" };
    } catch (err) {
      if (status(err) === 404) return undefined;
      throw err;
    }
  }

  async create(record: LeaseRecord): Promise<string> {
    try {
      const lease = await this.bounded(this.leases.createNamespacedLease({ namespace: this.options.namespace, body: this.toLease(record, undefined) }));
      return lease.metadata?.resourceVersion ?? "";
    } catch (err) {
      if (status(err) === 409) throw new ConflictError(`${this.description} exists`);
      throw err;
    }
  }

  async update(record: LeaseRecord, version: string): Promise<string> {
    try {
      const lease = await this.bounded(this.leases.replaceNamespacedLease({ name: this.name, namespace: this.options.namespace, body: this.toLease(record, version) }));
      return lease.metadata?.resourceVersion ?? "";
    } catch (err) {
      if (status(err) === 409) throw new ConflictError(`${this.description} changed since resourceVersion ${version}`);
      throw err;
    }
  }

  async publish(candidate: CandidateRecord): Promise<void> {
    const name = candidateLeaseName(this.options.group, this.options.nodeId);
    const body: V1Lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name,
        namespace: this.options.namespace,
        labels: { [GROUP_LABEL]: this.options.group, [KIND_LABEL]: "candidate" },
        annotations: { [CANDIDATE_ANNOTATION]: JSON.stringify(candidate) },
        ...(this.candidateVersion !== undefined ? { resourceVersion: this.candidateVersion } : {}),
      },
      spec: { holderIdentity: candidate.node, renewTime: new Date() as never },
    };
    try {
      const lease =
        this.candidateVersion === undefined
          ? await this.bounded(this.leases.createNamespacedLease({ namespace: this.options.namespace, body }))
          : await this.bounded(this.leases.replaceNamespacedLease({ name, namespace: this.options.namespace, body }));
      this.candidateVersion = lease.metadata?.resourceVersion;
    } catch (err) {
      const code = status(err);
      if (code !== 409 && code !== 404) throw err;
      // Only this node writes its candidacy: re-read the version (a previous process's record) and write again next time.
      try {
        const current = await this.bounded(this.leases.readNamespacedLease({ name, namespace: this.options.namespace }));
        this.candidateVersion = current.metadata?.resourceVersion;
      } catch (readErr) {
        if (status(readErr) !== 404) throw readErr;
        this.candidateVersion = undefined;
      }
    }
    await this.label();
  }

  async candidates(): Promise<Versioned<CandidateRecord>[]> {
    const list = await this.bounded(this.leases.listNamespacedLease({ namespace: this.options.namespace, labelSelector: `${GROUP_LABEL}=${this.options.group},${KIND_LABEL}=candidate` }));
    const out: Versioned<CandidateRecord>[] = [];
    for (const lease of list.items) {
      const value = parseCandidate(lease.metadata?.annotations?.[CANDIDATE_ANNOTATION] ?? "");
      if (value !== undefined) out.push({ value, version: lease.metadata?.resourceVersion ?? "" });
    }
    return out;
  }

  async close(): Promise<void> {}

  observeRole(role: () => "primary" | "replica"): void {
    this.role = role;
  }

  /** Sets this node's pod label to the role it now has (once per change; retried at the next publication after a failure). */
  private async label(): Promise<void> {
    const role = this.role?.() ?? "";
    if (this.options.podName === "" || role === "" || role === this.labelled) return;
    await this.bounded(
      this.core.patchNamespacedPod(
        { name: this.options.podName, namespace: this.options.namespace, body: { metadata: { labels: { [ROLE_LABEL]: role } } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      ),
    );
    this.labelled = role;
  }

  private toLease(record: LeaseRecord, version: string | undefined): V1Lease {
    return {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name: this.name,
        namespace: this.options.namespace,
        labels: { [GROUP_LABEL]: this.options.group, [KIND_LABEL]: "leader" },
        annotations: { [ADDRESS_ANNOTATION]: record.address, [INCARNATION_ANNOTATION]: record.incarnation },
        ...(version !== undefined ? { resourceVersion: version } : {}),
      },
      spec: {
        holderIdentity: record.holder,
        // Whole seconds in the API; the elector keeps its own milliseconds.
        leaseDurationSeconds: Math.max(1, Math.ceil(record.leaseDurationMs / 1000)),
        leaseTransitions: record.term,
        ...(record.acquireTime !== "" ? { acquireTime: new Date(record.acquireTime) as never } : {}),
        ...(record.renewTime !== "" ? { renewTime: new Date(record.renewTime) as never } : {}),
      },
    };
  }

  private bounded<T>(call: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Kubernetes API call took longer than ${this.options.callTimeoutMs} ms`)), this.options.callTimeoutMs);
    });
    return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
  }
}

function fromLease(lease: V1Lease): LeaseRecord {
  const spec = lease.spec ?? {};
  const time = (t: unknown) => (t instanceof Date ? t.toISOString() : typeof t === "string" ? t : "");
  return {
    holder: spec.holderIdentity ?? "",
    incarnation: lease.metadata?.annotations?.[INCARNATION_ANNOTATION] ?? "",
    address: lease.metadata?.annotations?.[ADDRESS_ANNOTATION] ?? "",
    term: spec.leaseTransitions ?? 0,
    leaseDurationMs: (spec.leaseDurationSeconds ?? 0) * 1000,
    acquireTime: time(spec.acquireTime),
    renewTime: time(spec.renewTime),
  };
}

function status(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

function defaultKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}
