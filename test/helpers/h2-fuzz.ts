import { spawn } from "node:child_process";
import { once } from "node:events";
import * as net from "node:net";
import { createInterface } from "node:readline";
import { HUFFMAN_CODES, STATIC_TABLE } from "../../src/server/h2/hpack-tables.js";
import { PREFACE, frame } from "./h2-frames.js";
import { mulberry32 } from "./prng.js";
import { CLI, type ServerProcess } from "./server.js";

/*
 * A differential fuzzer of HTTP/2 servers: each case is a connection's bytes
 * (a valid preface and SETTINGS, then frames of any type, flags, length,
 * stream id and HPACK block, made from a seed and the case's number), sent
 * to `ripplecache serve` on our engine and on node:http2 (nghttp2). What is
 * compared is the class of outcome: per stream (answered with a status,
 * reset with a code, no answer) and per connection (open, GOAWAY with a
 * code, closed). Used by bench/fuzz-h2.ts (campaigns) and test/h2-fuzz.test.ts.
 */

// --- Frames ---

export const T = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
const TYPE_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"];
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;

/** A frame of a case; `length` is the length field when it lies about the payload; `raw` is bytes sent as they are (garbage). */
export interface FuzzFrame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
  length?: number;
  raw?: Buffer;
  /** What the generator meant (for reading a case). */
  note?: string;
}

export interface FuzzCase {
  readonly seed: number;
  readonly index: number;
  /** Everything after the preface, the client's SETTINGS and its ACK. */
  readonly frames: FuzzFrame[];
  readonly settings: Buffer;
  /** What the generator did, e.g. "get", "mutate:flag", "hdr:upper-name". */
  readonly tags: string[];
}

/** The PING every case ends with: its ACK says the server read everything before it. */
export const SENTINEL = Buffer.from("fuzz-end");

function frameBytes(f: FuzzFrame): Buffer {
  if (f.raw !== undefined) return f.raw;
  const b = frame(f.type, f.flags, f.id, f.payload);
  if (f.length !== undefined) b.writeUIntBE(f.length & 0xff_ffff, 0, 3);
  return b;
}

/** The bytes a case's connection writes, in one write. */
export function caseBytes(c: FuzzCase): Buffer {
  return Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0, c.settings), frame(T.SETTINGS, ACK, 0), ...c.frames.map(frameBytes), frame(T.PING, 0, 0, SENTINEL)]);
}

// --- HPACK, the client's half ---

const STATIC_INDEX = new Map<string, number>();
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name, value], i) => {
  STATIC_INDEX.set(`${name}\0${value}`, i + 1);
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

function hpackInt(out: number[], prefixBits: number, flags: number, value: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  value -= max;
  while (value >= 0x80) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
}

function huffmanEncode(s: Buffer): number[] {
  const out: number[] = [];
  let acc = 0;
  let n = 0;
  for (const byte of s) {
    const [bits, code] = HUFFMAN_CODES[byte];
    for (let i = bits - 1; i >= 0; i--) {
      acc = (acc << 1) | ((code >>> i) & 1);
      if (++n === 8) {
        out.push(acc);
        acc = 0;
        n = 0;
      }
    }
  }
  if (n > 0) out.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) & 0xff);
  return out;
}

function hpackString(out: number[], s: string, huffman: boolean): void {
  const raw = Buffer.from(s, "latin1");
  if (huffman) {
    const h = huffmanEncode(raw);
    hpackInt(out, 7, 0x80, h.length);
    out.push(...h);
  } else {
    hpackInt(out, 7, 0, raw.length);
    for (const b of raw) out.push(b);
  }
}

/** An HPACK encoder that picks each field's representation at random and keeps its dynamic table as the server's should be. */
class HpackEncoder {
  private table: [string, string][] = [];
  private size = 0;
  private readonly max = 4096;

  encode(fields: readonly (readonly [string, string])[], rng: Rng): Buffer {
    const out: number[] = [];
    if (rng.chance(0.05)) hpackInt(out, 5, 0x20, this.max); // a dynamic table size update (allowed: not above the setting)
    for (const [name, value] of fields) {
      const exact = STATIC_INDEX.get(`${name}\0${value}`) ?? this.dynamicIndex(name, value);
      if (exact !== undefined && rng.chance(0.8)) {
        hpackInt(out, 7, 0x80, exact);
        continue;
      }
      const mode = rng.int(3); // 0 incremental indexing, 1 without indexing, 2 never indexed
      const nameIndex = STATIC_NAME.get(name) ?? this.dynamicNameIndex(name);
      const useIndex = nameIndex !== undefined && rng.chance(0.8);
      if (mode === 0) hpackInt(out, 6, 0x40, useIndex ? nameIndex : 0);
      else hpackInt(out, 4, mode === 1 ? 0x00 : 0x10, useIndex ? nameIndex : 0);
      if (!useIndex) hpackString(out, name, rng.chance(0.5));
      hpackString(out, value, rng.chance(0.5));
      if (mode === 0) this.add(name, value);
    }
    return Buffer.from(out);
  }

  private dynamicIndex(name: string, value: string): number | undefined {
    const i = this.table.findIndex(([n, v]) => n === name && v === value);
    return i < 0 ? undefined : STATIC_TABLE.length + 1 + i;
  }

  private dynamicNameIndex(name: string): number | undefined {
    const i = this.table.findIndex(([n]) => n === name);
    return i < 0 ? undefined : STATIC_TABLE.length + 1 + i;
  }

