import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient, type ClientOptions } from "../src/client/client.js";
import {
  EventType,
  ResyncReason,
  TrackRequestSchema,
  TrackResponseSchema,
  type TrackResponse,
} from "../src/gen/ripplecache/v1/cache_pb.js";
import { startServer, type ServerProcess } from "./helpers/server.js";
import { connectH2, eventually, Pushable, RawGrpcCall, sleep, within } from "./helpers/stream.js";
import { expectCode } from "./helpers/assert.js";

type TrackInit = MessageInitShape<typeof TrackRequestSchema>;

const TRACK_PATH = "/ripplecache.v1.CacheService/Track";

/** A Track call through the Connect client: requests are pushed, responses read one at a time with a deadline. */
class Tracker {
  readonly controller = new AbortController();
  readonly requests = new Pushable<TrackInit>();
  private readonly it: AsyncIterator<TrackResponse>;
  private nextPing = 1n;

  constructor(client: CacheClient) {
    this.it = client.rpc.track(this.requests, { signal: this.controller.signal })[Symbol.asyncIterator]();
  }

  track(keys: string[], sinceRevision = 0, sinceHistory = ""): void {
    this.requests.push({ kind: { case: "track", value: { keys, sinceRevision: BigInt(sinceRevision), sinceHistory } } });
  }

  untrack(keys: string[]): void {
    this.requests.push({ kind: { case: "untrack", value: { keys } } });
  }

  async next(ms = 5000): Promise<TrackResponse> {
    const r = await within(this.it.next(), ms, "the next track message");
    if (r.done === true) throw new Error("the track stream ended");
    return r.value;
  }

  /** Tracks `keys` and returns the acknowledgement, [revision, tracked_keys]. */
  async trackAck(keys: string[], sinceRevision = 0): Promise<[number, number]> {
    this.track(keys, sinceRevision);
    return this.ack();
  }

  async untrackAck(keys: string[]): Promise<[number, number]> {
    this.untrack(keys);
    return this.ack();
  }

  async ack(): Promise<[number, number]> {
    const m = await this.next();
    assert.equal(m.kind.case, "tracked", `expected Tracked, got ${describeMessage(m)}`);
    return [Number(m.kind.value.revision), m.kind.value.trackedKeys];
  }

  /**
   * Sends a ping and reads up to its pong: every invalidation up to the pong's
   * revision has then arrived. Returns what came before the pong, and the pong's revision.
   */
  async barrier(): Promise<{ before: string[]; revision: number }> {
    const id = this.nextPing++;
    this.requests.push({ kind: { case: "ping", value: { id } } });
    const before: string[] = [];
    for (;;) {
      const m = await this.next();
      if (m.kind.case === "pong") {
        assert.equal(m.kind.value.id, id, "the pong carries the ping's id");
        return { before, revision: Number(m.kind.value.revision) };
      }
      before.push(...describeMessages(m));
    }
  }

  /** Half-closes the request side and reads the rest of the stream; it must end without an error. */
  async close(ms = 5000): Promise<string[]> {
    this.requests.end();
    const rest: string[] = [];
    for (;;) {
      const r = await within(this.it.next(), ms, "the end of the stream after half-close");
      if (r.done === true) return rest;
      rest.push(...describeMessages(r.value));
    }
  }

  cancel(): void {
    this.controller.abort();
  }
}

function describeMessage(m: TrackResponse): string {
  return describeMessages(m).join("; ");
}

/** One line per invalidation, resync, ack or pong. */
function describeMessages(m: TrackResponse): string[] {
  switch (m.kind.case) {
    case "invalidations":
      return m.kind.value.invalidations.map((i) => `${EventType[i.reason]} ${i.key} @${i.revision}`);
    case "resync":
      return [`resync ${ResyncReason[m.kind.value.reason]} @${m.kind.value.revision}`];
    case "tracked":
      return [`tracked ${m.kind.value.trackedKeys} @${m.kind.value.revision}`];
    case "pong":
      return [`pong ${m.kind.value.id} @${m.kind.value.revision}`];
    default:
      return ["unknown"];
  }
}


