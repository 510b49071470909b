// The fast path (src/server/fast-path/) must answer exactly as
// connect-node does. Every case here is sent as raw HTTP/2 to two real server
// processes, one with the fast path (the default) and one with
// --fast-path off, and their answers are compared: status, headers (all but
// date), body bytes and trailers. The cases cover what a unary call can meet
// (both binary protocols, hits and misses, every kind of error, malformed
// protobuf and framing, size limits, auth, a replica's refusals with their
// metadata, deadlines, response compression) and a Watch stream over gRPC and
// Connect streaming (replay, events, compressed events, its errors, the
// deadline that ends it), and the metrics every call leaves.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { after, before, test } from "node:test";
import { brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import {
  DeleteRequestSchema,
  GetManyRequestSchema,
  GetRequestSchema,
  IncrementRequestSchema,
  TouchRequestSchema,
  WatchRequestSchema,
  WatchResponseSchema,
  SetRequestSchema,
} from "../src/gen/ripplecache/v1/cache_pb.js";
import { DigestRequestSchema } from "../src/gen/ripplecache/v1/replication_pb.js";
import { CacheClient } from "../src/client/client.js";
import { startServer, type ServerProcess } from "./helpers/server.js";

const TOKEN = "fast-path-token";
const ARGS = ["--max-request-bytes", "64KiB", "--max-value-bytes", "16KiB", "--max-key-bytes", "256", "--max-batch", "200"];

/**
 * The same server four ways: `fast`, as it runs by default (our HTTP/2
 * engine and the fast path); `slow`, the reference: connect-node on
 * node:http2 (`--fast-path off --http2-engine node`); `bridge`, connect's
 * handlers on our engine (`--fast-path off`); `nodeFast`, the fast path on
 * node:http2 (`--http2-engine node`). Every case must get the same answer
 * from all four.
 */
interface Pair {
  readonly fast: ServerProcess;
  readonly slow: ServerProcess;
  readonly bridge: ServerProcess;
  readonly nodeFast: ServerProcess;
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: string;
  readonly trailers: Record<string, string | string[]>;
  readonly reset?: number;
}

interface Case {
  readonly name: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

let primary: Pair;
let authed: Pair;
let replica: Pair;
const sessions: http2.ClientHttp2Session[] = [];

async function pair(args: string[], env: Record<string, string> = {}): Promise<Pair> {
  const [fast, slow, bridge, nodeFast] = await Promise.all([
    startServer([...ARGS, ...args], env),
    startServer([...ARGS, ...args, "--fast-path", "off", "--http2-engine", "node"], env),
    startServer([...ARGS, ...args, "--fast-path", "off"], env),
    startServer([...ARGS, ...args, "--http2-engine", "node"], env),
  ]);
  return { fast, slow, bridge, nodeFast };
}

/**
 * Each server's history (replication id), as its ASCII appears hex-encoded in
 * a body (WatchCreated.history): random per process, so it differs by nature.
 */
const histories = new Map<ServerProcess, string>();
async function learnHistories(p: Pair, token?: string): Promise<void> {
  for (const server of [p.fast, p.slow, p.bridge, p.nodeFast]) {
    const c = new CacheClient({ addr: server.addr, token });
    try {
      const id = (await c.info()).replicationId;
      if (id !== "") histories.set(server, Buffer.from(id).toString("hex"));
    } finally {
      c.close();
    }
  }
}

before(async () => {
  primary = await pair([]);
  authed = await pair([], { RIPPLECACHE_AUTH_TOKEN: TOKEN });
  await Promise.all([learnHistories(primary), learnHistories(authed, TOKEN)]);
  // A replica of nothing: it never syncs, so it refuses reads (UNAVAILABLE) and writes (FAILED_PRECONDITION), naming its primary.
  replica = await pair(["--replica-of", "127.0.0.1:9", "--replica-unready-after", "0"]);
});

after(async () => {
  for (const s of sessions) s.close();
  await Promise.all([primary, authed, replica].flatMap((p) => (p === undefined ? [] : [p.fast.stop(), p.slow.stop(), p.bridge.stop(), p.nodeFast.stop()])));
});

function session(url: string): http2.ClientHttp2Session {
  const s = http2.connect(url);
  s.on("error", () => {});
  sessions.push(s);
  return s;
}

const clients = new Map<string, http2.ClientHttp2Session>();
function client(server: ServerProcess): http2.ClientHttp2Session {
  let s = clients.get(server.url);
  if (s === undefined || s.closed || s.destroyed) clients.set(server.url, (s = session(server.url)));
  return s;
}

function send(server: ServerProcess, c: Case): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = client(server).request({ ":method": "POST", ":path": c.path, te: "trailers", ...c.headers });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => reject(new Error(`${c.name}: no answer from ${server.url} in 10 s`)), 10_000);
    req.on("response", (h) => (headers = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("error", () => {});
    req.on("close", () => {
      clearTimeout(timer);
      resolve({
        status: Number(headers[":status"] ?? 0),
        headers: clean(headers),
        body: Buffer.concat(chunks).toString("hex"),
        trailers: clean(trailers),
        ...(headers[":status"] === undefined ? { reset: req.rstCode } : {}),
      });
    });
    req.end(c.body);
  });
}

