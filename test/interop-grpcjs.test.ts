// Interop: the real server called by @grpc/grpc-js, the reference Node gRPC
// client, with messages built by @grpc/proto-loader from the repository's
// .proto files (not from our generated code).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ROOT, startServer, type ServerProcess } from "./helpers/server.js";

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
  includeDirs: [join(ROOT, "proto")],
};

type Client = grpc.Client & Record<string, Function>;
type Msg = Record<string, any>;

function loadClient(file: string, pkg: string[], service: string, addr: string): Client {
  const def = protoLoader.loadSync(file, LOADER_OPTIONS);
  let ns: any = grpc.loadPackageDefinition(def);
  for (const part of pkg) ns = ns[part];
  const Ctor = ns[service] as grpc.ServiceClientConstructor;
  return new Ctor(addr, grpc.credentials.createInsecure()) as unknown as Client;
}

function call(client: Client, method: string, req: Msg): Promise<Msg> {
  return new Promise((resolve, reject) => {
    client[method](req, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, res: Msg) => (err ? reject(err) : resolve(res)));
  });
}

/** Resolves with the ServiceError a call fails with; fails the test when it succeeds. */
async function callError(client: Client, method: string, req: Msg): Promise<grpc.ServiceError> {
  try {
    const res = await call(client, method, req);
    assert.fail(`${method}(${JSON.stringify(req)}) succeeded with ${JSON.stringify(res)}, expected an error`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    return err as grpc.ServiceError;
  }
}

/**
 * The status message of a failed call. The server (connect-node) percent-encodes
 * grpc-message with encodeURIComponent, so ":" "/" "," and the like arrive as
 * %3A %2F %2C; grpc-js decodes with decodeURI, which leaves those escapes in
 * `details` ("key is empty%3A give ..."). The gRPC spec wants every %XX decoded,
 * as grpcio and grpc-go do: decode the rest here.
 */
function message(err: grpc.ServiceError): string {
  return decodeURIComponent(err.details);
}

let server: ServerProcess;
let cache: Client;
let health: Client;

before(async () => {
  server = await startServer();
  cache = loadClient("ripplecache/v1/cache.proto", ["ripplecache", "v1"], "CacheService", server.addr);
  health = loadClient("grpc/health/v1/health.proto", ["grpc", "health", "v1"], "Health", server.addr);
});

after(async () => {
  cache?.close();
  health?.close();
  await server?.stop();
});

test("Set then Get returns the value, revision, flags and TTL", async () => {
  const set = await call(cache, "Set", { key: "gj/a", value: Buffer.from("hello"), flags: 7, ttl_ms: "60000" });
  assert.equal(set.applied, true);
  assert.match(set.revision, /^[1-9][0-9]*$/);

  const got = await call(cache, "Get", { key: "gj/a" });
  assert.equal(got.found, true);
  assert.deepEqual(got.value, Buffer.from("hello"));
  assert.equal(got.revision, set.revision);
  assert.equal(got.flags, 7);
  const ttl = Number(got.ttl_ms);
  assert.ok(ttl > 55_000 && ttl <= 60_000, `ttl_ms ${got.ttl_ms}`);

  // Binary values survive byte for byte.
  const binary = Buffer.from([0, 255, 1, 254, 0x80, 0x7f, 0, 0]);
  await call(cache, "Set", { key: "gj/bin", value: binary });
  assert.deepEqual((await call(cache, "Get", { key: "gj/bin" })).value, binary);
});

test("Get of a missing key is a miss, not an error", async () => {
  const got = await call(cache, "Get", { key: "gj/missing" });
  assert.equal(got.found, false);
  assert.equal(got.value.length, 0);
  assert.equal(got.revision, "0");
  assert.equal(got.ttl_ms, "0");
});

test("conditional Set: if_absent, if_present, if_revision", async () => {
  const first = await call(cache, "Set", { key: "gj/cond", value: Buffer.from("1"), if_absent: true });
  assert.equal(first.applied, true);
  const again = await call(cache, "Set", { key: "gj/cond", value: Buffer.from("2"), if_absent: true });
  assert.deepEqual({ applied: again.applied, revision: again.revision }, { applied: false, revision: first.revision });

  const absent = await call(cache, "Set", { key: "gj/cond-none", value: Buffer.from("x"), if_present: true });
  assert.deepEqual({ applied: absent.applied, revision: absent.revision }, { applied: false, revision: "0" });

  const stale = await call(cache, "Set", { key: "gj/cond", value: Buffer.from("3"), if_revision: String(Number(first.revision) + 1000) });
  assert.equal(stale.applied, false);
  const cas = await call(cache, "Set", { key: "gj/cond", value: Buffer.from("4"), if_revision: first.revision });
  assert.equal(cas.applied, true);
  assert.ok(Number(cas.revision) > Number(first.revision));
  assert.deepEqual((await call(cache, "Get", { key: "gj/cond" })).value, Buffer.from("4"));
});

test("SetMany applies entries in order and GetMany answers in request order", async () => {
  const res = await call(cache, "SetMany", {
    entries: [
      { key: "gj/m1", value: Buffer.from("one") },
      { key: "gj/m2", value: Buffer.from("two"), flags: 2 },
      { key: "gj/m1", value: Buffer.from("uno") },
      { key: "gj/m2", value: Buffer.from("dos"), if_absent: true },
    ],
  });
  assert.deepEqual(res.results.map((r: Msg) => r.applied), [true, true, true, false]);
  const revs = res.results.map((r: Msg) => Number(r.revision));
  assert.ok(revs[0] < revs[1] && revs[1] < revs[2], `revisions ${revs}`);
  assert.equal(revs[3], revs[1], "a SetMany entry whose condition fails reports the key's current revision");

  const many = await call(cache, "GetMany", { keys: ["gj/m2", "gj/nope", "gj/m1", "gj/m2"] });
  assert.deepEqual(
    many.entries.map((e: Msg) => [e.key, e.found, e.value.toString()]),
    [
      ["gj/m2", true, "two"],
      ["gj/nope", false, ""],
      ["gj/m1", true, "uno"],
      ["gj/m2", true, "two"],
    ],
  );
  assert.equal(many.entries[0].flags, 2);
  assert.equal(many.entries[2].revision, String(revs[2]));
});

test("Delete with and without if_revision", async () => {
  const set = await call(cache, "Set", { key: "gj/del", value: Buffer.from("v") });
  const wrong = await call(cache, "Delete", { key: "gj/del", if_revision: String(Number(set.revision) + 1) });
  assert.deepEqual({ deleted: wrong.deleted, revision: wrong.revision }, { deleted: false, revision: set.revision });
  assert.equal((await call(cache, "Get", { key: "gj/del" })).found, true);

  const right = await call(cache, "Delete", { key: "gj/del", if_revision: set.revision });
  assert.equal(right.deleted, true);
  assert.ok(Number(right.revision) > Number(set.revision));
  assert.equal((await call(cache, "Get", { key: "gj/del" })).found, false);

  const gone = await call(cache, "Delete", { key: "gj/del" });
  assert.deepEqual({ deleted: gone.deleted, revision: gone.revision }, { deleted: false, revision: "0" });

  // if_revision 0 is present (proto3 optional) and does not match an existing key.
  await call(cache, "Set", { key: "gj/del0", value: Buffer.from("v") });
  assert.equal((await call(cache, "Delete", { key: "gj/del0", if_revision: "0" })).deleted, false);
  assert.equal((await call(cache, "Delete", { key: "gj/del0" })).deleted, true);
});

test("Increment: creates, adds, goes negative; FAILED_PRECONDITION and OUT_OF_RANGE", async () => {
  const created = await call(cache, "Increment", { key: "gj/n", delta: "5" });
  assert.equal(created.value, "5");
  const added = await call(cache, "Increment", { key: "gj/n", delta: "-12" });
  assert.equal(added.value, "-7");
  assert.ok(Number(added.revision) > Number(created.revision));
  assert.deepEqual((await call(cache, "Get", { key: "gj/n" })).value, Buffer.from("-7"));

  await call(cache, "Set", { key: "gj/text", value: Buffer.from("abc") });
  const notInt = await callError(cache, "Increment", { key: "gj/text", delta: "1" });
  assert.equal(notInt.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(message(notInt), 'value of key "gj/text" is not a decimal integer');

  await call(cache, "Set", { key: "gj/max", value: Buffer.from("9223372036854775807") });
  const overflow = await callError(cache, "Increment", { key: "gj/max", delta: "1" });
  assert.equal(overflow.code, grpc.status.OUT_OF_RANGE);
  assert.match(message(overflow), /overflows int64/);
  // Large int64 deltas travel exactly (beyond 2^53).
  const big = await call(cache, "Increment", { key: "gj/max", delta: "-9223372036854775807" });
  assert.equal(big.value, "0");
  const min = await call(cache, "Increment", { key: "gj/min", delta: "-9223372036854775808" });
  assert.equal(min.value, "-9223372036854775808");
  assert.equal((await callError(cache, "Increment", { key: "gj/min", delta: "-1" })).code, grpc.status.OUT_OF_RANGE);
});

test("Touch sets and removes a TTL; a missing key is not found", async () => {
  const set = await call(cache, "Set", { key: "gj/touch", value: Buffer.from("v") });
  assert.equal((await call(cache, "Get", { key: "gj/touch" })).ttl_ms, "0");

  const touched = await call(cache, "Touch", { key: "gj/touch", ttl_ms: "30000" });
  assert.equal(touched.found, true);
  assert.ok(Number(touched.revision) > Number(set.revision));
  const got = await call(cache, "Get", { key: "gj/touch" });
  assert.ok(Number(got.ttl_ms) > 25_000 && Number(got.ttl_ms) <= 30_000, `ttl_ms ${got.ttl_ms}`);
  assert.deepEqual(got.value, Buffer.from("v"));

  assert.equal((await call(cache, "Touch", { key: "gj/touch", ttl_ms: "0" })).found, true);
  assert.equal((await call(cache, "Get", { key: "gj/touch" })).ttl_ms, "0");

  const missing = await call(cache, "Touch", { key: "gj/touch-missing", ttl_ms: "1000" });
  assert.deepEqual({ found: missing.found, revision: missing.revision }, { found: false, revision: "0" });
});

test("Scan pages through a prefix with cursors; keys_only drops values", async () => {
  const keys = Array.from({ length: 25 }, (_, i) => `gj/scan/${String(i).padStart(2, "0")}`);
  await call(cache, "SetMany", { entries: keys.map((key) => ({ key, value: Buffer.from(`v-${key}`) })) });
  await call(cache, "Set", { key: "gj/scanx", value: Buffer.from("not under the prefix") });

  const seen: string[] = [];
  let cursor = "";
  let pages = 0;
  do {
    const page = await call(cache, "Scan", { prefix: "gj/scan/", cursor, limit: 10 });
    pages++;
    assert.ok(page.entries.length <= 10, `page of ${page.entries.length}`);
    for (const e of page.entries) {
      assert.equal(e.found, true);
      assert.equal(e.value.toString(), `v-${e.key}`);
      seen.push(e.key);
    }
    cursor = page.next_cursor;
    assert.ok(pages < 20, "scan does not end");
  } while (cursor !== "");
  assert.ok(pages >= 3, `25 keys at 10 per page took ${pages} pages`);
  assert.deepEqual([...seen].sort(), keys);

  const keysOnly = await call(cache, "Scan", { prefix: "gj/scan/", limit: 1000, keys_only: true });
  assert.equal(keysOnly.next_cursor, "");
  assert.deepEqual(keysOnly.entries.map((e: Msg) => e.key).sort(), keys);
  assert.ok(keysOnly.entries.every((e: Msg) => e.value.length === 0 && Number(e.revision) > 0));

  const bad = await callError(cache, "Scan", { prefix: "gj/", cursor: "not-a-cursor" });
  assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
});

test("Load streams entries in and reports count and bytes", async () => {
  const entries = Array.from({ length: 50 }, (_, i) => ({ key: `gj/load/${i}`, value: Buffer.alloc(100 + i, i), ttl_ms: "0", flags: i }));
  const res = await new Promise<Msg>((resolve, reject) => {
    const stream = cache.Load({ deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null, r: Msg) => (err ? reject(err) : resolve(r)));
    for (const e of entries) stream.write(e);
    stream.end();
  });
  const bytes = entries.reduce((n, e) => n + Buffer.byteLength(e.key) + e.value.length, 0);
  assert.deepEqual({ count: res.count, bytes: res.bytes }, { count: "50", bytes: String(bytes) });

  const got = await call(cache, "GetMany", { keys: ["gj/load/0", "gj/load/49"] });
  assert.deepEqual(got.entries[0].value, entries[0].value);
  assert.deepEqual(got.entries[1].value, entries[49].value);
  assert.equal(got.entries[1].flags, 49);

  // A bad entry fails the load with a message naming it; entries before it stay written.
  const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
    const stream = cache.Load({ deadline: Date.now() + 5000 }, (e: grpc.ServiceError | null, r: Msg) =>
      e ? resolve(e) : reject(new Error(`Load with an empty key succeeded: ${JSON.stringify(r)}`)),
    );
    stream.write({ key: "gj/load2/a", value: Buffer.from("a") });
    stream.write({ key: "gj/load2/b", value: Buffer.from("b") });
    stream.write({ key: "", value: Buffer.from("c") });
    stream.end();
  });
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(message(err), /^entry 3 of the load: key is empty/);
  assert.equal((await call(cache, "Get", { key: "gj/load2/b" })).found, true);
});

