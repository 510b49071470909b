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
  private at = 0;
  private preferred: string | undefined;

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
    if (this.at + chars > this.hex.length) {
      this.hex = randomFillSync(Buffer.allocUnsafe(POOL_BYTES)).toString("hex");
      this.at = 0;
    }
    const id = this.hex.substring(this.at, this.at + chars);
    this.at += chars;
    return id;
  }
}
