import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { Role } from "../src/gen/ripplecache/v1/cache_pb.js";
import { startEtcd, type EtcdProcess } from "./helpers/etcd.js";
import { CLI } from "./helpers/server.js";
import { Cluster, logRecords, pause, resume, sleep, waitConverged, waitFor, type Node } from "./helpers/cluster.js";
import { FailoverWriter, info, leaseIntervals, maxSimultaneousLeases, missingAcked, patientClient, PrimaryMonitor, startCandidate, TEST_TIMINGS, waitOnePrimary } from "./helpers/failover.js";

/**
 * Automatic failover with a real etcd (Debian's etcd-server) and real
 * RippleCache processes: election, kill -9 of the primary, an empty restart,
 * SIGSTOP of the primary past its lease. Figures are printed as "# failover".
 */

/** Generous bound on write unavailability after a kill -9 (expected: lease duration + a retry period, ~1.2 s). */
const MAX_UNAVAILABLE_MS = 10_000;

let etcd: EtcdProcess;
before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  await etcd?.stop();
});

const becamePrimary = (node: Node) => logRecords(node).filter((r) => r.msg === "became primary").length;

test("three candidates elect one primary; kill -9 of it: another takes over, no acknowledged write is lost, never two primaries; an empty restart does not win", async () => {
  const cluster = new Cluster();
  const nodes: Node[] = [];
  const all: Node[] = [];
  const kills = new Map<Node, number>();
  const monitor = new PrimaryMonitor(() => nodes);
  let writer: FailoverWriter | undefined;
  try {
    nodes.push(...(await Promise.all(["n1", "n2", "n3"].map((id) => startCandidate(cluster, etcd.endpoint, "kill", id)))));
    all.push(...nodes);
    const first = await waitOnePrimary(nodes);
    assert.equal(first.info.term, 1n, "the first election is term 1");
    assert.equal(first.info.coordinator, "etcd");
    assert.equal(first.info.leaseHolderAddress, first.primary.addr);
    // ripplecache info and /metrics show the lease.
    const cliInfo = spawnSync(process.execPath, [CLI, "info", "--addr", first.primary.addr], { encoding: "utf8", timeout: 20_000 });
    const shown = JSON.parse(cliInfo.stdout) as Record<string, unknown>;
    assert.equal(shown.coordinator, "etcd");
    assert.equal(shown.term, 1);
    assert.equal(shown.leaseHolderAddress, first.primary.addr);
    assert.ok(Number(shown.leaseValidMs) > 0);
    const metrics = await (await fetch(`http://127.0.0.1:${first.primary.server.adminPort}/metrics`)).text();
    assert.match(metrics, /^ripplecache_coordination_lease_held(\{[^}]*\})? 1$/m);
    assert.match(metrics, /^ripplecache_replication_term(\{[^}]*\})? 1$/m);
    assert.match(metrics, /^ripplecache_coordination_elections_total(\{[^}]*\})? 1$/m);

    writer = new FailoverWriter(() => nodes, "k/");
    await writer.waitAcks(200);
    const killedAt = performance.now();
    kills.set(first.primary, Date.now());
    first.primary.server.proc.kill("SIGKILL");
    await writer.waitAcks(200);
    const unavailableMs = writer.maxAckGap(killedAt, performance.now());
    const second = await waitOnePrimary(nodes);
    assert.notEqual(second.primary, first.primary);
    assert.equal(second.info.term, 2n);
    process.stdout.write(`# failover: kill -9 of the primary -> writes (min_replicas 1) unavailable ${unavailableMs.toFixed(0)} ms (lease ${TEST_TIMINGS.leaseDurationMs} ms)\n`);
    assert.ok(unavailableMs < MAX_UNAVAILABLE_MS, `writes unavailable ${unavailableMs} ms`);

    // The killed node comes back empty under the same node id while its peers hold the history.
    const restarted = await startCandidate(cluster, etcd.endpoint, "kill", first.primary.name.split("#")[0]);
    nodes.splice(nodes.indexOf(first.primary), 1, restarted);
    all.push(restarted);
    await writer.waitAcks(100);
    const third = await waitOnePrimary(nodes);
    assert.equal(third.primary, second.primary, "the empty restarted node did not take the lease");
    assert.equal(becamePrimary(restarted), 0);

    // Now kill the second primary: the winner must be the peer that held the history, and again nothing acknowledged is lost.
    const killed2 = performance.now();
    kills.set(second.primary, Date.now());
    second.primary.server.proc.kill("SIGKILL");
    await writer.waitAcks(100);
    const unavailable2 = writer.maxAckGap(killed2, performance.now());
    process.stdout.write(`# failover: second kill -9 -> unavailable ${unavailable2.toFixed(0)} ms\n`);
    await writer.stop();
    const fourth = await waitOnePrimary(nodes);
    assert.equal(fourth.info.term, 3n);
    await waitConverged(nodes.filter((n) => n.server.proc.exitCode === null && n.server.proc.signalCode === null));
    const missing = await missingAcked(fourth.primary, writer.acked);
    process.stdout.write(`# failover: ${writer.acked.size} writes acknowledged with min_replicas 1, ${missing.length} lost, ${writer.errors} refused or failed\n`);
    assert.deepEqual(missing, []);
    // Replicas of the same history continued partially: the surviving replica did not need a snapshot.
    const survivor = nodes.find((n) => n !== fourth.primary && n !== restarted && n.server.proc.exitCode === null);
    if (survivor !== undefined) {
      const resyncs = logRecords(survivor).filter((r) => r.msg === "full resync");
      assert.equal(resyncs.length, 1, "one full resync: the first, from the empty start");
    }
    await monitor.stop();
    assert.ok(monitor.intervals.length > 10, "the monitor saw the primaries");
    const leases = maxSimultaneousLeases(leaseIntervals(all, kills));
    assert.equal(leases.max, 1, `never two nodes holding a valid lease at once: ${leases.overlaps.join("; ")}`);
  } finally {
    await writer?.stop();
    await monitor.stop();
    await cluster.stopAll();
  }
});

