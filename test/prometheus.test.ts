import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CacheService } from "../src/gen/ripplecache/v1/cache_pb.js";
import { requireTool, startServer, type ServerProcess, freePort } from "./helpers/server.js";
import { eventually } from "./helpers/assert.js";
import { startPrometheus, type Prometheus } from "./helpers/prometheus.js";

/**
 * A real Prometheus (Debian's `prometheus` package; CI installs it) scrapes
 * the admin ports' /metrics every second, and its HTTP API answers queries
 * for the hit counter and for a replica's lag. A missing prometheus binary
 * fails the test: it never skips.
 */

test("Prometheus scrapes /metrics: the hit counter and a replica's lag through its query API", async () => {
  const binary = requireTool("prometheus", "prometheus");
  const dir = mkdtempSync(join(tmpdir(), "ripplecache-prometheus-"));
  const primary = await startServer();
  let replica: ServerProcess | undefined;
  let prometheus: Prometheus | undefined;
  try {
    replica = await startServer(["--replica-of", primary.addr]);
    const client = createClient(CacheService, createGrpcTransport({ baseUrl: primary.url }));
    await client.set({ key: "p/a", value: new Uint8Array([1]) });
    for (let i = 0; i < 3; i++) assert.equal((await client.get({ key: "p/a" })).found, true);
    await client.get({ key: "p/none" });

    const promPort = await freePort();
    const primaryTarget = `127.0.0.1:${primary.adminPort}`;
    prometheus = await startPrometheus(binary, [primaryTarget, `127.0.0.1:${replica.adminPort}`], promPort, dir);
    const query = prometheus.query;

    const hits = await eventually(
      "the hit counter in Prometheus",
      () => query(`ripplecache_cache_hits_total{instance="${primaryTarget}"}`),
      (r) => r.length === 1 && r[0].value[1] === "3",
    );
    assert.equal(hits[0].metric.job, "ripplecache");

    // A replica that stops reading falls behind: the primary reports its lag in revisions and seconds.
    const replicaAddress = await eventually(
      "the replica connected to the primary",
      () => query(`ripplecache_replication_replica_connected{instance="${primaryTarget}"} == 1`),
      (r) => r.length === 1,
    ).then((r) => r[0].metric.ripplecache_replica_address);
    assert.equal(replicaAddress, replica.addr);
    assert.ok(replica.proc.kill("SIGSTOP"));
    try {
      for (let i = 0; i < 5; i++) await client.set({ key: `p/lag/${i}`, value: new Uint8Array([i]) });
      const lag = await eventually(
        "the replica's lag in Prometheus",
        () => query(`ripplecache_replication_replica_lag{instance="${primaryTarget}",ripplecache_replica_address="${replicaAddress}"}`),
        (r) => r.length === 1 && Number(r[0].value[1]) >= 5,
      );
      assert.equal(lag[0].metric.ripplecache_replica_address, replica.addr);
      await eventually(
        "the replica's lag in seconds",
        () => query(`ripplecache_replication_replica_lag_time_seconds{instance="${primaryTarget}"}`),
        (r) => r.length === 1 && Number(r[0].value[1]) > 0,
      );
    } finally {
      replica.proc.kill("SIGCONT");
    }
    await eventually(
      "the replica caught up",
      () => query(`ripplecache_replication_replica_lag{instance="${primaryTarget}"}`),
      (r) => r.length === 1 && r[0].value[1] === "0",
    );
    // The replica's own /metrics: a replica whose link is up.
    const linkUp = await eventually(
      "the replica's link",
      () => query(`ripplecache_replication_link_up{instance="127.0.0.1:${replica!.adminPort}"}`),
      (r) => r.length === 1 && r[0].value[1] === "1",
    );
    assert.equal(linkUp.length, 1);
  } finally {
    await prometheus?.stop();
    replica?.proc.kill("SIGCONT");
    await replica?.stop();
    await primary.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
