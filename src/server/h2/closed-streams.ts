/**
 * What a connection remembers of streams that are no longer open, so that
 * validate.ts can tell them apart (RFC 9113 5.1, 5.1.1, 5.4.2):
 *
 * - Streams we reset (any RST_STREAM we sent, refusals included), for
 *   RESET_MEMORY_MS: the client may have sent frames on them before our
 *   RST_STREAM reached it, which must be ignored (5.4.2, 6.4). At most
 *   RESETS_REMEMBERED at a time; one forgotten early (more resets than that
 *   within RESET_MEMORY_MS) still counts as reset recently until its time is
 *   up, with every lower id, so a busy connection errs on the lenient side,
 *   as nghttp2 (which ignores frames on every stream it no longer holds).
 * - Ids the client skipped (opening stream 7 after 3 closes 5 unused, 5.1.1):
 *   HEADERS there are a new stream with an id lower than one already used.
 *   At most SKIPPED_RANGES runs of them; older ones count as closed.
 *
 * Any other stream below the highest id opened closed otherwise: both sides
 * ended it, the client reset it, or we reset it long ago.
 */

/** Several round trips and TCP retransmissions: frames sent before our RST_STREAM arrived come well within it. */
const RESET_MEMORY_MS = 10_000;
const RESETS_REMEMBERED = 256;
const SKIPPED_RANGES = 16;

export class ClosedStreams {
  private readonly resetIds: number[] = [];
  private readonly resetTimes: number[] = [];
  /** Where the next reset goes once the arrays are full (a ring). */
  private nextReset = 0;
  /** Ids up to this one count as reset recently until `forgottenUntil` (entries overwritten before their time). */
  private forgottenId = 0;
  private forgottenUntil = 0;
  /** Runs of skipped ids, as [first, last] pairs, oldest first. */
  private readonly skipped: number[] = [];

  /** We sent RST_STREAM on stream `id`. */
  reset(id: number, now = Date.now()): void {
    if (this.resetIds.length < RESETS_REMEMBERED) {
      this.resetIds.push(id);
      this.resetTimes.push(now);
      return;
    }
    const i = this.nextReset;
    const until = this.resetTimes[i] + RESET_MEMORY_MS;
    if (until > now) {
      this.forgottenId = Math.max(this.forgottenId, this.resetIds[i]);
      this.forgottenUntil = Math.max(this.forgottenUntil, until);
    }
    this.resetIds[i] = id;
    this.resetTimes[i] = now;
    this.nextReset = (i + 1) % RESETS_REMEMBERED;
  }

  /** Whether we reset stream `id` within RESET_MEMORY_MS. */
  resetRecently(id: number, now = Date.now()): boolean {
    if (id <= this.forgottenId && now < this.forgottenUntil) return true;
    for (let i = 0; i < this.resetIds.length; i++) if (this.resetIds[i] === id && this.resetTimes[i] + RESET_MEMORY_MS > now) return true;
    return false;
  }

  /** The client opened stream `id`; `last` is the highest it had opened (0 if none). */
  opened(id: number, last: number): void {
    const expected = last === 0 ? 1 : last + 2;
    if (id <= expected) return;
    if (this.skipped.length >= SKIPPED_RANGES * 2) this.skipped.splice(0, 2);
    this.skipped.push(expected, id - 2);
  }

  /** Whether `id` is one the client skipped (never opened). */
  wasSkipped(id: number): boolean {
    for (let i = 0; i < this.skipped.length; i += 2) if (id >= this.skipped[i] && id <= this.skipped[i + 1]) return true;
    return false;
  }
}
