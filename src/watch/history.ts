/**
 * Which history this node's revisions belong to, so that a resuming stream
 * can tell "revision 900 of the data I hold" from "revision 900 of some other
 * data". Revisions alone cannot: a primary restarted empty counts from 0
 * again, and a promoted replica reuses the revisions its old primary had
 * given to writes it never received. The watch layer only asks; replication
 * (NodeRole) answers.
 */
export interface RevisionHistory {
  /** This node's history (its replication id); "" while it holds no complete dataset. */
  readonly current: string;
  /** Whether this node's data is `history` up to and including `revision`. */
  continues(history: string, revision: number): boolean;
}

/** For a hub without replication: one history forever, every resume continues it. */
export const SINGLE_HISTORY: RevisionHistory = {
  current: "",
  continues: () => true,
};
