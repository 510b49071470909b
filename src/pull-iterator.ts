/**
 * A stream's messages handed over without a promise per message.
 *
 * Why: one write to a prefix with 10,000 watchers wakes 10,000 streams. Taken
 * through `AsyncIterator.next()`, each wake-up resolved a chain of promises
 * (the watch generator, connect's normalizing wrapper, the telemetry wrapper,
 * the writer's await): most of a fan-out's server time. A `PullIterator` is
 * still an AsyncIterator (connect-node and every wrapper that does not know
 * this protocol use `next()`), and also lets a consumer that does know it take
 * what is ready now (`pull`) and be called back when more may be (`onReady`).
 * The fast path's Watch writer uses it when every layer between it and the
 * watch supports it (`pullable`); a wrapper forwards `pullable` from what it
 * wraps, so one wrapper that does not know it turns the protocol off.
 */
export interface PullIterator<T> extends AsyncIterator<T> {
  /** True when `pull` and `onReady` work (every layer underneath supports them). */
  readonly pullable: boolean;
  /** The next result if one is ready now, undefined if not. Throws where `next()` would reject. */
  pull(): IteratorResult<T> | undefined;
  /**
   * Calls `ready` once when `pull` may have a result, or must throw (the call
   * was aborted): later (a setImmediate), never inside the write that made it ready.
   * It runs beside other streams' callbacks, so it must not throw; at most
   * one is pending.
   */
  onReady(ready: () => void): void;
}

/** `it` as a PullIterator, if it is one and everything underneath supports it. */
export function pullIterator<T>(it: AsyncIterator<T>): PullIterator<T> | undefined {
  return (it as Partial<PullIterator<T>>).pullable === true ? (it as PullIterator<T>) : undefined;
}