/** Bidi streaming needs HTTP/2: gRPC, and Connect over HTTP/2. */
const PROTOCOLS: readonly { readonly name: string; readonly options: Omit<ClientOptions, "addr"> }[] = [
  { name: "gRPC", options: { protocol: "grpc" } },
  { name: "Connect HTTP/2", options: { protocol: "connect", httpVersion: "2" } },
];

describe("Track", () => {
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

  for (const { name, options } of PROTOCOLS) {
    const p = `${name}/`;

    test(`invalidations for PUT and DELETE; untrack stops them (${name})`, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      const t = new Tracker(client);
      try {
        const current = (await writer.set(`${p}b`, "0")).revision;
        assert.deepEqual(await t.trackAck([`${p}a`, `${p}b`]), [current, 2], "Tracked carries the current revision and the count");
        const s1 = await writer.set(`${p}a`, "1");
        await writer.set(`${p}untracked`, "x");
        const d = await writer.delete(`${p}b`);
        let b = await t.barrier();
        assert.deepEqual(b.before, [`PUT ${p}a @${s1.revision}`, `DELETE ${p}b @${d.revision}`]);
        assert.equal(b.revision, d.revision, "the pong carries the current revision");

        // A key stays tracked after it changed (Redis's default mode is one-shot; ours is not).
        const s2 = await writer.increment(`${p}a`, 1);
        b = await t.barrier();
        assert.deepEqual(b.before, [`PUT ${p}a @${s2.revision}`]);

        const [untrackedAt, left] = await t.untrackAck([`${p}a`]);
        assert.equal(left, 1);
        assert.equal(untrackedAt, s2.revision);
        await writer.set(`${p}a`, "3");
        const s4 = await writer.set(`${p}b`, "back");
        b = await t.barrier();
        assert.deepEqual(b.before, [`PUT ${p}b @${s4.revision}`], "nothing for the untracked key");

        assert.deepEqual(await t.untrackAck([`${p}b`, `${p}never-tracked`]), [s4.revision, 0]);
        await writer.set(`${p}b`, "quiet");
        await writer.delete(`${p}b`);
        b = await t.barrier();
        assert.deepEqual(b.before, []);
      } finally {
        t.cancel();
        client.close();
      }
    });

    test(`since_revision replays the changes after it (${name})`, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      const t = new Tracker(client);
      try {
        const r1 = await writer.set(`${p}s/a`, "1");
        await writer.set(`${p}s/b`, "1");
        const r3 = await writer.set(`${p}s/a`, "2");
        const r4 = await writer.delete(`${p}s/a`);
        await writer.set(`${p}s/c`, "1");
        const current = Number((await writer.info()).revision);

        // Since r1: r3 and r4 of a; b is not tracked; r1 itself is not after r1.
        // (Whether the replayed invalidations come before or after the Tracked acknowledgement is not specified.)
        t.track([`${p}s/a`], r1.revision);
        let b = await t.barrier();
        assert.deepEqual(
          b.before.filter((l) => !l.startsWith("tracked")),
          [`PUT ${p}s/a @${r3.revision}`, `DELETE ${p}s/a @${r4.revision}`],
        );
        assert.deepEqual(
          b.before.filter((l) => l.startsWith("tracked")),
          [`tracked 1 @${current}`],
        );
        // Since 0 is "from now": nothing replayed.
        assert.deepEqual(await t.trackAck([`${p}s/b`]), [current, 2]);
        b = await t.barrier();
        assert.deepEqual(b.before, []);
        // Since the current revision: nothing to replay either.
        assert.deepEqual(await t.trackAck([`${p}s/c`], current), [current, 3]);
        b = await t.barrier();
        assert.deepEqual(b.before, []);
        // Live changes after a since_revision track.
        const r5 = await writer.set(`${p}s/c`, "2");
        b = await t.barrier();
        assert.deepEqual(b.before, [`PUT ${p}s/c @${r5.revision}`]);
      } finally {
        t.cancel();
        client.close();
      }
    });

    test(`flush: Resync (FLUSH), after which nothing is tracked (${name})`, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      const t = new Tracker(client);
      try {
        await t.trackAck([`${p}f/a`, `${p}f/b`]);
        const s1 = await writer.set(`${p}f/a`, "1");
        const flush = Number((await writer.rpc.flush({})).revision);
        let b = await t.barrier();
        // An invalidation before the flush is moot (the Resync drops everything) and may be left out.
        const resync = `resync FLUSH @${flush}`;
        assert.ok(
          JSON.stringify(b.before) === JSON.stringify([resync]) || JSON.stringify(b.before) === JSON.stringify([`PUT ${p}f/a @${s1.revision}`, resync]),
          `got ${JSON.stringify(b.before)}`,
        );
        // The server forgot every tracked key: writes to them send nothing.
        await writer.set(`${p}f/a`, "2");
        await writer.set(`${p}f/b`, "2");
        b = await t.barrier();
        assert.deepEqual(b.before, [], "no invalidation for a key tracked before the Resync");
        // Tracking again works, and counts only the keys tracked anew.
        assert.equal((await t.trackAck([`${p}f/a`]))[1], 1);
        const s3 = await writer.set(`${p}f/a`, "3");
        b = await t.barrier();
        assert.deepEqual(b.before, [`PUT ${p}f/a @${s3.revision}`]);
      } finally {
        t.cancel();
        client.close();
      }
    });

    test(`half-close ends the stream cleanly after the last answers (${name})`, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      try {
        const t = new Tracker(client);
        t.track([`${p}h/a`]);
        t.requests.push({ kind: { case: "ping", value: { id: 99n } } });
        const rest = await t.close();
        const current = Number((await writer.info()).revision);
        assert.deepEqual(rest, [`tracked 1 @${current}`, `pong 99 @${current}`]);
      } finally {
        client.close();
      }
    });

    test(`bad requests: an empty key or an empty message is INVALID_ARGUMENT (${name})`, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      try {
        const t = new Tracker(client);
        t.track(["ok", ""]);
        await expectCode(t.next(), Code.InvalidArgument, /key is empty/);
        const u = new Tracker(client);
        u.requests.push({});
        await expectCode(u.next(), Code.InvalidArgument, /track, untrack or ping/);
      } finally {
        client.close();
      }
    });
  }

  test("a pong comes after every invalidation up to its revision, even when the stream is backed up", async () => {
    const session = await connectH2(server.url);
    try {
      const call = new RawGrpcCall(session, TRACK_PATH, TrackRequestSchema, TrackResponseSchema);
      // Long keys make invalidations big, so a few hundred fill HTTP/2's flow-control window.
      const key = `po/${"k".repeat(1000)}`;
      call.send({ kind: { case: "track", value: { keys: [key] } } });
      await call.until((ms) => ms.length >= 1, 5000, "Tracked");
      call.pause();
      const revs: number[] = [];
      for (let i = 0; i < 15; i++) {
        const r = await writer.rpc.setMany({ entries: Array.from({ length: 20 }, () => ({ key, value: new Uint8Array(1) })) });
        revs.push(...r.results.map((x) => Number(x.revision)));
      }
      const last = (await writer.set(key, "last")).revision;
      revs.push(last);
      call.send({ kind: { case: "ping", value: { id: 42n } } });
      await sleep(200); // the server reads the ping while its writes are blocked
      call.resume();
      await call.until((ms) => ms.some((m) => m.kind.case === "pong"), 10_000, "the pong");
      const pongAt = call.messages.findIndex((m) => m.kind.case === "pong");
      const pong = call.messages[pongAt];
      assert.ok(pong.kind.case === "pong");
      assert.equal(pong.kind.value.id, 42n);
      assert.equal(Number(pong.kind.value.revision), last);
      const before = call.messages
        .slice(1, pongAt)
        .flatMap((m) => (m.kind.case === "invalidations" ? m.kind.value.invalidations.map((i) => Number(i.revision)) : []));
      assert.deepEqual(
        revs.filter((r) => !before.includes(r)),
        [],
        `invalidations up to the pong's revision @${last} came before the pong (${before.length} of ${revs.length} did)`,
      );
      call.end();
      await call.ended(5000);
    } finally {
      session.destroy();
    }
  });

  test("invalidations come in revision order per key, also when a since_revision replay meets queued live ones", async () => {
    const session = await connectH2(server.url);
    try {
      const call = new RawGrpcCall(session, TRACK_PATH, TrackRequestSchema, TrackResponseSchema);
      const live = `ord/${"k".repeat(1000)}`;
      const since = (await writer.set("ord/x", "0")).revision;
      const old = await writer.set("ord/old", "1"); // changed after `since`: replayed by the second track
      call.send({ kind: { case: "track", value: { keys: [live] } } });
      await call.until((ms) => ms.length >= 1, 5000, "Tracked");
      call.pause();
      // Live invalidations back up behind HTTP/2 flow control.
      for (let i = 0; i < 10; i++) await writer.rpc.setMany({ entries: Array.from({ length: 20 }, () => ({ key: live, value: new Uint8Array(1) })) });
      call.send({ kind: { case: "track", value: { keys: ["ord/old"], sinceRevision: BigInt(since) } } });
      const last = (await writer.set("ord/old", "2")).revision;
      await sleep(200); // the server reads the track request while its writes are blocked
      call.resume();
      await call.until(
        (ms) => ms.some((m) => m.kind.case === "invalidations" && m.kind.value.invalidations.some((i) => Number(i.revision) === last)),
        10_000,
        "the last invalidation",
      );
      const revisions = call.messages.flatMap((m) => (m.kind.case === "invalidations" ? m.kind.value.invalidations.map((i) => Number(i.revision)) : []));
      assert.ok(revisions.includes(old.revision), "the replayed change is reported");
      // Per key the order holds; a replayed change may come after newer
      // invalidations of other keys that had already left the server.
      const perKey = new Map<string, number[]>();
      for (const m of call.messages) {
        if (m.kind.case !== "invalidations") continue;
        const batch = m.kind.value.invalidations.map((i) => Number(i.revision));
        assert.deepEqual(batch, [...batch].sort((a, b) => a - b), "each batch is in revision order");
        for (const i of m.kind.value.invalidations) perKey.set(i.key, [...(perKey.get(i.key) ?? []), Number(i.revision)]);
      }
      for (const [key, revs] of perKey) {
        assert.deepEqual(revs, [...revs].sort((a, b) => a - b), `invalidations of ${key.slice(0, 10)} in revision order`);
      }
      assert.deepEqual(perKey.get("ord/old"), [old.revision, last]);
      call.end();
      await call.ended(5000);
    } finally {
      session.destroy();
    }
  });
});