/** Headers without the ones that differ by nature (date) or are pseudo-headers. */
function clean(h: http2.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const key of Object.keys(h).sort()) {
    const v = h[key];
    if (key.startsWith(":") || key === "date" || v === undefined) continue;
    out[key] = v;
  }
  return out;
}

function frame(payload: Buffer, flag = 0, length = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(length, 1);
  return Buffer.concat([head, payload]);
}

function bin<D extends DescMessage>(schema: D, init: MessageInitShape<D>): Buffer {
  return Buffer.from(toBinary(schema, create(schema, init)));
}

const GRPC = { "content-type": "application/grpc" };
const GRPC_PROTO = { "content-type": "application/grpc+proto" };
const CONNECT = { "content-type": "application/proto", "connect-protocol-version": "1" };
const PATH = (method: string) => `/ripplecache.v1.CacheService/${method}`;

/** The same call in gRPC (both content types) and Connect unary. */
function both(name: string, method: string, payload: Buffer, extra: Record<string, string> = {}): Case[] {
  return [
    { name: `${name} (gRPC)`, path: PATH(method), headers: { ...GRPC, ...extra }, body: frame(payload) },
    { name: `${name} (gRPC+proto)`, path: PATH(method), headers: { ...GRPC_PROTO, ...extra }, body: frame(payload) },
    { name: `${name} (Connect)`, path: PATH(method), headers: { ...CONNECT, ...extra }, body: payload },
  ];
}

function withoutHistory(server: ServerProcess, a: Answer): Answer {
  const h = histories.get(server);
  return h === undefined ? a : { ...a, body: a.body.split(h).join("<history>") };
}

async function compare(p: Pair, cases: Case[]): Promise<void> {
  for (const c of cases) {
    const fast = withoutHistory(p.fast, await send(p.fast, c));
    const slow = withoutHistory(p.slow, await send(p.slow, c));
    const bridge = withoutHistory(p.bridge, await send(p.bridge, c));
    const nodeFast = withoutHistory(p.nodeFast, await send(p.nodeFast, c));
    assert.deepEqual(fast, slow, `${c.name}: the fast path answered differently from connect-node`);
    assert.deepEqual(nodeFast, slow, `${c.name}: the fast path on node:http2 answered differently from connect-node`);
    assert.deepEqual(bridge, slow, `${c.name}: connect's handlers on our HTTP/2 engine answered differently from connect-node on node:http2`);
  }
}

