import type { ChangeLog } from "../store/change-log.js";
import type { NodeRole } from "./node-role.js";

/**
 * Read-your-writes across nodes: resolves once this node has applied a
 * revision. Waiters are checked as changes are appended, so a read that asks
 * for `min_revision` answers as soon as the replica catches up.
 *
 * A revision counts as applied only while the dataset is complete. A full
 * resync starts with a flush at the snapshot's revision R (so the log jumps to
 * R at once) and loads the entries afterwards: a read waiting for a revision
 * <= R must wait for the snapshot's end, or it would answer from a partial
 * dataset (found by test/chaos.test.ts: a min_revision Get answered "not
 * found" for a key the replica had acknowledged, while a snapshot loaded).
 */
export class RevisionWaiter {
  private readonly waiters = new Set<{ revision: number; resolve: () => void }>();

  constructor(
    private readonly log: ChangeLog,
    private readonly role: NodeRole,
  ) {
    log.subscribe(() => this.check());
    // The end of a snapshot appends nothing: hear it from the role.
    role.subscribe(() => this.check());
  }

  private applied(revision: number): boolean {
    return this.log.latestRevision >= revision && !this.role.loadingSnapshot;
  }

  private check(): void {
    if (this.waiters.size === 0) return;
    for (const w of this.waiters) if (this.applied(w.revision)) w.resolve();
  }

  /** True once `revision` is applied; false when `timeoutMs` passes or `signal` aborts first. */
  async waitFor(revision: number, timeoutMs: number, signal: AbortSignal): Promise<boolean> {
    if (this.applied(revision)) return true;
    return new Promise<boolean>((resolve) => {
      const waiter = { revision, resolve: () => done(true) };
      const timer = setTimeout(() => done(false), timeoutMs);
      const onAbort = () => done(false);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.waiters.delete(waiter);
        resolve(ok);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }
}
