import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { CacheClient, type ClientOptions } from "../src/client/client.js";
import { ResumingWatch, type WatchUpdate } from "../src/client/resuming-watch.js";
import {
  EventType,
  ResyncReason,
  WatchRequestSchema,
  WatchResponseSchema,
  type TrackRequestSchema,
  type WatchResponse,
} from "../src/gen/ripplecache/v1/cache_pb.js";
import { requireTool, ROOT, startServer, type ServerProcess } from "./helpers/server.js";
import { connectH2, eventually, Pushable, RawGrpcCall, sleep, within } from "./helpers/stream.js";
import { expectCode } from "./helpers/assert.js";

type WatchInit = MessageInitShape<typeof WatchRequestSchema>;

const WATCH_PATH = "/ripplecache.v1.CacheService/Watch";
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** A Watch call through the Connect client, read one message at a time with a deadline. */
class Watch {
  readonly controller = new AbortController();
  readonly received: WatchResponse[] = [];
  private readonly it: AsyncIterator<WatchResponse>;

  constructor(client: CacheClient, req: WatchInit) {
    this.it = client.rpc.watch(req, { signal: this.controller.signal })[Symbol.asyncIterator]();
  }

  async next(ms = 5000): Promise<WatchResponse> {
    const r = await within(this.it.next(), ms, "the next watch message");
    if (r.done === true) throw new Error("the watch stream ended");
    this.received.push(r.value);
    return r.value;
  }

  /** Reads the first message, which must be Created; returns its revision. */
  async created(ms = 5000): Promise<number> {
    const m = await this.next(ms);
    assert.equal(m.kind.case, "created", `the first message is Created, got ${m.kind.case}`);
    return Number(m.kind.value.revision);
  }

  /** Reads until an event at or past `revision` (or a Progress/Resync past it) arrived; returns the messages read. */
  async until(revision: number, ms = 5000): Promise<WatchResponse[]> {
    const out: WatchResponse[] = [];
    const deadline = Date.now() + ms;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      out.push(m);
      if (reached(m, revision)) return out;
    }
  }

  cancel(): void {
    this.controller.abort();
  }
}

function reached(m: WatchResponse, revision: number): boolean {
  switch (m.kind.case) {
    case "events":
      return m.kind.value.events.some((e) => Number(e.revision) >= revision);
    case "progress":
    case "resync":
      return Number(m.kind.value.revision) >= revision;
    default:
      return false;
  }
}

/** A compact view of the events in `messages`: [type, key, revision]. */
function events(messages: readonly WatchResponse[]): [string, string, number][] {
  return messages.flatMap((m) => (m.kind.case === "events" ? m.kind.value.events.map((e) => [EventType[e.type], e.key, Number(e.revision)] as [string, string, number]) : []));
}

/** A compact view of every message after Created. */
function summary(messages: readonly WatchResponse[]): unknown[] {
  return messages.map((m) => {
    switch (m.kind.case) {
      case "events":
        return m.kind.value.events.map((e) => `${EventType[e.type]} ${e.key} @${e.revision}`);
      case "resync":
        return `resync ${ResyncReason[m.kind.value.reason]} @${m.kind.value.revision}`;
      case "progress":
        return `progress @${m.kind.value.revision}`;
      case "created":
        return `created @${m.kind.value.revision}`;
      default:
        return "unknown";
    }
  });
}

/**
 * The one rule a watcher relies on: events come in increasing revision order,
 * and a revision of the watched range is never skipped unless a Resync came
 * first (a Resync says "you may have missed anything up to my revision").
 * `changes` are the revisions of every change in the watched range; `from` is
 * the revision the subscriber is in sync with at the start (Created's, for a
 * watch from now).
 */
function assertGapFree(messages: readonly WatchResponse[], changes: readonly number[], from: number): void {
  let covered = from;
  const skipped = (lo: number, hi: number) => changes.filter((r) => r > lo && r < hi);
  for (const m of messages) {
    switch (m.kind.case) {
      case "events":
        for (const e of m.kind.value.events) {
          const r = Number(e.revision);
          assert.ok(r > covered, `event @${r} does not come after @${covered}: ${JSON.stringify(summary(messages))}`);
          assert.deepEqual(skipped(covered, r), [], `revisions between @${covered} and @${r} were skipped without a resync`);
          covered = r;
        }
        break;
      case "resync": {
        const r = Number(m.kind.value.revision);
        assert.ok(r >= covered, `resync @${r} goes back from @${covered}`);
        covered = r;
        break;
      }
      case "progress": {
        const r = Number(m.kind.value.revision);
        assert.deepEqual(skipped(covered, r + 1), [], `progress @${r} claims events up to it were sent, but some were not`);
        covered = Math.max(covered, r);
        break;
      }
      default:
        assert.fail(`unexpected ${m.kind.case} after Created`);
    }
  }
}


/** Opens a watch and resolves with it once Created arrived, or rejects with the call's error. */
async function openWatch(client: CacheClient, req: WatchInit): Promise<Watch> {
  const w = new Watch(client, req);
  try {
    await w.created();
  } catch (err) {
    w.cancel();
    throw err;
  }
  return w;
}

/** Like openWatch, but resolves with undefined when the server has no free stream slot. */
async function tryOpen(client: CacheClient, req: WatchInit): Promise<Watch | undefined> {
  try {
    return await openWatch(client, req);
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.ResourceExhausted) return undefined;
    throw err;
  }
}