test("the fast path answers every unary case exactly as connect-node does", { timeout: 120_000 }, async () => {
  const value = Buffer.alloc(100, 0x61);
  const big = Buffer.alloc(4000, 0x62);
  const invalidUtf8Key = Buffer.from([0x0a, 0x02, 0xc3, 0x28]);
  const cases: Case[] = [
    ...both("Get of a missing key", "Get", bin(GetRequestSchema, { key: "k1" })),
    ...both("Set", "Set", bin(SetRequestSchema, { key: "k1", value, flags: 7 })),
    ...both("Get of a present key", "Get", bin(GetRequestSchema, { key: "k1" })),
    ...both("Set if_absent, not applied", "Set", bin(SetRequestSchema, { key: "k1", value, condition: { case: "ifAbsent", value: true } })),
    ...both("Set of a large value", "Set", bin(SetRequestSchema, { key: "big", value: big })),
    ...both("GetMany, compressed answer", "GetMany", bin(GetManyRequestSchema, { keys: ["big", "k1", "nope"] }), { "grpc-accept-encoding": "gzip", "accept-encoding": "gzip" }),
    ...both("Get, client accepts gzip, small answer", "Get", bin(GetRequestSchema, { key: "k1" }), { "grpc-accept-encoding": "gzip,identity", "accept-encoding": "gzip" }),
    ...both("Get, client accepts only br", "Get", bin(GetRequestSchema, { key: "big" }), { "grpc-accept-encoding": "br", "accept-encoding": "br" }),
    ...both("Increment of a non-integer", "Increment", bin(IncrementRequestSchema, { key: "k1", delta: 1n })),
    ...both("Increment", "Increment", bin(IncrementRequestSchema, { key: "n", delta: 5n })),
    ...both("Delete with a stale if_revision", "Delete", bin(DeleteRequestSchema, { key: "k1", ifRevision: 1n })),
    ...both("Set with an empty key", "Set", bin(SetRequestSchema, { key: "", value })),
    ...both("GetMany over max-batch", "GetMany", bin(GetManyRequestSchema, { keys: Array.from({ length: 201 }, (_, i) => `k${i}`) })),
    ...both("Touch", "Touch", bin(TouchRequestSchema, { key: "n", ttlMs: 0n })),
    ...both("truncated protobuf", "Get", Buffer.from([0x0a, 0x05, 0x61])),
    ...both("invalid UTF-8 in a key", "Get", invalidUtf8Key),
    ...both("unknown fields", "Get", Buffer.concat([bin(GetRequestSchema, { key: "k1" }), Buffer.from([0xf8, 0x07, 0x01])])),
    ...both("an empty message", "Get", Buffer.alloc(0)),
    ...both("min_revision ahead, with a deadline", "Get", bin(GetRequestSchema, { key: "k1", minRevision: 1_000_000n }), { "grpc-timeout": "300m", "connect-timeout-ms": "300" }),
    ...both("a malformed deadline", "Get", bin(GetRequestSchema, { key: "k1" }), { "grpc-timeout": "soon", "connect-timeout-ms": "soon" }),
    ...both("a request over max-request-bytes", "Set", bin(SetRequestSchema, { key: "huge", value: Buffer.alloc(70 * 1024) })),
    { name: "gRPC: compressed flag without grpc-encoding", path: PATH("Get"), headers: GRPC, body: frame(bin(GetRequestSchema, { key: "k1" }), 1) },
    { name: "gRPC: truncated envelope", path: PATH("Get"), headers: GRPC, body: frame(bin(GetRequestSchema, { key: "k1" })).subarray(0, 6) },
    { name: "gRPC: no envelope at all", path: PATH("Get"), headers: GRPC, body: Buffer.alloc(0) },
    { name: "gRPC: two messages", path: PATH("Get"), headers: GRPC, body: Buffer.concat([frame(bin(GetRequestSchema, { key: "a" })), frame(bin(GetRequestSchema, { key: "b" }))]) },
    { name: "gRPC: a huge length prefix", path: PATH("Get"), headers: GRPC, body: frame(Buffer.from([0x0a, 0x01, 0x61]), 0, 0x7fffffff) },
    { name: "gRPC: gzip request (connect-node on both)", path: PATH("Get"), headers: { ...GRPC, "grpc-encoding": "gzip" }, body: frame(gzipSync(bin(GetRequestSchema, { key: "k1" })), 1) },
    { name: "Connect: content-length over the limit", path: PATH("Get"), headers: { ...CONNECT, "content-length": String(1024 * 1024) }, body: bin(GetRequestSchema, { key: "k1" }).subarray(0, 0) },
    { name: "Connect: unknown protocol version (connect-node on both)", path: PATH("Get"), headers: { ...CONNECT, "connect-protocol-version": "2" }, body: bin(GetRequestSchema, { key: "k1" }) },
    { name: "an unknown method", path: PATH("Nope"), headers: GRPC, body: frame(Buffer.alloc(0)) },
    { name: "AdminService.Digest", path: "/ripplecache.v1.AdminService/Digest", headers: GRPC, body: frame(bin(DigestRequestSchema, {})) },
  ];
  await compare(primary, cases);

  // Watch (server streaming): replay from revision 1, then the deadline ends the stream; both
  // servers applied the same writes, so every byte of the stream is the same.
  const watch = (init: Parameters<typeof bin<typeof WatchRequestSchema>>[1]) => bin(WatchRequestSchema, init);
  const CONNECT_STREAM = { "content-type": "application/connect+proto", "connect-protocol-version": "1" };
  const watchBoth = (name: string, payload: Buffer, extra: Record<string, string> = {}): Case[] => [
    { name: `${name} (gRPC)`, path: PATH("Watch"), headers: { ...GRPC, "grpc-timeout": "400m", ...extra }, body: frame(payload) },
    { name: `${name} (Connect streaming)`, path: PATH("Watch"), headers: { ...CONNECT_STREAM, "connect-timeout-ms": "400", ...extra }, body: frame(payload) },
  ];
  await compare(primary, [
    ...watchBoth("Watch a prefix from revision 1, with values, until the deadline", watch({ target: { case: "prefix", value: "" }, startRevision: 1n, withValues: true })),
    ...watchBoth("Watch a key, compressed events", watch({ target: { case: "key", value: "big" }, startRevision: 1n, withValues: true }), { "grpc-accept-encoding": "gzip", "connect-accept-encoding": "gzip" }),
    ...watchBoth("Watch with a progress interval out of range", watch({ target: { case: "prefix", value: "k" }, progressIntervalMs: 5 })),
    ...watchBoth("Watch with a malformed request", Buffer.from([0x0a, 0x05, 0x61])),
    ...watchBoth("Watch with a malformed deadline", watch({ target: { case: "key", value: "k1" } }), { "grpc-timeout": "soon", "connect-timeout-ms": "soon" }),
    { name: "Watch: two request messages (gRPC)", path: PATH("Watch"), headers: { ...GRPC, "grpc-timeout": "400m" }, body: Buffer.concat([frame(watch({ target: { case: "key", value: "a" } })), frame(watch({ target: { case: "key", value: "b" } }))]) },
    { name: "Watch: no request message (gRPC)", path: PATH("Watch"), headers: { ...GRPC, "grpc-timeout": "400m" }, body: Buffer.alloc(0) },
    { name: "Watch: Connect unary content type (connect-node on both)", path: PATH("Watch"), headers: CONNECT, body: watch({ target: { case: "key", value: "a" } }) },
  ]);

  // Auth: no token, a wrong one, the right one.
  const get = bin(GetRequestSchema, { key: "k1" });
  await compare(authed, [
    ...both("no token", "Get", get),
    ...both("a wrong token", "Get", get, { authorization: "Bearer wrong" }),
    ...both("the token", "Get", get, { authorization: `Bearer ${TOKEN}` }),
    { name: "Watch without a token", path: PATH("Watch"), headers: { ...GRPC, "grpc-timeout": "300m" }, body: frame(bin(WatchRequestSchema, { target: { case: "key", value: "k" } })) },
  ]);

  // A replica's refusals carry the primary's address as metadata (trailers in gRPC, headers in Connect).
  await compare(replica, [
    ...both("a read on an unsynced replica", "Get", get),
    ...both("a write on a replica", "Set", bin(SetRequestSchema, { key: "k", value })),
    { name: "a Watch on an unsynced replica", path: PATH("Watch"), headers: { ...GRPC, "grpc-timeout": "300m" }, body: frame(bin(WatchRequestSchema, { target: { case: "key", value: "k" } })) },
  ]);
});