test("errors carry gRPC codes and messages", async () => {
  const empty = await callError(cache, "Get", { key: "" });
  assert.equal(empty.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(message(empty), "key is empty: give a key of 1 or more bytes");
  assert.match(empty.message, /^3 INVALID_ARGUMENT: key is empty/);

  assert.equal((await callError(cache, "Set", { key: "", value: Buffer.from("v") })).code, grpc.status.INVALID_ARGUMENT);
  assert.equal((await callError(cache, "Delete", { key: "" })).code, grpc.status.INVALID_ARGUMENT);

  const negative = await callError(cache, "Set", { key: "gj/neg", value: Buffer.from("v"), ttl_ms: "-1" });
  assert.equal(negative.code, grpc.status.INVALID_ARGUMENT);
  assert.match(message(negative), /ttl_ms -1 is invalid/);

  const longKey = await callError(cache, "Set", { key: "k".repeat(4097), value: Buffer.from("v") });
  assert.equal(longKey.code, grpc.status.INVALID_ARGUMENT);
  assert.match(message(longKey), /exceeds max-key-bytes of 4096/);

  const bigValue = await callError(cache, "Set", { key: "gj/big", value: Buffer.alloc(1024 * 1024 + 1) });
  assert.equal(bigValue.code, grpc.status.INVALID_ARGUMENT);
  assert.match(message(bigValue), /exceeds max-value-bytes of 1048576/);

  // A SetMany with one bad entry changes nothing.
  const batch = await callError(cache, "SetMany", { entries: [{ key: "gj/sm-ok", value: Buffer.from("v") }, { key: "" }] });
  assert.equal(batch.code, grpc.status.INVALID_ARGUMENT);
  assert.equal((await call(cache, "Get", { key: "gj/sm-ok" })).found, false);

  // Non-ASCII messages survive the grpc-message percent-encoding.
  await call(cache, "Set", { key: "gj/ключ", value: Buffer.from("x") });
  const unicode = await callError(cache, "Increment", { key: "gj/ключ", delta: "1" });
  assert.equal(message(unicode), 'value of key "gj/ключ" is not a decimal integer');
});

test("an unknown method is UNIMPLEMENTED", async () => {
  const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
    cache.makeUnaryRequest(
      "/ripplecache.v1.CacheService/NoSuchMethod",
      (x: Buffer) => x,
      (x: Buffer) => x,
      Buffer.alloc(0),
      (e, r) => (e ? resolve(e) : reject(new Error(`unknown method answered ${String(r)}`))),
    );
  });
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
});

