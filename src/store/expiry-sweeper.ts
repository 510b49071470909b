import type { CacheStore } from "./store.js";

/** How often the sweeper runs. */
export const TICK_MS = 50;
/** The whole slot table is examined at least once per this period, so an
 * expired key nobody reads is removed (and its EXPIRE event sent) within about
 * this long of its deadline. */
export const FULL_PASS_MS = 400;
/** Most keys removed per tick, so a mass expiry cannot stall the event loop. */
export const MAX_EXPIRED_PER_TICK = 50_000;

/**
 * Active expiry. Lazy expiry on access removes keys that are read; this frees
 * the rest with bounded work per tick and no timer per key.
 */
export class ExpirySweeper {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly store: CacheStore) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  tick(): number {
    // A replica removes nothing itself: expiry comes as the primary's events.
    if (this.store.isFollower) return 0;
    const budget = Math.max(1024, Math.ceil((this.store.slotCount * TICK_MS) / FULL_PASS_MS));
    return this.store.sweepExpired(budget, MAX_EXPIRED_PER_TICK);
  }
}