test("both paths leave the same metrics behind", { timeout: 30_000 }, async () => {
  const calls = async (server: ServerProcess) => {
    const text = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => l.startsWith("rpc_server_call_duration_seconds_count"))
      .sort();
  };
  const fast = await calls(primary.fast);
  const slow = await calls(primary.slow);
  assert.ok(fast.length > 5, `expected per-method call counts in /metrics, got:\n${fast.join("\n")}`);
  assert.deepEqual(fast, slow);
  assert.deepEqual(await calls(primary.bridge), slow);
  assert.deepEqual(await calls(primary.nodeFast), slow);
  // And the fast path did serve them: the cases above would pass if it served nothing.
  const served = async (server: ServerProcess) => {
    const text = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
    const m = /^ripplecache_rpc_fast_path_calls_total(?:\{[^}]*\})? (\d+)/m.exec(text);
    assert.ok(m !== null, "ripplecache_rpc_fast_path_calls_total missing from /metrics");
    return Number(m[1]);
  };
  assert.ok((await served(primary.fast)) >= 60, "the fast path served fewer calls than the cases sent it");
  assert.ok((await served(primary.nodeFast)) >= 60, "the fast path on node:http2 served fewer calls than the cases sent it");
  assert.equal(await served(primary.slow), 0, "with --fast-path off, connect-node must serve every call");
  assert.equal(await served(primary.bridge), 0, "with --fast-path off, connect's handlers must serve every call");
});

test("a client that resets its call does not disturb the connection", { timeout: 30_000 }, async () => {
  const s = session(primary.fast.url);
  // A call waiting for min_revision, cancelled by the client: the wait ends and the connection serves on.
  const req = s.request({ ":method": "POST", ":path": PATH("Get"), ...GRPC, "grpc-timeout": "5S" });
  req.on("error", () => {});
  req.end(frame(bin(GetRequestSchema, { key: "k1", minRevision: 1_000_000n })));
  await new Promise((r) => setTimeout(r, 100));
  req.close(http2.constants.NGHTTP2_CANCEL);
  const answer = await send(primary.fast, { name: "after a reset", path: PATH("Get"), headers: GRPC, body: frame(bin(GetRequestSchema, { key: "k1" })) });
  assert.equal(answer.trailers["grpc-status"], "0");
});

