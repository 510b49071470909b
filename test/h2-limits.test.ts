// What one client connection can make our HTTP/2 engine (src/server/h2/)
// hold, each case sent as raw frames to a real server process: the
// connection's memory budget (--max-connection-memory), the reset of streams
// whose client keeps its window shut (--stall-timeout), no reading after a
// connection error, SETTINGS of at most 32 entries, and header blocks over
// the limit. Each case checks what the server does (the resets and GOAWAY it
// sends, its RSS from /proc/<pid>/status, a Get on another connection that
// still answers), never how fast. Settings go through the environment, so
// the file runs unchanged against a build from before these limits (where
// every case fails).
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import { after, before, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { GetRequestSchema, GetResponseSchema, SetRequestSchema } from "../src/gen/ripplecache/v1/cache_pb.js";
import { frame, PREFACE } from "./helpers/h2-frames.js";
import { startServer, type ServerProcess } from "./helpers/server.js";

const GET = "/ripplecache.v1.CacheService/Get";
const SET = "/ripplecache.v1.CacheService/Set";
const { NGHTTP2_PROTOCOL_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

/** A gRPC message: the 5-byte prefix and the bytes. */
function grpcMessage(message: Uint8Array): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** HPACK: an integer with a `prefix`-bit prefix, and a raw string. */
function hpackInt(value: number, prefix: number, high = 0): Buffer {
  const max = (1 << prefix) - 1;
  if (value < max) return Buffer.from([high | value]);
  const bytes = [high | max];
  for (value -= max; value >= 128; value = Math.floor(value / 128)) bytes.push((value & 0x7f) | 0x80);
  bytes.push(value);
  return Buffer.from(bytes);
}
function hpackString(text: string): Buffer {
  return Buffer.concat([hpackInt(text.length, 7), Buffer.from(text, "latin1")]);
}

/** A gRPC request's header block, with no dynamic table: POST, http, :authority, the path, content-type, te. */
function grpcBlock(path: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http
    hpackInt(1, 4), // :authority (a literal, not indexed)
    hpackString("localhost"),
    hpackInt(4, 4), // :path
    hpackString(path),
    hpackInt(31, 4), // content-type
    hpackString("application/grpc"),
    Buffer.from([0x00]),
    hpackString("te"),
    hpackString("trailers"),
  ]);
}

/** HEADERS and DATA (END_STREAM) of a Get of `key` on stream `id`. */
function getFrames(id: number, key: string): Buffer {
  return Buffer.concat([frame(1, 4, id, grpcBlock(GET)), frame(0, 1, id, grpcMessage(toBinary(GetRequestSchema, create(GetRequestSchema, { key }))))]);
}

interface RawFrame {
  readonly type: number;
  readonly flags: number;
  readonly id: number;
  readonly payload: Buffer;
}

/** A client of raw frames: what it writes goes as is; it keeps every frame but DATA (counted), and answers nothing. */
async function rawClient(port: number) {
  // Half-open allowed: it may keep writing after the server's FIN, as an attacker does.
  const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  await once(socket, "connect");
  socket.on("error", () => {});
  const frames: RawFrame[] = [];
  let dataBytes = 0;
  let closed = false;
  socket.once("close", () => (closed = true));
  let input: Buffer = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    input = input.length === 0 ? chunk : Buffer.concat([input, chunk]);
    while (input.length >= 9) {
      const length = input.readUIntBE(0, 3);
      if (input.length < 9 + length) break;
      const type = input[3];
      if (type === 0) dataBytes += length;
      else frames.push({ type, flags: input[4], id: input.readUInt32BE(5) & 0x7fff_ffff, payload: Buffer.from(input.subarray(9, 9 + length)) });
      input = input.subarray(9 + length);
    }
  });
  return {
    socket,
    frames,
    get dataBytes() {
      return dataBytes;
    },
    get closed() {
      return closed;
    },
    /** [stream id, code] of each RST_STREAM, in order. */
    resets: () => frames.filter((f) => f.type === 3).map((f) => [f.id, f.payload.readUInt32BE(0)] as const),
    goawayCode: () => frames.find((f) => f.type === 7)?.payload.readUInt32BE(4),
  };
}

