/** HTTP/2 wire constants (RFC 9113). */

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export const enum FrameType {
  DATA = 0,
  HEADERS = 1,
  PRIORITY = 2,
  RST_STREAM = 3,
  SETTINGS = 4,
  PUSH_PROMISE = 5,
  PING = 6,
  GOAWAY = 7,
  WINDOW_UPDATE = 8,
  CONTINUATION = 9,
}

export const enum Flag {
  END_STREAM = 0x1,
  ACK = 0x1,
  END_HEADERS = 0x4,
  PADDED = 0x8,
  PRIORITY = 0x20,
}

export const enum Setting {
  HEADER_TABLE_SIZE = 1,
  ENABLE_PUSH = 2,
  MAX_CONCURRENT_STREAMS = 3,
  INITIAL_WINDOW_SIZE = 4,
  MAX_FRAME_SIZE = 5,
  MAX_HEADER_LIST_SIZE = 6,
}

/** Error codes (section 7), the values node:http2 exposes as NGHTTP2_*. */
export const ErrorCode = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  SETTINGS_TIMEOUT: 4,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  CONNECT_ERROR: 10,
  ENHANCE_YOUR_CALM: 11,
  INADEQUATE_SECURITY: 12,
  HTTP_1_1_REQUIRED: 13,
} as const;

export const DEFAULT_WINDOW = 65_535;
export const MAX_WINDOW = 0x7fff_ffff;
export const DEFAULT_MAX_FRAME = 16_384;
export const FRAME_HEADER_BYTES = 9;

/** Payloads up to this size are copied next to their frame header; larger ones are written as they are. */
const COPY_MAX = 4096;
const SLAB_BYTES = 64 * 1024;

/** One slab shared by every connection's writer, as Buffer's own pool: bytes taken from it are never written again. */
let slab = Buffer.allocUnsafe(SLAB_BYTES);
let slabUsed = 0;

/**
 * The frames a connection has queued for its next socket write. A frame
 * header and a small payload are copied into the shared slab, next to the
 * connection's previous frame when nothing else took slab space between
 * (a flush frames one connection's streams in a row), so a flush of a
 * thousand small frames (a fan-out) is a few buffers and no allocation per
 * frame, and an idle connection holds no buffer.
 */
export class FrameWriter {
  private chunks: Buffer[] = [];
  /** The open run of this writer's bytes in the slab (extended while contiguous). */
  private runSlab: Buffer | undefined;
  private runStart = 0;
  private runEnd = 0;
  /** Bytes written and not yet taken. */
  bytes = 0;

  frame(type: FrameType, flags: number, streamId: number, payload?: Uint8Array): void {
    const length = payload?.length ?? 0;
    const copy = length <= COPY_MAX;
    const n = FRAME_HEADER_BYTES + (copy ? length : 0);
    if (SLAB_BYTES - slabUsed < n) {
      slab = Buffer.allocUnsafe(SLAB_BYTES);
      slabUsed = 0;
    }
    if (this.runSlab !== slab || this.runEnd !== slabUsed) {
      this.seal();
      this.runSlab = slab;
      this.runStart = this.runEnd = slabUsed;
    }
    const b = slab;
    const p = slabUsed;
    b[p] = length >>> 16;
    b[p + 1] = (length >>> 8) & 0xff;
    b[p + 2] = length & 0xff;
    b[p + 3] = type;
    b[p + 4] = flags;
    b.writeUInt32BE(streamId, p + 5);
    if (copy && payload !== undefined && length > 0) b.set(payload, p + FRAME_HEADER_BYTES);
    slabUsed += n;
    this.runEnd = slabUsed;
    if (!copy) {
      this.seal();
      this.chunks.push(Buffer.from(payload!.buffer, payload!.byteOffset, length));
    }
    this.bytes += FRAME_HEADER_BYTES + length;
  }

  /** What was written since the last take, in order. */
  take(): Buffer[] {
    this.seal();
    const chunks = this.chunks;
    this.chunks = [];
    this.bytes = 0;
    return chunks;
  }

  private seal(): void {
    if (this.runSlab !== undefined && this.runEnd > this.runStart) this.chunks.push(this.runSlab.subarray(this.runStart, this.runEnd));
    this.runSlab = undefined;
    this.runStart = this.runEnd = 0;
  }
}

export function u32(value: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}