test("SIGSTOP of the primary past its lease: it acknowledges nothing afterwards and rejoins as a replica of the new primary", async () => {
  const cluster = new Cluster();
  const nodes: Node[] = [];
  const monitor = new PrimaryMonitor(() => nodes);
  let writer: FailoverWriter | undefined;
  const stale = new Set<ReturnType<typeof patientClient>>();
  try {
    nodes.push(...(await Promise.all(["s1", "s2", "s3"].map((id) => startCandidate(cluster, etcd.endpoint, "stop", id)))));
    const first = await waitOnePrimary(nodes);
    writer = new FailoverWriter(() => nodes, "k/");
    await writer.waitAcks(100);

    // Writes sent to the paused primary wait in its socket; every one must be refused when it wakes.
    const old = first.primary;
    const client = patientClient(old.addr);
    stale.add(client);
    pause(old);
    const pausedAt = performance.now();
    const outcomes: Promise<"ok" | "refused" | string>[] = [];
    for (let i = 0; i < 20; i++) {
      outcomes.push(
        client.rpc.set({ key: `stale/${i}`, value: new TextEncoder().encode("x") }, { timeoutMs: 15_000 }).then(
          () => "ok",
          // The fence's answers only: a timeout would prove nothing.
          (err: unknown) => (err instanceof ConnectError && (err.code === Code.Unavailable || err.code === Code.FailedPrecondition) ? "refused" : String(err)),
        ),
      );
      await sleep(20);
    }
    await writer.waitAcks(100);
    const second = await waitOnePrimary(nodes.filter((n) => n !== old));
    assert.notEqual(second.primary, old);
    const unavailableMs = writer.maxAckGap(pausedAt, performance.now());
    process.stdout.write(`# failover: SIGSTOP of the primary -> writes unavailable ${unavailableMs.toFixed(0)} ms\n`);
    // Paused well past its lease.
    await sleep(Math.max(0, TEST_TIMINGS.leaseDurationMs * 2 - (performance.now() - pausedAt)));
    resume(old);
    const results = await Promise.all(outcomes);
    const acknowledgedAfterExpiry = results.filter((r) => r === "ok").length;
    process.stdout.write(`# failover: writes acknowledged by the paused primary after its lease expired: ${acknowledgedAfterExpiry} of ${results.length}\n`);
    assert.equal(acknowledgedAfterExpiry, 0, `answers: ${results.join(", ")}`);
    assert.deepEqual([...new Set(results)], ["refused"]);

    await writer.waitAcks(50);
    await writer.stop();
    const settled = await waitOnePrimary(nodes);
    assert.equal(settled.primary, second.primary);
    const oldInfo = await info(old);
    assert.equal(oldInfo.role, Role.REPLICA);
    assert.equal(oldInfo.primaryAddress, second.primary.addr);
    assert.ok(oldInfo.term >= second.info.term);
    await waitConverged(nodes);
    assert.deepEqual(await missingAcked(second.primary, writer.acked), []);
    // The stale writes are nowhere.
    const r = await second.primary.client.rpc.getMany({ keys: Array.from({ length: 20 }, (_, i) => `stale/${i}`) });
    assert.equal(r.entries.filter((e) => e.found).length, 0);
    assert.ok(logRecords(old).some((x) => x.msg === "lost the lease"), "the old primary logged why it stepped down");
    await monitor.stop();
    assert.ok(monitor.intervals.length > 10, "the monitor saw the primaries");
    const leases = maxSimultaneousLeases(leaseIntervals(nodes, new Map()));
    assert.equal(leases.max, 1, `never two nodes holding a valid lease at once: ${leases.overlaps.join("; ")}`);
  } finally {
    for (const c of stale) c.close();
    await writer?.stop();
    await monitor.stop();
    await cluster.stopAll();
  }
});

