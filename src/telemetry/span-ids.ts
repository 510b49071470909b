import { randomFillSync } from "node:crypto";

/** The tracing SDK's IdGenerator (@opentelemetry/sdk-trace), structurally. */
export interface SpanIdSource {
  generateTraceId(): string;
  generateSpanId(): string;
}

/** Random bytes per refill: 4,096 trace ids or 8,192 span ids. */
const POOL_BYTES = 64 * 1024;
const TRACE_ID_CHARS = 32;
const SPAN_ID_CHARS = 16;
const ZERO_TRACE_ID = "0".repeat(TRACE_ID_CHARS);
const ZERO_SPAN_ID = "0".repeat(SPAN_ID_CHARS);

/**
 * Trace and span ids cut from a pool of random hex. The SDK's generator
 * formats every id with its own Buffer#toString("hex") (with Math.random
 * bytes): two native calls per call served, traced or not, about 2% of a
 * cached Get with tracing on. Here one call to the system's random source and
 * one hex conversion serve thousands of ids, and each id is a substring of
 * the pool (V8 shares the characters rather than copying them).
 *
 * Ids never repeat within a pool; the all-zero id, which W3C Trace Context
 * calls invalid, is skipped.
 */
export class PooledSpanIds implements SpanIdSource {
  private hex = "";
  /** The pool's random bytes, of which `hex` is the hex. */
  private bytes: Buffer = Buffer.alloc(0);
  private at = 0;
  private preferred: string | undefined;
  /** traceIdHash (sampling.ts) of the id drawTraceId() drew last. */
  drawnHash = 0;

  /**
   * Draws a trace id without making its string: where it starts in `pool`
   * (read the pool after drawing: a draw may refill it), with its hash for
   * the ratio sampler in `drawnHash`. The string is made (traceIdIn) only
   * when something reads it: the sampler drops most calls, and for them
   * nothing does.
   */
  drawTraceId(): number {
    for (;;) {
      if (this.at + TRACE_ID_CHARS > this.hex.length) this.refill();
      const at = this.at;
      this.at += TRACE_ID_CHARS;
      const bytes = this.bytes;
      const b = at >> 1;
      const w0 = bytes.readUInt32BE(b);
      const w1 = bytes.readUInt32BE(b + 4);
      const w2 = bytes.readUInt32BE(b + 8);
      const w3 = bytes.readUInt32BE(b + 12);
      // The all-zero id is invalid (as in generateTraceId).
      if ((w0 | w1 | w2 | w3) === 0) continue;
      this.drawnHash = (w0 ^ w1 ^ w2 ^ w3) >>> 0;
      return at;
    }
  }

  /** The pool drawTraceId() draws from. */
  get pool(): string {
    return this.hex;
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
    const id = this.take(TRACE_ID_CHARS);
    return id === ZERO_TRACE_ID ? this.generateTraceId() : id;
  }

  generateSpanId(): string {
    const id = this.take(SPAN_ID_CHARS);
    return id === ZERO_SPAN_ID ? this.generateSpanId() : id;
  }

  private take(chars: number): string {
    if (this.at + chars > this.hex.length) this.refill();
    const id = this.hex.substring(this.at, this.at + chars);
    this.at += chars;
    return id;
  }

  private refill(): void {
    this.bytes = randomFillSync(Buffer.allocUnsafe(POOL_BYTES));
    this.hex = this.bytes.toString("hex");
    this.at = 0;
  }
}

/** The trace id drawTraceId() drew at `at` of `pool`. */
export function traceIdIn(pool: string, at: number): string {
  return pool.substring(at, at + TRACE_ID_CHARS);
}