  private add(name: string, value: string): void {
    const size = name.length + value.length + 32;
    this.table.unshift([name, value]);
    this.size += size;
    while (this.size > this.max && this.table.length > 0) {
      const [n, v] = this.table.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}

/** Decodes a response header block into name/value pairs; undefined when it cannot (the class then says so). */
export class HpackReader {
  private table: [string, string][] = [];
  private size = 0;
  private max = 4096;

  decode(b: Buffer): [string, string][] | undefined {
    const out: [string, string][] = [];
    let pos = 0;
    const int = (prefixBits: number): number => {
      const max = (1 << prefixBits) - 1;
      let v = b[pos++] & max;
      if (v < max) return v;
      let m = 1;
      for (;;) {
        if (pos >= b.length || m > 2 ** 28) throw new Error("bad integer");
        const x = b[pos++];
        v += (x & 0x7f) * m;
        m *= 128;
        if ((x & 0x80) === 0) return v;
      }
    };
    const str = (): string => {
      const huff = (b[pos] & 0x80) !== 0;
      const n = int(7);
      if (pos + n > b.length) throw new Error("short string");
      const s = b.subarray(pos, pos + n);
      pos += n;
      return huff ? huffmanDecode(s) : s.toString("latin1");
    };
    const entry = (i: number): [string, string] => {
      if (i >= 1 && i <= STATIC_TABLE.length) return STATIC_TABLE[i - 1] as [string, string];
      const e = this.table[i - STATIC_TABLE.length - 1];
      if (e === undefined) throw new Error("bad index");
      return e;
    };
    try {
      while (pos < b.length) {
        const x = b[pos];
        if (x & 0x80) out.push(entry(int(7)));
        else if ((x & 0xe0) === 0x20) {
          this.max = int(5);
          this.evict();
        } else {
          const indexing = (x & 0xc0) === 0x40;
          const i = int(indexing ? 6 : 4);
          const name = i === 0 ? str() : entry(i)[0];
          const value = str();
          out.push([name, value]);
          if (indexing) {
            this.table.unshift([name, value]);
            this.size += name.length + value.length + 32;
            this.evict();
          }
        }
      }
      return out;
    } catch {
      return undefined;
    }
  }

  private evict(): void {
    while (this.size > this.max && this.table.length > 0) {
      const [n, v] = this.table.pop()!;
      this.size -= n.length + v.length + 32;
    }
  }
}

const HUFFMAN_DECODE = new Map<number, number>();
HUFFMAN_CODES.forEach(([bits, code], sym) => HUFFMAN_DECODE.set(bits * 2 ** 32 + code, sym));

function huffmanDecode(s: Buffer): string {
  let out = "";
  let code = 0;
  let bits = 0;
  for (const byte of s) {
    for (let k = 7; k >= 0; k--) {
      code = code * 2 + ((byte >> k) & 1);
      bits++;
      const sym = HUFFMAN_DECODE.get(bits * 2 ** 32 + code);
      if (sym !== undefined) {
        out += String.fromCharCode(sym);
        code = 0;
        bits = 0;
      } else if (bits > 30) throw new Error("bad Huffman");
    }
  }
  return out;
}

// --- The case generator ---

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<X>(xs: readonly X[]): X {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** Each case's own generator, from the campaign's seed and its number: case N is the same whatever ran before. */
function caseRng(seed: number, index: number): Rng {
  let h = Math.imul((seed >>> 0) ^ 0x5bd1e995, 0x9e3779b1) ^ index;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return new Rng((h ^ (h >>> 16)) >>> 0);
}

const SERVICE = "/ripplecache.v1.CacheService/";
type RequestKind = "get" | "set" | "unknown-method" | "unknown-service" | "connect-get" | "http-get";

function protoString(field: number, s: Buffer): Buffer {
  return Buffer.concat([Buffer.of((field << 3) | 2, s.length), s]);
}

function requestParts(kind: RequestKind, rng: Rng): { fields: [string, string][]; body: Buffer } {
  const key = Buffer.from(`k${rng.int(20)}`);
  const grpc = (msg: Buffer) => Buffer.concat([Buffer.of(0, 0, 0, 0, msg.length), msg]);
  const base = (path: string, type: string): [string, string][] => [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "127.0.0.1"],
    ["content-type", type],
    ...(type === "application/grpc" ? ([["te", "trailers"]] as [string, string][]) : []),
  ];
  switch (kind) {
    case "get":
      return { fields: base(`${SERVICE}Get`, "application/grpc"), body: grpc(protoString(1, key)) };
    case "set":
      return { fields: base(`${SERVICE}Set`, "application/grpc"), body: grpc(Buffer.concat([protoString(1, key), protoString(2, rng.bytes(rng.int(40)))])) };
    case "unknown-method":
      return { fields: base(`${SERVICE}Nope`, "application/grpc"), body: grpc(protoString(1, key)) };
    case "unknown-service":
      return { fields: base("/fuzz.v1.Nothing/Here", "application/grpc"), body: grpc(Buffer.alloc(0)) };
    case "connect-get":
      return { fields: [...base(`${SERVICE}Get`, "application/proto"), ["connect-protocol-version", "1"]], body: protoString(1, key) };
    case "http-get":
      return { fields: [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "127.0.0.1"]], body: Buffer.alloc(0) };
  }
}

/** Malformed-request mutations of a header list (RFC 9113 8.2, 8.3). */
const HEADER_MUTATIONS: readonly [string, (f: [string, string][], rng: Rng) => void][] = [
  ["upper-name", (f) => f.push(["X-Upper", "1"])],
  ["drop-pseudo", (f, rng) => f.splice(rng.int(3), 1)],
  ["dup-pseudo", (f, rng) => f.splice(1, 0, [...f[rng.int(3)]] as [string, string])],
  ["pseudo-after-regular", (f) => f.push(f.splice(2, 1)[0])],
  ["unknown-pseudo", (f) => f.splice(1, 0, [":foo", "bar"])],
  ["status-in-request", (f) => f.splice(1, 0, [":status", "200"])],
  ["connection-header", (f, rng) => f.push(rng.pick([["connection", "keep-alive"], ["keep-alive", "1"], ["proxy-connection", "x"], ["transfer-encoding", "chunked"], ["upgrade", "h2c"], ["te", "gzip"]] as [string, string][]))],
  ["value-ctl", (f, rng) => f.push(["x-v", `a${rng.pick(["\0", "\r", "\n"])}b`])],
  ["value-space-edge", (f) => f.push(["x-v", " padded "])],
  ["name-bad-char", (f, rng) => f.push([rng.pick(["x y", "x:y", "x\"y", "", "x\u00e9"]), "1"])],
  ["empty-path", (f) => (f[2] = [":path", ""])],
  ["path-no-slash", (f, rng) => (f[2] = [":path", rng.pick(["*", "foo", "http://127.0.0.1/"])])],
  ["content-length", (f, rng) => f.push(["content-length", rng.pick(["0", "1", "7", "10000", "-1", "x", "1,1", " 12"])])],
  ["method", (f, rng) => (f[0] = [":method", rng.pick(["GET", "HEAD", "CONNECT", "OPTIONS", "PUT", "post", ""])])],
  ["scheme", (f, rng) => (f[1] = [":scheme", rng.pick(["https", "", "ftp"])])],
  ["no-authority", (f) => f.splice(3, 1)],
  ["host-header", (f) => f.push(["host", "example.com"])],
  ["huge-value", (f, rng) => f.push(["x-big", "v".repeat(rng.pick([4000, 16_000, 17_000, 40_000]))])],
  ["many-fields", (f, rng) => {
    const n = rng.pick([50, 200, 600]);
    for (let i = 0; i < n; i++) f.push([`x-f${i}`, "0123456789"]);
  }],
  ["cookie-split", (f) => f.push(["cookie", "a=1"], ["cookie", "b=2"])],
  ["grpc-timeout", (f, rng) => f.push(["grpc-timeout", rng.pick(["1m", "0n", "99999999H", "x"])])],
  ["content-type", (f, rng) => f.push(["content-type", rng.pick(["application/json", "text/plain", "application/grpc+json", ""])])],
];

/** HPACK-level damage to an encoded block. */
const HPACK_MUTATIONS: readonly [string, (b: Buffer, rng: Rng) => Buffer][] = [
  ["index-past-table", (b) => Buffer.concat([b, Buffer.of(0xff, 0xff, 0x01)])],
  ["index-zero", (b) => Buffer.concat([Buffer.of(0x80), b])],
  ["table-size-over", (b) => Buffer.concat([Buffer.of(0x3f, 0xe1, 0x7f), b])],
  ["table-size-late", (b) => Buffer.concat([b, Buffer.of(0x20)])],
  ["string-overflow", (b) => Buffer.concat([b, Buffer.of(0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f)])],
  ["int-overflow", (b) => Buffer.concat([b, Buffer.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)])],
  ["bad-huffman-pad", (b) => Buffer.concat([b, Buffer.of(0x00, 0x81, 0x00, 0x81, 0x00)])],
  ["huffman-eos", (b) => Buffer.concat([b, Buffer.of(0x00, 0x81, 0x61, 0x84, 0xff, 0xff, 0xff, 0xff)])],
  ["truncate", (b, rng) => b.subarray(0, rng.int(b.length))],
  ["flip-byte", (b, rng) => {
    const c = Buffer.from(b);
    if (c.length > 0) c[rng.int(c.length)] ^= 1 << rng.int(8);
    return c;
  }],
  ["random-block", (_b, rng) => rng.bytes(1 + rng.int(30))],
];

interface Builder {
  rng: Rng;
  hpack: HpackEncoder;
  frames: FuzzFrame[];
  tags: string[];
  nextId: number;
  /** Streams this case opened. */
  opened: number[];
}

/** A request's frames: HEADERS (maybe split, padded, with priority), DATA, END_STREAM; mutated when `mutate`. */
function addRequest(b: Builder, mutate: boolean): void {
  const { rng } = b;
  const kind = rng.pick<RequestKind>(["get", "get", "set", "set", "unknown-method", "unknown-service", "connect-get", "http-get"]);
  b.tags.push(kind);
  const { fields, body } = requestParts(kind, rng);
  if (mutate && rng.chance(0.5)) {
    const [name, m] = rng.pick(HEADER_MUTATIONS);
    m(fields, rng);
    b.tags.push(`hdr:${name}`);
  }
  let block = b.hpack.encode(fields, rng);
  if (mutate && rng.chance(0.15)) {
    const [name, m] = rng.pick(HPACK_MUTATIONS);
    block = m(block, rng);
    b.tags.push(`hpack:${name}`);
  }
  const id = b.nextId;
  b.nextId += 2;
  b.opened.push(id);
  const frames: FuzzFrame[] = [];
  const bodyless = body.length === 0 && rng.chance(0.8);
  // HEADERS, then CONTINUATION frames when the block is large (or at random).
  const pieces: Buffer[] = [];
  const cut = block.length > 16_000 ? 16_000 : rng.chance(0.15) ? Math.max(1, rng.int(block.length)) : block.length;
  for (let p = 0; p < block.length || pieces.length === 0; p += cut) pieces.push(block.subarray(p, Math.min(block.length, p + cut)));
  let headersPayload = pieces[0];
  let flags = pieces.length === 1 ? END_HEADERS : 0;
  if (bodyless) flags |= END_STREAM;
  if (rng.chance(0.1)) {
    const dep = rng.chance(0.2) ? id : rng.int(2) * (id - 2 > 0 ? id - 2 : 0);
    const pri = Buffer.alloc(5);
    pri.writeUInt32BE((dep | (rng.chance(0.3) ? 0x8000_0000 : 0)) >>> 0, 0);
    pri[4] = rng.int(256);
    headersPayload = Buffer.concat([pri, headersPayload]);
    flags |= PRIORITY_FLAG;
    b.tags.push(dep === id ? "priority-self" : "priority");
  }
  if (rng.chance(0.1)) {
    const pad = rng.int(20);
    headersPayload = Buffer.concat([Buffer.of(pad), headersPayload, Buffer.alloc(pad)]);
    flags |= PADDED;
    b.tags.push("headers-padded");
  }
  frames.push({ type: T.HEADERS, flags, id, payload: headersPayload, note: `${kind} ${JSON.stringify(fields.map(([n, v]) => (v.length > 40 ? [n, `${v.slice(0, 20)}...(${v.length})`] : [n, v])))}` });
  for (let i = 1; i < pieces.length; i++) frames.push({ type: T.CONTINUATION, flags: i === pieces.length - 1 ? END_HEADERS : 0, id, payload: pieces[i] });
  if (!bodyless) {
    const parts = body.length > 0 && rng.chance(0.3) ? [body.subarray(0, body.length >> 1), body.subarray(body.length >> 1)] : [body];
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      let payload = part;
      let f = last && !rng.chance(0.05) ? END_STREAM : 0;
      if (rng.chance(0.08)) {
        const pad = rng.int(10);
        payload = Buffer.concat([Buffer.of(pad), part, Buffer.alloc(pad)]);
        f |= PADDED;
        b.tags.push("data-padded");
      }
      frames.push({ type: T.DATA, flags: f, id, payload });
    });
    if (rng.chance(0.05)) {
      // Trailers end the request instead.
      const last = frames[frames.length - 1];
      last.flags &= ~END_STREAM;
      const trailers: [string, string][] = rng.chance(0.5) ? [["x-trailer", "1"]] : [[":path", "/"]];
      frames.push({ type: T.HEADERS, flags: END_HEADERS | END_STREAM, id, payload: b.hpack.encode(trailers, rng) });
      b.tags.push(trailers[0][0] === ":path" ? "trailers-pseudo" : "trailers");
    }
  }
  if (mutate && rng.chance(0.6)) mutateFrames(b, frames);
  b.frames.push(...frames);
}