const PROTOCOLS: readonly { readonly name: string; readonly options: Omit<ClientOptions, "addr"> }[] = [
  { name: "gRPC", options: { protocol: "grpc" } },
  { name: "Connect HTTP/2", options: { protocol: "connect", httpVersion: "2" } },
  { name: "Connect HTTP/1.1", options: { protocol: "connect", httpVersion: "1.1" } },
  { name: "Connect HTTP/1.1 JSON", options: { protocol: "connect", httpVersion: "1.1", useJson: true } },
  { name: "gRPC-Web HTTP/1.1", options: { protocol: "grpc-web", httpVersion: "1.1" } },
  { name: "gRPC-Web HTTP/2", options: { protocol: "grpc-web", httpVersion: "2" } },
];

describe("Watch", () => {
  let server: ServerProcess;
  let writer: CacheClient;
  before(async () => {
    server = await startServer();
    writer = new CacheClient({ addr: server.addr, protocol: "grpc" });
  });
  after(async () => {
    writer?.close();
    if (server !== undefined) assert.equal(await server.stop(), 0);
  });

  for (const [i, { name, options }] of PROTOCOLS.entries()) {
    test(`replay from start_revision, then live events, over ${name}`, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      const p = `m${i}/`;
      const watches: Watch[] = [];
      try {
        const t0 = Date.now();
        const a = await writer.set(`${p}a`, "one", { flags: 7, ttlMs: 600_000 });
        const b = await writer.set(`${p}b`, "two");
        const other = await writer.set(`other${i}/x`, "elsewhere");
        const ab = await writer.set(`${p}ab`, "three");
        const del = await writer.delete(`${p}a`);
        const now = del.revision;

        const start = BigInt(a.revision);
        const prefixValues = new Watch(client, { target: { case: "prefix", value: p }, startRevision: start, withValues: true });
        const prefixBare = new Watch(client, { target: { case: "prefix", value: p }, startRevision: start });
        const key = new Watch(client, { target: { case: "key", value: `${p}a` }, startRevision: start, withValues: true });
        const everyKey = new Watch(client, { target: { case: "prefix", value: "" }, startRevision: start });
        const unset = new Watch(client, { startRevision: start });
        watches.push(prefixValues, prefixBare, key, everyKey, unset);
        for (const w of watches) assert.equal(await w.created(), now, "Created carries the current revision");

        // Live changes, written after every watch is established.
        const liveAb = await writer.set(`${p}ab`, "live-ab");
        const liveA = await writer.set(`${p}a`, "live-a", { flags: 9 });
        const last = liveA.revision;

        const got = await Promise.all(watches.map((w) => w.until(last)));
        const inPrefix: [string, string, number][] = [
          ["PUT", `${p}a`, a.revision],
          ["PUT", `${p}b`, b.revision],
          ["PUT", `${p}ab`, ab.revision],
          ["DELETE", `${p}a`, del.revision],
          ["PUT", `${p}ab`, liveAb.revision],
          ["PUT", `${p}a`, liveA.revision],
        ];
        assert.deepEqual(events(got[0]), inPrefix);
        assert.deepEqual(events(got[1]), inPrefix);
        assert.deepEqual(events(got[2]), [
          ["PUT", `${p}a`, a.revision],
          ["DELETE", `${p}a`, del.revision],
          ["PUT", `${p}a`, liveA.revision],
        ]);
        const everything: [string, string, number][] = [...inPrefix];
        everything.splice(2, 0, ["PUT", `other${i}/x`, other.revision]);
        assert.deepEqual(events(got[3]), everything, "prefix \"\" is every key");
        assert.deepEqual(events(got[4]), everything, "no target is every key");
        for (const g of got) assert.ok(g.every((m) => m.kind.case === "events"), `only events: ${JSON.stringify(summary(g))}`);

        // Values, flags and expiry only with with_values, and only on PUT.
        const withValues = got[0].flatMap((m) => (m.kind.case === "events" ? m.kind.value.events : []));
        assert.equal(dec(withValues[0].value), "one");
        assert.equal(withValues[0].flags, 7);
        const expires = Number(withValues[0].expiresAtMs);
        assert.ok(expires >= t0 + 600_000 && expires <= Date.now() + 600_000, `expires_at_ms ${expires}`);
        assert.equal(dec(withValues[1].value), "two");
        assert.equal(withValues[1].expiresAtMs, 0n);
        assert.equal(withValues[3].type, EventType.DELETE);
        assert.equal(withValues[3].value.length, 0, "a DELETE has no value");
        assert.equal(dec(withValues[5].value), "live-a");
        assert.equal(withValues[5].flags, 9);
        const keyEvents = got[2].flatMap((m) => (m.kind.case === "events" ? m.kind.value.events : []));
        assert.deepEqual(keyEvents.map((e) => dec(e.value)), ["one", "", "live-a"]);
        for (const g of [got[1], got[3], got[4]]) {
          for (const m of g) {
            for (const e of m.kind.case === "events" ? m.kind.value.events : []) {
              assert.deepEqual([e.value.length, e.flags, e.expiresAtMs], [0, 0, 0n], `no value without with_values (${e.key})`);
            }
          }
        }
      } finally {
        for (const w of watches) w.cancel();
        client.close();
      }
    });
  }

  for (const [i, { name, options }] of PROTOCOLS.entries()) {
    test(`the changes of one SetMany reach a watcher as one message, over ${name}`, async () => {
      // A watcher is woken once per write, after the write: it takes everything queued
      // by then as one batch, rather than one message per key.
      const client = new CacheClient({ addr: server.addr, ...options });
      const p = `batch${i}/`;
      const w = new Watch(client, { target: { case: "prefix", value: p }, withValues: true });
      try {
        await w.created();
        const entries = Array.from({ length: 20 }, (_, j) => ({ key: `${p}${j}`, value: new TextEncoder().encode(`v${j}`) }));
        const res = await writer.rpc.setMany({ entries });
        const revisions = res.results.map((r) => Number(r.revision));
        const got = await w.until(Math.max(...revisions));
        assert.deepEqual(summary(got).length, 1, `one message: ${JSON.stringify(summary(got))}`);
        assert.deepEqual(
          events(got),
          entries.map((e, j) => ["PUT", e.key, revisions[j]]),
        );
      } finally {
        w.cancel();
        client.close();
      }
    });
  }

  test("a watch from now sees only later changes; a start_revision in the future skips changes before it", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      await writer.set("now/a", "old");
      const w = await openWatch(client, { target: { case: "prefix", value: "now/" } });
      const current = Number((await writer.info()).revision);
      const future = new Watch(client, { target: { case: "prefix", value: "now/" }, startRevision: BigInt(current + 2) });
      assert.equal(await future.created(), current);
      const s1 = await writer.set("now/b", "1");
      const s2 = await writer.set("now/c", "2");
      assert.equal(s2.revision, current + 2);
      assert.deepEqual(events(await w.until(s2.revision)), [
        ["PUT", "now/b", s1.revision],
        ["PUT", "now/c", s2.revision],
      ]);
      assert.deepEqual(events(await future.until(s2.revision)), [["PUT", "now/c", s2.revision]]);
      w.cancel();
      future.cancel();
    } finally {
      client.close();
    }
  });

  test("replay hands over to live events without a gap or a duplicate while writes go on", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "connect" });
    const watches: { w: Watch; start: number; created: number }[] = [];
    try {
      const revs: number[] = [];
      const value = new Uint8Array(100);
      const writing = (async () => {
        for (let b = 0; b < 40; b++) {
          const r = await writer.rpc.setMany({ entries: Array.from({ length: 50 }, (_, i) => ({ key: `g/${(b * 50 + i) % 300}`, value })) });
          revs.push(...r.results.map((x) => Number(x.revision)));
        }
      })();
      for (let k = 0; k < 6; k++) {
        // Each watch opens while writes are under way; the replays span more than one 512-event batch.
        await eventually(async () => revs.length >= 250 * (k + 1), 10_000, "the writer to make progress", 2);
        const start = k % 2 === 0 ? 0 : revs[revs.length - 700] ?? revs[0];
        const w = new Watch(client, { target: { case: "prefix", value: "g/" }, startRevision: BigInt(start) });
        watches.push({ w, start, created: await w.created() });
      }
      await writing;
      const last = revs.at(-1)!;
      for (const { w, start, created } of watches) {
        const expected = revs.filter((r) => (start === 0 ? r > created : r >= start));
        const got = await w.until(last, 10_000);
        assert.ok(got.every((m) => m.kind.case === "events"));
        assert.deepEqual(
          events(got).map((e) => e[2]),
          expected,
          `a watch from ${start === 0 ? `now (Created @${created})` : `@${start} (Created @${created})`} gets every change once, in order`,
        );
      }
    } finally {
      for (const { w } of watches) w.cancel();
      client.close();
    }
  });

  test("EXPIRE and DELETE events; a key watch ignores keys that merely share its prefix", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "connect" });
    try {
      const w = await openWatch(client, { target: { case: "key", value: "exp/k" }, progressIntervalMs: 100 });
      await writer.set("exp/k2", "not me");
      const put = await writer.set("exp/k", "v", { ttlMs: 50 });
      // The sweeper removes an unread expired key within about half a second.
      const got = await w.until(put.revision + 1, 5000);
      const evs = events(got);
      assert.deepEqual(evs[0], ["PUT", "exp/k", put.revision]);
      assert.equal(evs.length, 2, JSON.stringify(summary(got)));
      assert.equal(evs[1][0], "EXPIRE");
      assert.equal(evs[1][1], "exp/k");
      assert.ok(evs[1][2] > put.revision);
      w.cancel();
    } finally {
      client.close();
    }
  });

  test("flush: every watcher gets a Resync (FLUSH) with the flush's revision, then later events; replay across a flush too", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      const prefix = await openWatch(client, { target: { case: "prefix", value: "f/" } });
      const key = await openWatch(client, { target: { case: "key", value: "f/a" } });
      const s1 = await writer.set("f/a", "1");
      const flush = Number((await writer.rpc.flush({})).revision);
      const s2 = await writer.set("f/a", "2");
      const expected = [[`PUT f/a @${s1.revision}`], `resync FLUSH @${flush}`, [`PUT f/a @${s2.revision}`]];
      assert.deepEqual(summary(await prefix.until(s2.revision)), expected);
      assert.deepEqual(summary(await key.until(s2.revision)), expected);
      const replay = new Watch(client, { target: { case: "prefix", value: "f/" }, startRevision: BigInt(s1.revision) });
      assert.equal(await replay.created(), s2.revision);
      assert.deepEqual(summary(await replay.until(s2.revision)), expected);
      for (const w of [prefix, key, replay]) w.cancel();
    } finally {
      client.close();
    }
  });

  test("progress: heartbeats at about the interval, with the current revision", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      const w = new Watch(client, { target: { case: "key", value: "hb/quiet" }, progressIntervalMs: 200 });
      const created = await w.created();
      let last = Date.now();
      const gaps: number[] = [];
      for (let i = 0; i < 3; i++) {
        const m = await w.next(3000);
        assert.equal(m.kind.case, "progress");
        assert.equal(Number(m.kind.value.revision), created, "nothing changed: the progress revision is Created's");
        gaps.push(Date.now() - last);
        last = Date.now();
      }
      // Another key changes: the next heartbeat carries the new revision.
      const other = await writer.set("hb/other", "x");
      let m = await w.next(3000);
      if (m.kind.case === "progress" && Number(m.kind.value.revision) < other.revision) m = await w.next(3000); // one sent just before the write
      assert.equal(m.kind.case, "progress");
      assert.equal(Number(m.kind.value.revision), other.revision);
      // Not early (timers never fire early) and not much late (a loaded machine may add some delay).
      for (const g of gaps) assert.ok(g >= 180 && g < 2000, `progress gaps ${gaps.join(", ")} ms for an interval of 200 ms`);
      w.cancel();

      // 0 means the default of 10 s: no heartbeat within a second.
      const quiet = new Watch(client, { target: { case: "key", value: "hb/quiet" } });
      await quiet.created();
      await assert.rejects(quiet.next(600), /timed out/);
      quiet.cancel();
    } finally {
      client.close();
    }
  });

  test("invalid progress_interval_ms or start_revision: INVALID_ARGUMENT (gRPC and Connect)", async () => {
    for (const protocol of ["grpc", "connect"] as const) {
      const client = new CacheClient({ addr: server.addr, protocol });
      try {
        for (const progressIntervalMs of [1, 99, 3_600_001]) {
          await expectCode(new Watch(client, { progressIntervalMs }).next(), Code.InvalidArgument, /progress_interval_ms/);
        }
        await expectCode(new Watch(client, { startRevision: -1n }).next(), Code.InvalidArgument, /start_revision/);
        for (const progressIntervalMs of [100, 3_600_000]) {
          const w = await openWatch(client, { progressIntervalMs });
          w.cancel();
        }
      } finally {
        client.close();
      }
    }
  });

  test("200 concurrent watchers all receive the same write", async () => {
    const clients = [
      new CacheClient({ addr: server.addr, protocol: "grpc" }),
      new CacheClient({ addr: server.addr, protocol: "connect" }),
      new CacheClient({ addr: server.addr, protocol: "grpc-web" }),
      new CacheClient({ addr: server.addr, protocol: "grpc" }),
    ];
    const watches: Watch[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        watches.push(new Watch(clients[i % clients.length], i % 2 === 0 ? { target: { case: "key", value: "fan/k" }, withValues: true } : { target: { case: "prefix", value: "fan/" }, withValues: true }));
      }
      await within(Promise.all(watches.map((w) => w.created(10_000))), 15_000, "200 Created messages");
      const s = await writer.set("fan/k", "hello everyone");
      const got = await Promise.all(watches.map((w) => w.until(s.revision, 10_000)));
      for (const g of got) {
        assert.equal(g.length, 1);
        assert.ok(g[0].kind.case === "events");
        assert.equal(g[0].kind.value.events.length, 1);
        const e = g[0].kind.value.events[0];
        assert.deepEqual([e.type, e.key, Number(e.revision), dec(e.value)], [EventType.PUT, "fan/k", s.revision, "hello everyone"]);
      }
    } finally {
      for (const w of watches) w.cancel();
      for (const c of clients) c.close();
    }
  });

  test("a Python grpcio watcher receives Created and a PUT event", async () => {
    const protoc = requireTool("protoc", "protobuf-compiler");
    const plugin = requireTool("grpc_python_plugin", "protobuf-compiler-grpc");
    const dir = mkdtempSync(join(tmpdir(), "ripplecache-py-"));
    try {
      const gen = spawnSync(protoc, ["-I", join(ROOT, "proto"), `--python_out=${dir}`, `--grpc_python_out=${dir}`, `--plugin=protoc-gen-grpc_python=${plugin}`, "ripplecache/v1/cache.proto"], { encoding: "utf8" });
      assert.equal(gen.status, 0, gen.stderr);
      const py = spawn("/usr/bin/python3", [join(ROOT, "test", "python", "watch_client.py"), dir, server.addr, "py/k", "1"], { stdio: ["ignore", "pipe", "pipe"] });
      const lines: unknown[] = [];
      let stderr = "";
      py.stderr.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => py.once("exit", (code) => resolve(code)));
      try {
        const reader = createInterface({ input: py.stdout });
        const it = reader[Symbol.asyncIterator]();
        const first = await within(it.next(), 10_000, `the Python watcher's Created (stderr: ${stderr})`);
        assert.equal(first.done, false, stderr);
        const created = JSON.parse(first.value as string) as { created: number };
        assert.equal(created.created, Number((await writer.info()).revision));
        const s = await writer.set("py/k", "from node", { flags: 3 });
        const second = await within(it.next(), 10_000, "the Python watcher's event");
        lines.push(JSON.parse(second.value as string));
        assert.deepEqual(lines, [{ type: "EVENT_TYPE_PUT", key: "py/k", revision: s.revision, value: "from node", flags: 3 }]);
        assert.equal(await within(exited, 10_000, "the Python watcher to exit"), 0, stderr);
      } finally {
        py.kill("SIGKILL");
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a @grpc/grpc-js watcher (proto-loader on cache.proto) receives Created and a PUT event", async () => {
    const def = protoLoader.loadSync(join(ROOT, "proto", "ripplecache", "v1", "cache.proto"), { longs: String, enums: String, defaults: true, oneofs: true });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const pkg = grpc.loadPackageDefinition(def) as any;
    const client = new pkg.ripplecache.v1.CacheService(server.addr, grpc.credentials.createInsecure()) as grpc.Client & {
      Watch(req: object): grpc.ClientReadableStream<Record<string, unknown>>;
    };
    try {
      const call = client.Watch({ prefix: "js/", withValues: true });
      const messages: Record<string, unknown>[] = [];
      let wake: (() => void) | undefined;
      call.on("data", (m: Record<string, unknown>) => {
        messages.push(m);
        wake?.();
      });
      call.on("error", () => {
        // cancelled below
      });
      const waitFor = async (n: number) => {
        const deadline = Date.now() + 5000;
        while (messages.length < n) {
          assert.ok(Date.now() < deadline, `timed out waiting for ${n} grpc-js messages`);
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, 100);
          });
        }
      };
      await waitFor(1);
      assert.equal(messages[0].kind, "created");
      assert.equal((messages[0].created as { revision: string }).revision, String((await writer.info()).revision));
      const s = await writer.set("js/k", "grpc-js");
      await waitFor(2);
      assert.equal(messages[1].kind, "events");
      const evs = (messages[1].events as { events: { type: string; key: string; revision: string; value: Buffer }[] }).events;
      assert.deepEqual(
        evs.map((e) => [e.type, e.key, e.revision, e.value.toString()]),
        [["EVENT_TYPE_PUT", "js/k", String(s.revision), "grpc-js"]],
      );
      call.cancel();
    } finally {
      client.close();
    }
  });
});