test("a whole group restarted empty elects one of its nodes; an empty node joining a group with data never wins while a peer with data lives", async () => {
  const cluster = new Cluster();
  try {
    const a = await startCandidate(cluster, etcd.endpoint, "empty", "a");
    const first = await waitOnePrimary([a]);
    assert.equal(first.primary, a);
    await a.client.rpc.set({ key: "x", value: new TextEncoder().encode("1") });
    const b = await startCandidate(cluster, etcd.endpoint, "empty", "0-smaller-id");
    await waitOnePrimary([a, b]);
    // b is empty at its start and has the smaller id: a tie-break alone would make it win; data ranks first.
    assert.equal(becamePrimary(b), 0);
    // SIGTERM of the primary hands its lease to b, which holds the history: b takes over at once.
    const stoppedAt = performance.now();
    await a.server.stop("SIGTERM");
    const after = await waitFor("b primary", async () => ((await info(b)).role === Role.PRIMARY ? info(b) : undefined), 10_000);
    process.stdout.write(`# failover: SIGTERM of the primary -> replica primary after ${(performance.now() - stoppedAt).toFixed(0)} ms (lease handed over)\n`);
    assert.ok(logRecords(a).some((r) => r.msg === "handed the lease over"), "SIGTERM hands the lease to the replica");
    assert.equal(after.term, 2n);
    const got = await b.client.get("x");
    assert.equal(new TextDecoder().decode(got?.value), "1");
  } finally {
    await cluster.stopAll();
  }
});