describe("Track and shutdown", () => {
  test("server shutdown ends an open Track stream with UNAVAILABLE, well before the grace period", async () => {
    // server.ts: streams "end with UNAVAILABLE, so clients reconnect elsewhere instead of
    // waiting for the grace period". The client has not half-closed: it is still tracking.
    const server = await startServer(["--shutdown-timeout", "4000"]);
    const clients = [new CacheClient({ addr: server.addr, protocol: "grpc" }), new CacheClient({ addr: server.addr, protocol: "connect" })];
    try {
      const trackers = clients.map((c) => new Tracker(c));
      for (const t of trackers) await t.trackAck(["k"]);
      const t0 = Date.now();
      const exit = server.stop();
      const outcomes = await Promise.all(
        trackers.map((t) =>
          t.next(6000).then(
            (m) => `message ${m.kind.case}`,
            (err: unknown) => (err instanceof ConnectError ? Code[err.code] : String(err)),
          ),
        ),
      );
      assert.equal(await exit, 0);
      const took = Date.now() - t0;
      assert.deepEqual(
        { outcomes, stoppedWithin3s: took < 3000 },
        { outcomes: ["Unavailable", "Unavailable"], stoppedWithin3s: true },
        `gRPC and Connect trackers: ${JSON.stringify(outcomes)}; the server took ${took} ms to stop (--shutdown-timeout 4000)`,
      );
    } finally {
      for (const c of clients) c.close();
      await server.stop("SIGKILL");
    }
  });
});

