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
const { NGHTTP2_PROTOCOL_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
const MiB = 1024 * 1024;

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
  const timer = setInterval(() => {
    // A server gone meanwhile has no status: the test fails on what it checks next.
    if (server.proc.exitCode === null && server.proc.signalCode === null) sample.peak = Math.max(sample.peak, rssMiB(server));
  }, 10);
  timer.unref();
  return {
    get peak() {
      return sample.peak;
    },
    set peak(value: number) {
      sample.peak = value;
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

/** `count` Gets of `key` at once on one connection of node:http2's client (64 KiB windows, read as they come): their grpc-status. */
async function concurrentGets(server: ServerProcess, key: string, count: number): Promise<string[]> {
  const session = http2.connect(server.url);
  session.on("error", () => {});
  try {
    const message = grpcMessage(toBinary(GetRequestSchema, create(GetRequestSchema, { key })));
    return await Promise.all(
      Array.from(
        { length: count },
        () =>
          new Promise<string>((resolve) => {
            const req = session.request({ ":method": "POST", ":path": GET, "content-type": "application/grpc", te: "trailers" });
            let status = `reset ${req.rstCode ?? "?"}`;
            req.on("data", () => {});
            req.on("trailers", (t) => (status = String(t["grpc-status"])));
            req.on("error", () => {});
            req.on("close", () => resolve(status === "0" ? status : `${status} (rst ${req.rstCode})`));
            req.end(message);
          }),
      ),
    );
  } finally {
    session.close();
  }
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

/** SETTINGS with INITIAL_WINDOW_SIZE (4) = `window`. */
function initialWindow(window: number): Buffer {
  const entry = Buffer.alloc(6);
  entry.writeUInt16BE(4, 0);
  entry.writeUInt32BE(window, 2);
  return entry;
}

test("a client that shuts its window and asks for 1,000 answers of 1 MiB gets a few, the rest refused, then GOAWAY: the server's RSS stays bounded, a Get on another connection answers, and a client that reads its 32 answers of 1 MiB on one connection gets them all", async (t) => {
  // A server of its own: its RSS is this attack's alone.
  const own = await startServer([], {});
  const rss = watchRss(own);
  try {
    await setValue(own, "small", Buffer.from("hello"));
    await setValue(own, "big", Buffer.alloc(MiB, 0x62));
    const before = rssMiB(own);
    rss.peak = before;
    // Three attacking connections: SETTINGS_INITIAL_WINDOW_SIZE 0, then 1,000 Gets of 1 MiB each, never a WINDOW_UPDATE.
    const attackers = await Promise.all([1, 2, 3].map(() => rawClient(own.port)));
    for (const client of attackers) {
      const gets = Array.from({ length: 1000 }, (_, i) => getFrames(1 + 2 * i, "big"));
      client.socket.write(Buffer.concat([PREFACE, frame(4, 0, 0, initialWindow(0)), ...gets]));
    }
    // Meanwhile a Get on a connection of its own answers.
    assert.equal(await probeGet(own, "small"), 5);
    for (const client of attackers) await waitFor("the GOAWAY", () => client.goawayCode() !== undefined);
    const peak = rss.peak;
    for (const client of attackers) {
      assert.equal(client.goawayCode(), NGHTTP2_ENHANCE_YOUR_CALM);
      const refused = client.resets().filter(([, code]) => code === NGHTTP2_REFUSED_STREAM).length;
      assert.ok(refused >= 900, `streams refused: ${refused} of 1,000`);
      assert.equal(client.dataBytes, 0);
    }
    const report = `server RSS ${before.toFixed(0)} -> ${peak.toFixed(0)} MiB; streams refused per connection: ${attackers.map((c) => c.resets().length).join(", ")}`;
    t.diagnostic(report);
    // Before the budget: 1,000 answers of 1 MiB queued per connection (77 -> 1,524 MiB for one).
    assert.ok(peak - before < 48, report);
    for (const client of attackers) client.socket.destroy();
    // A client that reads gets all its 32 answers of 1 MiB on one connection (8x the budget: they wait their turn, none is refused).
    assert.deepEqual(await concurrentGets(own, "big", 32), Array(32).fill("0"));
  } finally {
    rss.stop();
    await own.stop();
  }
});

test("over the budget, streams are refused with REFUSED_STREAM; a client that keeps opening them on a connection it does not read gets ENHANCE_YOUR_CALM, and after 100 of those GOAWAY", async () => {
  await setValue(server, "big", Buffer.alloc(MiB, 0x62));
  const client = await rawClient(server.port);
  // Window 0: eight answers of 1 MiB, twice the 4 MiB budget, that never go out.
  client.socket.write(Buffer.concat([PREFACE, frame(4, 0, 0, initialWindow(0)), ...Array.from({ length: 8 }, (_, i) => getFrames(1 + 2 * i, "big"))]));
  await waitFor("a refusal", () => client.resets().length > 0);
  assert.ok(
    client.resets().every(([, code]) => code === NGHTTP2_REFUSED_STREAM),
    JSON.stringify(client.resets()),
  );
  // It has seen a refusal and keeps opening streams: ENHANCE_YOUR_CALM, then GOAWAY.
  const first = 17;
  client.socket.write(Buffer.concat(Array.from({ length: 150 }, (_, i) => getFrames(first + 2 * i, "big"))));
  await waitFor("the GOAWAY", () => client.goawayCode() !== undefined);
  assert.equal(client.goawayCode(), NGHTTP2_ENHANCE_YOUR_CALM);
  const calm = client.resets().filter(([id, code]) => id >= first && code === NGHTTP2_ENHANCE_YOUR_CALM).length;
  assert.equal(calm, 100);
  client.socket.destroy();
  assert.equal(await probeGet(server, "small"), 5);
});

test("a stream whose answer waits on a window the client keeps shut is reset after --stall-timeout; a connection whose every stream waits so is closed", async () => {
  const own = await startServer([], { RIPPLECACHE_STALL_TIMEOUT: "500" });
  try {
    await setValue(own, "big", Buffer.alloc(100_000, 0x62));
    const client = await rawClient(own.port);
    // Stream 1: a Get whose answer (100,000 bytes) meets a window of 0. Stream 3: a Get whose request never ends (nothing to answer yet).
    client.socket.write(Buffer.concat([PREFACE, frame(4, 0, 0, initialWindow(0)), getFrames(1, "big"), frame(1, 4, 3, grpcBlock(GET))]));
    await waitFor("the reset of stream 1", () => client.resets().length > 0);
    assert.deepEqual(client.resets(), [[1, NGHTTP2_ENHANCE_YOUR_CALM]]);
    assert.equal(client.goawayCode(), undefined, "stream 3 does not wait on a window: the connection stays");
    // Stream 5 waits on the window too; the client cancels stream 3: every stream left waits, and the connection is closed.
    client.socket.write(Buffer.concat([getFrames(5, "big"), frame(3, 0, 3, Buffer.from([0, 0, 0, 8]))]));
    await waitFor("the GOAWAY", () => client.goawayCode() !== undefined);
    assert.equal(client.goawayCode(), NGHTTP2_ENHANCE_YOUR_CALM);
    assert.equal(client.dataBytes, 0);
    client.socket.destroy();
  } finally {
    await own.stop();
  }
});

test("SETTINGS of more than 32 entries end the connection (ENHANCE_YOUR_CALM); 32 entries are applied in order, the last INITIAL_WINDOW_SIZE for every stream", async () => {
  await setValue(server, "mid", Buffer.alloc(10_000, 0x6d));
  const client = await rawClient(server.port);
  client.socket.write(Buffer.concat([PREFACE, frame(4, 0, 0, initialWindow(0)), getFrames(1, "mid")]));
  await waitFor("the answer's HEADERS", () => client.frames.some((f) => f.type === 1 && f.id === 1));
  // 32 entries, the window 1,000,000 then 0 in turn, and 1,000 last: stream 1 may send 1,000 bytes.
  const entries = Array.from({ length: 31 }, (_, i) => initialWindow(i % 2 === 0 ? 1_000_000 : 0));
  client.socket.write(frame(4, 0, 0, Buffer.concat([...entries, initialWindow(1000)])));
  await waitFor("1,000 bytes of DATA", () => client.dataBytes === 1000);
  client.socket.write(frame(4, 0, 0, Buffer.concat(Array.from({ length: 33 }, () => initialWindow(1000)))));
  await waitFor("the GOAWAY", () => client.goawayCode() !== undefined);
  assert.equal(client.goawayCode(), NGHTTP2_ENHANCE_YOUR_CALM);
  assert.equal(client.dataBytes, 1000);
  client.socket.destroy();
});

test("header blocks over the limit: trailers reset the stream, a request is refused (ENHANCE_YOUR_CALM), decoding stops at the limit, and a client that keeps sending them loses its connection", async () => {
  const client = await rawClient(server.port);
  // A 3,900-byte field enters the dynamic table (index 62); each one-byte reference to it adds 3,937 bytes to a header list of at most 16 KiB.
  const entry = Buffer.concat([Buffer.from([0x40]), hpackString("x-big"), hpackInt(3900, 7), Buffer.alloc(3900, 0x61)]);
  const references = Buffer.alloc(16_000, 0xbe);
  client.socket.write(
    Buffer.concat([
      PREFACE_AND_SETTINGS,
      // Stream 1: a Get whose trailers are over the limit.
      frame(1, 4, 1, Buffer.concat([grpcBlock(GET), entry])),
      frame(0, 0, 1, grpcMessage(toBinary(GetRequestSchema, create(GetRequestSchema, { key: "small" })))),
      frame(1, 5, 1, references),
    ]),
  );
  await waitFor("the reset of stream 1", () => client.resets().length > 0);
  assert.deepEqual(client.resets(), [[1, NGHTTP2_ENHANCE_YOUR_CALM]]);
  // Stream 3: over the limit, then a literal that enters the table (index 62, x-big moves to 63; both fit its 4,096 bytes): the table stays in step,
  // as stream 5, whose :path is that entry, shows by being answered.
  const pathEntry = Buffer.concat([hpackInt(4, 6, 0x40), hpackString(GET)]);
  const getFromTable = Buffer.concat([Buffer.from([0x83, 0x86]), hpackInt(1, 4), hpackString("localhost"), Buffer.from([0xbe]), hpackInt(31, 4), hpackString("application/grpc"), Buffer.from([0x00]), hpackString("te"), hpackString("trailers")]);
  client.socket.write(
    Buffer.concat([
      frame(1, 5, 3, Buffer.concat([grpcBlock(GET), Buffer.alloc(8, 0xbe), pathEntry])),
      frame(1, 4, 5, getFromTable),
      frame(0, 1, 5, grpcMessage(toBinary(GetRequestSchema, create(GetRequestSchema, { key: "small" })))),
    ]),
  );
  await waitFor("the answer on stream 5", () => client.frames.some((f) => f.type === 1 && f.id === 5 && (f.flags & 1) === 1));
  assert.deepEqual(client.resets(), [
    [1, NGHTTP2_ENHANCE_YOUR_CALM],
    [3, NGHTTP2_ENHANCE_YOUR_CALM],
  ]);
  // Then 1,500 requests of 16,000 references to x-big each (63 MB of header values each, decoded whole before): each refused, and the connection cut off.
  const requests = Array.from({ length: 1500 }, (_, i) => frame(1, 5, 7 + 2 * i, Buffer.concat([grpcBlock(GET), Buffer.alloc(16_000, 0xbf)])));
  client.socket.write(Buffer.concat(requests));
  await waitFor("the GOAWAY", () => client.goawayCode() !== undefined);
  assert.equal(client.goawayCode(), NGHTTP2_ENHANCE_YOUR_CALM);
  const refused = client.resets().slice(2);
  assert.ok(refused.length > 500 && refused.length < 1500, `requests refused before the GOAWAY: ${refused.length}`);
  assert.ok(
    refused.every(([, code]) => code === NGHTTP2_ENHANCE_YOUR_CALM),
    "every oversized request is refused with ENHANCE_YOUR_CALM",
  );
  client.socket.destroy();
  assert.equal(await probeGet(server, "small"), 5);
});
