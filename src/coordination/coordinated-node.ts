import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { CacheService } from "../gen/ripplecache/v1/cache_pb.js";
import { NOT_APPLIED_HEADER, PRIMARY_HEADER } from "../headers.js";
import { startActivity } from "../telemetry/spans.js";
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
  /** A planned switchover is under way: writes are refused. */
  private switching = false;

  constructor(
    private readonly lock: ResourceLock,
    private readonly replication: Replication,
    private readonly store: CacheStore,
    private readonly options: CoordinatedNodeOptions,
  ) {
    // A replica whose stream ended looks at the lease at once: a handover or a new holder is seen within a round trip.
    replication.onLinkDown = () => this.poke();
    replication.coordinationStatus = () => {
      const s = this.elector?.status();
      return { holdsLease: this.mayAcknowledgeWrites(), renewLatencyMs: s?.renewLatencyMs ?? -1, elections: s?.elections ?? 0 };
    };
  }

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
        // From here on writes are acknowledged (ms since the epoch: intervals of nodes on one machine compare).
        this.log("leading", { term, validFrom: Date.now() });
      },
      onStoppedLeading: (reason, validUntil) => {
        this.leaderTerm = 0;
        this.log("lost the lease", { reason, validUntil });
        this.replication.demote(reason);
      },
      onLeader: (lease) => this.follow(lease),
      log: this.options.log,
    });
    this.lock.observeRole?.(() => (this.mayAcknowledgeWrites() ? "primary" : "replica"));
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
    return this.leaderTerm > 0 && !this.switching && this.elector !== undefined && this.elector.holdsValidLease() && !this.replication.role.isReplica && this.replication.role.term === this.leaderTerm;
  }

  /**
   * Stops electing. A primary first hands its lease to its most up-to-date
   * replica (a switchover bounded by `switchoverMs`), else releases it, so
   * another node takes over at once.
   */
  async stop(switchoverMs = STOP_SWITCHOVER_MS): Promise<void> {
    if (this.mayAcknowledgeWrites()) {
      try {
        await this.switchover("", switchoverMs);
      } catch (err) {
        this.log("no switchover on stop; releasing the lease", { reason: err instanceof Error ? err.message : String(err) });
      }
    }
    this.leaderTerm = 0;
    await this.elector?.stop(true);
    await this.lock.close();
  }

  /**
   * Planned switchover, as Redis 7's FAILOVER: stop acknowledging writes,
   * wait until the replica `to` (a node id; "" = the most up to date live
   * one) has applied every revision, hand it the lease (next term), go on as
   * its replica. On timeout writes resume here and nothing changes.
   */
  async switchover(to: string, timeoutMs: number): Promise<{ nodeId: string; address: string; term: number; revision: number }> {
    // Started before the first await, in the caller's trace context (it does not last across awaits).
    const span = startActivity("ripplecache.coordination.switchover", {
      "ripplecache.coordination.group": this.options.group,
      "ripplecache.coordination.reason": to !== "" ? "failover requested" : "switchover to the most up-to-date replica",
    });
    try {
      const r = await this.switchoverNow(to, timeoutMs);
      span.end({ "ripplecache.coordination.to": r.nodeId, "ripplecache.replication.term": r.term, "ripplecache.replication.revision": r.revision });
      return r;
    } catch (err) {
      span.fail(err);
      throw err;
    }
  }

  private async switchoverNow(to: string, timeoutMs: number): Promise<{ nodeId: string; address: string; term: number; revision: number }> {
    const elector = this.elector;
    if (elector === undefined || !this.mayAcknowledgeWrites()) {
      const refusal = this.writeRefusal() ?? new ConnectError("this node is not the primary", Code.FailedPrecondition);
      throw new ConnectError(`failover is asked of the primary: ${refusal.rawMessage}`, Code.FailedPrecondition, refusal.metadata);
    }
    const streaming = new Map(this.replication.source.status().filter((r) => r.state === "streaming").map((r) => [r.address, r]));
    const candidates = (await elector.liveCandidates()).filter((c) => c.node !== this.options.nodeId && streaming.has(c.address));
    const target =
      to !== ""
        ? candidates.find((c) => c.node === to)
        : candidates.sort((a, b) => (streaming.get(b.address)?.ackedRevision ?? 0) - (streaming.get(a.address)?.ackedRevision ?? 0))[0];
    if (target === undefined) {
      const known = candidates.map((c) => c.node).join(", ") || "none";
      throw new ConnectError(to !== "" ? `${to} is not a live replica streaming from this primary (live: ${known})` : "no live replica streams from this primary", Code.FailedPrecondition);
    }
    this.switching = true;
    const started = Date.now();
    try {
      const revision = this.store.currentRevision;
      const signal = AbortSignal.timeout(timeoutMs);
      const acked = await this.replication.source.waitForAcks(revision, 1, timeoutMs, signal, target.address);
      if (acked < 1) throw new ConnectError(`${target.node} did not apply revision ${revision} within ${timeoutMs} ms: writes resume here`, Code.DeadlineExceeded);
      if (!this.mayAcknowledgeWritesIgnoringSwitch()) throw new ConnectError("the lease was lost during the switchover", Code.Unavailable);
      this.leaderTerm = 0;
      let term: number;
      try {
        term = await elector.handOver(target);
      } catch (err) {
        throw new ConnectError(`the lease could not be handed to ${target.node}: ${err instanceof Error ? err.message : String(err)}`, Code.Unavailable);
      }
      this.log("handed the lease over", { to: target.node, address: target.address, term, revision, waitedMs: Date.now() - started, reason: to !== "" ? "failover requested" : "switchover to the most up-to-date replica" });
      return { nodeId: target.node, address: target.address, term, revision };
    } finally {
      this.switching = false;
    }
  }

  private mayAcknowledgeWritesIgnoringSwitch(): boolean {
    return this.leaderTerm > 0 && this.elector !== undefined && this.elector.holdsValidLease() && !this.replication.role.isReplica;
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
    return new ConnectError(`no primary holds the lease of group ${this.options.group} yet (an election is under way): retry`, Code.Unavailable, { [NOT_APPLIED_HEADER]: "1" });
  }
}

/** Bound on the switchover a primary attempts when it stops (SIGTERM), within a usual shutdown grace period. */
const STOP_SWITCHOVER_MS = 5000;

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
