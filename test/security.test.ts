/**
 * Security (issue 8), against real server processes on 127.0.0.1: TLS
 * certificates reloaded without restart, mutual TLS, replication over mutual
 * TLS, tokens (and that no token is ever logged), and the connection, stream,
 * header, request-size and slow-client limits, with raw sockets where the
 * clients would be too polite.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "../src/client/http2-sessions.js";
import { CacheService, type WatchResponse } from "../src/gen/ripplecache/v1/cache_pb.js";
import { AdminService, ReplicationService } from "../src/gen/ripplecache/v1/replication_pb.js";
import { CacheClient } from "../src/client/client.js";
import { expectCode, eventually } from "./helpers/assert.js";
import { CLI, ROOT, startServer, type ServerProcess } from "./helpers/server.js";
import { frame, h2Json, PREFACE } from "./helpers/h2-frames.js";
import { Certificates, type Pair } from "./helpers/certs.js";

const enc = new TextEncoder();
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- certificates

let dir: string;
const fingerprintOf = (certFile: string) => new X509Certificate(readFileSync(certFile)).fingerprint256;

let ca: Pair;
let otherCa: Pair;
let serverA: Pair;
let serverB: Pair;
let client: Pair;
let rogueClient: Pair;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "ripplecache-security-"));
  const certs = new Certificates(dir);
  ca = certs.ca("ca");
  otherCa = certs.ca("other-ca");
  serverA = certs.leaf(ca, join(dir, "a"), "server-a");
  serverB = certs.leaf(ca, join(dir, "b"), "server-b");
  client = certs.leaf(ca, join(dir, "client"), "replica");
  rogueClient = certs.leaf(otherCa, join(dir, "rogue"), "rogue");
});

after(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- helpers

/** The certificate the server at `port` presents to a new TLS connection. */
async function presentedFingerprint(port: number): Promise<string> {
  const socket = tls.connect({ host: "127.0.0.1", port, ca: readFileSync(ca.cert), ALPNProtocols: ["h2"] });
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

/** Resolves when `socket` is closed by the server (with what it read before); rejects if still open after `timeoutMs`. */
function closedWithin(socket: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let read = "";
    socket.on("data", (d: Buffer) => (read += d.toString("latin1")));
    socket.on("error", () => {});
    const timer = setTimeout(() => reject(new Error(`the server kept the connection open for ${timeoutMs} ms; read ${JSON.stringify(read.slice(0, 200))}`)), timeoutMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(read);
    });
  });
}

async function connectRaw(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return socket;
}

const SETTINGS = 0x4;
const HEADERS = 0x1;
const CONTINUATION = 0x9;

/** Every line the processes wrote, as one string. */
const allOutput = (...servers: (ServerProcess | undefined)[]) => servers.map((s) => s?.output.join("\n") ?? "").join("\n");

/** Log records (JSON lines) of `server` whose msg starts with `msg`. */
function records(server: ServerProcess, msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of server.output) {
    try {
      const r = JSON.parse(line) as Record<string, unknown>;
      if (typeof r.msg === "string" && r.msg.startsWith(msg)) out.push(r);
    } catch {
      // not JSON
    }
  }
  return out;
}

async function readyz(server: ServerProcess): Promise<number> {
  return (await fetch(`http://127.0.0.1:${server.adminPort}/readyz`)).status;
}

/** A @grpc/grpc-js CacheService client (the reference gRPC client, with its own message code from the .proto). */
function grpcJsClient(addr: string): grpc.Client & Record<string, Function> {
  const def = protoLoader.loadSync(join(ROOT, "proto/ripplecache/v1/cache.proto"), { includeDirs: [join(ROOT, "proto")], keepCase: true, defaults: true, oneofs: true });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const Ctor = (grpc.loadPackageDefinition(def) as any).ripplecache.v1.CacheService as grpc.ServiceClientConstructor;
  return new Ctor(addr, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, Function>;
}

/** A unary grpc-js call: resolves with the status code (0 = OK). */
function grpcJsCode(client: grpc.Client & Record<string, Function>, method: string, req: object, metadata = new grpc.Metadata()): Promise<number> {
  return new Promise((resolve) => client[method](req, metadata, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) => resolve(err === null ? 0 : err.code)));
}

