import type { CacheStore } from "../store/store.js";
import type { ChangeLog } from "../store/change-log.js";
import type { WatchHub } from "../watch/hub.js";
import { ReplicaFollower, type FollowerOptions } from "./follower.js";
import type { NodeRole } from "./node-role.js";
import { ReplicationSource } from "./source.js";
import { inSpan, withActivity } from "../telemetry/spans.js";

export interface ReplicationOptions {
  /** Start as a replica of this primary (host:port). */
  readonly replicaOf?: string;
  readonly token?: string;
  readonly bufferBytes: number;
  readonly heartbeatMs: number;
  readonly log?: FollowerOptions["log"];
  /** TLS to the primary (--replication-tls-*). */
  readonly tls?: FollowerOptions["tls"];
  /** A coordinator elects the primary: start as a candidate holding no history, following no one. */
  readonly coordinated?: boolean;
  /** A replica named a later term than this node's (see ReplicationSourceOptions). */
  readonly onNewerTerm?: (term: number, replica: string) => void;
}

/**
 * This node's part in replication: its role, the source that serves its
 * replicas, and the follower that tracks its primary when it is a replica.
 * Role changes (promote, replica-of) happen here and nowhere else.
 */
export class Replication {
  readonly source: ReplicationSource;
  private follower: ReplicaFollower | undefined;
  /** The primary and lease term the follower was started for. */
  private following: { address: string; term: number } | undefined;
  private ownAddress = "";
  /** With a coordinator: its lease state, for metrics (set by the coordinator). */
  coordinationStatus: (() => { readonly holdsLease: boolean; readonly renewLatencyMs: number; readonly elections: number }) | undefined;
  /** Called when a replica's stream to its primary ends (set by the coordinator). */
  onLinkDown: (() => void) | undefined;
  /** Role changes run one after another (the coordinator's and the admin's). */
  private changing: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: CacheStore,
    log: ChangeLog,
    hub: WatchHub,
    /** Shared with the watch hub, which asks it which history revisions belong to. */
    readonly role: NodeRole,
    private readonly options: ReplicationOptions,
  ) {
    this.source = new ReplicationSource(store, log, hub, this.role, { bufferBytes: options.bufferBytes, heartbeatMs: options.heartbeatMs, onNewerTerm: options.onNewerTerm });
    if (options.coordinated === true) {
      // Empty, of no history, until the elected primary's sync or this node's own election.
      this.role.replicationId = "";
      this.store.setFollower(true);
      this.role.becomeReplica("");
    } else if (options.replicaOf !== undefined) {
      // A new node holds no history: its first sync is a full resync.
      this.role.replicationId = "";
      this.store.setFollower(true);
      this.role.becomeReplica(options.replicaOf);
    }
  }

  /** Starts following the primary given at construction, once this node knows its own address. */
  start(ownAddress: string): void {
    this.ownAddress = ownAddress;
    if (this.options.replicaOf !== undefined && this.follower === undefined) this.follow(this.options.replicaOf);
  }

  /**
   * Makes this node a primary with a new history that continues the one it
   * held; `term` is its lease's (kept as it is without a coordinator).
   */
  async promote(term?: number, reason?: string): Promise<{ replicationId: string; revision: number }> {
    const previousId = this.role.replicationId;
    // The span starts now, in the caller's (synchronous) trace context; the promotion waits its turn inside it.
    // With a coordinator this is the failover (or the receiving end of a switchover); the reason says which.
    return withActivity("ripplecache.replication.promote", { "ripplecache.replication.previous_id": previousId, ...(reason !== undefined ? { "ripplecache.replication.reason": reason } : {}) }, (span) =>
      this.serially(async () => {
        const r = await this.promoteNow(term);
        span.setAttributes({ "ripplecache.replication.id": r.replicationId, "ripplecache.replication.revision": r.revision, "ripplecache.replication.term": this.role.term });
        inSpan(span, () => this.options.log?.("promoted", { replicationId: r.replicationId, revision: r.revision, term: this.role.term, previousId, ...(reason !== undefined ? { reason } : {}) }));
        return r;
      }),
    );
  }

  /**
   * Stops being primary at once (no more Sync streams served, writes refused
   * by the store), following no one until `replicaOf`: the lease was lost.
   */
  demote(reason: string): void {
    this.source.closeLinks();
    if (this.role.isReplica) return;
    this.store.setFollower(true);
    this.role.becomeReplica("");
    this.options.log?.("stepped down", { term: this.role.term, revision: this.store.currentRevision, reason });
  }

  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.changing.then(fn, fn);
    this.changing = run.catch(() => undefined);
    return run;
  }

  private async promoteNow(term: number | undefined): Promise<{ replicationId: string; revision: number }> {
    await this.follower?.stop();
    this.follower = undefined;
    this.following = undefined;
    if (this.role.loadingSnapshot) {
      // A half-loaded snapshot is no history to continue.
      this.role.replicationId = "";
      this.role.loadingSnapshot = false;
    }
    this.store.setFollower(false);
    this.role.becomePrimary(this.store.currentRevision, term);
    return { replicationId: this.role.replicationId, revision: this.store.currentRevision };
  }

  /** Makes this node a replica of `primaryAddress`, which holds the lease of `term` (0 without a coordinator). */
  async replicaOf(primaryAddress: string, term = 0): Promise<void> {
    return this.serially(async () => {
      // With a coordinator the same lease is seen on every read: re-pointing is for a new holder or term only.
      if (term > 0 && this.following?.address === primaryAddress && this.following.term === term && this.role.isReplica) return;
      this.source.closeLinks();
      await this.follower?.stop();
      this.follower = undefined;
      this.follow(primaryAddress, term);
    });
  }

  /** The primary this node follows and its lease's term, if any. */
  get followed(): { address: string; term: number } | undefined {
    return this.following;
  }

  async close(): Promise<void> {
    await this.follower?.stop();
  }

  private follow(primaryAddress: string, term = 0): void {
    this.store.setFollower(true);
    this.role.becomeReplica(primaryAddress);
    this.following = { address: primaryAddress, term };
    this.follower = new ReplicaFollower(this.store, this.role, {
      primaryAddress,
      term,
      token: this.options.token,
      ownAddress: this.ownAddress,
      silenceTimeoutMs: Math.max(3 * this.options.heartbeatMs, 1000),
      initialBackoffMs: 100,
      maxBackoffMs: 5000,
      log: this.options.log,
      onLinkDown: () => this.onLinkDown?.(),
      tls: this.options.tls,
    });
    this.follower.start();
  }
}