test("one event reaches watchers of every encoding, each in the encoding it accepts", { timeout: 30_000 }, async () => {
  // The fast path encodes an event once per message and compression for all its watchers (a fan-out);
  // watchers that accept gzip, br or nothing must still each get their own encoding, as from connect-node.
  const accepts = ["gzip", "br", "identity"] as const;
  const big = Buffer.alloc(4096, "x");
  for (const server of [primary.fast, primary.slow, primary.bridge, primary.nodeFast]) {
    const prefix = `enc-${server === primary.fast ? "fast" : server === primary.slow ? "slow" : server === primary.bridge ? "bridge" : "node-fast"}/`;
    const s = session(server.url);
    const watchers = accepts.map((accept) => {
      const req = s.request({ ":method": "POST", ":path": PATH("Watch"), te: "trailers", ...GRPC, "grpc-accept-encoding": accept });
      req.on("error", () => {});
      req.end(frame(bin(WatchRequestSchema, { target: { case: "prefix", value: prefix }, withValues: true })));
      return { accept, req, frames: grpcFrames(req, 3), encoding: new Promise<string | undefined>((r) => req.once("response", (h) => r(h["grpc-encoding"] as string | undefined))) };
    });
    // Every watcher's Created first, so that both writes are live events.
    await Promise.all(watchers.map((w) => w.frames.first));
    const c = new CacheClient({ addr: server.addr });
    try {
      await c.set(`${prefix}big`, big);
      await c.set(`${prefix}small`, Buffer.from("v"));
    } finally {
      c.close();
    }
    for (const w of watchers) {
      const [, bigFrame, smallFrame] = await w.frames.all;
      w.req.close(http2.constants.NGHTTP2_CANCEL);
      const encoding = await w.encoding;
      assert.equal(encoding, w.accept === "identity" ? undefined : w.accept, `${server.url} ${w.accept}: grpc-encoding`);
      assert.equal(bigFrame.flag, w.accept === "identity" ? 0 : 1, `${w.accept}: the 4 KiB event's compressed flag`);
      assert.equal(smallFrame.flag, 0, `${w.accept}: an event under 1 KiB goes uncompressed`);
      const bigEvent = fromBinary(WatchResponseSchema, decompress(bigFrame, w.accept));
      const smallEvent = fromBinary(WatchResponseSchema, decompress(smallFrame, w.accept));
      assert.equal(bigEvent.kind.case, "events");
      assert.equal(smallEvent.kind.case, "events");
      if (bigEvent.kind.case !== "events" || smallEvent.kind.case !== "events") return;
      assert.equal(bigEvent.kind.value.events[0].key, `${prefix}big`);
      assert.deepEqual(Buffer.from(bigEvent.kind.value.events[0].value), big);
      assert.equal(smallEvent.kind.value.events[0].key, `${prefix}small`);
      assert.equal(Buffer.from(smallEvent.kind.value.events[0].value).toString(), "v");
    }
  }
});

interface GrpcFrame {
  readonly flag: number;
  readonly data: Buffer;
}

/** The first `count` gRPC messages of a response: `first` when the first is in, `all` when all are. */
function grpcFrames(req: http2.ClientHttp2Stream, count: number): { first: Promise<GrpcFrame>; all: Promise<GrpcFrame[]> } {
  let buf = Buffer.alloc(0);
  const out: GrpcFrame[] = [];
  let gotFirst!: (f: GrpcFrame) => void;
  let gotAll!: (f: GrpcFrame[]) => void;
  let fail!: (e: Error) => void;
  const first = new Promise<GrpcFrame>((r) => (gotFirst = r));
  const all = new Promise<GrpcFrame[]>((r, j) => ((gotAll = r), (fail = j)));
  const timer = setTimeout(() => fail(new Error(`only ${out.length} of ${count} messages in 10 s`)), 10_000);
  req.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
      const len = buf.readUInt32BE(1);
      out.push({ flag: buf[0], data: buf.subarray(5, 5 + len) });
      buf = buf.subarray(5 + len);
      if (out.length === 1) gotFirst(out[0]);
      if (out.length === count) {
        clearTimeout(timer);
        gotAll(out);
      }
    }
  });
  return { first, all };
}

function decompress(f: GrpcFrame, accept: string): Buffer {
  if (f.flag === 0) return f.data;
  return accept === "gzip" ? gunzipSync(f.data) : brotliDecompressSync(f.data);
}