const FRAME_MUTATIONS: readonly [string, (fs: FuzzFrame[], b: Builder) => void][] = [
  ["flag", (fs, b) => (b.rng.pick(fs).flags ^= 1 << b.rng.int(8))],
  ["type", (fs, b) => (b.rng.pick(fs).type = b.rng.int(12))],
  ["id", (fs, b) => {
    const f = b.rng.pick(fs);
    f.id = b.rng.pick([0, 2, f.id + 2, f.id - 2 > 0 ? f.id - 2 : 1, 0x7fff_ffff, (f.id | 0x8000_0000) >>> 0, b.rng.int(0x8000_0000)]);
  }],
  ["length", (fs, b) => {
    const f = b.rng.pick(fs);
    f.length = Math.max(0, f.payload.length + b.rng.pick([-3, -1, 1, 2, 9, 1000]));
  }],
  ["truncate", (fs, b) => {
    const f = b.rng.pick(fs);
    f.payload = f.payload.subarray(0, b.rng.int(f.payload.length + 1));
  }],
  ["extend", (fs, b) => {
    const f = b.rng.pick(fs);
    f.payload = Buffer.concat([f.payload, b.rng.bytes(1 + b.rng.int(16))]);
  }],
  ["flip-byte", (fs, b) => {
    const f = b.rng.pick(fs);
    if (f.payload.length === 0) return;
    f.payload = Buffer.from(f.payload);
    f.payload[b.rng.int(f.payload.length)] ^= 1 << b.rng.int(8);
  }],
  ["duplicate", (fs, b) => {
    const i = b.rng.int(fs.length);
    fs.splice(i, 0, { ...fs[i] });
  }],
  ["drop", (fs, b) => {
    if (fs.length > 1) fs.splice(b.rng.int(fs.length), 1);
  }],
  ["swap", (fs, b) => {
    if (fs.length < 2) return;
    const i = b.rng.int(fs.length - 1);
    [fs[i], fs[i + 1]] = [fs[i + 1], fs[i]];
  }],
  ["interleave", (fs, b) => fs.splice(1 + b.rng.int(fs.length), 0, controlFrame(b))],
  ["oversize", (fs, b) => {
    const f = b.rng.pick(fs);
    f.payload = Buffer.concat([f.payload, Buffer.alloc(Math.max(0, 16_385 - f.payload.length) + b.rng.int(100))]);
  }],
];

function mutateFrames(b: Builder, frames: FuzzFrame[]): void {
  const n = 1 + (b.rng.chance(0.3) ? b.rng.int(3) : 0);
  for (let i = 0; i < n; i++) {
    const [name, m] = b.rng.pick(FRAME_MUTATIONS);
    m(frames, b);
    b.tags.push(`mutate:${name}`);
  }
}

function u32(v: number): Buffer {
  const x = Buffer.alloc(4);
  x.writeUInt32BE(v >>> 0, 0);
  return x;
}

function settingsPayload(entries: readonly (readonly [number, number])[]): Buffer {
  const p = Buffer.alloc(entries.length * 6);
  entries.forEach(([k, v], i) => {
    p.writeUInt16BE(k, i * 6);
    p.writeUInt32BE(v >>> 0, i * 6 + 2);
  });
  return p;
}

/** A stream id to aim a frame at: an opened one, the next idle one, 0, an even one, or any. */
function someId(b: Builder): number {
  const { rng } = b;
  const r = rng.int(10);
  if (r < 4 && b.opened.length > 0) return rng.pick(b.opened);
  if (r < 6) return b.nextId;
  if (r < 7) return 0;
  if (r < 8) return 2 * (1 + rng.int(4));
  return rng.chance(0.5) ? b.nextId + 2 * rng.int(100) : rng.int(0x8000_0000);
}

/** A control frame (or DATA), mostly well-formed, sometimes with a wrong length, id or flag. */
function controlFrame(b: Builder): FuzzFrame {
  const { rng } = b;
  const bad = rng.chance(0.3);
  switch (rng.int(12)) {
    case 0: {
      const entries: [number, number][] = [];
      const n = rng.chance(0.05) ? 33 + rng.int(40) : rng.int(4);
      for (let i = 0; i < n; i++) entries.push(randomSetting(rng, bad));
      const payload = settingsPayload(entries);
      return { type: T.SETTINGS, flags: rng.chance(0.1) ? ACK : 0, id: bad && rng.chance(0.3) ? 1 : 0, payload: bad && rng.chance(0.3) ? payload.subarray(0, Math.max(0, payload.length - 1 - rng.int(5))) : payload, note: `settings ${JSON.stringify(entries)}` };
    }
    case 1:
      return { type: T.PING, flags: rng.chance(0.2) ? ACK : 0, id: bad && rng.chance(0.4) ? someId(b) : 0, payload: rng.bytes(bad ? rng.pick([0, 7, 9, 16]) : 8) };
    case 2: {
      const id = rng.chance(0.5) ? 0 : someId(b);
      const inc = rng.pick([0, 1, 1000, 65_535, 0x7fff_ffff, 0x8000_0001, rng.int(0x8000_0000)]);
      return { type: T.WINDOW_UPDATE, flags: 0, id, payload: bad && rng.chance(0.5) ? rng.bytes(rng.pick([0, 3, 5, 8])) : u32(inc) };
    }
    case 3:
      return { type: T.RST_STREAM, flags: 0, id: someId(b), payload: bad && rng.chance(0.5) ? rng.bytes(rng.pick([0, 3, 5, 8])) : u32(rng.pick([0, 1, 2, 5, 8, 11, 0xff, rng.int(2 ** 32)])) };
    case 4: {
      const id = someId(b);
      const dep = rng.chance(0.2) ? id : someId(b);
      const p = Buffer.concat([u32((dep | (rng.chance(0.3) ? 0x8000_0000 : 0)) >>> 0), Buffer.of(rng.int(256))]);
      return { type: T.PRIORITY, flags: 0, id, payload: bad && rng.chance(0.5) ? rng.bytes(rng.pick([0, 4, 6, 10])) : p };
    }
    case 5:
      return { type: T.GOAWAY, flags: 0, id: bad && rng.chance(0.3) ? someId(b) : 0, payload: Buffer.concat([u32(rng.chance(0.5) ? 0 : rng.int(0x8000_0000)), u32(rng.pick([0, 1, 2, 11])), rng.bytes(rng.int(8))]).subarray(0, bad && rng.chance(0.5) ? rng.int(8) : undefined) };
    case 6:
      return { type: T.PUSH_PROMISE, flags: END_HEADERS, id: someId(b), payload: Buffer.concat([u32(2 * (1 + rng.int(10))), Buffer.of(0x82, 0x86, 0x84)]) };
    case 7:
      return { type: 10 + rng.int(246), flags: rng.int(256), id: someId(b), payload: rng.bytes(rng.int(50)) };
    case 8:
      return { type: T.DATA, flags: rng.chance(0.5) ? END_STREAM : 0, id: someId(b), payload: rng.bytes(rng.int(30)) };
    case 9:
      return { type: T.CONTINUATION, flags: rng.chance(0.5) ? END_HEADERS : 0, id: someId(b), payload: Buffer.of(0x82) };
    case 10: {
      // HEADERS on an opened, idle or lower stream (trailers, reuse, decreasing ids).
      const id = someId(b);
      return { type: T.HEADERS, flags: END_HEADERS | (rng.chance(0.7) ? END_STREAM : 0), id, payload: b.hpack.encode(requestParts("get", rng).fields, rng), note: "headers on some id" };
    }
    default:
      return { type: rng.int(10), flags: rng.int(256), id: someId(b), payload: rng.bytes(rng.int(40)), note: "random frame" };
  }
}

