/**
 * TLS on our HTTP/2 engine (issue 20): connections that negotiate ALPN h2 are
 * served by src/server/h2 over node:tls sockets, HTTP/1.1 (or no ALPN) by
 * Node's HTTP/1.1 server, with mutual TLS, certificate reload and the
 * connection limits as before; `--http2-engine node` keeps node:http2's
 * secure server. Real server processes on 127.0.0.1, real clients.
 *
 * Which engine answered: ours opens the connection's receive window to 1 MiB
 * at once and advertises SETTINGS_ENABLE_PUSH=0; nghttp2 (node:http2) does
 * neither. The first test checks that this tells the two apart, on one
 * server of each.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from "node:fs";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CacheService } from "../src/gen/ripplecache/v1/cache_pb.js";
import { eventually } from "./helpers/assert.js";
import { generatePythonStubs, PYTHON } from "./helpers/python.js";
import { requireTool, ROOT, startServer, type ServerProcess } from "./helpers/server.js";
import { Certificates, type Pair } from "./helpers/certs.js";
import { h2Json } from "./helpers/h2-frames.js";

const enc = new TextEncoder();
const text = (b: Uint8Array) => new TextDecoder().decode(b);

let dir: string;
let curl: string;

let ca: Pair;
let serverA: Pair;
let serverB: Pair;
let client: Pair;
let rogue: Pair;
/** A symlink to a or b, as a mounted Kubernetes Secret: what `ours` reads its certificate through. */
let live: string;
/** Our engine (the default), certificates reloaded every 100 ms, limits set to values other than the defaults. */
let ours: ServerProcess;
/** The same with --http2-engine node. */
let nodeEngine: ServerProcess;
/** Our engine with mutual TLS. */
let mutual: ServerProcess;

const LIMITS = ["--max-concurrent-streams", "77", "--max-header-bytes", "12000", "--request-header-timeout", "1500"];

before(async () => {
  curl = requireTool("curl", "curl");
  dir = mkdtempSync(join(tmpdir(), "ripplecache-tls-engine-"));
  const certs = new Certificates(dir);
  ca = certs.ca("ca");
  const otherCa = certs.ca("other-ca");
  serverA = certs.leaf(ca, join(dir, "a"), "server-a");
  serverB = certs.leaf(ca, join(dir, "b"), "server-b");
  client = certs.leaf(ca, join(dir, "client"), "client");
  rogue = certs.leaf(otherCa, join(dir, "rogue"), "rogue");
  live = join(dir, "live");
  symlinkSync(join(dir, "a"), live);
  const certArgs = (pair: Pair) => ["--tls-cert", pair.cert, "--tls-key", pair.key];
  [ours, nodeEngine, mutual] = await Promise.all([
    startServer([...certArgs({ cert: join(live, "cert.pem"), key: join(live, "key.pem") }), "--tls-reload-interval", "100", ...LIMITS]),
    startServer([...certArgs(serverA), "--http2-engine", "node", ...LIMITS]),
    startServer([...certArgs(serverA), "--tls-client-ca", ca.cert]),
  ]);
});

after(async () => {
  await Promise.all([ours?.stop(), nodeEngine?.stop(), mutual?.stop()]);
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const url = (server: ServerProcess) => `https://127.0.0.1:${server.port}`;

/** A node:http2 client session over TLS with ALPN h2, once the server's SETTINGS have arrived. */
async function h2Session(server: ServerProcess, options: tls.ConnectionOptions = {}): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url(server), { ca: readFileSync(ca.cert), ...options });
  session.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    session.once("remoteSettings", () => resolve());
    session.once("error", reject);
    session.once("close", () => reject(new Error("closed before the server's SETTINGS")));
  });
  // The connection WINDOW_UPDATE follows SETTINGS in the same write: one ping round trip and it has been read.
  await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
  return session;
}

/** Which HTTP/2 engine serves this session (see the file's comment). */
function engineOf(session: http2.ClientHttp2Session): "ours" | "node:http2" | "unknown" {
  const pushOff = session.remoteSettings.enablePush === false;
  const window = session.state.remoteWindowSize ?? 0;
  if (pushOff && window > 65_535) return "ours";
  if (!pushOff && window === 65_535) return "node:http2";
  return "unknown";
}