describe("Watch across histories", () => {
  test("a resume names its history: replayed on the same node, RESYNC (HISTORY) on a restarted one", async () => {
    const first = await startServer();
    let second: ServerProcess | undefined;
    const clients: CacheClient[] = [];
    const connect = (addr: string) => {
      const c = new CacheClient({ addr, protocol: "grpc" });
      clients.push(c);
      return c;
    };
    try {
      const c1 = connect(first.addr);
      const revs: number[] = [];
      for (let i = 0; i < 6; i++) revs.push((await c1.set(`h/${i}`, `v${i}`)).revision);
      const live = new Watch(c1, { target: { case: "prefix", value: "h/" }, progressIntervalMs: 100 });
      const m = await live.next();
      assert.equal(m.kind.case, "created");
      const history = m.kind.value.history;
      assert.match(history, /^[0-9a-f]{40}$/, "a primary names its history (its replication id)");
      assert.equal(history, (await c1.info()).replicationId);
      const progress = await live.next(3000);
      assert.equal(progress.kind.case, "progress");
      assert.equal(progress.kind.value.history, history, "progress names the history too");
      live.cancel();

      // Same node, same history: the replay, no resync.
      const same = new Watch(c1, { target: { case: "prefix", value: "h/" }, startRevision: BigInt(revs[3]), startHistory: history });
      assert.equal(await same.created(), revs[5]);
      assert.deepEqual(summary(await same.until(revs[5])), [[`PUT h/3 @${revs[3]}`, `PUT h/4 @${revs[4]}`, `PUT h/5 @${revs[5]}`]]);
      same.cancel();
      // A history this node never had: nothing to replay.
      const bogus = new Watch(c1, { target: { case: "prefix", value: "h/" }, startRevision: 2n, startHistory: "0".repeat(40) });
      assert.equal(await bogus.created(), revs[5]);
      const r = await bogus.next();
      assert.equal(r.kind.case, "resync");
      assert.equal(r.kind.value.reason, ResyncReason.HISTORY);
      assert.equal(Number(r.kind.value.revision), revs[5]);
      assert.equal(r.kind.value.history, history);
      bogus.cancel();

      // The node restarts empty: revisions start again from 0 with other changes.
      assert.equal(await first.stop("SIGKILL"), null);
      second = await startServer();
      const c2 = connect(second.addr);
      const reused = await c2.set("h/new", "other data");
      assert.ok(reused.revision < revs[5]);
      // Resuming after the last revision seen, which this history has not reached yet.
      const resumed = new Watch(c2, { target: { case: "prefix", value: "h/" }, startRevision: BigInt(revs[5] + 1), startHistory: history });
      assert.equal(await resumed.created(), reused.revision);
      const rr = await resumed.next();
      assert.equal(rr.kind.case, "resync", "a resume into another history is told so, not replayed or left waiting");
      assert.equal(rr.kind.value.reason, ResyncReason.HISTORY);
      assert.equal(Number(rr.kind.value.revision), reused.revision);
      const newHistory = rr.kind.value.history;
      assert.match(newHistory, /^[0-9a-f]{40}$/);
      assert.notEqual(newHistory, history);
      // Every change after the resync is owed, though its revision is below start_revision.
      const next = await c2.set("h/after", "x");
      assert.ok(next.revision <= revs[5]);
      assert.deepEqual(summary(await resumed.until(next.revision)), [[`PUT h/after @${next.revision}`]]);
      resumed.cancel();
    } finally {
      for (const c of clients) c.close();
      await first.stop("SIGKILL");
      if (second !== undefined) assert.equal(await second.stop(), 0);
    }
  });
});