function randomSetting(rng: Rng, bad: boolean): [number, number] {
  const key = rng.chance(0.9) ? 1 + rng.int(6) : rng.pick([0, 7, 8, 9, 0xffff]);
  const good: Record<number, () => number> = {
    1: () => rng.pick([0, 100, 4096, 65_536]),
    2: () => 0,
    3: () => rng.pick([0, 1, 100, 1000]),
    4: () => rng.pick([0, 1, 1000, 65_535, 1 << 20, 0x7fff_ffff]),
    5: () => rng.pick([16_384, 16_385, 1 << 20, 0xff_ffff]),
    6: () => rng.pick([0, 100, 16_384, 1 << 20]),
  };
  const badValue: Record<number, () => number> = {
    2: () => rng.pick([1, 2, 0xffff_ffff]),
    4: () => rng.pick([0x8000_0000, 0xffff_ffff]),
    5: () => rng.pick([0, 16_383, 0x100_0000]),
  };
  const value = bad && badValue[key] !== undefined ? badValue[key]() : (good[key]?.() ?? rng.int(2 ** 32));
  return [key, value];
}

/** Case `index` of campaign `seed`. */
export function generateCase(seed: number, index: number): FuzzCase {
  const rng = caseRng(seed, index);
  const b: Builder = { rng, hpack: new HpackEncoder(), frames: [], tags: [], nextId: 1, opened: [] };
  // The client's SETTINGS: usually none; else valid values (invalid ones would end every case at once).
  const entries: [number, number][] = [];
  if (rng.chance(0.15)) for (let i = 1 + rng.int(3); i > 0; i--) entries.push(randomSetting(rng, false));
  const items = 1 + rng.int(6);
  for (let i = 0; i < items; i++) {
    const r = rng.float();
    if (r < 0.35) addRequest(b, false);
    else if (r < 0.7) addRequest(b, true);
    else if (r < 0.95) {
      b.frames.push(controlFrame(b));
      b.tags.push(`ctl:${TYPE_NAMES[b.frames[b.frames.length - 1].type] ?? "unknown"}`);
    } else {
      b.frames.push({ type: -1, flags: 0, id: 0, payload: Buffer.alloc(0), raw: rng.bytes(1 + rng.int(40)), note: "garbage" });
      b.tags.push("garbage");
    }
  }
  return { seed, index, frames: b.frames, settings: settingsPayload(entries), tags: b.tags };
}

/** A case in words, frame by frame. */
export function describeCase(c: FuzzCase): string {
  const lines = [`case ${c.index} of seed ${c.seed}: ${c.tags.join(" ")}`, `  preface, SETTINGS ${c.settings.toString("hex") || "(empty)"}, SETTINGS ACK`];
  for (const f of c.frames) {
    if (f.raw !== undefined) {
      lines.push(`  raw bytes ${f.raw.toString("hex")}`);
      continue;
    }
    const len = f.length !== undefined ? ` length field ${f.length} (payload ${f.payload.length})` : ` length ${f.payload.length}`;
    const hex = f.payload.length > 48 ? `${f.payload.subarray(0, 48).toString("hex")}...` : f.payload.toString("hex");
    lines.push(`  ${TYPE_NAMES[f.type] ?? `type ${f.type}`} flags 0x${f.flags.toString(16)} stream ${f.id}${len} ${hex}${f.note ? `  (${f.note.length > 400 ? `${f.note.slice(0, 400)}...` : f.note})` : ""}`);
  }
  lines.push(`  PING ${SENTINEL.toString("hex")} (the case's end)`);
  return lines.join("\n");
}

// --- Running a case: the client and the outcome ---

/** The class of outcome of one connection. */
export interface Outcome {
  /** "open", "goaway:<code>" or "closed". */
  connection: string;
  /** Stream id -> "answered:<status>[/grpc <status>]", "reset:<code>", "partial:<status>" (headers, no end) or "none". */
  streams: Map<number, string>;
}

/**
 * How long a case waits, counted from the server's first bytes (a loaded server is slow to accept):
 * once the sentinel's ACK came, for `settledQuietMs` without input (or `quietMs` while an answer is
 * due); without it, until the connection closes, or for `quietMs` without input when the case's
 * framing lies (a length field or raw bytes may swallow the sentinel); at most `maxMs` in all.
 */
export interface Timing {
  readonly settledQuietMs: number;
  readonly quietMs: number;
  readonly maxMs: number;
}
export const FAST: Timing = { settledQuietMs: 25, quietMs: 300, maxMs: 3000 };
/** For confirming a difference: slow enough that a loaded machine does not make one up. */
export const PATIENT: Timing = { settledQuietMs: 250, quietMs: 1000, maxMs: 6000 };

interface StreamSeen {
  status?: string;
  grpc?: string;
  ended: boolean;
  reset?: number;
  block?: Buffer[];
}

/** Sends a case's bytes on a new connection to `port` and classifies what the server did. */
export function runCase(port: number, c: FuzzCase, timing: Timing, trace?: string[]): Promise<Outcome> {
  const bytes = caseBytes(c);
  // Streams the client ended: an answer is due unless the server refused or ignored them.
  const clientIds = new Set<number>();
  const due = new Set<number>();
  let framingLies = false;
  for (const f of c.frames) {
    if (f.raw !== undefined || f.length !== undefined) framingLies = true;
    if (f.raw !== undefined) continue;
    const id = f.id & 0x7fff_ffff;
    if (f.type === T.HEADERS && id !== 0) clientIds.add(id);
    if ((f.type === T.HEADERS || f.type === T.DATA) && f.flags & END_STREAM && id !== 0) due.add(id);
  }
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const streams = new Map<number, StreamSeen>();
    const hpack = new HpackReader();
    let goaway: number | undefined;
    let closed = false;
    let sentinelAcked = false;
    let input: Buffer = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const started = Date.now();
    let firstInput: number | undefined;
    let headerBlock: { id: number; flags: number; parts: Buffer[] } | undefined;
    const seen = (id: number) => {
      let s = streams.get(id);
      if (s === undefined) streams.set(id, (s = { ended: false }));
      return s;
    };
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const out = new Map<number, string>();
      for (const id of new Set([...clientIds, ...streams.keys()])) out.set(id, streamClass(streams.get(id)));
      resolve({ connection: goaway !== undefined ? `goaway:${goaway}` : closed ? "closed" : "open", streams: new Map([...out].sort((a, b) => a[0] - b[0])) });
    };
    const pending = () => {
      for (const id of due) {
        const s = streams.get(id);
        if (s === undefined || (!s.ended && s.reset === undefined)) return true;
      }
      for (const s of streams.values()) if (s.status !== undefined && !s.ended && s.reset === undefined) return true;
      return false;
    };
    const arm = () => {
      clearTimeout(timer);
      if (done) return;
      if (closed || (goaway !== undefined && goaway !== 0)) return finish();
      const left = timing.maxMs - (Date.now() - started);
      let wait = left;
      if (sentinelAcked) wait = pending() ? timing.quietMs : timing.settledQuietMs;
      else if (framingLies && firstInput !== undefined) wait = timing.quietMs;
      timer = setTimeout(finish, Math.max(0, Math.min(wait, left)));
    };
    const onFrame = (type: number, flags: number, id: number, payload: Buffer) => {
      trace?.push(`${Date.now() - started} ms: ${TYPE_NAMES[type] ?? type} flags 0x${flags.toString(16)} stream ${id} ${payload.length > 24 ? `${payload.subarray(0, 24).toString("hex")}...` : payload.toString("hex")}`);
      switch (type) {
        case T.HEADERS:
        case T.CONTINUATION: {
          if (type === T.HEADERS) {
            let start = 0;
            let end = payload.length;
            if (flags & PADDED) {
              end -= payload[0] ?? 0;
              start = 1;
            }
            if (flags & PRIORITY_FLAG) start += 5;
            headerBlock = { id, flags, parts: [payload.subarray(start, Math.max(start, end))] };
          } else if (headerBlock !== undefined) headerBlock.parts.push(payload);
          if (headerBlock !== undefined && flags & END_HEADERS) {
            const fields = hpack.decode(Buffer.concat(headerBlock.parts));
            const s = seen(headerBlock.id);
            if (fields === undefined) s.status ??= "undecodable";
            for (const [n, v] of fields ?? []) {
              if (n === ":status") s.status ??= v;
              if (n === "grpc-status") s.grpc = v;
            }
            if (headerBlock.flags & END_STREAM) s.ended = true;
            headerBlock = undefined;
          }
          return;
        }
        case T.DATA:
          if (flags & END_STREAM) seen(id).ended = true;
          return;
        case T.RST_STREAM: {
          const s = seen(id);
          if (!s.ended && s.reset === undefined) s.reset = payload.length >= 4 ? payload.readUInt32BE(0) : -1;
          return;
        }
        case T.GOAWAY: {
          const code = payload.length >= 8 ? payload.readUInt32BE(4) : -1;
          if (goaway === undefined || goaway === 0) goaway = code;
          return;
        }
        case T.PING:
          if (flags & ACK && payload.equals(SENTINEL)) sentinelAcked = true;
          return;
      }
    };
    socket.on("connect", () => socket.write(bytes));
    socket.on("data", (chunk: Buffer) => {
      firstInput ??= Date.now();
      input = input.length === 0 ? chunk : Buffer.concat([input, chunk]);
      let pos = 0;
      while (input.length - pos >= 9) {
        const len = input.readUIntBE(pos, 3);
        if (input.length - pos < 9 + len) break;
        onFrame(input[pos + 3], input[pos + 4], input.readUInt32BE(pos + 5) & 0x7fff_ffff, input.subarray(pos + 9, pos + 9 + len));
        pos += 9 + len;
      }
      input = input.subarray(pos);
      arm();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      trace?.push(`${Date.now() - started} ms: closed`);
      closed = true;
      arm();
    });
    arm();
  });
}

