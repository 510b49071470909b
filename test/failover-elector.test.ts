import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LeaderElector, outranks, type Rank } from "../src/coordination/elector.js";
import { EtcdLock } from "../src/coordination/etcd.js";
import { KubernetesLock } from "../src/coordination/kubernetes.js";
import type { LeaseRecord, ResourceLock } from "../src/coordination/lock.js";
import { startEtcd, type EtcdProcess } from "./helpers/etcd.js";
import { FakeKube } from "./helpers/fake-kube.js";
import { sleep, waitFor } from "./helpers/cluster.js";

/** Short timings: a test failover takes about a second. */
const TIMINGS = { leaseDurationMs: 900, renewDeadlineMs: 600, retryPeriodMs: 100 };

let etcd: EtcdProcess;
const kube = new FakeKube();
before(async () => {
  etcd = await startEtcd();
  await kube.start();
});
after(async () => {
  await etcd?.stop();
  await kube.stop();
});

/** The same election runs over each backend: a real etcd, and a Kubernetes API with real resourceVersion conflicts (helpers/fake-kube.ts). */
const BACKENDS: { name: string; lock: (group: string, id: string) => ResourceLock }[] = [
  { name: "etcd", lock: (group, id) => new EtcdLock({ endpoints: [etcd.endpoint], group, nodeId: id, callTimeoutMs: 300 }) },
  { name: "kubernetes", lock: (group, id) => new KubernetesLock({ group, nodeId: id, namespace: "ns", podName: "", callTimeoutMs: 300, kubeConfig: kube.kubeConfig("ns") }) },
];

interface TestNode {
  readonly id: string;
  readonly elector: LeaderElector;
  readonly lock: ResourceLock;
  rank: Rank;
  leadingTerms: number[];
  stopped: string[];
  leaders: LeaseRecord[];
}

function node(backend: (typeof BACKENDS)[number], group: string, id: string, rank: Rank): TestNode {
  const lock = backend.lock(group, id);
  const n: TestNode = {
    id,
    lock,
    rank,
    leadingTerms: [],
    stopped: [],
    leaders: [],
    elector: undefined as unknown as LeaderElector,
  };
  (n as { elector: LeaderElector }).elector = new LeaderElector(lock, {
    ...TIMINGS,
    group,
    nodeId: id,
    address: `${id}:1`,
    rank: () => n.rank,
    onStartedLeading: async (term) => {
      n.leadingTerms.push(term);
    },
    onStoppedLeading: (reason) => {
      n.stopped.push(reason);
    },
    onLeader: (lease) => {
      n.leaders.push(lease);
    },
  });
  return n;
}

const holders = (nodes: readonly TestNode[]) => nodes.filter((n) => n.elector.holdsValidLease());

for (const backend of BACKENDS) {
test(`${backend.name}: candidates elect exactly one holder; it keeps the lease while it renews; a released lease goes to the next, with the next term`, async () => {
  const nodes = ["a", "b", "c"].map((id) => node(backend, "g1", id, { term: 0, history: "", revision: 0 }));
  try {
    for (const n of nodes) n.elector.start();
    const first = await waitFor("a holder", () => holders(nodes)[0], 10_000);
    // Every node empty: the tie goes to the smallest node id.
    assert.equal(first.id, "a");
    // Several lease durations: the holder keeps renewing, no one else ever holds it.
    const until = Date.now() + 3 * TIMINGS.leaseDurationMs;
    while (Date.now() < until) {
      assert.deepEqual(holders(nodes).map((n) => n.id), ["a"]);
      await sleep(20);
    }
    assert.deepEqual(first.leadingTerms, [1]);
    await waitFor("the others to see a as leader", () => nodes.slice(1).every((n) => n.leaders.at(-1)?.holder === "a"));
    await first.elector.stop();
    assert.equal(first.elector.holdsValidLease(), false);
    const second = await waitFor("a second holder", () => holders(nodes)[0], 10_000);
    assert.equal(second.id, "b");
    assert.deepEqual(second.leadingTerms, [2]);
  } finally {
    await Promise.all(nodes.map(async (n) => {
      await n.elector.stop(false);
      await n.lock.close();
    }));
  }
});

test(`${backend.name}: an empty candidate does not win while a live peer holds a later history; it wins once that peer is gone`, async () => {
  const empty = node(backend, "g2", "a-empty", { term: 0, history: "", revision: 0 });
  const full = node(backend, "g2", "z-full", { term: 3, history: "h3", revision: 500 });
  try {
    // The peer with data publishes but cannot acquire yet (it is not started until the empty one saw it).
    full.elector.start();
    await waitFor("z-full to hold the lease", () => full.elector.holdsValidLease());
    // Stopped without releasing: its lease must expire first; it stays "live" in the candidate list a while.
    await full.elector.stop(false);
    empty.elector.start();
    const started = Date.now();
    await waitFor("a-empty to take over once z-full is gone", () => empty.elector.holdsValidLease(), 10_000);
    // Not before the lease and the peer's candidacy both lapsed.
    assert.ok(Date.now() - started >= TIMINGS.leaseDurationMs * 0.9, `took over after ${Date.now() - started} ms`);
    assert.deepEqual(empty.leadingTerms, [2]);
  } finally {
    for (const n of [empty, full]) {
      await n.elector.stop(false);
      await n.lock.close();
    }
  }
});

test(`${backend.name}: with a live better peer, the lesser candidate defers even when it starts first`, async () => {
  const lesser = node(backend, "g3", "a", { term: 2, history: "h2", revision: 10 });
  const better = node(backend, "g3", "b", { term: 2, history: "h2", revision: 11 });
  try {
    // The better one publishes first (so it is seen live), then both run.
    await better.lock.publish({ node: "b", incarnation: better.elector.incarnation, address: "b:1", term: 2, history: "h2", revision: 11, beat: 0 });
    lesser.elector.start();
    better.elector.start();
    const winner = await waitFor("a holder", () => holders([lesser, better])[0], 10_000);
    assert.equal(winner.id, "b");
    assert.deepEqual(lesser.leadingTerms, []);
  } finally {
    for (const n of [lesser, better]) {
      await n.elector.stop(false);
      await n.lock.close();
    }
  }
});

test(`${backend.name}: compare-and-swap: of two writers of the same version, one conflicts`, async () => {
  const a = backend.lock("g4", "a");
  const rec: LeaseRecord = { holder: "a", incarnation: "1", address: "a:1", term: 1, leaseDurationMs: 1000, acquireTime: "", renewTime: "" };
  try {
    const v1 = await a.create(rec);
    await assert.rejects(a.create(rec), { name: "ConflictError" });
    const results = await Promise.allSettled([a.update({ ...rec, holder: "b" }, v1), a.update({ ...rec, holder: "c" }, v1)]);
    assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
    assert.equal(outranks({ node: "x", term: 2, history: "", revision: 1 }, { node: "a", term: 1, history: "", revision: 99 }), true);
  } finally {
    await a.close();
  }
});
}