describe("ResumingWatch (the client's watch that reconnects)", () => {
  test("resumes across a server restart: the events before, RESYNC (HISTORY), the events after, none twice", async () => {
    const first = await startServer();
    let second: ServerProcess | undefined;
    const port = first.port;
    const client = new CacheClient({ addr: first.addr, protocol: "grpc" });
    const stop = new AbortController();
    const updates: string[] = [];
    const watch = new ResumingWatch(client, { prefix: "rw/", withValues: true, initialBackoffMs: 50, maxBackoffMs: 200, signal: stop.signal });
    const consumed = (async () => {
      for await (const u of watch as AsyncIterable<WatchUpdate>) {
        if (u.kind === "events") for (const e of u.events) updates.push(`${EventType[e.type]} ${e.key}=${dec(e.value)} @${e.revision}`);
        else updates.push(`resync ${ResyncReason[u.reason]} @${u.revision}`);
      }
    })();
    const writers: CacheClient[] = [];
    const write = async (addr: string, key: string, value: string) => {
      const w = new CacheClient({ addr });
      writers.push(w);
      return (await w.set(key, value)).revision;
    };
    try {
      // Created comes first: wait until the watch is live before writing.
      await eventually(async () => watch.position().history !== "", 5000, "the watch to be created");
      const a = await write(first.addr, "rw/a", "1");
      const b = await write(first.addr, "rw/b", "2");
      await eventually(async () => updates.length >= 2, 5000, "the two events");
      assert.deepEqual(updates, [`PUT rw/a=1 @${a}`, `PUT rw/b=2 @${b}`]);
      const oldHistory = watch.position().history;

      assert.equal(await first.stop("SIGKILL"), null);
      second = await startServer(["--port", String(port)]);
      await eventually(async () => updates.length >= 3, 10_000, "a resync after the restart");
      assert.deepEqual(updates.slice(2), ["resync HISTORY @0"], "the restarted server's data is another history");
      const c = await write(second.addr, "rw/c", "3");
      await eventually(async () => updates.length >= 4, 5000, "the event after the restart");
      assert.deepEqual(updates.slice(3), [`PUT rw/c=3 @${c}`]);
      assert.ok(watch.reconnects >= 1);
      const position = watch.position();
      assert.equal(position.revision, c);
      assert.notEqual(position.history, oldHistory);
      assert.equal(position.history, (await client.info()).replicationId);
    } finally {
      stop.abort();
      await consumed;
      for (const w of writers) w.close();
      client.close();
      await first.stop("SIGKILL");
      if (second !== undefined) assert.equal(await second.stop(), 0);
    }
  });
});

