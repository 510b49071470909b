import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CacheClient } from "../src/client/client.js";
import { NearCache } from "../src/client/near-cache.js";
import { ResumingWatch } from "../src/client/resuming-watch.js";
import type { ResyncReason } from "../src/gen/ripplecache/v1/cache_pb.js";
import { Cluster, type Node } from "./helpers/cluster.js";
import { startEtcd, type EtcdProcess } from "./helpers/etcd.js";
import { startCandidate, waitOnePrimary } from "./helpers/failover.js";

/**
 * What an application sees across a failover: a CacheClient given every
 * node's address keeps writing (it finds the new primary and retries a write
 * the server did not apply, within the call's deadline), and a ResumingWatch
 * through the same addresses resumes on another node without a resync,
 * because the new primary continues the history the watch followed. Real
 * etcd, real processes, kill -9 of the primary.
 */

/** Deadline of each write: an election (lease 1 s in the tests) fits in it with room to spare. */
const WRITE_DEADLINE_MS = 8000;

let etcd: EtcdProcess;
before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  await etcd?.stop();
});

test("a client and a resuming watch carry on across a kill -9 of the primary: writes continue, the watch resumes without a resync and misses nothing", async () => {
  const cluster = new Cluster();
  const nodes: Node[] = [];
  const client0 = () => new CacheClient({ addr: nodes.map((n) => n.addr).join(","), timeoutMs: WRITE_DEADLINE_MS });
  let writer: CacheClient | undefined;
  let watcher: CacheClient | undefined;
  const stop = new AbortController();
  try {
    nodes.push(...(await Promise.all(["c1", "c2", "c3"].map((id) => startCandidate(cluster, etcd.endpoint, "clients", id)))));
    const first = await waitOnePrimary(nodes);
    // The primary's address first: the client starts there, as one pointed at the primary Service would.
    nodes.sort((a, b) => (a === first.primary ? -1 : b === first.primary ? 1 : 0));
    writer = client0();
    watcher = client0();

    const seen = new Map<string, string>();
    const resyncs: ResyncReason[] = [];
    const watch = new ResumingWatch(watcher, { prefix: "fo/", withValues: true, signal: stop.signal, initialBackoffMs: 50, maxBackoffMs: 500 });
    const watching = (async () => {
      for await (const u of watch) {
        if (u.kind === "resync") resyncs.push(u.reason);
        else for (const e of u.events) seen.set(e.key, new TextDecoder().decode(e.value));
      }
    })();

    // The watch starts from now: wait until it sees a write before counting on it.
    for (let i = 0; !seen.has("fo/ready"); i++) {
      assert.ok(i < 100, "the watch saw nothing");
      await writer.set("fo/ready", `${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const acked = new Map<string, string>();
    const failed: string[] = [];
    const write = async (i: number) => {
      const key = `fo/${i}`;
      try {
        // min_replicas 1: acknowledged only once a replica applied it, so it survives the primary's death.
        const r = await writer!.rpc.set({ key, value: new TextEncoder().encode(`v${i}`), minReplicas: 1 });
        assert.ok(r.replicasAcked >= 1);
        acked.set(key, `v${i}`);
      } catch (err) {
        failed.push(`${key}: ${String(err)}`);
      }
    };
    for (let i = 0; i < 30; i++) await write(i);
    assert.deepEqual(failed, []);
    first.primary.server.proc.kill("SIGKILL");
    for (let i = 30; i < 90; i++) await write(i);
    const second = await waitOnePrimary(nodes.filter((n) => n !== first.primary));
    assert.notEqual(second.primary, first.primary);
    // Writes reach the new primary: named by a replica, or it is the address the client moved on to.
    assert.ok(writer.primaryAddress === undefined || writer.primaryAddress === second.primary.addr, `writes go to ${writer.primaryAddress}`);
    // A write in flight when the primary died has an unknown outcome and is reported; every later one succeeds.
    assert.ok(failed.length <= 1, `writes failed across the failover: ${failed.join("; ")}`);

    const deadline = Date.now() + 15_000;
    while ([...acked.keys()].some((k) => !seen.has(k)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const [k, v] of acked) assert.equal(seen.get(k), v, `the watch saw ${k}`);
    assert.deepEqual(resyncs, [], "the new primary continues the watch's history: no resync");
    assert.ok(watch.reconnects >= 1, "the watch did reconnect (it was on the killed primary)");
    stop.abort();
    await watching;
  } finally {
    stop.abort();
    writer?.close();
    watcher?.close();
    await cluster.stopAll();
  }
});

test("a near cache carries on across a kill -9 of the primary: a key changed on the new primary is not served stale", async () => {
  const cluster = new Cluster();
  const nodes: Node[] = [];
  let writer: CacheClient | undefined;
  let reader: CacheClient | undefined;
  let near: NearCache | undefined;
  try {
    nodes.push(...(await Promise.all(["d1", "d2", "d3"].map((id) => startCandidate(cluster, etcd.endpoint, "near", id)))));
    const first = await waitOnePrimary(nodes);
    nodes.sort((a, b) => (a === first.primary ? -1 : b === first.primary ? 1 : 0));
    const addrs = nodes.map((n) => n.addr).join(",");
    writer = new CacheClient({ addr: addrs, timeoutMs: WRITE_DEADLINE_MS });
    reader = new CacheClient({ addr: addrs, timeoutMs: WRITE_DEADLINE_MS });
    near = new NearCache(reader, { initialBackoffMs: 50, maxBackoffMs: 500 });
    await writer.rpc.set({ key: "nc/k", value: new TextEncoder().encode("before"), minReplicas: 1 });
    assert.equal(new TextDecoder().decode((await near.get("nc/k"))!.value), "before");
    assert.equal(new TextDecoder().decode((await near.get("nc/k"))!.value), "before");
    assert.ok(near.stats.hits >= 1, "the second read is served from the local copy");

    first.primary.server.proc.kill("SIGKILL");
    await waitOnePrimary(nodes.filter((n) => n !== first.primary));
    const written = await writer.rpc.set({ key: "nc/k", value: new TextEncoder().encode("after"), minReplicas: 1 });
    assert.ok(written.replicasAcked >= 1);
    // The near cache reconnects to a live node, re-tracks its key since the revision it saw, and is told of the change.
    const value = async () => new TextDecoder().decode((await near!.get("nc/k"))?.value ?? new Uint8Array());
    const deadline = Date.now() + 15_000;
    let got = await value().catch(() => "");
    while (got !== "after" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      got = await value().catch(() => "");
    }
    assert.equal(got, "after");
    assert.ok(near.stats.reconnects >= 1, "the near cache reconnected");
  } finally {
    near?.close();
    writer?.close();
    reader?.close();
    await cluster.stopAll();
  }
});
