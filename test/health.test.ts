import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient } from "../src/client/client.js";
import { generatePythonStubs, PYTHON } from "./helpers/python.js";
import { ROOT, startServer, freePort } from "./helpers/server.js";
import { eventually } from "./helpers/assert.js";

const SCRIPT = join(ROOT, "test", "python", "health_check.py");
let stubs: string;

/** Health as the kubelet sees it, through Python grpcio. */
function pythonHealth(addr: string, service = ""): string {
  const r = spawnSync(PYTHON, [SCRIPT, stubs, addr, service], { encoding: "utf8", timeout: 15_000 });
  if (r.status !== 0) throw new Error(`health_check.py failed: ${r.stderr}`);
  return r.stdout.trim();
}

async function http(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}



before(() => {
  stubs = generatePythonStubs(["grpc/health/v1/health.proto"]);
});
after(() => rmSync(stubs, { recursive: true, force: true }));

describe("health and readiness", () => {
  test("a replica is NOT_SERVING until its first sync, then SERVING; /livez stays 200 throughout", async () => {
    const primaryPort = await freePort();
    const replica = await startServer(["--replica-of", `127.0.0.1:${primaryPort}`]);
    let primary: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      assert.equal(pythonHealth(replica.addr), "NOT_SERVING");
      assert.equal(pythonHealth(replica.addr, "ripplecache.v1.CacheService"), "NOT_SERVING");
      assert.equal(pythonHealth(replica.addr, "no.such.Service"), "NOT_FOUND");
      assert.equal(pythonHealth(replica.addr, "liveness"), "SERVING", "liveness never fails for a missing peer");
      const ready = await http(replica.adminPort, "/readyz");
      assert.equal(ready.status, 503);
      assert.match(ready.body, /has not completed its first sync/);
      assert.equal((await http(replica.adminPort, "/livez")).status, 200, "a missing primary is no reason to restart");

      primary = await startServer(["--port", String(primaryPort)]);
      await eventually("replica health", () => pythonHealth(replica.addr), (s) => s === "SERVING");
      assert.equal((await http(replica.adminPort, "/readyz")).status, 200);
      assert.equal(pythonHealth(primary.addr), "SERVING");
    } finally {
      await replica.stop();
      await primary?.stop();
    }
  });

  test("a replica that lost its primary too long is not ready", async () => {
    const primary = await startServer();
    const replica = await startServer(["--replica-of", primary.addr, "--replica-unready-after", "500", "--replication-heartbeat", "100"]);
    try {
      await eventually("replica health", () => pythonHealth(replica.addr), (s) => s === "SERVING");
      await primary.stop("SIGKILL");
      await eventually("replica readiness", () => http(replica.adminPort, "/readyz"), (r) => r.status === 503);
      assert.match((await http(replica.adminPort, "/readyz")).body, /lost its primary/);
      assert.equal(pythonHealth(replica.addr), "NOT_SERVING");
      assert.equal((await http(replica.adminPort, "/livez")).status, 200);
    } finally {
      await replica.stop();
      await primary.stop();
    }
  });

  test("SIGTERM: not ready at once, in-flight and new calls served during the drain, streams end UNAVAILABLE, exit 0", async () => {
    const server = await startServer(["--drain-period", "1500", "--shutdown-timeout", "3000"]);
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      await client.set("drain/a", "1");
      const watch = client.rpc.watch({ target: { case: "prefix", value: "drain/" } });
      const it = watch[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.kind.case, "created");
      async function* slow() {
        for (let i = 0; i < 5; i++) {
          yield { key: `drain/slow/${i}`, value: new Uint8Array(1) };
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const inFlight = client.rpc.load(slow());
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      const exit = server.stop("SIGTERM");
      const notReady = await eventually("readiness after SIGTERM", () => http(server.adminPort, "/readyz"), (r) => r.status === 503, 1000);
      assert.match(notReady.body, /draining/);
      assert.ok(Date.now() - t0 < 1000, "readiness flips at once");
      assert.equal(pythonHealth(server.addr), "NOT_SERVING");
      // Still serving while draining.
      assert.equal((await client.set("drain/b", "2")).applied, true);
      assert.equal((await inFlight).count, 5n);
      // The watch saw the writes, then ends with UNAVAILABLE once the drain period is over.
      let end: unknown;
      try {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          // events of drain/slow/* and drain/b
        }
      } catch (err) {
        end = err;
      }
      assert.ok(end instanceof ConnectError, `the watch ended with ${String(end)}`);
      assert.equal(end.code, Code.Unavailable);
      assert.ok(Date.now() - t0 >= 1400, "streams end after the drain period");
      assert.equal(await exit, 0);
    } finally {
      client.close();
      await server.stop("SIGKILL");
    }
  });

  test("/metrics is Prometheus text with the cache counters", async () => {
    const server = await startServer();
    const client = new CacheClient({ addr: server.addr });
    try {
      await client.set("m", "1");
      await client.get("m");
      await client.get("none");
      const m = await http(server.adminPort, "/metrics");
      assert.equal(m.status, 200);
      assert.match(m.body, /^# TYPE ripplecache_cache_hits_total counter$/m);
      assert.match(m.body, /^ripplecache_cache_hits_total 1$/m);
      assert.match(m.body, /^ripplecache_cache_misses_total 1$/m);
      assert.match(m.body, /^ripplecache_cache_keys 1$/m);
      assert.equal((await http(server.adminPort, "/nope")).status, 404);
    } finally {
      client.close();
      await server.stop();
    }
  });
});