describe("Watch against a small change log", () => {
  let server: ServerProcess;
  let writer: CacheClient;
  before(async () => {
    server = await startServer(["--change-log-events", "10", "--max-memory", "1MiB"]);
    writer = new CacheClient({ addr: server.addr, protocol: "grpc" });
  });
  after(async () => {
    writer?.close();
    if (server !== undefined) assert.equal(await server.stop(), 0);
  });

  test("RESYNC (COMPACTED) when start_revision is older than the log holds, then live events", async () => {
    for (const protocol of ["grpc", "connect"] as const) {
      const p = `c/${protocol}/`;
      const revs: number[] = [];
      for (let i = 0; i < 30; i++) revs.push((await writer.set(`${p}${i}`, `v${i}`)).revision);
      const current = revs[29];
      // The log holds the last 10 changes: revs[20] to revs[29].
      const client = new CacheClient({ addr: server.addr, protocol });
      try {
        const old = new Watch(client, { target: { case: "prefix", value: p }, startRevision: 1n });
        assert.equal(await old.created(), current);
        assert.deepEqual(summary([await old.next()]), [`resync COMPACTED @${current}`]);
        // The oldest revision still held replays without a Resync; the one before it does not.
        const held = new Watch(client, { target: { case: "prefix", value: p }, startRevision: BigInt(revs[20]) });
        assert.equal(await held.created(), current);
        const gone = new Watch(client, { target: { case: "prefix", value: p }, startRevision: BigInt(revs[19]) });
        assert.equal(await gone.created(), current);
        assert.deepEqual(summary([await gone.next()]), [`resync COMPACTED @${current}`]);

        const live = await writer.set(`${p}live`, "x");
        assert.deepEqual(events(await old.until(live.revision)), [["PUT", `${p}live`, live.revision]], "after the Resync, only events after its revision");
        assert.deepEqual(events(await gone.until(live.revision)), [["PUT", `${p}live`, live.revision]]);
        const replayed = await held.until(live.revision);
        assert.ok(replayed.every((r) => r.kind.case === "events"), JSON.stringify(summary(replayed)));
        assert.deepEqual(
          events(replayed).map((e) => e[2]),
          [...revs.slice(20), live.revision],
        );
        for (const w of [old, held, gone]) w.cancel();
      } finally {
        client.close();
      }
    }
  });

  test("EVICT events when the memory bound evicts keys", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      const w = await openWatch(client, { target: { case: "prefix", value: "ev/" } });
      const value = new Uint8Array(1000);
      let last = 0;
      for (let batch = 0; batch < 12; batch++) {
        const r = await writer.rpc.setMany({ entries: Array.from({ length: 100 }, (_, i) => ({ key: `ev/${batch * 100 + i}`, value })) });
        last = Number(r.results.at(-1)!.revision);
      }
      const got = events(await w.until(last, 10_000));
      const evicted = got.filter((e) => e[0] === "EVICT").map((e) => e[1]);
      assert.ok(evicted.length > 0, "some keys were evicted");
      assert.equal(evicted[0], "ev/0", "the least recently used key goes first");
      for (let i = 1; i < got.length; i++) assert.ok(got[i][2] > got[i - 1][2], "events in revision order");
      assert.equal(got.filter((e) => e[0] === "PUT").length, 1200);
      w.cancel();
    } finally {
      client.close();
    }
  });
});

