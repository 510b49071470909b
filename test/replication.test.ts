import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "../src/client/http2-sessions.js";
import type { CacheClient } from "../src/client/client.js";
import { ResyncReason, Role, type WatchResponse } from "../src/gen/ripplecache/v1/cache_pb.js";
import { ReplicationService, SyncRequestSchema, type SyncResponse } from "../src/gen/ripplecache/v1/replication_pb.js";
import { create, toBinary } from "@bufbuild/protobuf";
import * as http2 from "node:http2";
import {
  Cluster,
  expectCode,
  freePort,
  health,
  Load,
  logRecords,
  type Node,
  NOT_SERVING,
  pause,
  resume,
  resyncs,
  SERVING,
  sleep,
  waitConverged,
  waitFor,
  waitReplicasStreaming,
  waitNoExpiring,
  waitServing,
} from "./helpers/cluster.js";

/** The header a replica names its primary with when it refuses a call. */
const PRIMARY_HEADER = "ripplecache-primary";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const enc = new TextEncoder();

/** Every entry a node returns for `prefix`, sorted, as comparable tuples. */
async function dump(client: CacheClient, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of client.scan(prefix, { pageSize: 1000 })) out.push(`${e.key}=${text(e.value)}@${e.revision}/${e.flags}`);
  return out.sort();
}

/** Every write method of CacheService fails on `replica` with FAILED_PRECONDITION naming `primaryAddr`. */
async function expectWritesRefused(replica: Node, primaryAddr: string): Promise<void> {
  const writes: [string, () => Promise<unknown>][] = [
    ["Set", () => replica.client.set("refused", "x")],
    ["SetMany", () => replica.client.rpc.setMany({ entries: [{ key: "refused", value: enc.encode("x") }] })],
    ["Delete", () => replica.client.delete("refused")],
    ["Increment", () => replica.client.increment("refused", 1)],
    ["Touch", () => replica.client.rpc.touch({ key: "refused", ttlMs: 10n })],
    ["Flush", () => replica.client.rpc.flush({})],
  ];
  for (const [name, call] of writes) {
    const err = await expectCode(call(), Code.FailedPrecondition);
    assert.ok(err.rawMessage.includes(primaryAddr), `${name}: message "${err.rawMessage}" should name the primary ${primaryAddr}`);
    assert.equal(err.metadata.get(PRIMARY_HEADER), primaryAddr, `${name}: ${PRIMARY_HEADER} header`);
  }
}

/** Waits until `node` logged a resync since line `since`, and returns the resync messages logged since then. */
async function resyncsAfter(node: Node, since: number, timeoutMs = 10_000): Promise<string[]> {
  await waitFor(`${node.name} to resync`, () => resyncs(node, since).length > 0, timeoutMs);
  // Let a second resync (the thing we check for) show up if there is one.
  await sleep(100);
  return resyncs(node, since).map((r) => r.msg!);
}

/** The first messages of a Watch of every key resumed at (history, revision), summarized. */
async function resumeWatch(node: Node, startHistory: string, startRevision: number): Promise<string[]> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 5000);
  const out: string[] = [];
  try {
    const stream = node.client.rpc.watch({ target: { case: "prefix", value: "" }, startRevision: BigInt(startRevision), startHistory }, { signal: abort.signal });
    for await (const m of stream as AsyncIterable<WatchResponse>) {
      const k = m.kind;
      if (k.case === "created") out.push(`created ${k.value.history}`);
      else if (k.case === "resync") out.push(`resync ${ResyncReason[k.value.reason]}`);
      else if (k.case === "events") out.push(`events from ${k.value.events[0].revision}`);
      else out.push(String(k.case));
      if (out.length === 2) break;
    }
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  return out;
}

function bearer(token: string | undefined): Interceptor[] {
  if (token === undefined) return [];
  return [
    (next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    },
  ];
}

/** Opens ReplicationService.Sync on `node` with a hello for no history and returns the first message (or throws the call's error). */
async function firstSyncMessage(node: Node, token: string | undefined): Promise<SyncResponse> {
  const sessions = new GuardedHttp2Sessions(node.url);
  const client = createClient(ReplicationService, createGrpcTransport({ baseUrl: node.url, sessionManager: sessions, interceptors: bearer(token) }));
  const abort = new AbortController();
  async function* requests() {
    yield { kind: { case: "hello" as const, value: { replicationId: "", appliedRevision: 0n, address: "direct-sync-test" } } };
    await new Promise((resolve) => abort.signal.addEventListener("abort", resolve, { once: true }));
  }
  try {
    for await (const res of client.sync(requests(), { signal: abort.signal, timeoutMs: 5000 })) return res;
    throw new Error("Sync ended without a message");
  } finally {
    abort.abort();
    sessions.abort();
  }
}

