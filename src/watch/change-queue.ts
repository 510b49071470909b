import type { Change } from "../store/change.js";
import { changeBytes } from "../store/change-log.js";
import type { Subscriber } from "./hub.js";

/**
 * The bounded buffer of one stream: changes delivered by the hub and not yet
 * sent. The changes themselves are shared with the log and other streams; the
 * bound counts their bytes so that a slow consumer cannot pin unbounded
 * history. Past the bound the queue empties itself and marks `overflowed`:
 * the stream then owes its client a Resync, and only changes after that point
 * are queued.
 */
export class ChangeQueue implements Subscriber {
  private items: Change[] = [];
  private bytes = 0;
  private overflow = false;
  private waiter: ((why: "woken" | "timeout") => void) | undefined;
  private signal: AbortSignal | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerMs = 0;

  constructor(
    private readonly maxBytes: number,
    /** Changes before this revision are ignored (a watch that starts in the future). */
    private readonly minRevision = 0,
  ) {}

  deliver(change: Change): void {
    if (change.revision < this.minRevision) return;
    if (!this.overflow) {
      const size = changeBytes(change);
      if (this.bytes + size > this.maxBytes) {
        this.overflow = true;
        this.items = [];
        this.bytes = 0;
      } else {
        this.items.push(change);
        this.bytes += size;
      }
    }
    this.wake();
  }

  get length(): number {
    return this.items.length;
  }

  /** True once if the queue overflowed since the last call; the caller sends the Resync. */
  takeOverflow(): boolean {
    const o = this.overflow;
    this.overflow = false;
    return o;
  }

  /** Removes and returns up to `max` changes, oldest first. */
  take(max: number): Change[] {
    const out = this.items.length <= max ? this.items : this.items.slice(0, max);
    this.items = this.items.length <= max ? [] : this.items.slice(max);
    for (const c of out) this.bytes -= changeBytes(c);
    return out;
  }

  /** Wakes a pending `wait`. */
  wake(): void {
    this.settle("woken");
  }

  /**
   * Resolves when something is delivered, `wake` is called, `ms` pass ("timeout"), or `signal` aborts.
   * One consumer. The abort listener is added once per signal and the timer is re-armed
   * (`refresh`), not made anew: a fan-out wakes thousands of queues per write.
   */
  wait(ms: number, signal: AbortSignal): Promise<"woken" | "timeout"> {
    if (this.items.length > 0 || this.overflow || signal.aborted) return Promise.resolve("woken");
    if (this.signal !== signal) {
      this.signal?.removeEventListener("abort", this.onAbort);
      this.signal = signal;
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
    if (this.timer === undefined || this.timerMs !== ms) {
      clearTimeout(this.timer);
      this.timerMs = ms;
      this.timer = setTimeout(() => this.settle("timeout"), ms);
    } else {
      this.timer.refresh();
    }
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** The stream is over: no timer or listener outlives it. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.signal?.removeEventListener("abort", this.onAbort);
    this.signal = undefined;
    this.settle("woken");
  }

  private readonly onAbort = () => this.settle("woken");

  private settle(why: "woken" | "timeout"): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.(why);
  }
}