test("planned switchover under load (ripplecache failover --to): no acknowledged write lost, the old primary continues as a replica without a snapshot", async () => {
  const cluster = new Cluster();
  const nodes: Node[] = [];
  const monitor = new PrimaryMonitor(() => nodes);
  let writer: FailoverWriter | undefined;
  try {
    nodes.push(...(await Promise.all(["w1", "w2", "w3"].map((id) => startCandidate(cluster, etcd.endpoint, "switch", id)))));
    const first = await waitOnePrimary(nodes);
    writer = new FailoverWriter(() => nodes, "k/");
    await writer.waitAcks(200);
    const target = nodes.find((n) => n !== first.primary)!;
    const targetId = target.name.split("#")[0];
    // A replica refuses: failover is asked of the primary.
    await assert.rejects(target.client.admin.failover({ to: targetId }), (err: unknown) => err instanceof ConnectError && err.code === Code.FailedPrecondition);
    const started = performance.now();
    const cli = spawnSync(process.execPath, [CLI, "failover", "--to", targetId, "--addr", first.primary.addr], { encoding: "utf8", timeout: 20_000 });
    const tookMs = performance.now() - started;
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, new RegExp(`^${targetId} at ${target.addr} is primary now \\(term 2, every revision up to \\d+\\)`));
    await writer.waitAcks(200);
    const unavailableMs = writer.maxAckGap(started, performance.now());
    process.stdout.write(`# failover: planned switchover -> command took ${tookMs.toFixed(0)} ms (a process start included), longest time without an acknowledged write ${unavailableMs.toFixed(0)} ms\n`);
    assert.ok(unavailableMs < MAX_UNAVAILABLE_MS);
    await writer.stop();
    const second = await waitOnePrimary(nodes);
    assert.equal(second.primary, target);
    assert.equal(second.info.term, 2n);
    await waitConverged(nodes);
    assert.deepEqual(await missingAcked(target, writer.acked), []);
    // The old primary held exactly the handed-over history: it continued partially.
    assert.deepEqual(logRecords(first.primary).filter((r) => r.msg === "full resync"), []);
    assert.ok(logRecords(first.primary).some((r) => r.msg === "handed the lease over"));
    await monitor.stop();
    const leases = maxSimultaneousLeases(leaseIntervals(nodes, new Map()));
    assert.equal(leases.max, 1, leases.overlaps.join("; "));
  } finally {
    await writer?.stop();
    await monitor.stop();
    await cluster.stopAll();
  }
});

test("static mode: promoting the primary changes nothing and says so; promoting a replica whose primary answers makes that primary its replica; an idle new pair shows no lag", async () => {
  const cluster = new Cluster();
  try {
    const { primary, replicas: [replica] } = await cluster.startGroup({ name: "p", args: ["--replication-heartbeat", "200"] }, [{ name: "r", args: ["--replication-heartbeat", "200"] }]);
    await waitFor("the replica streaming", async () => (await info(replica)).linkState === "streaming");
    // Idle, nothing written: several heartbeats later the primary reports no lag in time.
    await sleep(1000);
    const idle = await info(primary);
    assert.equal(idle.replicas.length, 1);
    assert.equal(idle.replicas[0].lagMs, 0n, "an idle new replica is not lagging");
    const before = idle.replicationId;
    const same = await primary.client.admin.promote({});
    assert.equal(same.alreadyPrimary, true);
    assert.equal(same.replicationId, before);
    assert.equal((await info(primary)).replicationId, before);

    await primary.client.set("a", "1");
    const promoted = await replica.client.admin.promote({});
    assert.equal(promoted.alreadyPrimary, false);
    // The old primary is now a replica of the promoted node: one primary, one history.
    const old = await waitFor("the old primary to follow the promoted node", async () => {
      const i = await info(primary);
      return i.role === Role.REPLICA && i.primaryAddress === replica.addr && i.linkState === "streaming" ? i : undefined;
    });
    assert.equal(old.replicationId, promoted.replicationId);
    await assert.rejects(primary.client.set("b", "2"), (err: unknown) => err instanceof ConnectError && err.code === Code.FailedPrecondition);
    await replica.client.set("b", "2");
    await waitConverged([primary, replica]);
  } finally {
    await cluster.stopAll();
  }
});