test("Flush removes every key and Info reports the dataset", async () => {
  const start = await call(cache, "Info", {});
  assert.equal(start.role, "ROLE_PRIMARY");
  assert.equal(start.version, (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version);
  assert.ok(Number(start.keys) > 50, `keys ${start.keys}`);
  assert.ok(Number(start.bytes_used) > 0);
  assert.equal(start.bytes_limit, String(256 * 1024 * 1024));
  assert.ok(Number(start.hits) > 0 && Number(start.misses) > 0);
  assert.ok(Number(start.uptime_ms) >= 0);

  await call(cache, "Get", { key: "gj/a" });
  await call(cache, "Get", { key: "gj/never" });
  const counted = await call(cache, "Info", {});
  assert.equal(Number(counted.hits), Number(start.hits) + 1);
  assert.equal(Number(counted.misses), Number(start.misses) + 1);

  const flushed = await call(cache, "Flush", {});
  assert.ok(Number(flushed.revision) > Number(start.revision));
  const afterFlush = await call(cache, "Info", {});
  assert.equal(afterFlush.keys, "0");
  assert.equal(afterFlush.bytes_used, "0");
  assert.equal(afterFlush.revision, flushed.revision);
  assert.equal((await call(cache, "Get", { key: "gj/a" })).found, false);
});

test("gRPC health Check: SERVING for the server and CacheService, NOT_FOUND otherwise", async () => {
  assert.equal((await call(health, "Check", { service: "" })).status, "SERVING");
  assert.equal((await call(health, "Check", { service: "ripplecache.v1.CacheService" })).status, "SERVING");
  const unknown = await callError(health, "Check", { service: "no.such.Service" });
  assert.equal(unknown.code, grpc.status.NOT_FOUND);
  assert.match(message(unknown), /no\.such\.Service/);
});