/**
 * A Sync stream through `transport` as a replica with no history: reads the
 * snapshot to its end, then calls `write` and returns the first ChangeBatch.
 */
async function firstChangeBatch(transport: Parameters<typeof createClient>[1], write: () => Promise<unknown>): Promise<SyncResponse> {
  const client = createClient(ReplicationService, transport);
  const abort = new AbortController();
  async function* requests() {
    yield { kind: { case: "hello" as const, value: { replicationId: "", appliedRevision: 0n, address: "codec-test" } } };
    await new Promise((resolve) => abort.signal.addEventListener("abort", resolve, { once: true }));
  }
  try {
    for await (const res of client.sync(requests(), { signal: abort.signal, timeoutMs: 10_000 })) {
      if (res.kind.case === "done") await write();
      if (res.kind.case === "changes") return res;
    }
    throw new Error("Sync ended without changes");
  } finally {
    abort.abort();
  }
}

const HEARTBEAT = ["--replication-heartbeat", "200"];

/** Each scenario normally takes 2-10 s; this bounds a hang. */
const SCENARIO_TIMEOUT_MS = 45_000;

/**
 * For a primary whose replica gets paused with SIGSTOP: the primary drops the
 * paused replica's connection (its PING goes unanswered for 500 ms), so the
 * replica must reconnect when it resumes. The replica's own silence timeout (3
 * heartbeats, at least 1 s) is not enough: on SIGCONT it often reads the
 * changes and heartbeats buffered in its socket before its timer fires, and
 * simply carries on streaming.
 */
const PAUSE_DETECTION = ["--replication-heartbeat", "100", "--keepalive-interval", "300", "--keepalive-timeout", "500"];

