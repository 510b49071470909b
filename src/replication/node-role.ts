import { randomBytes } from "node:crypto";
import type { RevisionHistory } from "../watch/history.js";

/** A fresh replication id: 40 hex characters, as Redis's replid. */
export function newReplicationId(): string {
  return randomBytes(20).toString("hex");
}

/**
 * What this node is in replication, and the history its revisions belong to.
 *
 * A replication id names a history. A primary starts a new one when it starts
 * (its memory is empty, so its revisions restart) and when it is promoted. A
 * promoted replica remembers the id it followed and the revision it had
 * reached (`previous`): replicas of the same old primary that have not gone
 * past that revision share its history and may continue partially.
 */
export class NodeRole implements RevisionHistory {
  role: "primary" | "replica" = "primary";
  /** The history this node's dataset belongs to; "" for a replica that holds no complete history. */
  replicationId = newReplicationId();
  previous: { readonly id: string; readonly upTo: number } | undefined;
  /**
   * The term of the history this node holds: the lease's acquisitions when
   * its primary took the lease (0 without a coordinator, and for no history).
   * Candidates are ranked by it first (src/coordination/elector.ts).
   */
  term = 0;
  /** For a replica: the primary's address (host:port). */
  primaryAddress = "";
  /** For a replica: "connecting", "full-sync", "streaming" or "disconnected". */
  linkState = "";
  /** For a replica: its first sync has completed since it became a replica. */
  synced = false;
  /** For a replica: a full resync is loading, so the dataset is partial. */
  loadingSnapshot = false;
  /** For a replica: when the link last went down (ms since epoch); 0 while up. */
  linkDownSince = 0;
  private readonly listeners = new Set<() => void>();

  /** The history watchers are told; none while a snapshot is half loaded. */
  get current(): string {
    return this.loadingSnapshot ? "" : this.replicationId;
  }

  /**
   * Whether this node's data is `history` through `revision`: it is the
   * history this node holds, or the one it continued when it was promoted,
   * up to where it had followed it. A replica that followed a promoted
   * primary does not know that primary's previous history and answers false:
   * a needless Resync, never a silent gap.
   */
  continues(history: string, revision: number): boolean {
    if (history === "" || this.loadingSnapshot) return false;
    if (history === this.replicationId) return true;
    return this.previous !== undefined && history === this.previous.id && revision <= this.previous.upTo;
  }

  get isReplica(): boolean {
    return this.role === "replica";
  }

  /** Calls `fn` after every change of role or sync state. */
  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed(): void {
    for (const fn of this.listeners) fn();
  }

  becomeReplica(primaryAddress: string): void {
    this.role = "replica";
    this.primaryAddress = primaryAddress;
    this.linkState = "connecting";
    this.synced = false;
    this.linkDownSince = Date.now();
    this.changed();
  }

  /** Starts a new history, of `term`, that continues the current one up to `revision`. */
  becomePrimary(revision: number, term = this.term): void {
    if (this.replicationId !== "") this.previous = { id: this.replicationId, upTo: revision };
    this.replicationId = newReplicationId();
    this.term = term;
    this.role = "primary";
    this.primaryAddress = "";
    this.linkState = "";
    this.loadingSnapshot = false;
    this.linkDownSince = 0;
    this.changed();
  }
}