function streamClass(s: StreamSeen | undefined): string {
  if (s === undefined) return "none";
  if (s.reset !== undefined) return `reset:${s.reset}`;
  if (s.ended) return `answered:${s.status ?? "-"}${s.grpc !== undefined ? `/grpc ${s.grpc}` : ""}`;
  if (s.status !== undefined) return `partial:${s.status}`;
  return "none";
}

export function outcomeText(o: Outcome): string {
  return `connection ${o.connection}; ${[...o.streams].map(([id, c]) => `stream ${id} ${c}`).join(", ") || "no streams"}`;
}

/** What differs between two outcomes, in words without stream ids (differences of one kind share it); "" when nothing does. */
export function differenceSignature(ours: Outcome, node: Outcome): string {
  const parts: string[] = [];
  if (ours.connection !== node.connection) parts.push(`connection ours ${ours.connection} node ${node.connection}`);
  for (const id of new Set([...ours.streams.keys(), ...node.streams.keys()])) {
    const a = ours.streams.get(id) ?? "none";
    const b = node.streams.get(id) ?? "none";
    if (a !== b) parts.push(`stream ours ${a} node ${b}`);
  }
  return [...new Set(parts)].join("; ");
}

// --- Known differences ---

/**
 * A known difference: `explain` rewrites the two outcomes (copies) where
 * they differ in this known way, and says whether it did. A case's
 * difference is classified when the known differences together explain all
 * of it; what is left is the signature of an unclassified difference.
 */
export interface KnownDifference {
  readonly name: string;
  /** deliberate: ours differs on purpose; bug: a bug of our engine not fixed yet (remove the entry once it is); node-bug: a bug of node:http2. */
  readonly kind: "deliberate" | "bug" | "node-bug";
  /** Why ours differs (also in docs/RELIABILITY.md), or which item of issue 20 fixes it. */
  readonly reason: string;
  readonly explain: (c: FuzzCase, ours: Outcome, node: Outcome) => boolean;
}

const isGoaway = (cls: string) => cls.startsWith("goaway:") && cls !== "goaway:0";

/** The case's frames as the server parses them: up to the first lie about framing (a length field, raw bytes). */
function parsedFrames(c: FuzzCase): FuzzFrame[] {
  const out: FuzzFrame[] = [];
  for (const f of c.frames) {
    if (f.raw !== undefined || f.length !== undefined) break;
    out.push(f);
  }
  return out;
}

/** For a bug not fixed yet: ours is taken to do what node:http2 does, when the case holds the bug's trigger. */
function asNode(ours: Outcome, node: Outcome): boolean {
  ours.connection = node.connection;
  ours.streams = new Map(node.streams);
  return true;
}

function selfDependent(f: FuzzFrame): boolean {
  if (f.type === T.PRIORITY && f.payload.length === 5) return (f.payload.readUInt32BE(0) & 0x7fff_ffff) === (f.id & 0x7fff_ffff);
  if (f.type === T.HEADERS && f.flags & PRIORITY_FLAG) {
    const at = f.flags & PADDED ? 1 : 0;
    return f.payload.length >= at + 5 && (f.payload.readUInt32BE(at) & 0x7fff_ffff) === (f.id & 0x7fff_ffff);
  }
  return false;
}

