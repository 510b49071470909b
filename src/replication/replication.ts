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
}

/**
 * This node's part in replication: its role, the source that serves its
 * replicas, and the follower that tracks its primary when it is a replica.
 * Role changes (promote, replica-of) happen here and nowhere else.
 */
export class Replication {
  readonly source: ReplicationSource;
  private follower: ReplicaFollower | undefined;
  private ownAddress = "";

  constructor(
    private readonly store: CacheStore,
    log: ChangeLog,
    hub: WatchHub,
    /** Shared with the watch hub, which asks it which history revisions belong to. */
    readonly role: NodeRole,
    private readonly options: ReplicationOptions,
  ) {
    this.source = new ReplicationSource(store, log, hub, this.role, { bufferBytes: options.bufferBytes, heartbeatMs: options.heartbeatMs });
    if (options.replicaOf !== undefined) {
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

  /** Makes this node a primary with a new history that continues the one it held. */
  async promote(): Promise<{ replicationId: string; revision: number }> {
    const previousId = this.role.replicationId;
    return withActivity("ripplecache.replication.promote", { "ripplecache.replication.previous_id": previousId }, async (span) => {
      const r = await this.promoteNow();
      span.setAttributes({ "ripplecache.replication.id": r.replicationId, "ripplecache.replication.revision": r.revision });
      inSpan(span, () => this.options.log?.("promoted", { replicationId: r.replicationId, revision: r.revision }));
      return r;
    });
  }

  private async promoteNow(): Promise<{ replicationId: string; revision: number }> {
    await this.follower?.stop();
    this.follower = undefined;
    if (this.role.loadingSnapshot) {
      // A half-loaded snapshot is no history to continue.
      this.role.replicationId = "";
      this.role.loadingSnapshot = false;
    }
    this.store.setFollower(false);
    this.role.becomePrimary(this.store.currentRevision);
    return { replicationId: this.role.replicationId, revision: this.store.currentRevision };
  }

  /** Makes this node a replica of `primaryAddress`. */
  async replicaOf(primaryAddress: string): Promise<void> {
    await this.follower?.stop();
    this.follower = undefined;
    this.follow(primaryAddress);
  }

  async close(): Promise<void> {
    await this.follower?.stop();
  }

  private follow(primaryAddress: string): void {
    this.store.setFollower(true);
    this.role.becomeReplica(primaryAddress);
    this.follower = new ReplicaFollower(this.store, this.role, {
      primaryAddress,
      token: this.options.token,
      ownAddress: this.ownAddress,
      silenceTimeoutMs: Math.max(3 * this.options.heartbeatMs, 1000),
      initialBackoffMs: 100,
      maxBackoffMs: 5000,
      log: this.options.log,
      tls: this.options.tls,
    });
    this.follower.start();
  }
}