/** The server's resident set, in MiB. */
function rssMiB(server: ServerProcess): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.proc.pid}/status`, "utf8"));
  assert.ok(m !== null);
  return Number(m[1]) / 1024;
}

/** Samples the server's RSS every 10 ms until stopped; `peak` is the largest seen. */
function watchRss(server: ServerProcess) {
  const sample = { peak: rssMiB(server) };
  const timer = setInterval(() => (sample.peak = Math.max(sample.peak, rssMiB(server))), 10);
  return {
    get peak() {
      return sample.peak;
    },
    stop: () => clearInterval(timer),
  };
}

/** One unary gRPC call on a connection of its own (node:http2's client); resolves with the grpc-status and the body. */
async function grpcCall(server: ServerProcess, path: string, message: Uint8Array): Promise<{ status: string | undefined; body: Buffer }> {
  const session = http2.connect(server.url);
  session.on("error", () => {});
  try {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
    req.end(grpcMessage(message));
    await once(req, "close");
    return { status, body: Buffer.concat(chunks) };
  } finally {
    session.close();
  }
}

async function setValue(server: ServerProcess, key: string, value: Buffer): Promise<void> {
  const r = await grpcCall(server, SET, toBinary(SetRequestSchema, create(SetRequestSchema, { key, value })));
  assert.equal(r.status, "0");
}

/** A Get on a connection of its own answers, with the value's length. */
async function probeGet(server: ServerProcess, key: string): Promise<number> {
  const r = await grpcCall(server, GET, toBinary(GetRequestSchema, create(GetRequestSchema, { key })));
  assert.equal(r.status, "0", "the probe Get answers");
  return fromBinary(GetResponseSchema, r.body.subarray(5)).value.length;
}

/** Resolves when the socket drains or closes (or 50 ms passed), never rejects. */
function drainOrClose(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    const timer = setTimeout(done, 50);
    socket.once("drain", done);
    socket.once("close", done);
  });
}

/** Waits until `condition` holds, or fails naming `what` after `seconds`. */
async function waitFor(what: string, condition: () => boolean, seconds = 10): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const PREFACE_AND_SETTINGS = Buffer.concat([PREFACE, frame(4, 0, 0)]);

let server: ServerProcess;
before(async () => {
  server = await startServer([], {});
  await setValue(server, "small", Buffer.from("hello"));
});
after(async () => {
  await server.stop();
});

test("after a connection error the server reads nothing more: a client that keeps sending is held by the kernel, not the server's memory", async (t) => {
  const rss = watchRss(server);
  const before = rssMiB(server);
  const clients = await Promise.all([1, 2, 3, 4].map(() => rawClient(server.port)));
  const written: number[] = [];
  await Promise.all(
    clients.map(async (client, i) => {
      // DATA on stream 0: a connection error (PROTOCOL_ERROR).
      client.socket.write(Buffer.concat([PREFACE_AND_SETTINGS, frame(0, 0, 0, Buffer.from("x"))]));
      // Then 64 KiB of frames after frames, as fast as the socket takes them, ignoring GOAWAY and FIN, for 2 s at most.
      const chunk = Buffer.concat(Array.from({ length: 4 }, () => frame(0xfa, 0, 0, Buffer.alloc(16_384))));
      const until = Date.now() + 2000;
      written[i] = 0;
      while (!client.closed && Date.now() < until) {
        written[i] += chunk.length;
        if (!client.socket.write(chunk)) await drainOrClose(client.socket);
      }
    }),
  );
  const peak = rss.peak;
  rss.stop();
  for (const client of clients) {
    assert.equal(client.goawayCode(), NGHTTP2_PROTOCOL_ERROR);
    client.socket.destroy();
  }
  assert.equal(await probeGet(server, "small"), 5);
  const report = `server RSS ${before.toFixed(0)} -> ${peak.toFixed(0)} MiB; bytes written per client: ${written.map((w) => (w / 2 ** 20).toFixed(0)).join(", ")} MiB`;
  t.diagnostic(report);
  // What the clients could write is what the kernel buffers (a few MiB a socket on loopback), not what the server read.
  assert.ok(peak - before < 16, report);
});