/** The differences we know of, in the order they are applied. One that none of these explains fails the run. */
export const KNOWN_DIFFERENCES: readonly KnownDifference[] = [
  {
    name: "node-http2-aborts",
    kind: "node-bug",
    reason:
      "node:http2's own bug, not ours: Node 20's nghttp2 aborts the process (assertion `iframe->state == NGHTTP2_IB_IGN_ALL' in nghttp2_session_mem_recv2) on some sequences, e.g. a client GOAWAY, a malformed request, an unfinished header block whose CONTINUATION fails to decode, then a WINDOW_UPDATE of length 3. Ours serves on.",
    explain: (_c, ours, node) => node.connection === "server died" && ours.connection !== "server died" && asNode(node, ours),
  },
  {
    name: "unsolicited-ping-ack",
    kind: "deliberate",
    reason:
      "A PING ACK the client sends unasked is ignored by ours (RFC 9113 6.7 gives it no meaning); node:http2 ends the connection with GOAWAY INTERNAL_ERROR.",
    explain: (c, ours, node) =>
      node.connection === "goaway:2" && !isGoaway(ours.connection) && parsedFrames(c).some((f) => f.type === T.PING && f.flags & ACK && f.id === 0 && f.payload.length === 8) && asNode(node, ours),
  },
  {
    name: "continuation-count",
    kind: "deliberate",
    reason:
      "A header block may span up to 64 CONTINUATION frames on ours (and at most 16 KiB over the header list limit); node:http2 ends the connection (GOAWAY INTERNAL_ERROR) after 8, its CONTINUATION-flood guard. Both bound the flood.",
    explain: (c, ours, node) => {
      if (node.connection !== "goaway:2" || isGoaway(ours.connection)) return false;
      let run = 0;
      let most = 0;
      for (const f of parsedFrames(c)) {
        run = f.type === T.CONTINUATION ? run + 1 : 0;
        most = Math.max(most, run);
      }
      return most > 8 && asNode(node, ours);
    },
  },
  {
    name: "node-internal-error",
    kind: "deliberate",
    reason:
      "node:http2 ends some connection errors with GOAWAY INTERNAL_ERROR and resets the open streams with INTERNAL_ERROR (it destroys the session when nghttp2 reports a fatal error: PUSH_PROMISE from a client, a frame over SETTINGS_MAX_FRAME_SIZE, a stream depending on itself); ours sends the code RFC 9113 names. Both close the connection.",
    explain: (_c, ours, node) => {
      if (node.connection !== "goaway:2" || !isGoaway(ours.connection) || ours.connection === "goaway:2") return false;
      node.connection = ours.connection;
      for (const [id, cls] of node.streams) {
        if (cls === "reset:2") {
          node.streams.set(id, "none");
          ours.streams.set(id, "none");
        }
      }
      return true;
    },
  },
  {
    name: "continuation-over-max-frame-size",
    kind: "deliberate",
    reason:
      "A frame longer than SETTINGS_MAX_FRAME_SIZE is a connection FRAME_SIZE_ERROR on ours whatever its type (RFC 9113 4.2); nghttp2 does not check a CONTINUATION's length: it decodes the block, and fails on what it holds (often COMPRESSION_ERROR) or serves the request.",
    explain: (c, ours, node) => {
      if (ours.connection !== "goaway:6" || node.connection === "goaway:6") return false;
      if (!parsedFrames(c).some((f) => f.type === T.CONTINUATION && f.payload.length > 16_384)) return false;
      // When the block decodes, nghttp2 serves on: what it did with the streams is not compared.
      return asNode(node, ours);
    },
  },
  {
    name: "client-goaway",
    kind: "deliberate",
    reason:
      "After a client's GOAWAY, ours serves the streams the client opens and ends the connection once none is open, without a GOAWAY of its own; node:http2 answers GOAWAY NO_ERROR and refuses streams opened after it, or, when the client's GOAWAY carries an error code, destroys the session at once (GOAWAY NO_ERROR or INTERNAL_ERROR, open streams reset with that code) and reads nothing more.",
    explain: (c, ours, node) => {
      const goaway = parsedFrames(c).find((f) => f.type === T.GOAWAY && f.id === 0 && f.payload.length >= 8);
      if (goaway === undefined || !["goaway:0", "goaway:2"].includes(node.connection)) return false;
      // node:http2 stops reading once its streams are done: it may never see what ours found wrong later.
      return asNode(ours, node);
    },
  },
  {
    name: "settings-of-extensions",
    kind: "deliberate",
    reason:
      "Ours implements neither extended CONNECT (RFC 8441) nor RFC 9218's priorities: SETTINGS_ENABLE_CONNECT_PROTOCOL (8) and SETTINGS_NO_RFC7540_PRIORITIES (9) are unknown settings to it, ignored whatever their value (RFC 9113 6.5.2); nghttp2 implements both and ends the connection on a value other than 0 or 1 (GOAWAY INTERNAL_ERROR through node:http2).",
    explain: (c, ours, node) => {
      if (!["goaway:1", "goaway:2"].includes(node.connection) || isGoaway(ours.connection)) return false;
      const payloads = [c.settings, ...parsedFrames(c).filter((f) => f.type === T.SETTINGS && !(f.flags & ACK) && f.id === 0 && f.payload.length % 6 === 0).map((f) => f.payload)];
      const bad = payloads.some((p) => {
        for (let at = 0; at + 6 <= p.length; at += 6) if ((p.readUInt16BE(at) === 8 || p.readUInt16BE(at) === 9) && p.readUInt32BE(at + 2) > 1) return true;
        return false;
      });
      return bad && asNode(node, ours);
    },
  },
  {
    name: "frame-read-whole",
    kind: "deliberate",
    reason:
      "Ours acts on a frame once all of it has arrived; nghttp2 checks a frame's header at once and decodes a header block or takes DATA as the bytes come, so a frame whose length field promises more than is sent can fail on nghttp2 (DATA on an idle stream, COMPRESSION_ERROR, a reset) while ours still waits for the rest.",
    explain: (c, ours, node) => {
      // A length field that lies either way: a shorter one makes the payload's rest the next frame's header.
      if (!c.frames.some((f) => f.raw !== undefined || (f.length !== undefined && f.length !== f.payload.length))) return false;
      // node:http2's connection error there also drops the answers it had not sent yet.
      if (ours.connection === "open" && isGoaway(node.connection)) return asNode(node, ours);
      let changed = false;
      for (const [id, cls] of ours.streams) {
        if (cls === "none" && (node.streams.get(id) ?? "none") !== "none") {
          node.streams.set(id, "none");
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "bodiless-answer-at-zero-window",
    kind: "deliberate",
    reason:
      "An answer without a body ends in its HEADERS frame on ours; on node:http2 it ends with an empty DATA frame, which nghttp2 holds while the client's stream window is 0 (SETTINGS_INITIAL_WINDOW_SIZE 0), so the stream stays open there.",
    explain: (c, ours, node) => {
      const payloads = [c.settings, ...parsedFrames(c).filter((f) => f.type === T.SETTINGS && !(f.flags & ACK)).map((f) => f.payload)];
      const zero = payloads.some((p) => {
        for (let at = 0; at + 6 <= p.length; at += 6) if (p.readUInt16BE(at) === 4 && p.readUInt32BE(at + 2) === 0) return true;
        return false;
      });
      if (!zero) return false;
      let changed = false;
      for (const [id, cls] of ours.streams) {
        const theirs = node.streams.get(id) ?? "none";
        if (cls.startsWith("answered:") && theirs.startsWith("partial:")) {
          node.streams.set(id, cls);
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "field-count-limit",
    kind: "deliberate",
    reason:
      "node:http2 resets a request of more than 128 header fields (maxHeaderListPairs, RST_STREAM ENHANCE_YOUR_CALM); ours bounds a request's headers by their size only (--max-header-bytes, 16 KiB by default, which bounds the count too).",
    explain: (c, ours, node) => {
      if (!c.tags.includes("hdr:many-fields")) return false;
      let changed = false;
      for (const [id, cls] of node.streams) {
        if (cls === "reset:11" && ours.streams.get(id) !== "reset:11") {
          node.streams.set(id, ours.streams.get(id) ?? "none");
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "header-block-far-over-limit",
    kind: "deliberate",
    reason:
      "A header block more than 16 KiB over the header list limit ends the connection on ours (GOAWAY ENHANCE_YOUR_CALM): ours stops taking its bytes, and without all of them the HPACK table cannot stay in step with the client's; nghttp2 decodes blocks of any size as they come and resets the stream (ENHANCE_YOUR_CALM).",
    explain: (c, ours, node) => {
      if (ours.connection !== "goaway:11" || isGoaway(node.connection)) return false;
      let block = 0;
      for (const f of parsedFrames(c)) {
        if (f.type === T.HEADERS) block = f.payload.length;
        else if (f.type === T.CONTINUATION) block += f.payload.length;
        if (block > 32 * 1024) return asNode(node, ours);
      }
      return false;
    },
  },
  {
    name: "stream-window-error",
    kind: "deliberate",
    reason:
      "A WINDOW_UPDATE of 0 on a stream, or one that takes a stream's window past 2^31-1, is a stream error (PROTOCOL_ERROR, FLOW_CONTROL_ERROR) on ours, or nothing once the stream has closed (RFC 9113 6.9, 6.9.1); node:http2 ends the whole connection (GOAWAY INTERNAL_ERROR; a plain http2.createServer does too). Ours serves the other streams on.",
    explain: (c, ours, node) =>
      node.connection === "goaway:2" &&
      !isGoaway(ours.connection) &&
      parsedFrames(c).some((f) => {
        if (f.type !== T.WINDOW_UPDATE || f.id === 0 || f.payload.length !== 4) return false;
        const increment = f.payload.readUInt32BE(0) & 0x7fff_ffff;
        return increment === 0 || increment > 0x7fff_ffff - (1 << 20);
      }) &&
      asNode(node, ours),
  },
  {
    name: "empty-field-names",
    kind: "deliberate",
    reason:
      "Every field counts toward the header list limit on ours with RFC 7541's 32 bytes of overhead, an empty one too: a block of thousands of empty fields is reset ENHANCE_YOUR_CALM; nghttp2 drops fields with an empty name (node:http2's lenient header handling) and serves the rest.",
    explain: (c, ours, node) => {
      if (!c.tags.some((t) => t === "mutate:oversize" || t === "mutate:extend" || t.startsWith("hpack:"))) return false;
      let changed = false;
      for (const [id, cls] of ours.streams) {
        const theirs = node.streams.get(id) ?? "none";
        if (cls === "reset:11" && theirs !== "reset:11") {
          node.streams.set(id, cls);
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "padding-on-closed-stream",
    kind: "deliberate",
    reason:
      "A padded DATA frame whose pad length is not less than its payload is a connection PROTOCOL_ERROR on ours whatever its stream (RFC 9113 6.1); nghttp2 skips the frames of a stream it closed or reset without looking at them.",
    explain: (c, ours, node) =>
      ours.connection === "goaway:1" &&
      !isGoaway(node.connection) &&
      parsedFrames(c).some((f) => f.type === T.DATA && f.flags & PADDED && (f.payload.length === 0 || f.payload[0] >= f.payload.length)) &&
      asNode(node, ours),
  },
  {
    name: "node-expect-417",
    kind: "deliberate",
    reason: "node:http2's compatibility layer answers a request with an Expect field other than 100-continue with 417 before any handler runs; ours hands it to the handler (RFC 9110 10.1.1 lets a server ignore Expect).",
    explain: (_c, ours, node) => {
      let changed = false;
      for (const [id, cls] of node.streams) {
        if (cls === "answered:417" && ours.streams.get(id) !== cls) {
          node.streams.set(id, ours.streams.get(id) ?? "none");
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "peer-header-list-size",
    kind: "deliberate",
    reason:
      "The client's SETTINGS_MAX_HEADER_LIST_SIZE is advisory (RFC 9113 6.5.2): ours answers with its usual headers whatever it says; node:http2 ends the connection (GOAWAY INTERNAL_ERROR) when an answer's headers would exceed a small one (0, 100).",
    explain: (c, ours, node) => {
      if (node.connection !== "goaway:2" || isGoaway(ours.connection)) return false;
      const payloads = [c.settings, ...parsedFrames(c).filter((f) => f.type === T.SETTINGS && !(f.flags & ACK)).map((f) => f.payload)];
      const small = payloads.some((p) => {
        for (let at = 0; at + 6 <= p.length; at += 6) if (p.readUInt16BE(at) === 6 && p.readUInt32BE(at + 2) < 1024) return true;
        return false;
      });
      return small && asNode(node, ours);
    },
  },
  {
    name: "unsolicited-settings-ack",
    kind: "deliberate",
    reason: "A SETTINGS ACK that acknowledges nothing is ignored by ours; node:http2 ends the connection (GOAWAY INTERNAL_ERROR).",
    explain: (c, ours, node) =>
      node.connection === "goaway:2" && !isGoaway(ours.connection) && parsedFrames(c).some((f) => f.type === T.SETTINGS && f.flags & ACK && f.id === 0 && f.payload.length === 0) && asNode(node, ours),
  },
  {
    name: "data-after-end-stream",
    kind: "deliberate",
    reason:
      "DATA on a stream the client already ended is a stream error STREAM_CLOSED on ours, as RFC 9113 5.1 says for a half-closed (remote) stream; nghttp2 makes it a connection error (GOAWAY STREAM_CLOSED).",
    explain: (c, ours, node) => {
      if (node.connection !== "goaway:5" || isGoaway(ours.connection)) return false;
      const ended = new Set<number>();
      for (const f of parsedFrames(c)) {
        if (f.type === T.DATA && ended.has(f.id)) return asNode(node, ours);
        if ((f.type === T.HEADERS || f.type === T.DATA) && f.flags & END_STREAM) ended.add(f.id);
      }
      return false;
    },
  },
  {
    name: "answer-before-client-reset",
    kind: "deliberate",
    reason:
      "An answer ours made before it read the client's RST_STREAM for that stream (the same read) still goes out; node:http2 drops it. The client has given up on the stream either way.",
    explain: (c, ours, node) => {
      let changed = false;
      for (const f of parsedFrames(c)) {
        if (f.type !== T.RST_STREAM || f.payload.length !== 4) continue;
        const a = ours.streams.get(f.id);
        if (a !== undefined && a !== "none" && (node.streams.get(f.id) ?? "none") === "none") {
          ours.streams.set(f.id, "none");
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "stream-error-not-connection",
    kind: "deliberate",
    reason:
      "PRIORITY of a length other than 5, and HEADERS or PRIORITY that depend on their own stream, are stream errors on ours (RST_STREAM FRAME_SIZE_ERROR or PROTOCOL_ERROR, RFC 9113 6.3, 5.3.1; a connection error on an idle stream, which cannot be reset); nghttp2 makes them connection errors (node:http2: GOAWAY FRAME_SIZE_ERROR, PROTOCOL_ERROR or INTERNAL_ERROR).",
    explain: (c, ours, node) => parsedFrames(c).some((f) => (f.type === T.PRIORITY && f.payload.length !== 5) || selfDependent(f)) && asNode(node, ours),
  },
  {
    name: "strict-field-validation",
    kind: "deliberate",
    reason:
      "A regular field with NUL, CR or LF in its value, a value that starts or ends with whitespace, or a name outside RFC 9110's token characters, makes the request malformed on ours (RST_STREAM PROTOCOL_ERROR, RFC 9113 8.2.1); node:http2 drops the field and serves the request (nghttp2's lenient invalid-header handling, which node turns on).",
    explain: (c, ours, node) => {
      // Only in a case whose header blocks were made malformed or damaged (a mutation can also make an empty name).
      if (!c.tags.some((t) => ["hdr:value-ctl", "hdr:name-bad-char", "hdr:value-space-edge", "hdr:content-length"].includes(t) || t.startsWith("mutate:") || t.startsWith("hpack:"))) return false;
      let changed = false;
      for (const [id, cls] of ours.streams) {
        const theirs = node.streams.get(id) ?? "none";
        if (cls === "reset:1" && theirs !== "reset:1") {
          node.streams.set(id, "reset:1");
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "request-without-authority",
    kind: "deliberate",
    reason: "A request with neither :authority nor host is served by ours, as RFC 9113 8.3.1 allows (a client with no authority information to convey omits it); nghttp2 refuses it (RST_STREAM PROTOCOL_ERROR).",
    explain: (c, ours, node) => {
      // The mutation, or a truncated or damaged block that lost the field.
      if (!c.tags.some((t) => t === "hdr:no-authority" || t.startsWith("mutate:") || t.startsWith("hpack:"))) return false;
      let changed = false;
      for (const [id, cls] of ours.streams) {
        // Ours serves it: answered, or still waiting for its body, or reset later for something else.
        if (cls !== "reset:1" && node.streams.get(id) === "reset:1") {
          node.streams.set(id, cls);
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "answer-before-malformed-rest",
    kind: "deliberate",
    reason:
      "A request ours answers at once (an unknown method or service, an early error) is answered before ours reads what makes it malformed later in the same read (trailers with a pseudo-header, a body that breaks its content-length): the answer goes out, then RST_STREAM PROTOCOL_ERROR. node:http2 runs its handler after the whole read, so it only resets. The client gets a reset stream either way.",
    explain: (c, ours, node) => {
      let changed = false;
      for (const [id, cls] of ours.streams) {
        if (!(cls.startsWith("answered:") || cls.startsWith("partial:")) || node.streams.get(id) !== "reset:1") continue;
        const frames = parsedFrames(c).filter((f) => f.id === id && (f.type === T.HEADERS || f.type === T.DATA));
        if (frames.length > 1 && frames[0].type === T.HEADERS && !(frames[0].flags & END_STREAM)) {
          ours.streams.set(id, "reset:1");
          changed = true;
        }
      }
      return changed;
    },
  },
  {
    name: "closed-stream-strict",
    kind: "deliberate",
    reason:
      "DATA or HEADERS on a stream that has closed (other than one ours reset in the last 10 s, whose frames may still be on the way) ends the connection on ours with STREAM_CLOSED, and HEADERS on an id lower than one already opened with PROTOCOL_ERROR (RFC 9113 5.1, 5.1.1); nghttp2 forgets closed streams and ignores both.",
    explain: (c, ours, node) => {
      if (!["goaway:1", "goaway:5"].includes(ours.connection) || isGoaway(node.connection)) return false;
      // A frame on a stream the client ended or reset, or on an id below the highest opened that was never opened.
      const opened = new Set<number>();
      const ended = new Set<number>();
      let highest = 0;
      for (const f of parsedFrames(c)) {
        const id = f.id & 0x7fff_ffff; // the reserved bit is ignored (RFC 9113 4.1)
        if (f.type === T.RST_STREAM) ended.add(id);
        if (f.type !== T.DATA && f.type !== T.HEADERS) continue;
        if (ended.has(id) || (id < highest && !opened.has(id))) return asNode(node, ours);
        if (f.type === T.HEADERS && id % 2 === 1) {
          opened.add(id);
          highest = Math.max(highest, id);
        }
        if (f.flags & END_STREAM) ended.add(id);
      }
      return false;
    },
  },
  {
    name: "connection-error-code",
    kind: "deliberate",
    reason:
      "Both engines end the connection with an error, naming different codes: a frame that breaks two rules (SETTINGS on a stream with a bad length: nghttp2 checks the length first, ours the stream), or an error each finds by a different check (DATA on a stream the client ended: nghttp2 STREAM_CLOSED, ours a later PROTOCOL_ERROR).",
    explain: (_c, ours, node) => {
      if (!isGoaway(ours.connection) || !isGoaway(node.connection) || ours.connection === node.connection) return false;
      node.connection = ours.connection;
      return true;
    },
  },
  {
    name: "streams-at-connection-error",
    kind: "deliberate",
    reason:
      "When the connection ends with an error, requests that came before it in the same read are served (or reset) by ours, and their answers go out before the GOAWAY, whose last-stream-id covers them (RFC 9113 6.8); node:http2 mostly sends the GOAWAY alone, sometimes with resets of its own. What each stream got is not compared then.",
    explain: (_c, ours, node) => {
      if (!isGoaway(ours.connection) || ours.connection !== node.connection) return false;
      let changed = false;
      for (const id of new Set([...ours.streams.keys(), ...node.streams.keys()])) {
        if ((ours.streams.get(id) ?? "none") !== (node.streams.get(id) ?? "none")) {
          ours.streams.set(id, "none");
          node.streams.set(id, "none");
          changed = true;
        }
      }
      return changed;
    },
  },
];

function copy(o: Outcome): Outcome {
  return { connection: o.connection, streams: new Map(o.streams) };
}

/** The known differences that explain all of a case's difference, or the signature of what they leave unexplained. */
export function classify(c: FuzzCase, ours: Outcome, node: Outcome): { known: string[]; residual: string } {
  const a = copy(ours);
  const b = copy(node);
  const known: string[] = [];
  for (const d of KNOWN_DIFFERENCES) if (d.explain(c, a, b)) known.push(d.name);
  return { known, residual: differenceSignature(a, b) };
}

// --- A campaign ---

/** A server process that died (an abort in the engine is a finding of its own), and the cases in flight then. */
export interface Crash {
  readonly engine: "ours" | "node";
  readonly message: string;
  readonly inFlight: number[];
}

export interface Engines {
  readonly ours: ServerProcess;
  readonly node: ServerProcess;
  /** Restarts of each engine's server so far: a case whose run saw one is run again. */
  readonly restarts: { ours: number; node: number };
  readonly crashes: Crash[];
  /** Cases running now (named in a crash). */
  readonly inFlight: Set<number>;
  /** Resolves when no server is being started again. */
  ready(): Promise<void>;
  /** Stops node:http2's server and starts a fresh one (it keeps every connection it ended with an error). */
  recycleNode(): Promise<void>;
  /** The server's log lines since the last call (warnings and errors). */
  takeOutput(): { engine: "ours" | "node"; line: string }[];
  stop(): Promise<void>;
}

/**
 * `ripplecache serve` as startServer does, but waiting up to 60 s for it to listen (a server started
 * again on a loaded machine took more than startServer's 10 s) and killing it if it does not.
 */
async function startFuzzServer(args: readonly string[]): Promise<ServerProcess> {
  for (;;) {
    const proc = spawn(process.execPath, [CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const output: string[] = [];
    createInterface({ input: proc.stderr! }).on("line", (line) => output.push(line));
    const port = await new Promise<number | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 60_000);
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        output.push(line);
        try {
          const record = JSON.parse(line) as { msg?: string; port?: number };
          if (record.msg === "listening" && typeof record.port === "number") {
            clearTimeout(timer);
            resolve(record.port);
          }
        } catch {
          // not a JSON log line
        }
      });
      proc.once("exit", () => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
    if (port === undefined) {
      proc.kill("SIGKILL");
      continue;
    }
    return {
      port,
      adminPort: 0,
      addr: `127.0.0.1:${port}`,
      url: `http://127.0.0.1:${port}`,
      proc,
      output,
      async stop() {
        if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
        const exited = once(proc, "exit");
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
        return proc.exitCode;
      },
    };
  }
}

/** `ripplecache serve` twice, the same code and flags but the HTTP/2 engine; one that dies is started again. */
export async function startEngines(): Promise<Engines> {
  const args = ["--log-level", "warn"];
  const start = (engine: "ours" | "node") => startFuzzServer([...args, "--http2-engine", engine === "ours" ? "ripple" : "node"]);
  const servers = { ours: await start("ours"), node: await start("node") };
  let stopping = false;
  let restarting: Promise<void> = Promise.resolve();
  const self = {
    get ours() {
      return servers.ours;
    },
    get node() {
      return servers.node;
    },
    restarts: { ours: 0, node: 0 },
    crashes: [] as Crash[],
    inFlight: new Set<number>(),
    ready: () => restarting,
    async recycleNode() {
      await restarting;
      const old = servers.node;
      servers.node = await start("node");
      watch("node");
      old.proc.removeAllListeners("exit");
      await old.stop();
    },
    takeOutput() {
      return (["ours", "node"] as const).flatMap((engine) => servers[engine].output.splice(0).map((line) => ({ engine, line })));
    },
    async stop() {
      stopping = true;
      await restarting;
      await Promise.all([servers.ours.stop(), servers.node.stop()]);
    },
  };
  const watch = (engine: "ours" | "node") => {
    const server = servers[engine];
    server.proc.once("exit", (code, signal) => {
      if (stopping) return;
      const last = server.output.filter((l) => !l.startsWith("{")).slice(-3).join(" | ");
      self.crashes.push({ engine, message: `exit ${code ?? signal}: ${last}`, inFlight: [...self.inFlight].sort((a, b) => a - b) });
      self.restarts[engine]++;
      restarting = restarting.then(async () => {
        servers[engine] = await start(engine);
        watch(engine);
      });
    });
  };
  watch("ours");
  watch("node");
  return self;
}

/**
 * Both engines' outcomes of a case, run on servers that stayed up meanwhile. A server that died
 * during the run (this case or another in flight killed it) is waited for and the case run again;
 * when it dies again, its outcome's connection class is "server died".
 */
async function runOnBoth(engines: Engines, c: FuzzCase, timing: Timing): Promise<[Outcome, Outcome]> {
  for (let attempt = 0; ; attempt++) {
    const before = { ...engines.restarts };
    const servers = { ours: engines.ours, node: engines.node };
    const r = await Promise.all([runCase(servers.ours.port, c, timing), runCase(servers.node.port, c, timing)]);
    await new Promise((resolve) => setTimeout(resolve, 0));
    const died = (["ours", "node"] as const).filter((e) => engines.restarts[e] !== before[e] || servers[e].proc.exitCode !== null || servers[e].proc.signalCode !== null);
    if (died.length === 0) return r;
    if (attempt >= 1) {
      if (died.includes("ours")) r[0].connection = "server died";
      if (died.includes("node")) r[1].connection = "server died";
      return r;
    }
    // Wait for the successor, then once more.
    await engines.ready();
  }
}

export interface Finding {
  readonly index: number;
  readonly signature: string;
  readonly ours: Outcome;
  readonly node: Outcome;
  /** The known differences that explain it (all of it when `residual` is ""). */
  readonly known: string[];
  readonly residual: string;
}

export interface CampaignResult {
  cases: number;
  /** Cases that differed at first and not when run again slowly (a loaded machine's timing). */
  unconfirmed: number;
  /** Outcome classes seen on each engine, by kind (answered, reset, none, partial; open, goaway, closed). */
  kinds: { ours: Map<string, number>; node: Map<string, number> };
  /** Differing cases. */
  differing: number;
  findings: Finding[];
  /** Cases each known difference explained (wholly or in part). */
  known: Map<string, { first: number; count: number }>;
  /** Unexplained differences by residual signature: the first case and how many. */
  unclassified: Map<string, { first: number; count: number }>;
  seconds: number;
}

/** Runs a case on both engines; a difference the known ones do not explain is run again slowly (up to twice) before it counts. */
export async function compareCase(engines: Engines, c: FuzzCase): Promise<{ ours: Outcome; node: Outcome; signature: string; unconfirmed: boolean }> {
  let [ours, node] = await runOnBoth(engines, c, FAST);
  let signature = differenceSignature(ours, node);
  // A difference the known ones explain is taken as it is; only the rest is run again slowly, as a loaded machine can make one up.
  if (signature === "" || classify(c, ours, node).residual === "") return { ours, node, signature, unconfirmed: false };
  // The same difference again, slowly: confirmed. Another one: once more, and that one counts.
  const first = signature;
  for (let attempt = 0; attempt < 2; attempt++) {
    [ours, node] = await runOnBoth(engines, c, PATIENT);
    signature = differenceSignature(ours, node);
    if (signature === "") return { ours, node, signature, unconfirmed: true };
    if (signature === first) break;
  }
  return { ours, node, signature, unconfirmed: false };
}

function tally(m: Map<string, { first: number; count: number }>, key: string, index: number): void {
  const t = m.get(key);
  if (t === undefined) m.set(key, { first: index, count: 1 });
  else {
    t.count++;
    t.first = Math.min(t.first, index);
  }
}

function kindOf(cls: string): string {
  return cls.split(":")[0];
}

/** Cases [first, first + count) of `seed`, `concurrency` at a time; `progress` is called now and then. */
export async function campaign(
  engines: Engines,
  options: {
    seed: number;
    first?: number;
    count: number;
    concurrency: number;
    progress?: (r: CampaignResult) => void;
    onFinding?: (f: Finding, c: FuzzCase) => void;
    /** Set to stop taking new cases (a campaign stopped by a signal, before its servers stop). */
    stop?: { stopped: boolean };
    /** Start node:http2's server afresh after this many cases (it leaks the connections it ends with an error). */
    recycleEvery?: number;
  },
): Promise<CampaignResult> {
  const first = options.first ?? 0;
  const result: CampaignResult = { cases: 0, unconfirmed: 0, kinds: { ours: new Map(), node: new Map() }, differing: 0, findings: [], known: new Map(), unclassified: new Map(), seconds: 0 };
  const started = Date.now();
  let next = first;
  let lastProgress = Date.now();
  const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const stopped = () => options.stop?.stopped === true;
  const recycleEvery = options.recycleEvery ?? 10_000;
  let inFlight = 0;
  let sinceRecycle = 0;
  let recycling: Promise<void> | undefined;
  const worker = async () => {
    while (next < first + options.count && !stopped()) {
      if (recycling !== undefined) {
        await recycling;
        continue;
      }
      if (sinceRecycle >= recycleEvery) {
        // Once the cases in flight are done: a fresh node:http2 server.
        recycling = (async () => {
          while (inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 50));
          await engines.recycleNode();
          sinceRecycle = 0;
        })().finally(() => {
          recycling = undefined;
        });
        continue;
      }
      const index = next++;
      sinceRecycle++;
      inFlight++;
      const c = generateCase(options.seed, index);
      engines.inFlight.add(index);
      const r = await compareCase(engines, c);
      engines.inFlight.delete(index);
      inFlight--;
      if (stopped()) return; // its servers may be stopping: this case's outcome is not counted
      result.cases++;
      if (r.unconfirmed) result.unconfirmed++;
      for (const [side, o] of [["ours", r.ours], ["node", r.node]] as const) {
        count(result.kinds[side], kindOf(o.connection));
        for (const cls of o.streams.values()) count(result.kinds[side], kindOf(cls));
      }
      if (r.signature !== "") {
        result.differing++;
        const { known, residual } = classify(c, r.ours, r.node);
        const finding: Finding = { index, signature: r.signature, ours: r.ours, node: r.node, known, residual };
        for (const name of known) tally(result.known, name, index);
        if (residual !== "") tally(result.unclassified, residual, index);
        if (result.findings.length < 10_000) result.findings.push(finding);
        options.onFinding?.(finding, c);
      }
      if (options.progress !== undefined && Date.now() - lastProgress > 10_000) {
        lastProgress = Date.now();
        result.seconds = (Date.now() - started) / 1000;
        options.progress(result);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  result.seconds = (Date.now() - started) / 1000;
  return result;
}