describe("Watch with a slow consumer", () => {
  let server: ServerProcess;
  let writer: CacheClient;
  before(async () => {
    server = await startServer(["--stream-buffer-bytes", "64KiB", "--max-streams", "2"]);
    writer = new CacheClient({ addr: server.addr, protocol: "grpc" });
  });
  after(async () => {
    writer?.close();
    if (server !== undefined) assert.equal(await server.stop(), 0);
  });

  /** Writes `count` values of `size` bytes under `prefix`; returns their revisions. */
  async function writeMany(prefix: string, count: number, size: number): Promise<number[]> {
    const value = new Uint8Array(size).fill(0x61);
    const revs: number[] = [];
    for (let i = 0; i < count; i += 20) {
      const r = await writer.rpc.setMany({ entries: Array.from({ length: Math.min(20, count - i) }, (_, j) => ({ key: `${prefix}${i + j}`, value })) });
      revs.push(...r.results.map((x) => Number(x.revision)));
    }
    return revs;
  }

  test("RESYNC (OVERFLOW) when the client stops reading; newer events follow and no gap goes unannounced", async () => {
    const session = await connectH2(server.url);
    try {
      const call = new RawGrpcCall(session, WATCH_PATH, WatchRequestSchema, WatchResponseSchema);
      call.send({ target: { case: "prefix", value: "ov/" }, withValues: true });
      call.end();
      await call.until((ms) => ms.length >= 1, 5000, "Created");
      const first = call.messages[0];
      assert.equal(first.kind.case, "created");
      const from = Number(first.kind.value.revision);
      call.pause();

      // 200 changes of 16 KiB: far more than the 64 KiB stream buffer plus what HTTP/2 flow control lets through.
      const revs = await writeMany("ov/", 200, 16 * 1024);
      call.resume();
      const sentinel = await writer.set("ov/sentinel", "last");
      await call.until((ms) => ms.some((m) => reached(m, sentinel.revision)), 10_000, "the event after the overflow");

      const after = call.messages.slice(1);
      const resyncs = after.filter((m) => m.kind.case === "resync");
      assert.ok(resyncs.length >= 1, `a Resync arrived: ${JSON.stringify(summary(after).slice(0, 20))}`);
      for (const r of resyncs) {
        assert.ok(r.kind.case === "resync");
        assert.equal(r.kind.value.reason, ResyncReason.OVERFLOW);
        assert.ok(Number(r.kind.value.revision) < sentinel.revision);
      }
      assertGapFree(after, [...revs, sentinel.revision], from);
      const evs = events(after);
      assert.ok(evs.length < revs.length, `some events were dropped (${evs.length} of ${revs.length} arrived)`);
      assert.deepEqual(evs.at(-1), ["PUT", "ov/sentinel", sentinel.revision]);
      call.cancel();
    } finally {
      session.destroy();
    }
  });

  test("a watcher blocked on flow control frees its slot when it cancels or its connection drops", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    const sessions = [await connectH2(server.url), await connectH2(server.url)];
    const watches: Watch[] = [];
    try {
      // One reading watcher holds one of the two slots throughout.
      watches.push(await openWatch(client, { target: { case: "key", value: "nobody" } }));
      for (const [i, session] of sessions.entries()) {
        // The previous round's watcher may still be giving its slot back.
        let call: RawGrpcCall<typeof WatchRequestSchema, typeof WatchResponseSchema> | undefined;
        await eventually(
          async () => {
            call = new RawGrpcCall(session, WATCH_PATH, WatchRequestSchema, WatchResponseSchema);
            call.send({ target: { case: "prefix", value: `blk${i}/` }, withValues: true });
            call.end();
            try {
              await call.until((ms) => ms.length >= 1, 5000, "Created");
              return true;
            } catch (err) {
              if (call.status?.code === Code.ResourceExhausted) return false;
              throw err;
            }
          },
          5000,
          "a free slot for the raw watcher",
        );
        const blocked = call!;
        assert.equal(blocked.messages[0].kind.case, "created");
        blocked.pause();
        await writeMany(`blk${i}/`, 100, 16 * 1024);
        // Both slots are taken.
        await expectCode(openWatch(client, {}), Code.ResourceExhausted, /max-streams/);
        if (i === 0) blocked.cancel();
        else session.destroy();
        // The blocked stream's slot comes back...
        await eventually(
          async () => {
            const w = await tryOpen(client, { target: { case: "key", value: "nobody" } });
            if (w !== undefined) watches.push(w);
            return w !== undefined;
          },
          5000,
          "the blocked watcher's slot to be freed",
        );
        // ...and only that one: the reading watcher and the new one take both.
        await expectCode(openWatch(client, {}), Code.ResourceExhausted, /max-streams/);
        watches.pop()!.cancel();
      }
    } finally {
      for (const w of watches) w.cancel();
      for (const s of sessions) s.destroy();
      client.close();
    }
  });
});