// Scenarios are independent (each has its own processes, ports and keys);
// two at a time keep the file well under a minute on a loaded 2-core machine.
describe("replication", { concurrency: 2 }, () => {
  test("a primary and two replicas converge under continuous writes", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      // A replica whose primary does not exist yet: not ready, reads refused
      // with UNAVAILABLE, writes refused with FAILED_PRECONDITION.
      const port = await freePort();
      const primaryAddr = `127.0.0.1:${port}`;
      const r1 = await c.startReplica("r1", primaryAddr, HEARTBEAT);
      assert.equal(await health(r1), NOT_SERVING);
      const early = await r1.client.info();
      assert.equal(early.role, Role.REPLICA);
      assert.equal(early.primaryAddress, primaryAddr);
      assert.ok(["connecting", "disconnected"].includes(early.linkState), `link state ${early.linkState}`);
      const unavailable = await expectCode(r1.client.get("x"), Code.Unavailable);
      assert.equal(unavailable.metadata.get(PRIMARY_HEADER), primaryAddr);
      await expectCode(r1.client.rpc.getMany({ keys: ["x"] }), Code.Unavailable);
      await expectCode(r1.client.rpc.scan({}), Code.Unavailable);
      await expectWritesRefused(r1, primaryAddr);

      const [p, r2] = await Promise.all([c.start("primary", ["--port", String(port), ...HEARTBEAT]), c.startReplica("r2", primaryAddr, HEARTBEAT)]);
      assert.equal(p.addr, primaryAddr);
      await Promise.all([waitServing(r1), waitServing(r2)]);

      const load = new Load(p.client, { prefix: "s1/" });
      try {
        // Reads on the replicas work during the load, with read-your-writes
        // (the load never writes s1/ryw).
        for (let i = 0; i < 20; i++) {
          const w = await p.client.set(`s1/ryw`, `x${i}`);
          const g = await (i % 2 === 0 ? r1 : r2).client.rpc.get({ key: "s1/ryw", minRevision: BigInt(w.revision) });
          assert.ok(g.found, `s1/ryw at ${w.revision}`);
          assert.equal(text(g.value), `x${i}`);
          assert.equal(g.revision, BigInt(w.revision));
        }
        await load.waitOps(150);
        // A flush in the middle of the load.
        await p.client.rpc.flush({});
        await load.waitOps(150);
      } finally {
        await load.stop();
      }

      // TTL keys expire on the primary (its sweeper) and the replicas apply the EXPIRE events.
      await waitNoExpiring(p);
      const d = await waitConverged([p, r1, r2]);
      assert.ok(d.keys > 0n, "some keys survive the load");
      const infos = await Promise.all([p, r1, r2].map((n) => n.client.info()));
      const [pi, r1i, r2i] = infos;
      assert.ok(pi.expirations > 0n, "some keys expired");
      for (const [name, i] of [["r1", r1i], ["r2", r2i]] as const) {
        assert.equal(i.role, Role.REPLICA, name);
        assert.equal(i.primaryAddress, p.addr, name);
        assert.equal(i.linkState, "streaming", name);
        assert.equal(i.replicationId, pi.replicationId, `${name} follows the primary's history`);
        assert.equal(i.keys, pi.keys, name);
        assert.equal(i.expirations, pi.expirations, `${name} applied every expiry`);
      }
      // Same entries, values, revisions and flags on every node.
      const [pd, r1d, r2d] = await Promise.all([dump(p.client), dump(r1.client), dump(r2.client)]);
      assert.equal(pd.length, Number(d.keys));
      assert.deepEqual(r1d, pd);
      assert.deepEqual(r2d, pd);

      await expectWritesRefused(r1, p.addr);
      await expectWritesRefused(r2, p.addr);

      const info = await waitReplicasStreaming(p, [r1, r2]);
      for (const r of info.replicas) assert.equal(r.fullResyncs, 1n, `${r.address}: one full resync (its first sync)`);
      assert.deepEqual(resyncs(r1).map((r) => r.msg), ["full resync"]);
      assert.deepEqual(resyncs(r2).map((r) => r.msg), ["full resync"]);
      assert.equal(await health(r1), SERVING);
      assert.equal(await health(r2), SERVING);

      // Graceful stop of the whole cluster.
      const codes = await Promise.all([r1, r2, p].map((n) => n.server.stop("SIGTERM")));
      assert.deepEqual(codes, [0, 0, 0]);
    } finally {
      await c.stopAll();
    }
  });

  test("a replica killed with SIGKILL resyncs fully; one paused briefly resyncs partially", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const hb = ["--replication-heartbeat", "100"];
      const {
        primary: p,
        replicas: [r1, r2],
      } = await c.startGroup({ name: "primary", args: [...PAUSE_DETECTION, "--change-log-events", "200000"] }, [
        { name: "r1", args: hb },
        { name: "r2", args: hb },
      ]);
      await Promise.all([waitServing(r1), waitServing(r2)]);

      const load = new Load(p.client, { prefix: "s2/", delayMs: 1 });
      let r1b: Node;
      try {
        await load.waitOps(100);
        // kill -9 mid-load: the restarted node has no memory, so it needs a full resync.
        await r1.server.stop("SIGKILL");
        const killedAt = load.ops;
        r1b = await c.startReplica("r1-restarted", p, hb);
        await waitServing(r1b);
        assert.ok(load.ops > killedAt, "writes went on while r1 was down");
        assert.deepEqual(resyncs(r1b).map((r) => r.msg), ["full resync"]);
        await load.waitOps(30);

        // A pause well within the backlog: the link drops, the replica (which
        // kept its memory) reconnects and continues its history (partial resync).
        const mark = r2.output.length;
        const before = load.ops;
        pause(r2);
        try {
          await sleep(1200);
        } finally {
          resume(r2);
        }
        assert.ok(load.ops - before > 20, `writes went on during the pause (${load.ops - before})`);
        assert.deepEqual(await resyncsAfter(r2, mark), ["partial resync"]);
        await waitServing(r2);
        await load.waitOps(30);
      } finally {
        await load.stop();
      }
      await waitNoExpiring(p);
      await waitConverged([p, r1b, r2]);
      const info = await waitReplicasStreaming(p, [r1b, r2]);
      const byAddr = new Map(info.replicas.map((r) => [r.address, r]));
      assert.equal(byAddr.get(r1b.addr)?.fullResyncs, 1n);
      assert.equal(byAddr.get(r2.addr)?.fullResyncs, 1n, "the paused replica needed no second full resync");
      assert.deepEqual(await dump(r2.client), await dump(p.client));
    } finally {
      await c.stopAll();
    }
  });

  test("a replica paused longer than the backlog resyncs fully and keeps no stale key", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const {
        primary: p,
        replicas: [r],
      } = await c.startGroup({ name: "primary", args: [...PAUSE_DETECTION, "--change-log-events", "50"] }, [{ name: "r", args: ["--replication-heartbeat", "100"] }]);
      await waitServing(r);
      for (let i = 0; i < 20; i++) await p.client.set(`s2c/k/${i}`, `old${i}`);
      await p.client.set("s2c/victim", "doomed");
      await p.client.set("s2c/ttl", "short", { ttlMs: 300 });
      await waitConverged([p, r]);
      assert.ok(await r.client.get("s2c/victim"));

      const mark = r.output.length;
      pause(r);
      const pausedAt = Date.now();
      try {
        await p.client.delete("s2c/victim");
        await p.client.delete("s2c/k/0");
        await p.client.set("s2c/k/1", "new1");
        // 2 MB: more than the replica's 1 MiB HTTP/2 window, so however much its
        // socket buffers hold, the paused replica cannot have received it all
        // before the primary drops the link.
        for (let b = 0; b < 10; b++) {
          await p.client.rpc.setMany({ entries: Array.from({ length: 50 }, (_, i) => ({ key: `s2c/bulk/${b}/${i}`, value: enc.encode(`b${b}.${i}`.padEnd(4096, ".")) })) });
        }
        const pi = await p.client.info();
        assert.ok(pi.oldestRevision > 30n, `the backlog moved on (oldest ${pi.oldestRevision})`);
        await sleep(Math.max(0, 1200 - (Date.now() - pausedAt)));
      } finally {
        resume(r);
      }
      assert.deepEqual(await resyncsAfter(r, mark), ["full resync"]);
      await waitServing(r);
      await waitNoExpiring(p);
      const d = await waitConverged([p, r]);
      assert.equal(await r.client.get("s2c/victim"), undefined, "a key deleted during the pause is gone");
      assert.equal(await r.client.get("s2c/k/0"), undefined);
      assert.equal(text((await r.client.get("s2c/k/1"))!.value), "new1");
      assert.equal(await r.client.get("s2c/ttl"), undefined, "a key that expired during the pause is gone");
      assert.equal(d.keys, 19n + 500n);
      assert.deepEqual(await dump(r.client), await dump(p.client));
      const info = await waitReplicasStreaming(p, [r]);
      assert.equal(info.replicas[0].fullResyncs, 2n);
    } finally {
      await c.stopAll();
    }
  });

  test("replicas of a primary restarted with SIGKILL resync fully to its new history", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const {
        primary: p,
        replicas: [r1, r2],
      } = await c.startGroup({ name: "primary", args: HEARTBEAT }, [
        { name: "r1", args: [...HEARTBEAT, "--replica-unready-after", "500"] },
        { name: "r2", args: HEARTBEAT },
      ]);
      await Promise.all([waitServing(r1), waitServing(r2)]);

      const old = new Load(p.client, { prefix: "old/", tolerateErrors: true });
      let oldInfo;
      try {
        await old.waitOps(150);
        const marker = await p.client.set("old/marker", "x");
        for (const r of [r1, r2]) assert.ok((await r.client.rpc.get({ key: "old/marker", minRevision: BigInt(marker.revision) })).found);
        oldInfo = await p.client.info();
        await p.server.stop("SIGKILL");
      } finally {
        await old.stop();
      }
      const marks = [r1.output.length, r2.output.length];
      // Without a primary: r1 (--replica-unready-after 500) stops reporting
      // ready; r2 (30 s) stays ready; both still answer reads from what they hold.
      await waitFor("r1 to report NOT_SERVING without its primary", async () => (await health(r1)) === NOT_SERVING, 5000);
      assert.equal(await health(r2), SERVING);
      for (const r of [r1, r2]) {
        assert.ok(await r.client.get("old/marker"));
        assert.notEqual((await r.client.info()).linkState, "streaming");
      }
      // A new primary on the same port: empty, with a new history.
      const p2 = await c.start("primary-restarted", ["--port", String(p.server.port), ...HEARTBEAT]);
      const fresh = new Load(p2.client, { prefix: "new/" });
      try {
        await fresh.waitOps(60);
      } finally {
        await fresh.stop();
      }
      await waitNoExpiring(p2);
      assert.deepEqual(await resyncsAfter(r1, marks[0]), ["full resync"]);
      assert.deepEqual(await resyncsAfter(r2, marks[1]), ["full resync"]);
      await Promise.all([waitServing(r1), waitServing(r2)]);
      const d = await waitConverged([p2, r1, r2]);
      const p2i = await p2.client.info();
      assert.notEqual(p2i.replicationId, oldInfo.replicationId);
      for (const r of [r1, r2]) {
        const i = await r.client.info();
        assert.equal(i.replicationId, p2i.replicationId, `${r.name} follows the new history`);
        assert.equal(i.keys, d.keys);
        assert.deepEqual(await dump(r.client, "old/"), [], `${r.name} keeps no key of the old history`);
        assert.equal(await r.client.get("old/marker"), undefined);
      }
      assert.deepEqual(await dump(r1.client), await dump(p2.client));
      assert.deepEqual(await dump(r2.client), await dump(p2.client));

      // The new primary must account acknowledgements in its own history only:
      // the revision a replica reached in the old history (higher) proves nothing.
      assert.ok(oldInfo.revision > p2i.revision, `the old history (${oldInfo.revision}) is longer than the new (${p2i.revision})`);
      const listed = await waitFor("the new primary to list both replicas streaming", async () => {
        const i = await p2.client.info();
        return i.replicas.length === 2 && i.replicas.every((r) => r.state === "streaming") && i;
      });
      for (const r of listed.replicas) {
        assert.equal(r.fullResyncs, 1n);
        assert.ok(r.ackedRevision <= listed.revision, `${r.address} acknowledged revision ${r.ackedRevision} of a history at ${listed.revision}`);
      }
      pause(r1);
      try {
        const w = await p2.client.rpc.set({ key: "new/durable", value: enc.encode("d"), minReplicas: 2, replicaTimeoutMs: 400 });
        assert.equal(w.replicasAcked, 1, "a paused replica cannot have acknowledged the write");
      } finally {
        resume(r1);
      }
      await waitReplicasStreaming(p2, [r1, r2]);
    } finally {
      await c.stopAll();
    }
  });

  test("promote a replica and re-point the other: partial resync, acknowledged writes kept", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const {
        primary: p,
        replicas: [r1, r2],
      } = await c.startGroup({ name: "primary", args: HEARTBEAT }, [
        { name: "r1", args: HEARTBEAT },
        { name: "r2", args: HEARTBEAT },
      ]);
      await Promise.all([waitServing(r1), waitServing(r2)]);
      const load = new Load(p.client, { prefix: "s4/" });
      try {
        await load.waitOps(150);
      } finally {
        await load.stop();
      }
      await waitNoExpiring(p);
      // Writes acknowledged by both replicas before the switch.
      const acked: { key: string; value: string }[] = [];
      for (let i = 0; i < 5; i++) {
        const key = `s4/acked/${i}`;
        const w = await p.client.rpc.set({ key, value: enc.encode(`a${i}`), minReplicas: 2, replicaTimeoutMs: 5000 });
        assert.equal(w.replicasAcked, 2);
        acked.push({ key, value: `a${i}` });
      }
      await p.client.set("s4/gone", "x");
      const del = await p.client.rpc.delete({ key: "s4/gone", minReplicas: 2, replicaTimeoutMs: 5000 });
      assert.ok(del.deleted);
      assert.equal(del.replicasAcked, 2);
      // Both replicas hold the same history at the same revision (r2 is not ahead of r1).
      const before = await waitConverged([p, r1, r2]);
      const oldId = (await p.client.info()).replicationId;
      await p.server.stop("SIGKILL");

      const promoted = await r1.client.admin.promote({});
      assert.equal(promoted.revision, before.revision);
      assert.notEqual(promoted.replicationId, oldId);
      const r1i = await r1.client.info();
      assert.equal(r1i.role, Role.PRIMARY);
      assert.equal(r1i.replicationId, promoted.replicationId);
      assert.equal(await health(r1), SERVING);
      // A watcher of the old primary resumes on the promoted node: it
      // continues the old history up to the promotion.
      assert.deepEqual(await resumeWatch(r1, oldId, Number(before.revision)), [`created ${promoted.replicationId}`, `events from ${before.revision}`]);

      await expectCode(r2.client.admin.replicaOf({ primaryAddress: r2.addr }), Code.InvalidArgument);
      await expectCode(r2.client.admin.replicaOf({ primaryAddress: "not an address" }), Code.InvalidArgument);
      const mark = r2.output.length;
      await r2.client.admin.replicaOf({ primaryAddress: r1.addr });
      const rs = await resyncsAfter(r2, mark);
      assert.deepEqual(rs, ["partial resync"]);
      assert.equal(resyncs(r2, mark)[0].primary, r1.addr);
      await waitServing(r2);
      for (const { key, value } of acked) {
        assert.equal(text((await r1.client.get(key))!.value), value, `${key} on the promoted node`);
        assert.equal(text((await r2.client.get(key))!.value), value, `${key} on the re-pointed replica`);
      }
      assert.equal(await r2.client.get("s4/gone"), undefined);

      // New writes on the new primary reach the re-pointed replica.
      const more = new Load(r1.client, { prefix: "s4new/" });
      try {
        await more.waitOps(80);
      } finally {
        await more.stop();
      }
      await waitNoExpiring(r1);
      const w = await r1.client.rpc.set({ key: "s4new/last", value: enc.encode("l"), minReplicas: 1, replicaTimeoutMs: 5000 });
      assert.equal(w.replicasAcked, 1);
      const after = await waitConverged([r1, r2]);
      assert.ok(after.revision > before.revision);
      assert.deepEqual(await dump(r2.client), await dump(r1.client));
      const r2i = await r2.client.info();
      assert.equal(r2i.role, Role.REPLICA);
      assert.equal(r2i.primaryAddress, r1.addr);
      assert.equal(r2i.replicationId, promoted.replicationId);
      // Past the promotion, the old history's revisions name writes the new
      // primary never had: a watcher resuming there with them must resync.
      assert.deepEqual(await resumeWatch(r1, oldId, Number(after.revision)), [`created ${promoted.replicationId}`, "resync HISTORY"]);
      assert.deepEqual(await resumeWatch(r1, promoted.replicationId, Number(before.revision) + 1), [`created ${promoted.replicationId}`, `events from ${before.revision + 1n}`]);
      assert.deepEqual(await resumeWatch(r2, promoted.replicationId, Number(before.revision) + 1), [`created ${promoted.replicationId}`, `events from ${before.revision + 1n}`]);
      await expectWritesRefused(r2, r1.addr);
      const info = await waitReplicasStreaming(r1, [r2]);
      assert.equal(info.replicas[0].fullResyncs, 0n, "the re-pointed replica needed no full resync");
    } finally {
      await c.stopAll();
    }
  });

  test("min_revision reads and min_replicas writes", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const {
        primary: p,
        replicas: [r1, r2],
      } = await c.startGroup({ name: "primary", args: HEARTBEAT }, [
        { name: "r1", args: HEARTBEAT },
        { name: "r2", args: HEARTBEAT },
      ]);
      await Promise.all([waitServing(r1), waitServing(r2)]);

      // Read-your-writes: a read with min_revision = the write's revision sees it.
      for (let i = 0; i < 16; i++) {
        const key = `s5/ryw/${i % 4}`;
        const w = await p.client.set(key, `v${i}`);
        const replica = i % 2 === 0 ? r1 : r2;
        const g = await replica.client.rpc.get({ key, minRevision: BigInt(w.revision) });
        assert.ok(g.found, `${key} at ${w.revision}`);
        assert.equal(text(g.value), `v${i}`);
        assert.equal(g.revision, BigInt(w.revision));
        const many = await replica.client.rpc.getMany({ keys: [key], minRevision: BigInt(w.revision) });
        assert.equal(text(many.entries[0].value), `v${i}`);
        const scan = await replica.client.rpc.scan({ prefix: key, minRevision: BigInt(w.revision) });
        assert.equal(text(scan.entries[0].value), `v${i}`);
      }

      // A read for a revision not yet written waits for it.
      const current = (await p.client.info()).revision;
      const pending = r1.client.rpc.get({ key: "s5/future", minRevision: current + 1n }, { timeoutMs: 5000 });
      await sleep(100);
      const fw = await p.client.set("s5/future", "arrived");
      assert.equal(BigInt(fw.revision), current + 1n);
      const fg = await pending;
      assert.ok(fg.found);
      assert.equal(text(fg.value), "arrived");

      // min_replicas = 2 with both replicas up: both acknowledged, so a plain read on each sees it.
      const s = await p.client.rpc.set({ key: "s5/durable", value: enc.encode("d1"), minReplicas: 2, replicaTimeoutMs: 5000 });
      assert.equal(s.replicasAcked, 2);
      for (const r of [r1, r2]) assert.equal(text((await r.client.get("s5/durable"))!.value), "d1");
      const d = await p.client.rpc.delete({ key: "s5/durable", minReplicas: 2, replicaTimeoutMs: 5000 });
      assert.equal(d.replicasAcked, 2);
      for (const r of [r1, r2]) assert.equal(await r.client.get("s5/durable"), undefined);
      // Without min_replicas nothing is awaited or reported.
      assert.equal((await p.client.rpc.set({ key: "s5/plain", value: enc.encode("p") })).replicasAcked, 0);

      // One replica paused: fewer acknowledgements, within replica_timeout_ms.
      pause(r2);
      let paused: { revision: bigint };
      try {
        const t0 = Date.now();
        const w = await p.client.rpc.set({ key: "s5/durable", value: enc.encode("d2"), minReplicas: 2, replicaTimeoutMs: 500 });
        const took = Date.now() - t0;
        assert.equal(w.replicasAcked, 1);
        assert.ok(took >= 450 && took < 3000, `waited ${took} ms for a 500 ms replica_timeout_ms`);
        paused = w;
        const one = await p.client.rpc.set({ key: "s5/one", value: enc.encode("1"), minReplicas: 1, replicaTimeoutMs: 5000 });
        assert.equal(one.replicasAcked, 1);
        // The paused replica cannot answer at all: the call fails at its deadline.
        const t1 = Date.now();
        const err = await r2.client.rpc.get({ key: "s5/durable", minRevision: w.revision }, { timeoutMs: 300 }).then(
          () => assert.fail("a paused replica answered"),
          (e: unknown) => e,
        );
        assert.ok(err instanceof ConnectError && [Code.DeadlineExceeded, Code.Unavailable].includes(err.code), `got ${String(err)}`);
        assert.ok(Date.now() - t1 < 2000);
      } finally {
        resume(r2);
      }
      const r2r = await r2.client.rpc.get({ key: "s5/durable", minRevision: paused.revision }, { timeoutMs: 5000 });
      assert.equal(text(r2r.value), "d2", "the resumed replica catches up");

      // A running replica that lacks the revision (its primary is paused)
      // answers UNAVAILABLE shortly before the call's deadline.
      await waitConverged([p, r1, r2]);
      const latest = (await p.client.info()).revision;
      pause(p);
      try {
        for (const [name, call] of [
          ["Get", (o: { timeoutMs: number }) => r1.client.rpc.get({ key: "s5/one", minRevision: latest + 1n }, o)],
          ["GetMany", (o: { timeoutMs: number }) => r1.client.rpc.getMany({ keys: ["s5/one"], minRevision: latest + 1n }, o)],
          ["Scan", (o: { timeoutMs: number }) => r1.client.rpc.scan({ prefix: "s5/", minRevision: latest + 1n }, o)],
        ] as const) {
          // The server answers 50 ms before the deadline it was sent; on a
          // loaded machine the client's own deadline can fire first
          // (DEADLINE_EXCEEDED), so a few attempts are allowed.
          const seen: string[] = [];
          for (let attempt = 0; attempt < 3 && !seen.includes("unavailable"); attempt++) {
            const t0 = Date.now();
            const err = await call({ timeoutMs: 500 }).then(
              () => assert.fail(`${name} answered a revision the replica does not have`),
              (e: unknown) => e,
            );
            assert.ok(err instanceof ConnectError, String(err));
            assert.ok(Date.now() - t0 < 2000, `${name} answered after ${Date.now() - t0} ms`);
            if (err.code === Code.Unavailable) {
              assert.match(err.rawMessage, /min_revision/);
              seen.push("unavailable");
            } else {
              assert.equal(err.code, Code.DeadlineExceeded, `${name}: ${err.message}`);
              seen.push("deadline");
            }
          }
          assert.ok(seen.includes("unavailable"), `${name} got ${seen.join(", ")}, never UNAVAILABLE`);
        }
        // A revision it has is answered at once.
        assert.ok((await r1.client.rpc.get({ key: "s5/one", minRevision: latest }, { timeoutMs: 400 })).found);
      } finally {
        resume(p);
      }
      await waitConverged([p, r1, r2]);
      const again = await p.client.rpc.set({ key: "s5/durable", value: enc.encode("d3"), minReplicas: 2, replicaTimeoutMs: 5000 });
      assert.equal(again.replicasAcked, 2);
    } finally {
      await c.stopAll();
    }
  });

  test("a replica that stops reading during a full resync and then vanishes is dropped by the primary", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    const sessions: http2.ClientHttp2Session[] = [];
    try {
      const p = await c.start("primary", [...HEARTBEAT, "--keepalive-interval", "300", "--keepalive-timeout", "600"]);
      // Megabytes of snapshot: far more than HTTP/2's flow-control window, so the primary's write blocks.
      const big = new Uint8Array(8192).fill(7);
      for (let i = 0; i < 400; i += 100) await p.client.rpc.setMany({ entries: Array.from({ length: 100 }, (_, j) => ({ key: `big/${i + j}`, value: big })) });
      // A replica over raw HTTP/2: hello, then it never reads.
      const session = http2.connect(p.server.url);
      session.on("error", () => {});
      sessions.push(session);
      const req = session.request({ ":method": "POST", ":path": "/ripplecache.v1.ReplicationService/Sync", "content-type": "application/grpc", te: "trailers" });
      req.on("error", () => {});
      const hello = toBinary(SyncRequestSchema, create(SyncRequestSchema, { kind: { case: "hello", value: { replicationId: "", appliedRevision: 0n, address: "stalled:1" } } }));
      const frame = Buffer.alloc(5 + hello.length);
      frame.writeUInt32BE(hello.length, 1);
      frame.set(hello, 5);
      req.write(frame);
      req.pause();
      await waitFor("the primary to list the stalled replica in its full resync", async () => (await p.client.info()).replicas.some((r) => r.address === "stalled:1" && r.state === "full-resync"));
      await sleep(300);
      // It vanishes (as a killed process would: the connection closes).
      session.destroy();
      await waitFor("the primary to drop the vanished replica", async () => (await p.client.info()).replicas.every((r) => r.address !== "stalled:1"), 5000);
    } finally {
      for (const s of sessions) s.destroy();
      await c.stopAll();
    }
  });

  test("Sync's changes read the same through gRPC and Connect JSON (the primary encodes binary batches by hand)", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const p = await c.start("primary", HEARTBEAT);
      const grpc = createGrpcTransport({ baseUrl: p.url, sessionManager: new GuardedHttp2Sessions(p.url) });
      const json = createConnectTransport({ baseUrl: p.url, httpVersion: "2", useBinaryFormat: false });
      const seen: unknown[] = [];
      for (const [name, transport] of [["grpc", grpc], ["connect+json", json]] as const) {
        const key = `s8/${name}`;
        const batch = await firstChangeBatch(transport, () => p.client.rpc.set({ key, value: enc.encode("v-é"), flags: 7, ttlMs: 60_000n }));
        assert.equal(batch.kind.case, "changes", name);
        const [change] = batch.kind.value.changes;
        assert.equal(change.key, key, name);
        assert.equal(text(change.value), "v-é", name);
        assert.equal(change.flags, 7, name);
        assert.equal(change.type, 1, `${name}: CHANGE_TYPE_PUT`);
        assert.ok(change.expiresAtMs > BigInt(Date.now()), `${name}: expiry ${change.expiresAtMs}`);
        const info = await p.client.info();
        assert.equal(change.revision, info.revision, name);
        seen.push(name);
      }
      assert.deepEqual(seen, ["grpc", "connect+json"]);
    } finally {
      await c.stopAll();
    }
  });

  test("replication and admin tokens", { timeout: SCENARIO_TIMEOUT_MS }, async () => {
    const c = new Cluster();
    try {
      const tokens = { RIPPLECACHE_REPLICATION_TOKEN: "good-replication", RIPPLECACHE_ADMIN_TOKEN: "admin-secret" };
      const {
        primary: p,
        replicas: [bad, good],
      } = await c.startGroup({ name: "primary", args: HEARTBEAT, env: tokens, token: "admin-secret" }, [
        { name: "bad", args: HEARTBEAT, env: { ...tokens, RIPPLECACHE_REPLICATION_TOKEN: "bad-replication" }, token: "admin-secret" },
        { name: "good", args: HEARTBEAT, env: tokens, token: "admin-secret" },
      ]);
      const w = await p.client.set("s6/x", "1");
      await waitServing(good);
      assert.ok((await good.client.rpc.get({ key: "s6/x", minRevision: BigInt(w.revision) })).found);

      // The bad token is refused, again and again: never SERVING, never listed.
      await waitFor(
        "the bad replica to be refused three times",
        async () => {
          assert.equal(await health(bad), NOT_SERVING, "a replica with a bad token must never be ready");
          const refusals = logRecords(bad).filter((r) => r.msg === "replication link down" && /unauthenticated|invalid token/i.test(String(r.error)));
          return refusals.length >= 3;
        },
        10_000,
      );
      assert.equal(await health(bad), NOT_SERVING);
      await expectCode(bad.client.get("s6/x"), Code.Unavailable);
      assert.deepEqual(resyncs(bad), []);
      const info = await waitReplicasStreaming(p, [good]);
      assert.deepEqual(
        info.replicas.map((r) => r.address),
        [good.addr],
      );

      // Sync itself: no token or a wrong one (the admin token included) is UNAUTHENTICATED.
      for (const token of [undefined, "bad-replication", "admin-secret"]) {
        await expectCode(firstSyncMessage(p, token), Code.Unauthenticated);
      }
      const first = await firstSyncMessage(p, "good-replication");
      assert.equal(first.kind.case, "full");

      // Admin RPCs need the admin token: not none, not a wrong one, not the replication token.
      for (const token of [undefined, "wrong", "good-replication"]) {
        const client = c.client(p.addr, token);
        await expectCode(client.admin.digest({}), Code.Unauthenticated);
        await expectCode(client.admin.promote({}), Code.Unauthenticated);
        await expectCode(client.admin.replicaOf({ primaryAddress: good.addr }), Code.Unauthenticated);
        const onReplica = c.client(good.addr, token);
        await expectCode(onReplica.admin.promote({}), Code.Unauthenticated);
        // The data API needs no token here (no auth token is configured).
        assert.equal(text((await client.get("s6/x"))!.value), "1");
      }
      const pi = await p.client.info();
      assert.equal(pi.role, Role.PRIMARY, "a refused Promote/ReplicaOf changed nothing");
      assert.equal((await good.client.info()).role, Role.REPLICA);
      await waitConverged([p, good]);
    } finally {
      await c.stopAll();
    }
  });
});
