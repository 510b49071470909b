import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { CacheService } from "../gen/ripplecache/v1/cache_pb.js";
import { PRIMARY_HEADER } from "../headers.js";
import type { Replication } from "../replication/replication.js";
import type { CacheStore } from "../store/store.js";
import { LeaderElector, type ElectionStatus, type ElectionTimings } from "./elector.js";
import type { LeaseRecord, ResourceLock } from "./lock.js";

export interface CoordinatedNodeOptions extends ElectionTimings {
  readonly coordinator: string;
  readonly group: string;
  readonly nodeId: string;
  readonly log?: (msg: string, fields: Record<string, unknown>) => void;
}

/** What Info reports of coordination. */
export interface CoordinationInfo {
  readonly coordinator: string;
  readonly group: string;
  readonly nodeId: string;
  readonly election: ElectionStatus | undefined;
}

/**
 * A node whose role the group's lease decides: the holder is primary (a new
 * term: its own replication id, continuing the history it held), every other
 * node follows the holder's advertised address. Writes are acknowledged only
 * while the lease is valid (see fence).
 */
export class CoordinatedNode {
  private elector: LeaderElector | undefined;
  /** The term this node is primary of, once its promotion completed; 0 otherwise. */
  private leaderTerm = 0;
  private lastLeader = "";

  constructor(
    private readonly lock: ResourceLock,
    private readonly replication: Replication,
    private readonly store: CacheStore,
    private readonly options: CoordinatedNodeOptions,
  ) {}

  /** Starts electing once the node listens at `ownAddress`. */
  start(ownAddress: string): void {
    const role = this.replication.role;
    this.elector = new LeaderElector(this.lock, {
      ...this.options,
      address: ownAddress,
      rank: () => (role.current === "" ? { term: 0, history: "", revision: 0 } : { term: role.term, history: role.current, revision: this.store.currentRevision }),
      onStartedLeading: async (term, reason) => {
        this.log("became primary", { term, reason, revision: this.store.currentRevision });
        await this.replication.promote(term, reason);
        this.leaderTerm = term;
        this.lastLeader = "";
      },
      onStoppedLeading: (reason) => {
        this.leaderTerm = 0;
        this.log("lost the lease", { reason });
        this.replication.demote(reason);
      },
      onLeader: (lease) => this.follow(lease),
      log: this.options.log,
    });
    this.elector.start();
  }

  /** A replica named a later term: this node may have lost its lease; look now. */
  poke(): void {
    this.elector?.poke();
  }

  get electorRef(): LeaderElector | undefined {
    return this.elector;
  }

  info(): CoordinationInfo {
    return { coordinator: this.options.coordinator, group: this.options.group, nodeId: this.options.nodeId, election: this.elector?.status() };
  }

  /** Whether this node may acknowledge a write now: it is the primary of the term of the lease it holds, within its renew deadline. */
  mayAcknowledgeWrites(): boolean {
    return this.leaderTerm > 0 && this.elector !== undefined && this.elector.holdsValidLease() && !this.replication.role.isReplica && this.replication.role.term === this.leaderTerm;
  }

  /** Stops electing and releases a held lease, so another node takes over at once. */
  async stop(): Promise<void> {
    this.leaderTerm = 0;
    await this.elector?.stop(true);
    await this.lock.close();
  }

  private follow(lease: LeaseRecord): void {
    const key = `${lease.address}@${lease.term}`;
    if (key !== this.lastLeader) {
      this.lastLeader = key;
      this.log("following the lease holder", { holder: lease.holder, address: lease.address, term: lease.term });
    }
    void this.replication.replicaOf(lease.address, lease.term);
  }

  private log(msg: string, fields: Record<string, unknown>): void {
    this.options.log?.(msg, { group: this.options.group, node: this.options.nodeId, ...fields });
  }

  /** Why a write is refused now, as the error to answer with; undefined when it may proceed. */
  writeRefusal(): ConnectError | undefined {
    if (this.mayAcknowledgeWrites()) return undefined;
    const role = this.replication.role;
    if (role.isReplica && role.primaryAddress !== "") {
      return new ConnectError(`this node is a replica: send writes to the primary at ${role.primaryAddress}`, Code.FailedPrecondition, { [PRIMARY_HEADER]: role.primaryAddress });
    }
    return new ConnectError(`no primary holds the lease of group ${this.options.group} yet (an election is under way): retry`, Code.Unavailable);
  }
}

const WRITES = new Set(["Set", "SetMany", "Delete", "Increment", "Touch", "Load", "Flush"]);

/**
 * Fencing on the write path: a write is let through only while this node
 * holds a valid lease, and its answer is sent only if it still does when the
 * write (and its min_replicas wait) completed. A primary paused past its
 * lease (SIGSTOP, a long GC) answers UNAVAILABLE to everything it was asked
 * meanwhile: the check reads the monotonic clock, no timer needs to have run.
 */
export function leaseFence(node: CoordinatedNode): Interceptor {
  return (next) => (req) => {
    if (req.service.typeName !== CacheService.typeName || !WRITES.has(req.method.name)) return next(req);
    const refusal = node.writeRefusal();
    if (refusal !== undefined) return Promise.reject(refusal);
    return next(req).then((res) => {
      if (!node.mayAcknowledgeWrites()) {
        throw new ConnectError("this node lost its lease before the write was acknowledged: the write may not survive; retry on the new primary", Code.Unavailable);
      }
      return res;
    });
  };
}

/** The InfoResponse fields of coordination (the rest of Info is cache-service.ts's). */
export function coordinationInfoFields(node: CoordinatedNode | undefined, replication: Replication) {
  const info = node?.info();
  const election = info?.election;
  return {
    coordinator: info?.coordinator ?? "static",
    group: info?.group ?? "",
    nodeId: info?.nodeId ?? "",
    term: BigInt(replication.role.term),
    leaseHolder: election?.holder ?? "",
    leaseHolderAddress: election?.holderAddress ?? "",
    leaseValidMs: BigInt(node?.mayAcknowledgeWrites() === true ? (election?.validForMs ?? 0) : 0),
    leaseRenewLatencyMs: election?.renewLatencyMs ?? -1,
  };
}