async function engineOfNewConnection(server: ServerProcess, options: tls.ConnectionOptions = {}): Promise<string> {
  const session = await h2Session(server, options);
  try {
    return engineOf(session);
  } finally {
    session.close();
  }
}

/** The certificate a new TLS connection is shown. */
async function presentedFingerprint(server: ServerProcess): Promise<string> {
  const socket = tls.connect({ host: "127.0.0.1", port: server.port, ca: readFileSync(ca.cert), ALPNProtocols: ["h2"] });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", resolve);
      socket.once("error", reject);
    });
    return socket.getPeerX509Certificate()!.fingerprint256;
  } finally {
    socket.destroy();
  }
}

function runCurl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(curl, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    proc.once("error", reject);
    proc.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

type GrpcJsClient = grpc.Client & Record<string, Function>;
function grpcJsClient(server: ServerProcess, credentials: grpc.ChannelCredentials): GrpcJsClient {
  const def = protoLoader.loadSync(join(ROOT, "proto/ripplecache/v1/cache.proto"), { includeDirs: [join(ROOT, "proto")], keepCase: true, defaults: true, oneofs: true });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const Ctor = (grpc.loadPackageDefinition(def) as any).ripplecache.v1.CacheService as grpc.ServiceClientConstructor;
  return new Ctor(`127.0.0.1:${server.port}`, credentials) as unknown as GrpcJsClient;
}

function grpcJsCall<T>(c: GrpcJsClient, method: string, req: object): Promise<T> {
  return new Promise((resolve, reject) => c[method](req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res))));
}

test("ALPN h2 is served by our engine, with the configured limits; --http2-engine node by node:http2", async () => {
  const a = await h2Session(ours);
  const b = await h2Session(nodeEngine);
  try {
    assert.equal(engineOf(a), "ours");
    assert.equal(engineOf(b), "node:http2", "the check tells the engines apart");
    for (const session of [a, b]) {
      assert.equal(session.alpnProtocol, "h2");
      assert.equal(session.remoteSettings.maxConcurrentStreams, 77, "--max-concurrent-streams");
      assert.equal(session.remoteSettings.maxHeaderListSize, 12000, "--max-header-bytes");
      const r = await h2Json(session, "/ripplecache.v1.CacheService/Set", { key: "tls-engine/raw", value: "YQ==" });
      assert.equal(r.status, 200, r.body);
    }
  } finally {
    a.close();
    b.close();
  }
});

