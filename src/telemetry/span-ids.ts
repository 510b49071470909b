import { randomFillSync } from "node:crypto";

/** The tracing SDK's IdGenerator (@opentelemetry/sdk-trace), structurally. */
export interface SpanIdSource {
  generateTraceId(): string;
  generateSpanId(): string;
}

/** Random bytes per refill: 4,096 trace ids or 8,192 span ids. */
const POOL_BYTES = 64 * 1024;
const TRACE_ID_BYTES = 16;
const SPAN_ID_BYTES = 8;

/**
 * Trace and span ids cut from a pool of random bytes. The SDK's generator
 * formats every id with its own Buffer#toString("hex") (with Math.random
 * bytes): two native calls per call served, traced or not, about 2% of a
 * cached Get with tracing on. Here one call to the system's random source
 * serves thousands of ids, and a root call's trace id (drawTraceId) is hex
 * only if something reads it: the ratio sampler decides on its bytes, and
 * drops most calls.
 *
 * Ids never repeat within a pool; the all-zero id, which W3C Trace Context
 * calls invalid, is skipped.
 */
export class PooledSpanIds implements SpanIdSource {
  private bytes: Buffer = Buffer.alloc(0);
  private view: DataView = new DataView(new ArrayBuffer(0));
  private at = 0;
  private preferred: string | undefined;
  /** traceIdHash (sampling.ts) of the id drawTraceId() drew last. */
  drawnHash = 0;

  /**
   * Draws a trace id without making its string: where it starts in `pool`
   * (read the pool after drawing: a draw may refill it), with its hash for
   * the ratio sampler in `drawnHash`. traceIdIn makes the string.
   */
  drawTraceId(): number {
    for (;;) {
      const at = this.next(TRACE_ID_BYTES);
      const view = this.view;
      const w0 = view.getUint32(at);
      const w1 = view.getUint32(at + 4);
      const w2 = view.getUint32(at + 8);
      const w3 = view.getUint32(at + 12);
      if ((w0 | w1 | w2 | w3) === 0) continue;
      // The four big-endian words of the id XORed: what the sampler hashes from its hex.
      this.drawnHash = (w0 ^ w1 ^ w2 ^ w3) >>> 0;
      return at;
    }
  }

  /** The pool drawTraceId() draws from. */
  get pool(): Buffer {
    return this.bytes;
  }

  /**
   * The next generateTraceId() returns `traceId` (once). ServerSpans draws a
   * root span's trace id itself, to ask the sampler before any SDK span
   * exists, and then has the SDK start the span on that id.
   */
  prefer(traceId: string | undefined): void {
    this.preferred = traceId;
  }

  generateTraceId(): string {
    const preferred = this.preferred;
    if (preferred !== undefined) {
      this.preferred = undefined;
      return preferred;
    }
    const at = this.drawTraceId(); // first: it may refill the pool
    return traceIdIn(this.bytes, at);
  }

  generateSpanId(): string {
    for (;;) {
      const at = this.next(SPAN_ID_BYTES);
      if ((this.view.getUint32(at) | this.view.getUint32(at + 4)) !== 0) return this.bytes.toString("hex", at, at + SPAN_ID_BYTES);
    }
  }

  /** Where the next `n` bytes of the pool start (refilled when it runs out). */
  private next(n: number): number {
    if (this.at + n > this.bytes.length) {
      this.bytes = randomFillSync(Buffer.allocUnsafe(POOL_BYTES));
      this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length);
      this.at = 0;
    }
    const at = this.at;
    this.at += n;
    return at;
  }
}

/** The trace id drawTraceId() drew at `at` of `pool`. */
export function traceIdIn(pool: Buffer, at: number): string {
  return pool.toString("hex", at, at + TRACE_ID_BYTES);
}