// ---------------------------------------------------------------- configuration

test("configuration errors name the flag and the file, never a token", () => {
  const serve = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", "off", ...args], { encoding: "utf8", timeout: 10_000, env: { ...process.env, ...env } });
  const cases: [string[], RegExp][] = [
    [["--tls-client-ca", ca.cert], /--tls-client-ca needs --tls-cert and --tls-key/],
    [["--replication-tls-cert", client.cert], /--replication-tls-cert and --replication-tls-key go together/],
    [["--tls-cert", serverA.cert, "--tls-key", join(dir, "missing.key")], /--tls-key \(RIPPLECACHE_TLS_KEY\): cannot read .*missing\.key/],
    [["--tls-cert", serverB.cert, "--tls-key", serverA.key], /--tls-cert\/--tls-key: cannot load: .*key values mismatch/],
    [["--auth-token-file", join(dir, "missing.token")], /--auth-token-file: cannot read .*missing\.token/],
  ];
  for (const [args, message] of cases) {
    const r = serve(args, { RIPPLECACHE_ADMIN_TOKEN: "env-admin-token-0c1d" });
    assert.notEqual(r.status, 0, args.join(" "));
    assert.match(r.stderr, message);
    assert.ok(!`${r.stdout}${r.stderr}`.includes("env-admin-token-0c1d"));
  }
});

// ---------------------------------------------------------------- TLS reload

describe("TLS certificates reload without a restart", () => {
  let server: ServerProcess;
  let live: string;

  /** Points the `live` symlink at `target` atomically, as Kubernetes updates a mounted Secret. */
  const swapTo = (target: string) => {
    const tmp = `${live}.tmp`;
    rmSync(tmp, { force: true });
    symlinkSync(target, tmp);
    renameSync(tmp, live);
  };

  before(async () => {
    live = join(dir, "live");
    symlinkSync(join(dir, "a"), live);
    // "bad": B's certificate with A's key, a pair that does not match.
    mkdirSync(join(dir, "bad"));
    writeFileSync(join(dir, "bad", "cert.pem"), readFileSync(serverB.cert));
    writeFileSync(join(dir, "bad", "key.pem"), readFileSync(serverA.key));
    server = await startServer([
      "--tls-cert", join(live, "cert.pem"), "--tls-key", join(live, "key.pem"),
      "--tls-reload-interval", "100", "--request-header-timeout", "1500",
    ]);
  });
  after(async () => {
    await server?.stop();
  });

  test("a swapped symlink serves the new certificate to new connections; open ones keep working; a bad pair is refused and logged", async () => {
    const a = fingerprintOf(serverA.cert);
    const b = fingerprintOf(serverB.cert);
    assert.notEqual(a, b);
    assert.equal(await presentedFingerprint(server.port), a);

    // A connection made with A stays open across the swap.
    const old = http2.connect(`https://127.0.0.1:${server.port}`, { ca: readFileSync(ca.cert) });
    old.on("error", () => {});
    try {
      assert.equal((await h2Json(old, "/ripplecache.v1.CacheService/Set", { key: "tls/reload", value: "YQ==" })).status, 200);

      swapTo(join(dir, "b"));
      await eventually("new connections to present certificate B", () => presentedFingerprint(server.port), (f) => f === b, 10_000);
      assert.ok(records(server, "tls certificate reloaded").some((r) => r.fingerprint === b), "the reload is logged with the new fingerprint");
      // The old connection still works, still on A; a Connect client on a new one works on B.
      const again = await h2Json(old, "/ripplecache.v1.CacheService/Get", { key: "tls/reload" });
      assert.equal(again.status, 200);
      assert.match(again.body, /"found":true/);
      assert.equal((old.socket as tls.TLSSocket).getPeerX509Certificate()!.fingerprint256, a);
      const fresh = createClient(CacheService, createGrpcTransport({ baseUrl: `https://127.0.0.1:${server.port}`, nodeOptions: { ca: readFileSync(ca.cert) } }));
      assert.equal((await fresh.get({ key: "tls/reload" })).found, true);

      // A certificate whose key does not match: logged, and B stays in use.
      swapTo(join(dir, "bad"));
      await eventually("the bad pair to be logged", () => records(server, "tls certificate not reloaded"), (r) => r.length > 0, 10_000);
      assert.equal(await presentedFingerprint(server.port), b, "the previous certificate is kept");
      assert.equal((await fresh.get({ key: "tls/reload" })).found, true);
      const logged = allOutput(server);
      for (const keyFile of [serverA.key, serverB.key]) {
        const body = readFileSync(keyFile, "utf8").split("\n").find((l) => l.length > 40)!;
        assert.ok(!logged.includes(body), "no private key material in the logs");
      }

      // And back to a good pair.
      swapTo(join(dir, "a"));
      await eventually("certificate A again", () => presentedFingerprint(server.port), (f) => f === a, 10_000);
    } finally {
      old.destroy();
    }
  });

  test("a TCP connection that never starts the TLS handshake is closed", async () => {
    const socket = await connectRaw(server.port);
    await closedWithin(socket, 8_000);
  });
});