test("real clients over TLS with ALPN h2 on our engine: connect-node (Connect, gRPC, gRPC-Web), @grpc/grpc-js with TLS credentials, curl --http2", async () => {
  const nodeOptions = { ca: readFileSync(ca.cert) };
  const transports = {
    "connect h2": createConnectTransport({ baseUrl: url(ours), httpVersion: "2", nodeOptions }),
    "connect h2 binary": createConnectTransport({ baseUrl: url(ours), httpVersion: "2", useBinaryFormat: true, nodeOptions }),
    grpc: createGrpcTransport({ baseUrl: url(ours), nodeOptions }),
    "grpc-web h2": createGrpcWebTransport({ baseUrl: url(ours), httpVersion: "2", nodeOptions }),
  };
  for (const [name, transport] of Object.entries(transports)) {
    const c = createClient(CacheService, transport);
    assert.equal((await c.set({ key: `tls-engine/${name}`, value: enc.encode(name) })).applied, true, name);
    assert.equal(text((await c.get({ key: `tls-engine/${name}` })).value), name);
    // A server stream on the same engine, through connect's handlers or the fast path.
    const scanned = await c.scan({ prefix: `tls-engine/${name}` });
    assert.deepEqual(scanned.entries.map((e) => e.key), [`tls-engine/${name}`], name);
  }

  const gj = grpcJsClient(ours, grpc.credentials.createSsl(readFileSync(ca.cert)));
  try {
    await grpcJsCall(gj, "Set", { key: "tls-engine/grpc-js", value: Buffer.from("grpc-js") });
    const got = await grpcJsCall<{ found: boolean; value: Buffer }>(gj, "Get", { key: "tls-engine/grpc-js" });
    assert.equal(got.found, true);
    assert.equal(got.value.toString(), "grpc-js");
  } finally {
    gj.close();
  }

  const r = await runCurl([
    "-sS", "-v", "--http2", "--cacert", ca.cert, "-X", "POST", "-H", "content-type: application/json",
    "-d", JSON.stringify({ key: "tls-engine/grpc-js" }), `${url(ours)}/ripplecache.v1.CacheService/Get`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /ALPN: server accepted h2/);
  assert.match(r.stderr, /< HTTP\/2 200/);
  assert.equal(JSON.parse(r.stdout).value, Buffer.from("grpc-js").toString("base64"));
});

test("Python grpcio (gRPC C-core) over TLS on our engine, with and without a client certificate", () => {
  const stubs = generatePythonStubs(["ripplecache/v1/cache.proto"]);
  try {
    const script = `
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc
from ripplecache.v1 import cache_pb2, cache_pb2_grpc
_, _, addr, ca, cert, key = sys.argv
read = lambda f: open(f, "rb").read() if f else None
creds = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))
with grpc.secure_channel(addr, creds) as channel:
    stub = cache_pb2_grpc.CacheServiceStub(channel)
    try:
        stub.Set(cache_pb2.SetRequest(key="tls-engine/python", value=b"py"), timeout=5)
        got = stub.Get(cache_pb2.GetRequest(key="tls-engine/python"), timeout=5)
        print(json.dumps({"found": got.found, "value": got.value.decode()}))
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name}))
`;
    const run = (server: ServerProcess, withCert: boolean) => {
      const r = spawnSync(PYTHON, ["-c", script, stubs, `127.0.0.1:${server.port}`, ca.cert, withCert ? client.cert : "", withCert ? client.key : ""], { encoding: "utf8", timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout.trim()) as { found?: boolean; value?: string; code?: string };
    };
    assert.deepEqual(run(ours, false), { found: true, value: "py" });
    assert.deepEqual(run(mutual, true), { found: true, value: "py" });
    assert.equal(run(mutual, false).code, "UNAVAILABLE", "no client certificate: refused");
  } finally {
    rmSync(stubs, { recursive: true, force: true });
  }
});

test("HTTP/1.1 over TLS: ALPN http/1.1 (connect-node, curl) and a client that offers no ALPN, on the same port", async () => {
  const nodeOptions = { ca: readFileSync(ca.cert) };
  for (const transport of [
    createConnectTransport({ baseUrl: url(ours), httpVersion: "1.1", nodeOptions }),
    createGrpcWebTransport({ baseUrl: url(ours), httpVersion: "1.1", nodeOptions }),
  ]) {
    const c = createClient(CacheService, transport);
    assert.equal((await c.set({ key: "tls-engine/h1", value: enc.encode("h1") })).applied, true);
    assert.equal(text((await c.get({ key: "tls-engine/h1" })).value), "h1");
  }
  const r = await runCurl([
    "-sS", "-v", "--http1.1", "--cacert", ca.cert, "-X", "POST", "-H", "content-type: application/json",
    "-d", JSON.stringify({ key: "tls-engine/h1" }), `${url(ours)}/ripplecache.v1.CacheService/Get`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /ALPN: server accepted http\/1\.1/);
  assert.match(r.stderr, /< HTTP\/1\.1 200/);
  assert.equal(JSON.parse(r.stdout).value, Buffer.from("h1").toString("base64"));

  // No ALPN at all: HTTP/1.1, as node:http2's allowHTTP1 does.
  const socket = tls.connect({ host: "127.0.0.1", port: ours.port, ca: readFileSync(ca.cert) });
  socket.on("error", () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", resolve);
      socket.once("error", reject);
    });
    assert.equal(socket.alpnProtocol, false);
    const body = JSON.stringify({ key: "tls-engine/h1" });
    socket.write(`POST /ripplecache.v1.CacheService/Get HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    let answer = "";
    socket.setEncoding("utf8");
    for await (const chunk of socket) answer += chunk as string;
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.match(answer, /"found":true/);
  } finally {
    socket.destroy();
  }
});

test("an HTTP/2 connection over TLS that sends no request is closed after --request-header-timeout", async () => {
  const socket = tls.connect({ host: "127.0.0.1", port: ours.port, ca: readFileSync(ca.cert), ALPNProtocols: ["h2"] });
  socket.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", resolve);
    socket.once("error", reject);
  });
  assert.equal(socket.alpnProtocol, "h2");
  socket.resume();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("still open 10 s after a 1.5 s header timeout")), 10_000);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
});

test("mutual TLS on our engine: a trusted client certificate is served over h2 and HTTP/1.1; none, or an untrusted one, is refused", async () => {
  const trusted = { ca: readFileSync(ca.cert), cert: readFileSync(client.cert), key: readFileSync(client.key) };
  assert.equal(await engineOfNewConnection(mutual, trusted), "ours");
  for (const transport of [
    createGrpcTransport({ baseUrl: url(mutual), nodeOptions: trusted }),
    createConnectTransport({ baseUrl: url(mutual), httpVersion: "1.1", nodeOptions: trusted }),
  ]) {
    const c = createClient(CacheService, transport);
    assert.equal((await c.set({ key: "tls-engine/mtls", value: enc.encode("m") })).applied, true);
  }
  const gj = grpcJsClient(mutual, grpc.credentials.createSsl(trusted.ca, trusted.key, trusted.cert));
  try {
    assert.equal((await grpcJsCall<{ found: boolean }>(gj, "Get", { key: "tls-engine/mtls" })).found, true);
  } finally {
    gj.close();
  }
  const ok = await runCurl(["-sS", "--http2", "--cacert", ca.cert, "--cert", client.cert, "--key", client.key, "-X", "POST", "-H", "content-type: application/json", "-d", '{"key":"tls-engine/mtls"}', `${url(mutual)}/ripplecache.v1.CacheService/Get`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /"found":true/);

  for (const [name, options] of [
    ["no certificate", { ca: readFileSync(ca.cert) }],
    ["a certificate from another CA", { ca: readFileSync(ca.cert), cert: readFileSync(rogue.cert), key: readFileSync(rogue.key) }],
  ] as const) {
    const c = createClient(CacheService, createGrpcTransport({ baseUrl: url(mutual), nodeOptions: options }));
    await assert.rejects(c.get({ key: "tls-engine/mtls" }, { timeoutMs: 5000 }), (err: Error) => !/deadline/i.test(err.message), name);
  }
  const refused = await runCurl(["-sS", "--http2", "--cacert", ca.cert, "-X", "POST", "-H", "content-type: application/json", "-d", "{}", `${url(mutual)}/ripplecache.v1.CacheService/Get`]);
  assert.notEqual(refused.code, 0, "curl without a client certificate is refused");
});

test("certificate reload: new h2 connections get the new certificate on our engine; an open one keeps its own and keeps working", async () => {
  const a = new X509Certificate(readFileSync(serverA.cert)).fingerprint256;
  const b = new X509Certificate(readFileSync(serverB.cert)).fingerprint256;
  assert.equal(await presentedFingerprint(ours), a);
  const old = await h2Session(ours);
  try {
    assert.equal((await h2Json(old, "/ripplecache.v1.CacheService/Set", { key: "tls-engine/reload", value: "YQ==" })).status, 200);
    // Point the symlink at b atomically, as Kubernetes updates a mounted Secret.
    const tmp = `${live}.tmp`;
    symlinkSync(join(dir, "b"), tmp);
    renameSync(tmp, live);
    await eventually("new connections to be shown certificate B", () => presentedFingerprint(ours), (f) => f === b, 10_000);

    const fresh = await h2Session(ours);
    try {
      assert.equal((fresh.socket as tls.TLSSocket).getPeerX509Certificate()!.fingerprint256, b);
      assert.equal(engineOf(fresh), "ours");
      const got = await h2Json(fresh, "/ripplecache.v1.CacheService/Get", { key: "tls-engine/reload" });
      assert.match(got.body, /"found":true/);
    } finally {
      fresh.close();
    }
    const c = createClient(CacheService, createGrpcTransport({ baseUrl: url(ours), nodeOptions: { ca: readFileSync(ca.cert) } }));
    assert.equal((await c.get({ key: "tls-engine/reload" })).found, true);
    // The connection made before the reload: still certificate A, still served.
    assert.equal((old.socket as tls.TLSSocket).getPeerX509Certificate()!.fingerprint256, a);
    const again = await h2Json(old, "/ripplecache.v1.CacheService/Get", { key: "tls-engine/reload" });
    assert.equal(again.status, 200);
    assert.match(again.body, /"found":true/);
  } finally {
    old.close();
  }
});
