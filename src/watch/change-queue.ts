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
  private waiter: Waiter | undefined;
  /** The waiter is onWake's callback, called in a microtask (wait's promise is asynchronous already). */
  private deferred = false;
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
   * One consumer.
   */
  wait(ms: number, signal: AbortSignal): Promise<"woken" | "timeout"> {
    if (this.ready(signal)) return Promise.resolve("woken");
    return new Promise((resolve) => this.arm(ms, signal, resolve));
  }

  /**
   * `wait` with a callback: `woken` is called once, on the same occasions,
   * in a microtask. For a consumer that takes no promise per change (a Watch).
   * Why a microtask: the delivering write (a SetMany of 100 keys, say) is
   * over by then, so the consumer takes its changes as one batch, and no
   * consumer's work runs inside a write to the store.
   */
  onWake(ms: number, signal: AbortSignal, woken: Waiter): void {
    if (this.ready(signal)) {
      wakeLater(woken, "woken");
    } else {
      this.arm(ms, signal, woken);
      this.deferred = true;
    }
  }

  private ready(signal: AbortSignal): boolean {
    return this.items.length > 0 || this.overflow || signal.aborted;
  }

  /**
   * The abort listener is added once per signal and the timer is re-armed
   * (`refresh`), not made anew: a fan-out wakes thousands of queues per write.
   */
  private arm(ms: number, signal: AbortSignal, waiter: Waiter): void {
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
    this.waiter = waiter;
    this.deferred = false;
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
    if (w === undefined) return;
    this.waiter = undefined;
    if (this.deferred) wakeLater(w, why);
    else w(why);
  }
}

type Waiter = (why: "woken" | "timeout") => void;

/**
 * onWake callbacks due, called together in one microtask: a write to a
 * prefix with 10,000 watchers wakes 10,000 queues, and a microtask (and a
 * closure) each cost more than the rest of their wake-up.
 */
const dueWaiters: Waiter[] = [];
const dueReasons: ("woken" | "timeout")[] = [];

function wakeLater(waiter: Waiter, why: "woken" | "timeout"): void {
  if (dueWaiters.length === 0) queueMicrotask(wakeDue);
  dueWaiters.push(waiter);
  dueReasons.push(why);
}

function wakeDue(): void {
  // Callbacks may wake more queues (their writes): those join this run, at the end.
  for (let i = 0; i < dueWaiters.length; i++) {
    try {
      dueWaiters[i](dueReasons[i]);
    } catch (e) {
      // A waiter must not throw; if one does, the others still run, and the error surfaces as it would have.
      queueMicrotask(() => {
        throw e;
      });
    }
  }
  dueWaiters.length = 0;
  dueReasons.length = 0;
}
