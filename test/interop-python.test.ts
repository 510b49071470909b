// Interop: the real server called by a Python client on Debian's grpcio
// (gRPC C-core), with stubs generated at test time by Debian's protoc and
// grpc_python_plugin from the repository's .proto files.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { generatePythonStubs, PYTHON } from "./helpers/python.js";
import { ROOT, startServer, type ServerProcess } from "./helpers/server.js";

const SCRIPT = join(ROOT, "test", "python", "interop_client.py");

interface Step {
  step: string;
  result: any;
}

let server: ServerProcess | undefined;
let stubs: string | undefined;
let steps: Map<string, any>;

before(async () => {
  // Fails (never skips) naming the Debian package when protoc,
  // grpc_python_plugin or /usr/bin/python3 with grpcio is missing.
  stubs = generatePythonStubs(["ripplecache/v1/cache.proto", "grpc/health/v1/health.proto"]);
  server = await startServer();
  let stdout: string;
  try {
    ({ stdout } = await promisify(execFile)(PYTHON, [SCRIPT, stubs, server.addr], { timeout: 20_000, encoding: "utf8" }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`the Python client failed: ${e.message}\nstdout: ${e.stdout}\nstderr: ${e.stderr}\nserver:\n${server.output.join("\n")}`);
  }
  const out = JSON.parse(stdout) as { steps: Step[] };
  steps = new Map(out.steps.map((s) => [s.step, s.result]));
});

after(async () => {
  await server?.stop();
  if (stubs !== undefined) rmSync(stubs, { recursive: true, force: true });
});

const b64 = (bytes: number[] | string) => Buffer.from(bytes as any).toString("base64");

function result(name: string): any {
  assert.ok(steps.has(name), `the Python client reported no step "${name}" (steps: ${[...steps.keys()]})`);
  return steps.get(name);
}

test("stubs from Debian's protoc hold the service and health modules", () => {
  const cachePb = readFileSync(join(stubs!, "ripplecache", "v1", "cache_pb2_grpc.py"), "utf8");
  assert.match(cachePb, /class CacheServiceStub/);
  assert.match(readFileSync(join(stubs!, "grpc", "health", "v1", "health_pb2_grpc.py"), "utf8"), /class HealthStub/);
});

test("Python Set and Get: bytes, flags, TTL and revisions round-trip", () => {
  const set = result("set");
  assert.equal(set.applied, true);
  assert.ok(Number.isInteger(set.revision) && set.revision > 0);
  const get = result("get");
  assert.equal(get.found, true);
  assert.equal(get.value, b64([0, ...Buffer.from("hello"), 0xff]));
  assert.equal(get.revision, set.revision);
  assert.equal(get.flags, 42);
  assert.ok(get.ttl_ms > 55_000 && get.ttl_ms <= 60_000, `ttl_ms ${get.ttl_ms}`);
  assert.deepEqual(result("set_if_absent"), { applied: false, revision: set.revision });
});

test("Python Get of a missing key is a miss", () => {
  assert.deepEqual(result("miss"), { found: false, value: "", revision: 0, ttl_ms: 0, flags: 0 });
});

test("Python Increment, int64 extremes, FAILED_PRECONDITION and OUT_OF_RANGE", () => {
  assert.equal(result("incr_create").value, "40");
  assert.equal(result("incr_add").value, "42");
  assert.ok(result("incr_add").revision > result("incr_create").revision);
  assert.equal(result("incr_big").value, "-9223372036854775808");
  // grpcio (C-core) decodes the whole percent-encoded grpc-message.
  assert.deepEqual(result("incr_not_integer"), { code: "FAILED_PRECONDITION", details: 'value of key "py/a" is not a decimal integer' });
  assert.deepEqual(result("incr_overflow"), { code: "OUT_OF_RANGE", details: 'increment of key "py/big" by -1 overflows int64' });
});

test("Python GetMany answers in request order", () => {
  assert.deepEqual(result("get_many"), [
    { key: "py/n", found: true, value: b64("42") },
    { key: "py/none", found: false, value: "" },
    { key: "py/a", found: true, value: b64([0, ...Buffer.from("hello"), 0xff]) },
  ]);
});

test("Python: an empty key is INVALID_ARGUMENT with its message", () => {
  assert.deepEqual(result("empty_key"), { code: "INVALID_ARGUMENT", details: "key is empty: give a key of 1 or more bytes" });
});

test("Python Delete with the proto3 optional if_revision", () => {
  const last = result("incr_add").revision;
  assert.deepEqual(result("delete_wrong_revision"), { deleted: false, revision: last, sent_if_revision: true });
  const del = result("delete");
  assert.equal(del.deleted, true);
  assert.equal(del.sent_if_revision, false);
  assert.ok(del.revision > last);
});

test("Python client-streaming Load and Scan paging", () => {
  assert.deepEqual(result("load"), { count: 20, bytes: Array.from({ length: 20 }, (_, i) => `py/load/${i}`.length + 10).reduce((a, b) => a + b) });
  const scan = result("scan");
  assert.deepEqual(scan.keys, Array.from({ length: 20 }, (_, i) => `py/load/${i}`).sort());
  assert.ok(scan.pages >= 3, `20 keys at 7 per page in ${scan.pages} pages`);
});

test("Python Info", () => {
  const info = result("info");
  assert.equal(info.role, "ROLE_PRIMARY");
  assert.equal(info.version, (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version);
  // py/a, py/big and 20 loaded keys (py/n was deleted).
  assert.equal(info.keys, 22);
});

test("Python gRPC health Check: SERVING, and NOT_FOUND for an unknown service", () => {
  assert.deepEqual(result("health_server"), { status: "SERVING" });
  assert.deepEqual(result("health_cache"), { status: "SERVING" });
  assert.equal(result("health_unknown").code, "NOT_FOUND");
  assert.match(result("health_unknown").details, /no\.such\.Service/);
});
