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
/** Slots an empty queue keeps (beyond them, its array is released). */
const KEPT_SLOTS = 64;

export class ChangeQueue implements Subscriber {
  /**
   * The queued changes are items[0..count). The array is kept, not replaced,
   * and emptied slot by slot: a new array per take would be young, held by
   * an old queue until the next write, so a fan-out to 10,000 watchers would
   * give the GC 10,000 arrays per write to copy and promote.
   * (Setting `length = 0` would drop the backing store just the same.)
   */
  private readonly items: (Change | undefined)[] = [];
  private count = 0;
  private bytes = 0;
  private overflow = false;
  private waiter: Waiter | undefined;
  /** The waiter is onWake's callback, called later (from wakeDue; wait's promise is asynchronous already). */
  private deferred = false;
  private signal: AbortSignal | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerMs = 0;
  /** The timer is set and has not fired. */
  private timerPending = false;
  /** performance.now() when the current wait started: its timeout is `timerMs` after. */
  private waitStarted = 0;

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
        this.clear(0, this.count);
        this.count = 0;
        this.bytes = 0;
      } else {
        this.items[this.count++] = change;
        this.bytes += size;
      }
    }
    this.wake();
  }

  get length(): number {
    return this.count;
  }

  /** True once if the queue overflowed since the last call; the caller sends the Resync. */
  takeOverflow(): boolean {
    const o = this.overflow;
    this.overflow = false;
    return o;
  }

  /** Removes and returns up to `max` changes, oldest first (the array is the caller's). */
  take(max: number): Change[] {
    const items = this.items;
    const n = Math.min(max, this.count);
    const out = new Array<Change>(n);
    for (let i = 0; i < n; i++) {
      const c = items[i]!;
      out[i] = c;
      this.bytes -= changeBytes(c);
    }
    // What is left moves to the front (as the slice that was here copied it).
    for (let i = n; i < this.count; i++) items[i - n] = items[i];
    this.clear(this.count - n, this.count);
    this.count -= n;
    return out;
  }

  /** Empties slots [from, to): the queue keeps no change it has handed over. */
  private clear(from: number, to: number): void {
    const items = this.items;
    for (let i = from; i < to; i++) items[i] = undefined;
    // After a backlog, an empty queue lets its slots go: a slow watcher's burst is not kept for the stream's life.
    if (from === 0 && items.length > KEPT_SLOTS) items.length = 0;
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
   * from a `setImmediate`. For a consumer that takes no promise per change (a Watch).
   * Why later, not at once: the delivering write (a SetMany of 100 keys,
   * say) is over by then, so the consumer takes its changes as one batch, and
   * no consumer's work runs inside a write to the store. Why not a microtask:
   * the writer's answer is made in the microtasks
   * after its write, so it is queued before the fan-out starts and is not
   * held behind 10,000 watchers' events (with a microtask, a Set's answer
   * came ~20 ms late).
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
    return this.count > 0 || this.overflow || signal.aborted;
  }

  /**
   * The abort listener is added once per signal. The timeout runs `ms` from
   * this wait's start, but a pending timer is not moved: when it fires it
   * looks at when the wait it serves started, and re-arms for what is left.
   * Moving it (`refresh`) at every wait would cost a fan-out to 10,000
   * watchers 10,000 timer-list moves per write (~6% of its time).
   */
  private arm(ms: number, signal: AbortSignal, waiter: Waiter): void {
    if (this.signal !== signal) {
      this.signal?.removeEventListener("abort", this.onAbort);
      this.signal = signal;
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
    this.waitStarted = performance.now();
    if (!this.timerPending || this.timerMs !== ms) {
      clearTimeout(this.timer);
      this.timerMs = ms;
      this.timerPending = true;
      this.timer = setTimeout(this.onTimer, ms);
    }
    this.waiter = waiter;
    this.deferred = false;
  }

  private readonly onTimer = () => {
    const left = this.waitStarted + this.timerMs - performance.now();
    // Timers may fire up to a millisecond early (they count whole milliseconds).
    if (this.waiter !== undefined && left > 1) {
      this.timer = setTimeout(this.onTimer, left);
      return;
    }
    this.timerPending = false;
    this.settle("timeout");
  };

  /** The stream is over: no timer or listener outlives it. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerPending = false;
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
 * onWake callbacks due, called together from one setImmediate: a write to a
 * prefix with 10,000 watchers wakes 10,000 queues, and a callback (and a
 * closure) each cost more than the rest of their wake-up.
 */
const dueWaiters: Waiter[] = [];
const dueReasons: ("woken" | "timeout")[] = [];

function wakeLater(waiter: Waiter, why: "woken" | "timeout"): void {
  if (dueWaiters.length === 0) setImmediate(wakeDue);
  dueWaiters.push(waiter);
  dueReasons.push(why);
}

/**
 * Waiters called per turn of the event loop. Between turns the transport
 * flushes what the woken streams wrote (our HTTP/2 engine flushes from a
 * setImmediate too), so the first watchers' events are on the wire while
 * later ones are made, and other connections' requests are not held for the
 * whole of a large fan-out.
 */
const WAKE_CHUNK = 1000;
let dueNext = 0;

function wakeDue(): void {
  // Callbacks may wake more queues (their writes): those join this run, at the end.
  const end = Math.min(dueWaiters.length, dueNext + WAKE_CHUNK);
  for (let i = dueNext; i < end; i++) {
    try {
      dueWaiters[i](dueReasons[i]);
    } catch (e) {
      // A waiter must not throw; if one does, the others still run, and the error surfaces as it would have.
      queueMicrotask(() => {
        throw e;
      });
    }
  }
  dueNext = end;
  if (dueNext < dueWaiters.length) {
    setImmediate(wakeDue);
    return;
  }
  dueWaiters.length = 0;
  dueReasons.length = 0;
  dueNext = 0;
}