// ---------------------------------------------------------------- mTLS, replication, tokens

describe("mutual TLS, replication over mutual TLS, tokens", () => {
  const TOKENS = { client: "client-token-5f1c9a", replication: "replication-token-7d2e4b", admin: "admin-token-3a8b6c", wrong: "wrong-token-9e4f2d" };
  let primary: ServerProcess;
  let replica: ServerProcess;
  let wrongToken: ServerProcess;
  let noCert: ServerProcess;
  const tokenFile = (name: keyof typeof TOKENS) => {
    const file = join(dir, `${name}.token`);
    writeFileSync(file, `${TOKENS[name]}\n`);
    return file;
  };
  const replicaArgs = (primaryPort: number, tokenName: keyof typeof TOKENS, withCert: boolean) => [
    "--replica-of", `127.0.0.1:${primaryPort}`, "--replication-heartbeat", "200", "--log-level", "debug",
    "--replication-token-file", tokenFile(tokenName), "--replication-tls-ca", ca.cert,
    ...(withCert ? ["--replication-tls-cert", client.cert, "--replication-tls-key", client.key] : []),
  ];
  const secure = (opts: { cert?: Pair; token?: string; http1?: boolean; grpc?: boolean } = {}) => {
    const nodeOptions = { ca: readFileSync(ca.cert), ...(opts.cert ? { cert: readFileSync(opts.cert.cert), key: readFileSync(opts.cert.key) } : {}) };
    const interceptors: Interceptor[] = opts.token === undefined ? [] : [(next) => (req) => (req.header.set("authorization", `Bearer ${opts.token}`), next(req))];
    const baseUrl = `https://127.0.0.1:${primary.port}`;
    return opts.grpc
      ? createGrpcTransport({ baseUrl, nodeOptions, interceptors })
      : createConnectTransport({ baseUrl, httpVersion: opts.http1 ? "1.1" : "2", nodeOptions, interceptors });
  };

  before(async () => {
    primary = await startServer([
      "--tls-cert", serverA.cert, "--tls-key", serverA.key, "--tls-client-ca", ca.cert,
      "--auth-token-file", tokenFile("client"), "--replication-token-file", tokenFile("replication"), "--admin-token-file", tokenFile("admin"),
      "--replication-heartbeat", "200", "--log-level", "debug",
    ]);
    [replica, wrongToken, noCert] = await Promise.all([
      startServer(replicaArgs(primary.port, "replication", true)),
      startServer(replicaArgs(primary.port, "wrong", true)),
      startServer(replicaArgs(primary.port, "replication", false)),
    ]);
  });
  after(async () => {
    await Promise.all([replica?.stop(), wrongToken?.stop(), noCert?.stop()]);
    await primary?.stop();
  });

  test("mTLS: a client without a certificate, or with one from another CA, is refused; a trusted one is served (gRPC, Connect h2 and h1)", async () => {
    for (const [name, opts] of [
      ["no certificate, Connect h2", {}],
      ["no certificate, Connect h1", { http1: true }],
      ["no certificate, gRPC", { grpc: true }],
      ["untrusted certificate", { cert: rogueClient }],
    ] as const) {
      const c = createClient(CacheService, secure({ ...opts, token: TOKENS.client }));
      const err = await c.set({ key: `mtls/refused/${name}`, value: enc.encode("x") }, { timeoutMs: 5000 }).then(
        () => assert.fail(`${name}: the call succeeded`),
        (e: unknown) => ConnectError.from(e),
      );
      assert.notEqual(err.code, Code.DeadlineExceeded, `${name}: refused at once, not left hanging`);
      // What the client sees depends on how far it got (the TLS alert, EPIPE, a reset stream); the server says why.
      assert.ok(err.message.length > 0, name);
    }
    const handshakes = records(primary, "tls handshake failed").map((r) => String(r.error));
    assert.ok(handshakes.some((e) => /did not return a certificate/i.test(e)), `the server logs (at debug) why: ${handshakes.join("; ")}`);
    // An untrusted certificate, on a raw TLS socket: the server closes the connection without answering.
    for (const alpn of ["http/1.1", "h2"]) {
      const socket = tls.connect({
        host: "127.0.0.1", port: primary.port, ca: readFileSync(ca.cert), ALPNProtocols: [alpn],
        cert: readFileSync(rogueClient.cert), key: readFileSync(rogueClient.key),
      });
      const read = closedWithin(socket as unknown as net.Socket, 5000);
      socket.on("secureConnect", () => socket.write(alpn === "h2" ? PREFACE : "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      assert.equal(await read, "", `${alpn}: nothing served to an untrusted certificate`);
    }
    for (const opts of [{ grpc: true }, { http1: true }, {}]) {
      const c = createClient(CacheService, secure({ ...opts, cert: client, token: TOKENS.client }));
      assert.equal((await c.set({ key: "mtls/ok", value: enc.encode("1") })).applied, true);
      // None of the refused clients' writes reached the cache.
      assert.deepEqual((await c.scan({ prefix: "mtls/refused/" })).entries, []);
    }
    // The client module and the CLI take the same files.
    for (const protocol of ["grpc", "connect"] as const) {
      const cc = new CacheClient({ addr: primary.addr, protocol, httpVersion: protocol === "connect" ? "1.1" : "2", token: TOKENS.client, tls: { caFile: ca.cert, certFile: client.cert, keyFile: client.key } });
      try {
        assert.equal(text((await cc.get("mtls/ok"))!.value), "1");
      } finally {
        cc.close();
      }
    }
    const cli = (extra: string[]) =>
      spawnSync(process.execPath, [CLI, "get", "mtls/ok", "--addr", primary.addr, "--token", TOKENS.client, "--cacert", ca.cert, ...extra], { encoding: "utf8", timeout: 10_000 });
    const ok = cli(["--cert", client.cert, "--key", client.key]);
    assert.equal(ok.stdout, "1", ok.stderr);
    assert.notEqual(cli([]).status, 0, "the CLI without a client certificate is refused");
  });

  test("a replica syncs from a TLS primary that requires client certificates", async () => {
    const writer = createClient(CacheService, secure({ cert: client, token: TOKENS.client, grpc: true }));
    const w = await writer.set({ key: "repl/tls", value: enc.encode("over mTLS") });
    const reader = new CacheClient({ addr: replica.addr, protocol: "grpc", token: TOKENS.replication });
    try {
      // The replica's own port is plaintext here; its data API takes its auth token, which defaults to none.
      const got = await eventually(
        "the replica to serve the write",
        () => reader.rpc.get({ key: "repl/tls", minRevision: w.revision }, { timeoutMs: 2000 }),
        (r) => r.found,
        15_000,
      );
      assert.equal(text(got.value), "over mTLS");
      assert.equal(await readyz(replica), 200);
    } finally {
      reader.close();
    }
  });

  test("a replica with the wrong replication token, or without a client certificate, cannot sync", async () => {
    await eventually(
      "both to be refused twice",
      () => [
        records(wrongToken, "replication link down").filter((r) => /unauthenticated|invalid token/i.test(String(r.error))).length,
        records(noCert, "replication link down").filter((r) => /certificate|alert|ECONNRESET|closed/i.test(String(r.error))).length,
      ],
      ([a, b]) => a >= 2 && b >= 2,
      15_000,
    );
    assert.equal(await readyz(wrongToken), 503);
    assert.equal(await readyz(noCert), 503);
    for (const bad of [wrongToken, noCert]) {
      const c = new CacheClient({ addr: bad.addr, protocol: "grpc" });
      try {
        await expectCode(c.get("repl/tls"), Code.Unavailable, /has not completed its sync/);
      } finally {
        c.close();
      }
    }
  });

  test("a client token cannot call Flush, Promote, ReplicaOf, Digest or Sync: UNAUTHENTICATED, naming the token needed", async () => {
    const transport = secure({ cert: client, token: TOKENS.client, grpc: true });
    const cache = createClient(CacheService, transport);
    const admin = createClient(AdminService, transport);
    const replication = createClient(ReplicationService, transport);
    assert.equal((await cache.get({ key: "mtls/ok" })).found, true, "the client token works for the data API");
    await expectCode(cache.flush({}), Code.Unauthenticated, /invalid token: ripplecache\.v1\.CacheService\/Flush needs the admin token/);
    await expectCode(admin.promote({}), Code.Unauthenticated, /needs the admin token/);
    await expectCode(admin.replicaOf({ primaryAddress: "127.0.0.1:1" }), Code.Unauthenticated, /needs the admin token/);
    await expectCode(admin.digest({}), Code.Unauthenticated, /needs the admin token/);
    const sync = async () => {
      for await (const _ of replication.sync((async function* () {
        yield { kind: { case: "hello" as const, value: { replicationId: "", appliedRevision: 0n, address: "x" } } };
      })(), { timeoutMs: 5000 })) return;
    };
    await expectCode(sync(), Code.Unauthenticated, /ReplicationService\/Sync needs the replication token/);
    // The replication token is no admin token either, and no token at all is refused too.
    await expectCode(createClient(CacheService, secure({ cert: client, token: TOKENS.replication })).flush({}), Code.Unauthenticated);
    await expectCode(createClient(CacheService, secure({ cert: client })).get({ key: "k" }), Code.Unauthenticated, /missing token/);
    assert.equal((await cache.get({ key: "mtls/ok" })).found, true, "nothing was flushed");
    // The admin token can.
    const asAdmin = createClient(AdminService, secure({ cert: client, token: TOKENS.admin }));
    assert.ok((await asAdmin.digest({})).revision > 0n);
  });

  test("no log line of any node contains a token, right or wrong (debug level)", () => {
    const logged = allOutput(primary, replica, wrongToken, noCert);
    assert.ok(logged.length > 0);
    for (const [name, token] of Object.entries(TOKENS)) assert.ok(!logged.includes(token), `the ${name} token appears in a log`);
  });
});

// ---------------------------------------------------------------- limits

describe("limits: streams per connection, header sizes, request sizes", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer([
      "--max-concurrent-streams", "2", "--max-header-bytes", "2KiB",
      "--max-request-bytes", "8KiB", "--max-value-bytes", "4KiB", "--max-key-bytes", "1KiB",
    ]);
  });
  after(async () => {
    await server?.stop();
  });

  test("--max-concurrent-streams: advertised in SETTINGS; streams beyond it are refused (REFUSED_STREAM -> UNAVAILABLE)", async () => {
    const session = http2.connect(server.url);
    session.on("error", () => {});
    try {
      // Four Watch streams sent at once, before the client could read the server's SETTINGS.
      const envelope = Buffer.from([0, 0, 0, 0, 0]); // one empty WatchRequest: every key
      const outcomes = Array.from({ length: 4 }, () => {
        const req = session.request({ ":method": "POST", ":path": "/ripplecache.v1.CacheService/Watch", "content-type": "application/grpc", te: "trailers" });
        req.on("error", () => {});
        req.end(envelope);
        return new Promise<string>((resolve) => {
          req.once("response", () => resolve("open"));
          req.once("close", () => resolve(`reset ${req.rstCode}`));
        });
      });
      const got = await Promise.all(outcomes);
      assert.deepEqual(got.sort(), ["open", "open", `reset ${http2.constants.NGHTTP2_REFUSED_STREAM}`, `reset ${http2.constants.NGHTTP2_REFUSED_STREAM}`]);
      assert.equal(session.remoteSettings.maxConcurrentStreams, 2);
    } finally {
      session.destroy();
    }
    // @grpc/grpc-js, the reference client, is not hurt by the limit: a burst on a fresh channel all succeeds.
    const gj = grpcJsClient(server.addr);
    try {
      assert.deepEqual(await Promise.all(Array.from({ length: 8 }, () => grpcJsCode(gj, "Info", {}))), Array(8).fill(0));
    } finally {
      gj.close();
    }
    // connect-node reports a refused stream as an error naming REFUSED_STREAM (connect-node 2.1.2 gives it
    // the code INTERNAL; the gRPC spec maps REFUSED_STREAM to UNAVAILABLE): the server did nothing, retry.
    const sessions = new GuardedHttp2Sessions(server.url);
    try {
      const c = createClient(CacheService, createGrpcTransport({ baseUrl: server.url, sessionManager: sessions }));
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => c.info({}, { timeoutMs: 5000 })));
      const outcomes = results.map((r) => (r.status === "fulfilled" ? "ok" : ConnectError.from(r.reason).message));
      assert.ok(outcomes.every((o) => o === "ok" || /REFUSED_STREAM/.test(o)), outcomes.join());
      assert.ok(outcomes.includes("ok"), outcomes.join());
    } finally {
      sessions.abort();
    }
  });

  test("--max-header-bytes: HTTP/2 resets the stream (ENHANCE_YOUR_CALM -> RESOURCE_EXHAUSTED), HTTP/1.1 answers 431", async () => {
    // Node applies the limit once the client has acknowledged the server's SETTINGS (before that, its
    // 64 KiB default): each connection is warmed up with a small call first.
    const padded = (bytes: number) => {
      const m = new grpc.Metadata();
      m.set("x-padding", "p".repeat(bytes));
      return m;
    };
    const gj = grpcJsClient(server.addr);
    try {
      assert.equal(await grpcJsCode(gj, "Get", { key: "k" }, padded(1000)), grpc.status.OK, "a header block under the limit is fine");
      await sleep(50);
      assert.equal(await grpcJsCode(gj, "Get", { key: "k" }, padded(4096)), grpc.status.RESOURCE_EXHAUSTED, "grpc-js: RESOURCE_EXHAUSTED");
      assert.equal(await grpcJsCode(gj, "Get", { key: "k" }), grpc.status.OK, "the connection is still usable");
    } finally {
      gj.close();
    }
    // On the wire: RST_STREAM ENHANCE_YOUR_CALM, which connect-node reports naming it (with the code INTERNAL in 2.1.2).
    const session = http2.connect(server.url);
    session.on("error", () => {});
    try {
      assert.equal((await h2Json(session, "/ripplecache.v1.CacheService/Info", {})).status, 200);
      await sleep(50);
      const req = session.request({ ":method": "POST", ":path": "/ripplecache.v1.CacheService/Info", "content-type": "application/json", "x-padding": "p".repeat(4096) });
      req.on("error", () => {});
      req.end("{}");
      await new Promise((r) => req.once("close", r));
      assert.equal(req.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } finally {
      session.destroy();
    }
    const sessions = new GuardedHttp2Sessions(server.url);
    try {
      const c = createClient(CacheService, createConnectTransport({ baseUrl: server.url, httpVersion: "2", sessionManager: sessions }));
      await c.info({});
      await sleep(50);
      await assert.rejects(c.get({ key: "k" }, { headers: { "x-padding": "p".repeat(4096) } }), /ENHANCE_YOUR_CALM/);
    } finally {
      sessions.abort();
    }

    const socket = await connectRaw(server.port);
    const done = closedWithin(socket, 5000);
    socket.write(`POST /ripplecache.v1.CacheService/Get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Padding: ${"p".repeat(4096)}\r\nContent-Length: 2\r\n\r\n{}`);
    assert.match(await done, /^HTTP\/1\.1 431 /);
  });

  test("--max-request-bytes: RESOURCE_EXHAUSTED for Connect (JSON and binary, h1 and h2), gRPC, and messages on Load and Track streams", async () => {
    const big = new Uint8Array(16 * 1024);
    const transports = {
      "connect h1 json": createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", useBinaryFormat: false }),
      "connect h2": createConnectTransport({ baseUrl: server.url, httpVersion: "2" }),
      grpc: createGrpcTransport({ baseUrl: server.url }),
    };
    for (const [name, transport] of Object.entries(transports)) {
      const c = createClient(CacheService, transport);
      await expectCode(c.set({ key: `big/${name}`, value: big }), Code.ResourceExhausted, /8192|exceed|max|large/i);
      assert.equal((await c.get({ key: `big/${name}` })).found, false, `${name}: nothing was written`);
    }
    const c = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
    // Client stream: the second message is too large.
    await expectCode(
      c.load((async function* () {
        yield { key: "load/small", value: enc.encode("ok") };
        yield { key: "load/big", value: big };
      })()),
      Code.ResourceExhausted,
    );
    // Bidi stream: one Track message with too many key bytes.
    const keys = Array.from({ length: 20 }, (_, i) => `${"k".repeat(500)}${i}`);
    const track = async () => {
      for await (const _ of c.track((async function* () {
        yield { kind: { case: "track" as const, value: { keys } } };
        await sleep(5000);
      })(), { timeoutMs: 5000 })) {
        // the first answer would be a Tracked
      }
    };
    await expectCode(track(), Code.ResourceExhausted);
    // Under the limit, the same calls work.
    assert.equal((await c.set({ key: "fits", value: new Uint8Array(4000) })).applied, true);
  });
});

