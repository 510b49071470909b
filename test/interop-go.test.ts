// Interop: the real server called by a Go client on grpc-go (Go's own gRPC
// implementation, from Debian's golang-google-grpc-dev), with stubs generated
// at test time by protoc-gen-go and protoc-gen-go-grpc from the repository's
// .proto files: unary calls, server streaming (Watch), client streaming
// (Load), bidi (Track), errors with their codes and messages, a deadline,
// gRPC health and an unknown method.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { buildGoInteropClient } from "./helpers/go.js";
import { startServer, type ServerProcess } from "./helpers/server.js";

let server: ServerProcess | undefined;
let built: { binary: string; dir: string } | undefined;
let steps: Map<string, unknown>;

before(async () => {
  built = buildGoInteropClient();
  server = await startServer();
  let stdout: string;
  try {
    ({ stdout } = await promisify(execFile)(built.binary, [server.addr], { timeout: 20_000, encoding: "utf8" }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`the Go client failed: ${e.message}\nstdout: ${e.stdout}\nstderr: ${e.stderr}\nserver:\n${server.output.join("\n")}`);
  }
  const out = JSON.parse(stdout) as { steps: { step: string; result: unknown }[] };
  steps = new Map(out.steps.map((s) => [s.step, s.result]));
});

after(async () => {
  await server?.stop();
  if (built !== undefined) rmSync(built.dir, { recursive: true, force: true });
});

function result(name: string): unknown {
  assert.ok(steps.has(name), `the Go client reported no step "${name}" (steps: ${[...steps.keys()]})`);
  return steps.get(name);
}

/** Go's encoding/json writes []byte as base64. */
const b64 = (bytes: number[] | string): string => Buffer.from(bytes as never).toString("base64");

test("Go Set and Get: bytes, flags, TTL and revisions round-trip; a miss", () => {
  assert.deepEqual(result("set"), { applied: true, revision: 1 });
  const get = result("get") as { found: boolean; value: string; revision: number; ttl_ms: number; flags: number };
  assert.deepEqual({ ...get, ttl_ms: 0 }, { found: true, value: b64([0, 0x68, 0x69, 0xff]), revision: 1, ttl_ms: 0, flags: 7 });
  assert.ok(get.ttl_ms > 55_000 && get.ttl_ms <= 60_000, `ttl_ms ${get.ttl_ms}`);
  assert.deepEqual(result("miss"), { found: false, revision: 0 });
  assert.deepEqual(result("get_many"), [
    { key: "go/a", found: true, value: b64([0, 0x68, 0x69, 0xff]) },
    { key: "go/missing", found: false, value: null },
  ]);
});

test("Go: int64 extremes, and errors with their codes and messages (OUT_OF_RANGE, INVALID_ARGUMENT, UNIMPLEMENTED)", () => {
  assert.deepEqual(result("increment"), { value: "-9223372036854775807" });
  assert.deepEqual(result("increment_overflow"), { code: "OutOfRange", message: 'increment of key "go/n" by -2 overflows int64' });
  assert.deepEqual(result("empty_key"), { code: "InvalidArgument", message: "key is empty: give a key of 1 or more bytes" });
  assert.deepEqual(result("unimplemented"), { code: "Unimplemented" });
  assert.deepEqual(result("delete"), { deleted: true, revision: 3 });
});

test("Go Watch (server streaming) sees the writes in revision order, with values; a deadline ends a watch with DEADLINE_EXCEEDED", () => {
  assert.deepEqual(result("watch"), [
    { type: "EVENT_TYPE_PUT", key: "go/a", revision: 1, value: b64([0, 0x68, 0x69, 0xff]) },
    { type: "EVENT_TYPE_PUT", key: "go/n", revision: 2, value: b64("-9223372036854775807") },
    { type: "EVENT_TYPE_DELETE", key: "go/a", revision: 3, value: null },
  ]);
  assert.deepEqual(result("deadline"), { code: "DeadlineExceeded" });
});

test("Go Load (client streaming), Track (bidi: tracked, then a pong for the ping) and gRPC health", () => {
  assert.deepEqual(result("load"), { count: 10, bytes: Array.from({ length: 10 }, (_, i) => `go/load/${i}`.length + 10).reduce((a, b) => a + b) });
  assert.deepEqual(result("track"), { tracked_keys: 1, pong_id: 77 });
  assert.deepEqual(result("health"), { status: "SERVING" });
});
