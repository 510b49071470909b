/** HTTP/2 on the wire, for tests that speak it by hand. */

import type * as http2 from "node:http2";
import * as net from "node:net";

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** An HTTP/2 frame: 9-byte header and payload. */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

// --- HPACK by hand (RFC 7541): no Huffman, so the bytes are what a test means ---

/** An HPACK integer with an N-bit prefix; `high` holds the bits above the prefix in the first byte. */
export function hpackInt(value: number, prefixBits: number, high = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([high | value]);
  const bytes = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A raw (non-Huffman) string literal. */
export function hpackString(text: string | Buffer): Buffer {
  const b = typeof text === "string" ? Buffer.from(text, "latin1") : text;
  return Buffer.concat([hpackInt(b.length, 7), b]);
}

/** An indexed field (static 1-61, dynamic 62 up, newest first). */
export function hpackIndexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

/** A literal field with a new name: not indexed, or with incremental indexing (it becomes dynamic entry 62). */
export function hpackLiteral(name: string, value: string | Buffer, indexing = false): Buffer {
  return Buffer.concat([Buffer.from([indexing ? 0x40 : 0x00]), hpackString(name), hpackString(value)]);
}

/** A literal field whose name is the static table's entry `nameIndex`, not indexed. */
export function hpackLiteralName(nameIndex: number, value: string | Buffer): Buffer {
  return Buffer.concat([hpackInt(nameIndex, 4), hpackString(value)]);
}

/** A SETTINGS payload of (id, value) pairs, in order (repeats allowed). */
export function settingsPayload(entries: readonly (readonly [number, number])[]): Buffer {
  const b = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    b.writeUInt16BE(id, i * 6);
    b.writeUInt32BE(value, i * 6 + 2);
  });
  return b;
}

/**
 * A gRPC request header block: POST, http, the path, :authority (nghttp2
 * refuses a request with neither it nor host), content-type application/grpc,
 * te: trailers; no dynamic table use.
 */
export function grpcRequestBlock(path: string, authority = "127.0.0.1"): Buffer {
  return Buffer.concat([
    hpackIndexed(3), // :method POST
    hpackIndexed(6), // :scheme http
    hpackLiteralName(4, path), // :path
    hpackLiteralName(1, authority), // :authority
    hpackLiteralName(31, "application/grpc"), // content-type
    hpackLiteral("te", "trailers"),
  ]);
}

/** A gRPC message frame (uncompressed): 5-byte prefix and the message. */
export function grpcMessage(message: Buffer): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

// --- A raw-frame connection that records what the server answers (conformance tests) ---

/** A frame the server sent. */
export interface ReceivedFrame {
  readonly type: number;
  readonly flags: number;
  readonly id: number;
  readonly payload: Buffer;
}

/** Error code names (RFC 9113 section 7), for readable outcomes. */
export const H2_ERROR_NAMES = [
  "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
  "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
]; // prettier-ignore

export interface RawH2Connection {
  /** Every frame the server sent so far, in order. */
  readonly frames: ReceivedFrame[];
  write(...frames: Buffer[]): void;
  /** Whether the server closed the socket. */
  readonly ended: boolean;
  /** Waits until `condition` holds (checked on each frame the server sends) or `ms` pass; returns whether it held. */
  until(condition: () => boolean, ms?: number): Promise<boolean>;
  /**
   * What became of stream `id`, judged on the frames from index `from` on: "RST_STREAM <code>"
   * if the server reset it, else "GOAWAY <code>" if it ended the connection, "answered" if it
   * sent the stream's headers, "closed" if the socket just closed, "nothing" if none of these
   * came within `ms`.
   */
  outcome(id: number, from?: number, ms?: number): Promise<string>;
  /**
   * Sends a PING and returns the outcome of stream `id` (as `outcome`), or "ignored" if the
   * PING's ACK comes first: the server read everything before it and neither reset the stream
   * nor ended the connection. Only for streams that are not to be answered (an answer may
   * follow the ACK).
   */
  settle(id: number, from?: number, ms?: number): Promise<string>;
  close(): void;
}

/** Connects to an HTTP/2 server and sends the preface, an empty SETTINGS and the ACK of the server's. */
export async function rawH2Connection(port: number, host = "127.0.0.1"): Promise<RawH2Connection> {
  const socket = net.connect(port, host);
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  socket.on("error", () => {});
  const frames: ReceivedFrame[] = [];
  let input = Buffer.alloc(0);
  let ended = false;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of waiters) w();
  };
  socket.on("data", (chunk: Buffer) => {
    input = Buffer.concat([input, chunk]);
    while (input.length >= 9) {
      const length = input.readUIntBE(0, 3);
      if (input.length < 9 + length) break;
      frames.push({ type: input[3], flags: input[4], id: input.readUInt32BE(5) & 0x7fff_ffff, payload: input.subarray(9, 9 + length) });
      input = input.subarray(9 + length);
    }
    wake();
  });
  socket.on("close", () => {
    ended = true;
    wake();
  });
  socket.write(Buffer.concat([PREFACE, frame(4, 0, 0), frame(4, 1, 0)]));
  const until = async (condition: () => boolean, ms = 5000): Promise<boolean> => {
    const deadline = Date.now() + ms;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0 || ended) return condition();
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        waiters.add(done);
      });
    }
    return true;
  };
  const decide = (id: number, from: number): string | undefined => {
    const after = frames.slice(from);
    const rst = after.find((f) => f.type === 3 && f.id === id);
    if (rst !== undefined) return `RST_STREAM ${H2_ERROR_NAMES[rst.payload.readUInt32BE(0)] ?? rst.payload.readUInt32BE(0)}`;
    const goaway = after.find((f) => f.type === 7);
    if (goaway !== undefined) return `GOAWAY ${H2_ERROR_NAMES[goaway.payload.readUInt32BE(4)] ?? goaway.payload.readUInt32BE(4)}`;
    if (after.some((f) => f.type === 1 && f.id === id)) return "answered";
    return ended ? "closed" : undefined;
  };
  return {
    frames,
    get ended() {
      return ended;
    },
    write: (...out: Buffer[]) => void socket.write(Buffer.concat(out)),
    until,
    async outcome(id: number, from = 0, ms = 5000) {
      await until(() => decide(id, from) !== undefined, ms);
      return decide(id, from) ?? "nothing";
    },
    async settle(id: number, from = 0, ms = 5000) {
      const data = Buffer.from("settle!!");
      const acked = () => frames.slice(from).some((f) => f.type === 6 && f.flags & 1 && f.payload.equals(data));
      socket.write(frame(6, 0, 0, data));
      await until(() => decide(id, from) !== undefined || acked(), ms);
      return decide(id, from) ?? (acked() ? "ignored" : "nothing");
    },
    close: () => socket.destroy(),
  };
}

/** A Connect JSON unary call on a raw HTTP/2 session: status and body. */
export function h2Json(session: http2.ClientHttp2Session, path: string, body: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/json" });
    let status = 0;
    let data = "";
    req.on("response", (h) => (status = Number(h[":status"])));
    req.setEncoding("utf8");
    req.on("data", (d: string) => (data += d));
    req.on("end", () => resolve({ status, body: data }));
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}