describe("limits: connections", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer(["--max-connections", "3"]);
  });
  after(async () => {
    await server?.stop();
  });

  test("--max-connections: a connection beyond the limit is closed at once; a freed slot is used again", async () => {
    const held = await Promise.all([0, 1, 2].map(() => connectRaw(server.port)));
    try {
      const extra = await connectRaw(server.port);
      assert.equal(await closedWithin(extra, 3000), "", "closed without a byte, long before the 10 s header timeout");
      const c = createClient(CacheService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
      await assert.rejects(c.get({ key: "k" }, { timeoutMs: 2000 }));
      held[0].destroy();
      await eventually("a call to succeed in the freed slot", () => c.get({ key: "k" }, { timeoutMs: 2000 }), () => true, 5000);
      assert.ok(records(server, "connection refused: --max-connections reached").length >= 1, "the refusal is logged");
    } finally {
      for (const s of held) s.destroy();
    }
  });

});

describe("limits: slow and idle clients", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer(["--request-header-timeout", "800", "--idle-timeout", "1500"]);
  });
  after(async () => {
    await server?.stop();
  });

  test("slowloris: silent, preface trickled byte by byte, HTTP/2 headers never finished, HTTP/1.1 headers trickled: all closed", async () => {
    const trickle = (socket: net.Socket, bytes: Buffer, everyMs: number) => {
      let i = 0;
      const timer = setInterval(() => {
        if (i >= bytes.length || socket.destroyed) return clearInterval(timer);
        socket.write(bytes.subarray(i, ++i));
      }, everyMs);
      socket.once("close", () => clearInterval(timer));
    };
    const silent = await connectRaw(server.port);
    const preface = await connectRaw(server.port);
    trickle(preface, PREFACE, 60); // 24 bytes over ~1.4 s: still incomplete at the timeout
    const headers = await connectRaw(server.port);
    // A valid preface and SETTINGS, then a HEADERS frame without END_HEADERS, then CONTINUATION frames, slowly.
    headers.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0), frame(HEADERS, 0, 1, Buffer.from([0x83]))]));
    let n = 0;
    const continuation = setInterval(() => {
      if (headers.destroyed || n++ > 5) return clearInterval(continuation);
      headers.write(frame(CONTINUATION, 0, 1, Buffer.from([0x86])));
    }, 300);
    const h1 = await connectRaw(server.port);
    trickle(h1, Buffer.from("GET /ripplecache.v1.CacheService/Info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"), 50);
    try {
      await Promise.all([silent, preface, headers, h1].map((s) => closedWithin(s, 6000)));
      assert.ok(n <= 6, "closed by the header timeout, not by running out of frames");
    } finally {
      clearInterval(continuation);
      for (const s of [silent, preface, headers, h1]) s.destroy();
    }
  });

  test("an HTTP/1.1 request whose first packet is just \"P\" (as the HTTP/2 preface starts) is still served as HTTP/1.1", async () => {
    const socket = await connectRaw(server.port);
    const done = closedWithin(socket, 5000);
    socket.write("P");
    await sleep(100);
    socket.write("OST /ripplecache.v1.CacheService/Info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert.match(await done, /^HTTP\/1\.1 200 /);
  });

  test("--idle-timeout closes an HTTP/2 connection without streams (GOAWAY); a Watch stream outlives both timeouts", async () => {
    const session = http2.connect(server.url);
    session.on("error", () => {});
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once("close", resolve));
    assert.equal((await h2Json(session, "/ripplecache.v1.CacheService/Info", {})).status, 200);
    assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
    await closed;

    // A Watch open for 3 s (longer than the header and idle timeouts) keeps its connection and gets events.
    const sessions = new GuardedHttp2Sessions(server.url);
    const abort = new AbortController();
    try {
      const c = createClient(CacheService, createGrpcTransport({ baseUrl: server.url, sessionManager: sessions }));
      const stream = c.watch({ target: { case: "prefix", value: "idle/" } }, { signal: abort.signal })[Symbol.asyncIterator]();
      const first = await stream.next();
      assert.equal((first.value as WatchResponse).kind.case, "created");
      await sleep(3000);
      const writer = createClient(CacheService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
      await writer.set({ key: "idle/k", value: enc.encode("v") });
      const next = (await stream.next()).value as WatchResponse;
      assert.equal(next.kind.case, "events");
      abort.abort();
    } finally {
      abort.abort();
      sessions.abort();
    }
  });
});
