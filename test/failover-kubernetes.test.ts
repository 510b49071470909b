import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { after, before, test } from "node:test";
import { ROLE_LABEL } from "../src/coordination/kubernetes.js";
import { Cluster, waitConverged, waitFor, type Node } from "./helpers/cluster.js";
import { FakeKube } from "./helpers/fake-kube.js";
import { alive, FailoverWriter, leaseIntervals, maxSimultaneousLeases, missingAcked, PrimaryMonitor, TEST_TIMINGS, waitOnePrimary } from "./helpers/failover.js";

/**
 * The Kubernetes coordinator with three real RippleCache processes. No
 * Kubernetes API server can run on these machines: helpers/fake-kube.ts
 * serves the Lease and Pod endpoints with real resourceVersion conflicts.
 */

const NS = "ns";
const kube = new FakeKube();
before(() => kube.start());
after(() => kube.stop());

function startPod(cluster: Cluster, id: string): Promise<Node> {
  kube.addPod(NS, id);
  return cluster.start(
    id,
    [
      "--coordinator", "kubernetes",
      "--group", "kube",
      "--node-id", id,
      "--pod-name", id,
      "--kubernetes-namespace", NS,
      "--lease-duration", String(TEST_TIMINGS.leaseDurationMs),
      "--renew-deadline", String(TEST_TIMINGS.renewDeadlineMs),
      "--retry-period", String(TEST_TIMINGS.retryPeriodMs),
      "--replication-heartbeat", "200",
    ],
    { KUBECONFIG: kube.kubeconfigFile(NS) },
  );
}

const id = (n: Node) => n.name.split("#")[0];

test("kubernetes: one primary per Lease, its pod labelled primary and the others replica; kill -9 of it moves the Lease and the label, no acknowledged write lost", async () => {
  const cluster = new Cluster();
  const nodes: Node[] = [];
  const monitor = new PrimaryMonitor(() => nodes);
  let writer: FailoverWriter | undefined;
  try {
    nodes.push(...(await Promise.all(["k1", "k2", "k3"].map((i) => startPod(cluster, i)))));
    const first = await waitOnePrimary(nodes);
    assert.equal(first.info.coordinator, "kubernetes");
    const lease = kube.leases.get(`${NS}/ripplecache-kube`);
    assert.ok(lease !== undefined, "the group's Lease exists");
    assert.equal((lease.spec as { holderIdentity?: string }).holderIdentity, id(first.primary));
    assert.equal((lease.spec as { leaseTransitions?: number }).leaseTransitions, 1);
    await waitFor("pod labels", () => nodes.every((n) => kube.podLabel(NS, id(n), ROLE_LABEL) === (n === first.primary ? "primary" : "replica")), 10_000);

    writer = new FailoverWriter(() => nodes, "k/");
    await writer.waitAcks(150);
    const killedAt = performance.now();
    const kills = new Map([[first.primary, Date.now()]]);
    first.primary.server.proc.kill("SIGKILL");
    await writer.waitAcks(150);
    const unavailableMs = writer.maxAckGap(killedAt, performance.now());
    process.stdout.write(`# failover (kubernetes): kill -9 of the primary -> writes unavailable ${unavailableMs.toFixed(0)} ms\n`);
    await writer.stop();
    const second = await waitOnePrimary(nodes);
    assert.equal(second.info.term, 2n);
    assert.equal((kube.leases.get(`${NS}/ripplecache-kube`)?.spec as { leaseTransitions?: number } | undefined)?.leaseTransitions, 2);
    await waitFor("the new primary's pod labelled primary", () => kube.podLabel(NS, id(second.primary), ROLE_LABEL) === "primary", 10_000);
    const live = nodes.filter(alive);
    await waitConverged(live);
    assert.deepEqual(await missingAcked(second.primary, writer.acked), []);
    await monitor.stop();
    const leases = maxSimultaneousLeases(leaseIntervals(nodes, kills));
    assert.equal(leases.max, 1, leases.overlaps.join("; "));
  } finally {
    await writer?.stop();
    await monitor.stop();
    await cluster.stopAll();
  }
});
