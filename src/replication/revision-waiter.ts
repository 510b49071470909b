import type { ChangeLog } from "../store/change-log.js";

/**
 * Read-your-writes across nodes: resolves once this node has applied a
 * revision. Waiters are checked as changes are appended, so a read that asks
 * for `min_revision` answers as soon as the replica catches up.
 */
export class RevisionWaiter {
  private readonly waiters = new Set<{ revision: number; resolve: () => void }>();

  constructor(private readonly log: ChangeLog) {
    log.subscribe((change) => {
      if (this.waiters.size === 0) return;
      for (const w of this.waiters) if (change.revision >= w.revision) w.resolve();
    });
  }

  /** True once `revision` is applied; false when `timeoutMs` passes or `signal` aborts first. */
  async waitFor(revision: number, timeoutMs: number, signal: AbortSignal): Promise<boolean> {
    if (this.log.latestRevision >= revision) return true;
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