describe("Watch stream limits", () => {
  test("--max-streams: the N+1th stream gets RESOURCE_EXHAUSTED; cancelled streams free their slots", async () => {
    const server = await startServer(["--max-streams", "20"]);
    const clients = [
      new CacheClient({ addr: server.addr, protocol: "grpc" }),
      new CacheClient({ addr: server.addr, protocol: "connect", httpVersion: "2" }),
      new CacheClient({ addr: server.addr, protocol: "connect", httpVersion: "1.1" }),
      new CacheClient({ addr: server.addr, protocol: "grpc-web", httpVersion: "1.1" }),
    ];
    const open = async (): Promise<Watch[]> => {
      const ws = Array.from({ length: 20 }, (_, i) => new Watch(clients[i % clients.length], { target: { case: "prefix", value: "lim/" } }));
      const results = await Promise.allSettled(ws.map((w) => w.created()));
      const failed = results.filter((r) => r.status === "rejected");
      if (failed.length > 0) {
        for (const w of ws) w.cancel();
        for (const f of failed) {
          const err = (f as PromiseRejectedResult).reason;
          if (!(err instanceof ConnectError && err.code === Code.ResourceExhausted)) throw err;
        }
        return [];
      }
      return ws;
    };
    let watches: Watch[] = [];
    try {
      for (let round = 0; round < 3; round++) {
        const deadline = Date.now() + 5000;
        while ((watches = await open()).length === 0) {
          assert.ok(round > 0 && Date.now() < deadline, `20 watchers could not all open (round ${round}): slots were not freed`);
          await sleep(50);
        }
        // Every protocol counts against the same limit, and Track streams too.
        for (const c of clients) await expectCode(openWatch(c, {}), Code.ResourceExhausted, /--max-streams/);
        const requests = new Pushable<MessageInitShape<typeof TrackRequestSchema>>();
        requests.push({ kind: { case: "ping", value: { id: 1n } } });
        const track = clients[0].rpc.track(requests)[Symbol.asyncIterator]();
        await expectCode(within(track.next(), 5000, "the refused Track"), Code.ResourceExhausted, /--max-streams/);
        requests.end();
        // All 20 still work.
        const s = await clients[0].set(`lim/${round}`, "x");
        const got = await Promise.all(watches.map((w) => w.until(s.revision)));
        for (const g of got) assert.deepEqual(events(g), [["PUT", `lim/${round}`, s.revision]]);
        for (const w of watches) w.cancel();
      }
    } finally {
      for (const w of watches) w.cancel();
      for (const c of clients) c.close();
      assert.equal(await server.stop(), 0);
    }
  });

  test("server shutdown ends open watch streams with UNAVAILABLE, well before the grace period", async () => {
    // server.ts: "Streams see their context signal abort and end with UNAVAILABLE, so clients
    // reconnect elsewhere instead of waiting for the grace period." A clean end would tell a
    // watcher nothing went wrong.
    const server = await startServer(["--shutdown-timeout", "4000"]);
    const clients = [
      new CacheClient({ addr: server.addr, protocol: "grpc" }),
      new CacheClient({ addr: server.addr, protocol: "connect", httpVersion: "2" }),
      new CacheClient({ addr: server.addr, protocol: "connect", httpVersion: "1.1" }),
    ];
    try {
      const watches = await Promise.all(clients.map((c) => openWatch(c, {})));
      const t0 = Date.now();
      const exit = server.stop();
      const outcomes = await Promise.all(
        watches.map((w) =>
          w.next(5000).then(
            (m) => `message ${m.kind.case}`,
            (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err)),
          ),
        ),
      );
      assert.equal(await exit, 0);
      const took = Date.now() - t0;
      assert.deepEqual(
        { outcomes, stoppedWithin3s: took < 3000 },
        { outcomes: ["Unavailable", "Unavailable", "Unavailable"], stoppedWithin3s: true },
        `gRPC, Connect HTTP/2 and HTTP/1.1 watchers: ${JSON.stringify(outcomes)}; the server took ${took} ms to stop (--shutdown-timeout 4000)`,
      );
    } finally {
      for (const c of clients) c.close();
      await server.stop("SIGKILL");
    }
  });

  test("dead peer: a SIGSTOPped watcher's stream is freed by HTTP/2 keepalive", async () => {
    const server = await startServer(["--max-streams", "1", "--keepalive-interval", "200", "--keepalive-timeout", "300"]);
    const clientModule = pathToFileURL(join(ROOT, "dist", "src", "client", "client.js")).href;
    const script = `
      import { CacheClient } from ${JSON.stringify(clientModule)};
      const client = new CacheClient({ addr: ${JSON.stringify(server.addr)}, protocol: "grpc" });
      for await (const m of client.rpc.watch({ target: { case: "prefix", value: "" } })) {
        process.stdout.write(m.kind.case + "\\n");
      }
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const first = await within(lines.next(), 10_000, "the child watcher's Created");
      assert.equal(first.value, "created", stderr);
      // The child holds the only slot.
      await expectCode(openWatch(client, {}), Code.ResourceExhausted, /--max-streams/);
      process.kill(child.pid!, "SIGSTOP");
      const stoppedAt = Date.now();
      let w: Watch | undefined;
      await eventually(
        async () => (w = await tryOpen(client, { target: { case: "key", value: "alive" } })) !== undefined,
        5000,
        "the server to drop the stopped watcher",
        100,
      );
      const freedAfter = Date.now() - stoppedAt;
      assert.ok(freedAfter < 5000, `freed after ${freedAfter} ms`);
      // The server still serves the live watcher (keepalive did not drop a healthy peer).
      const s = await client.set("alive", "yes");
      assert.deepEqual(events(await w!.until(s.revision)), [["PUT", "alive", s.revision]]);
      w!.cancel();
    } finally {
      child.kill("SIGKILL");
      client.close();
      assert.equal(await server.stop(), 0);
    }
  });
});