describe("Track limits", () => {
  let server: ServerProcess;
  let writer: CacheClient;
  before(async () => {
    server = await startServer(["--change-log-events", "5", "--max-track-keys", "5", "--max-streams", "1", "--stream-buffer-bytes", "16KiB"]);
    writer = new CacheClient({ addr: server.addr, protocol: "grpc" });
  });
  after(async () => {
    writer?.close();
    if (server !== undefined) assert.equal(await server.stop(), 0);
  });

  /** A new Tracker once the server has a free stream slot (the previous test's stream may still be closing). */
  async function openTracker(client: CacheClient): Promise<Tracker> {
    let t: Tracker | undefined;
    await eventually(
      async () => {
        t = new Tracker(client);
        t.requests.push({ kind: { case: "ping", value: { id: 0n } } });
        try {
          const m = await t.next();
          assert.equal(m.kind.case, "pong");
          return true;
        } catch (err) {
          t.cancel();
          if (err instanceof ConnectError && err.code === Code.ResourceExhausted) return false;
          throw err;
        }
      },
      5000,
      "a free stream slot",
    );
    return t!;
  }

  test("--max-track-keys: one key too many is RESOURCE_EXHAUSTED; the stream's slot is freed", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      const t = await openTracker(client);
      assert.equal((await t.trackAck(["a", "b", "c"]))[1], 3);
      assert.equal((await t.trackAck(["c", "d", "e"]))[1], 5, "a key tracked twice counts once");
      assert.equal((await t.untrackAck(["a"]))[1], 4);
      assert.equal((await t.trackAck(["f"]))[1], 5);
      t.track(["g"]);
      await expectCode(t.next(), Code.ResourceExhausted, /--max-track-keys/);
      // The failed stream gave its slot back.
      const u = await openTracker(client);
      assert.equal((await u.trackAck(["a", "b", "c", "d", "e"]))[1], 5);
      assert.deepEqual(await u.close(), []);
    } finally {
      client.close();
    }
  });

  test("since_revision older than the log holds: Resync (COMPACTED), and nothing stays tracked", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "connect" });
    const t = await openTracker(client);
    try {
      const first = await writer.set("cmp/a", "0");
      for (let i = 0; i < 10; i++) await writer.set("cmp/a", `${i + 1}`);
      const current = Number((await writer.info()).revision);
      assert.deepEqual(await t.trackAck(["cmp/a", "cmp/b"], first.revision), [current, 2]);
      let b = await t.barrier();
      assert.deepEqual(b.before, [`resync COMPACTED @${current}`]);
      await writer.set("cmp/a", "after");
      b = await t.barrier();
      assert.deepEqual(b.before, [], "the Resync cleared tracking");
      assert.equal((await t.trackAck(["cmp/a"]))[1], 1);
      const s = await writer.set("cmp/a", "tracked again");
      b = await t.barrier();
      assert.deepEqual(b.before, [`PUT cmp/a @${s.revision}`]);
    } finally {
      t.cancel();
      client.close();
    }
  });

  test("since_history: the same history replays since_revision; another gets Resync (HISTORY) and nothing stays tracked", async () => {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    const t = await openTracker(client);
    try {
      const history = (await writer.info()).replicationId;
      const a1 = await writer.set("hist/a", "1");
      const a2 = await writer.set("hist/a", "2");
      t.track(["hist/a"], a1.revision, history);
      // The replayed change comes first, then the acknowledgement.
      const replayed = await t.next();
      assert.deepEqual(describeMessages(replayed), [`PUT hist/a @${a2.revision}`], "a change after since_revision, replayed");
      const ack = await t.next();
      assert.equal(ack.kind.case, "tracked");
      assert.equal(ack.kind.value.history, history, "Tracked names the history of its revision");
      let b = await t.barrier();
      assert.deepEqual(b.before, []);
      // Revisions of a history this node never held (a restarted or failed-over
      // primary's) name other changes: the client must drop everything.
      t.track(["hist/b"], a1.revision, "f".repeat(40));
      const current = Number((await writer.info()).revision);
      assert.deepEqual(await t.ack(), [current, 2]);
      b = await t.barrier();
      assert.deepEqual(b.before, [`resync HISTORY @${current}`]);
      await writer.set("hist/a", "3");
      b = await t.barrier();
      assert.deepEqual(b.before, [], "the Resync cleared tracking");
    } finally {
      t.cancel();
      client.close();
    }
  });

  test("a client that stops reading gets Resync (OVERFLOW), never a silent gap, and its tracking is cleared", async () => {
    // Wait for the previous test's stream to give its slot back, then take it with a raw HTTP/2 call.
    const probe = new CacheClient({ addr: server.addr, protocol: "grpc" });
    assert.deepEqual(await (await openTracker(probe)).close(), []);
    probe.close();
    const session = await connectH2(server.url);
    try {
      let call: RawGrpcCall<typeof TrackRequestSchema, typeof TrackResponseSchema> | undefined;
      await eventually(
        async () => {
          call = new RawGrpcCall(session, TRACK_PATH, TrackRequestSchema, TrackResponseSchema);
          call.send({ kind: { case: "track", value: { keys: ["of/k"] } } });
          try {
            await call.until((ms) => ms.length >= 1, 5000, "Tracked");
            return true;
          } catch (err) {
            if (call.status?.code === Code.ResourceExhausted) return false;
            throw err;
          }
        },
        5000,
        "a free stream slot",
      );
      const c = call!;
      assert.equal(c.messages[0].kind.case, "tracked");
      const trackedAt = Number(c.messages[0].kind.value.revision);
      c.pause();
      const revs: number[] = [];
      const value = new Uint8Array(4096);
      for (let i = 0; i < 10; i++) {
        const r = await writer.rpc.setMany({ entries: Array.from({ length: 20 }, () => ({ key: "of/k", value })) });
        revs.push(...r.results.map((x) => Number(x.revision)));
      }
      c.resume();
      c.send({ kind: { case: "ping", value: { id: 1n } } });
      await c.until((ms) => ms.some((m) => m.kind.case === "pong"), 10_000, "the pong");
      const upToPong = c.messages.slice(1, c.messages.findIndex((m) => m.kind.case === "pong"));
      const resyncAt = upToPong.findIndex((m) => m.kind.case === "resync");
      assert.ok(resyncAt >= 0, `a Resync arrived: ${upToPong.flatMap(describeMessages).slice(0, 10).join(", ")}`);
      const resync = upToPong[resyncAt];
      assert.ok(resync.kind.case === "resync");
      assert.equal(resync.kind.value.reason, ResyncReason.OVERFLOW);
      // Before the Resync: invalidations in order and without holes from the tracked revision on.
      const seen = upToPong.slice(0, resyncAt).flatMap((m) => (m.kind.case === "invalidations" ? m.kind.value.invalidations.map((i) => Number(i.revision)) : []));
      assert.deepEqual(seen, revs.filter((r) => r > trackedAt).slice(0, seen.length), "invalidations before the Resync are the first changes, in order");
      assert.ok(seen.length < revs.length, "some invalidations were dropped");
      assert.ok(Number(resync.kind.value.revision) >= (seen.at(-1) ?? trackedAt));
      assert.deepEqual(upToPong.slice(resyncAt + 1).flatMap(describeMessages), [], "nothing after the Resync: tracking was cleared");
      // A later write to the formerly tracked key sends nothing.
      await writer.set("of/k", "later");
      c.send({ kind: { case: "ping", value: { id: 2n } } });
      await c.until((ms) => ms.filter((m) => m.kind.case === "pong").length >= 2, 5000, "the second pong");
      const afterPong = c.messages.slice(c.messages.findIndex((m) => m.kind.case === "pong") + 1);
      assert.deepEqual(afterPong.map((m) => m.kind.case), ["pong"]);
      c.end();
      await c.ended(5000);
      assert.equal(c.status?.code, 0, `the stream ended with status ${JSON.stringify(c.status)}`);
    } finally {
      session.destroy();
    }
  });
});
