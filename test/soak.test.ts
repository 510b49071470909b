/**
 * Soak: one server under churn for a bounded time: clients that connect over
 * every protocol, make a few mixed calls and go (some cut off mid-call),
 * Watch streams opened and closed (canceled, dropped with their connection,
 * or left unread until their buffer overflows), Track streams likewise, and
 * steady writes with TTLs and evictions. At quiet points between rounds (the
 * churn paused, every client closed) the server must hold no stream, as many
 * file descriptors as after warm-up, and about as much memory: what churn
 * leaves behind (a listener, a queue, a socket) shows up as a growing count.
 *
 * The server has no GC hook, so memory is compared as resident memory
 * (/proc/PID/status VmRSS) at quiet points. The server runs with a 64 MiB
 * old-space cap (--max-old-space-size, RIPPLECACHE_SOAK_NODE_OPTIONS to
 * change): V8 then settles its heap within the warm-up instead of growing it
 * lazily for a minute (uncapped, RSS climbs from ~120 to a ~190 MiB plateau
 * that is heap sizing, not a leak), and a leak cannot hide in headroom: it
 * shows as growth, or as the process dying of an out-of-memory error. Streams
 * are compared exactly (Info.streams and the ripplecache_streams_active
 * metric), file descriptors within 2.
 *
 * RIPPLECACHE_SOAK_MS sets the churn time after warm-up (default 24000).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient, type ClientOptions } from "../src/client/client.js";
import { PushQueue } from "../src/client/push-queue.js";
import type { TrackRequestSchema, WatchResponse } from "../src/gen/ripplecache/v1/cache_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { startServer, type ServerProcess } from "./helpers/server.js";
import { fdCount, rssBytes } from "./helpers/netns.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const SOAK_MS = Number(process.env.RIPPLECACHE_SOAK_MS ?? 24_000);
const WARMUP_MS = 6_000;
const MIB = 1024 * 1024;

const PROTOCOLS: Omit<ClientOptions, "addr">[] = [
  { protocol: "connect", httpVersion: "2" },
  { protocol: "connect", httpVersion: "1.1" },
  { protocol: "connect", httpVersion: "1.1", useJson: true },
  { protocol: "grpc" },
  { protocol: "grpc-web", httpVersion: "2" },
  { protocol: "grpc-web", httpVersion: "1.1" },
];

const rand = (n: number) => Math.floor(Math.random() * n);

/** Expected failures of churned calls: canceled by us, cut off, or refused under load. */
function churnError(err: unknown): boolean {
  return err instanceof ConnectError && [Code.Canceled, Code.Unavailable, Code.DeadlineExceeded, Code.Aborted, Code.ResourceExhausted, Code.Unknown, Code.Internal].includes(err.code);
}

class Churn {
  paused = false;
  stopped = false;
  private readonly busy = new Set<number>();
  private readonly workers: Promise<void>[] = [];
  readonly counts = { clients: 0, rpcs: 0, watches: 0, watchDropped: 0, watchSlow: 0, tracks: 0, writes: 0, events: 0, resyncs: 0, errors: 0 };
  readonly violations: string[] = [];
  private firstError: unknown;

  constructor(private readonly addr: string) {}

  start(): void {
    let id = 0;
    const spawn = (fn: () => Promise<void>) => {
      const me = id++;
      this.workers.push(this.loop(me, fn));
    };
    for (let i = 0; i < 2; i++) spawn(() => this.writeRound());
    for (let i = 0; i < 3; i++) spawn(() => this.clientRound());
    for (let i = 0; i < 4; i++) spawn(() => this.watchRound());
    for (let i = 0; i < 2; i++) spawn(() => this.trackRound());
  }

  /** Pauses the churn and resolves once every worker finished its round (all its clients closed). */
  async quiesce(): Promise<void> {
    this.paused = true;
    const deadline = Date.now() + 20_000;
    while (this.busy.size > 0) {
      if (Date.now() > deadline) throw new Error(`${this.busy.size} churn workers did not finish their round`);
      await sleep(20);
    }
    this.check();
  }

  resume(): void {
    this.paused = false;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.paused = false;
    await Promise.all(this.workers);
    this.check();
  }

  private check(): void {
    if (this.firstError !== undefined) throw this.firstError;
  }

  private async loop(id: number, round: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      if (this.paused) {
        await sleep(20);
        continue;
      }
      this.busy.add(id);
      try {
        await round();
      } catch (err) {
        if (churnError(err)) this.counts.errors++;
        else this.firstError ??= err;
      } finally {
        this.busy.delete(id);
      }
    }
  }

  private client(): CacheClient {
    this.counts.clients++;
    return new CacheClient({ addr: this.addr, timeoutMs: 5000, ...PROTOCOLS[rand(PROTOCOLS.length)] });
  }

  /** Steady writes: sets (some with TTLs, some large enough to evict), deletes, increments, SetMany. */
  private async writeRound(): Promise<void> {
    const c = this.client();
    try {
      for (let i = 0; i < 200 && !this.paused && !this.stopped; i++) {
        const n = rand(3000);
        const r = Math.random();
        if (r < 0.4) await c.set(`w/${n}`, new Uint8Array(rand(4096)).fill(n & 255), { ttlMs: rand(3) === 0 ? 200 + rand(800) : 0 });
        else if (r < 0.55) await c.delete(`w/${n}`);
        else if (r < 0.7) await c.increment(`n/${n % 50}`, 1);
        else if (r < 0.85) await c.rpc.setMany({ entries: Array.from({ length: 10 }, (_, j) => ({ key: `w/${(n + j) % 3000}`, value: enc.encode(`m${i}`) })) });
        else await c.rpc.touch({ key: `w/${n}`, ttlMs: BigInt(rand(2) * 500) });
        this.counts.writes++;
        await sleep(rand(3));
      }
    } finally {
      c.close();
    }
  }

  /** A client that connects, makes a few mixed calls and goes; one in five is cut off mid-call. */
  private async clientRound(): Promise<void> {
    const c = this.client();
    try {
      const calls = 1 + rand(15);
      for (let i = 0; i < calls; i++) {
        const r = Math.random();
        const call =
          r < 0.3
            ? c.rpc.get({ key: `w/${rand(3000)}` })
            : r < 0.45
              ? c.rpc.getMany({ keys: Array.from({ length: 20 }, () => `w/${rand(3000)}`) })
              : r < 0.6
                ? c.rpc.scan({ prefix: "w/", limit: 50 })
                : r < 0.7
                  ? c.rpc.info({})
                  : r < 0.85
                    ? c.rpc.set({ key: `c/${rand(500)}`, value: enc.encode("x") })
                    : c.rpc.increment({ key: `n/${rand(50)}`, delta: 1n });
        if (i === calls - 1 && rand(5) === 0) {
          // Gone mid-call: the connection closes under the request.
          void call.catch(() => undefined);
          await sleep(rand(3));
          break;
        }
        await call;
        this.counts.rpcs++;
      }
    } finally {
      c.close();
    }
  }

  /**
   * A Watch stream, read for a while and then canceled; or dropped with its
   * connection; or left unread while writes overflow its buffer. Its messages
   * must be in order: Created first, events in increasing revisions.
   */
  private async watchRound(): Promise<void> {
    const c = this.client();
    const abort = new AbortController();
    const mode = rand(10);
    const prefix = ["", "w/", "n/", `w/${rand(30)}`][rand(4)];
    this.counts.watches++;
    try {
      const info = await c.rpc.info({});
      const latest = Number(info.revision);
      // From now, or replayed from the log (maybe compacted already).
      const startRevision = rand(3) === 0 ? BigInt(Math.max(1, latest - rand(8000))) : 0n;
      const it = c.rpc
        .watch({ target: { case: "prefix", value: prefix }, startRevision, withValues: rand(2) === 0, progressIntervalMs: 100 + rand(400) }, { signal: abort.signal, timeoutMs: 0 })
        [Symbol.asyncIterator]();
      const until = Date.now() + 50 + rand(800);
      let last = 0;
      let first = true;
      const read = async (): Promise<boolean> => {
        const r = await it.next();
        if (r.done === true) return false;
        this.order(r.value, first, last, (rev) => (last = rev));
        first = false;
        return true;
      };
      if (mode === 0) {
        // A slow consumer: read Created, then nothing for 1.5 s while writes go on.
        this.counts.watchSlow++;
        await read();
        await sleep(1500);
      } else {
        while (Date.now() < until && (await read())) {
          // reading
        }
      }
      if (mode === 1) {
        // Dropped with its connection, no cancel first.
        this.counts.watchDropped++;
        c.close();
      }
    } catch (err) {
      if (!(err instanceof ConnectError && err.code === Code.Canceled)) throw err;
    } finally {
      abort.abort();
      c.close();
    }
  }

  private order(m: WatchResponse, first: boolean, last: number, advance: (rev: number) => void): void {
    const k = m.kind;
    if (first !== (k.case === "created")) {
      if (this.violations.length < 20) this.violations.push(`watch message ${k.case} ${first ? "before" : "after"} Created`);
      return;
    }
    if (k.case === "events") {
      for (const e of k.value.events) {
        const rev = Number(e.revision);
        if (rev <= last && this.violations.length < 20) this.violations.push(`watch event ${rev} after ${last}`);
        advance(rev);
        this.counts.events++;
      }
    } else if (k.case === "resync") {
      this.counts.resyncs++;
      advance(Number(k.value.revision));
    }
  }

  /** A Track stream: track keys, wait for Tracked, ping, maybe untrack, then cancel or drop. */
  private async trackRound(): Promise<void> {
    const c = this.client();
    const abort = new AbortController();
    const requests = new PushQueue<MessageInitShape<typeof TrackRequestSchema>>();
    this.counts.tracks++;
    try {
      const it = c.rpc.track(requests, { signal: abort.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
      const keys = Array.from({ length: 1 + rand(50) }, () => `w/${rand(3000)}`);
      requests.push({ kind: { case: "track", value: { keys, sinceRevision: 0n } } });
      requests.push({ kind: { case: "ping", value: { id: 7n } } });
      // Invalidations come only when tracked keys change: the timer ends the read.
      const timer = setTimeout(() => abort.abort(), 100 + rand(700));
      try {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          if (r.value.kind.case === "pong" && rand(2) === 0) requests.push({ kind: { case: "untrack", value: { keys: keys.slice(0, 5) } } });
        }
      } finally {
        clearTimeout(timer);
      }
    } catch (err) {
      if (!(err instanceof ConnectError && err.code === Code.Canceled)) throw err;
    } finally {
      if (rand(2) === 0) requests.close();
      abort.abort();
      c.close();
    }
  }
}

interface Sample {
  rss: number;
  fds: number;
  streams: number;
  at: number;
}

describe("soak", () => {
  test("churning clients, watchers and trackers leave no stream, descriptor or memory behind", { timeout: 180_000 }, async (t) => {
    const say = (line: string) => {
      t.diagnostic(line);
      process.stdout.write(`# soak: ${line}\n`);
    };
    const server: ServerProcess = await startServer([
      "--max-memory", "2MiB",
      "--change-log-events", "5000",
      "--stream-buffer-bytes", "64KiB",
      "--keepalive-interval", "1000",
      "--keepalive-timeout", "2000",
      "--shutdown-timeout", "2000",
      "--log-level", "warn",
    ], { NODE_OPTIONS: process.env.RIPPLECACHE_SOAK_NODE_OPTIONS ?? "--max-old-space-size=64" });
    const pid = server.proc.pid!;
    const probe = new CacheClient({ addr: server.addr, protocol: "connect", httpVersion: "1.1", timeoutMs: 5000 });
    const churn = new Churn(server.addr);
    try {
      let lastMetrics = "";
      const metricsStreams = async (): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${server.adminPort}/metrics`)).text();
        let sum = 0;
        for (const m of text.matchAll(/^ripplecache_streams_active\{[^}]*\} ([0-9.e+]+)$/gm)) sum += Number(m[1]);
        if (sum > 0) lastMetrics = text.split("\n").filter((l) => l.startsWith("ripplecache_streams_active")).join(", ");
        return sum;
      };
      /** At a quiet point: no stream open (Info and /metrics agree), then RSS and fds. */
      const quiet = async (what: string, baseFds?: number): Promise<Sample> => {
        await churn.quiesce();
        let streams = -1;
        const deadline = Date.now() + Number(process.env.RIPPLECACHE_SOAK_DRAIN_MS ?? 15_000);
        for (;;) {
          streams = Number((await probe.info()).streams);
          const m = await metricsStreams();
          const fds = fdCount(pid)!;
          if (streams === 0 && m === 0 && (baseFds === undefined || fds <= baseFds + 2)) break;
          if (Date.now() > deadline) {
            assert.fail(`${what}: ${streams} streams open (metrics: ${lastMetrics}), ${fds} fds (after warm-up: ${baseFds}) 15 s after the churn stopped`);
          }
          await sleep(100);
        }
        // Let V8's memory reducer run on an idle heap before reading RSS.
        await sleep(1000);
        const s: Sample = { rss: rssBytes(pid)!, fds: fdCount(pid)!, streams, at: Date.now() };
        say(`${what}: RSS ${(s.rss / MIB).toFixed(1)} MiB, ${s.fds} fds, ${s.streams} streams`);
        return s;
      };

      churn.start();
      await sleep(WARMUP_MS);
      const base = await quiet("after warm-up");
      churn.resume();
      const samples: Sample[] = [base];
      const rounds = Number(process.env.RIPPLECACHE_SOAK_ROUNDS ?? 3);
      for (let i = 1; i <= rounds; i++) {
        await sleep(SOAK_MS / rounds);
        samples.push(await quiet(`after ${i}/${rounds} of the soak`, base.fds));
        if (i < rounds) churn.resume();
      }
      await churn.stop();
      const end = samples[samples.length - 1];

      // Streams and file descriptors: back where they were (checked in quiet()).
      assert.equal(end.streams, 0);
      assert.ok(end.fds <= base.fds + 2, `fds ${end.fds} after the soak, ${base.fds} after warm-up`);
      // Memory: flat within V8's slack, no upward trend across rounds.
      const tolerance = Math.max(24 * MIB, base.rss * 0.3);
      assert.ok(end.rss <= base.rss + tolerance, `RSS ${(end.rss / MIB).toFixed(1)} MiB after the soak vs ${(base.rss / MIB).toFixed(1)} MiB after warm-up (tolerance ${(tolerance / MIB).toFixed(0)} MiB)`);
      const growing = samples.slice(1).every((s, i) => s.rss > samples[i].rss + 4 * MIB);
      assert.ok(!growing, `RSS grew in every round: ${samples.map((s) => (s.rss / MIB).toFixed(1)).join(" -> ")} MiB`);
      assert.equal(server.proc.exitCode, null, "the server is still running (no out-of-memory exit)");
      const info = await probe.info();
      assert.ok(info.bytesUsed <= info.bytesLimit, `bytes_used ${info.bytesUsed} <= bytes_limit ${info.bytesLimit}`);
      assert.deepEqual(churn.violations, []);
      const c = churn.counts;
      assert.ok(c.watches > 50 && c.tracks > 20 && c.clients > 100, `enough churn: ${JSON.stringify(c)}`);
      say(
        `churn over ${((end.at - base.at) / 1000).toFixed(0)} s: ${c.clients} clients, ${c.rpcs} reads/RPCs, ${c.writes} writes, ${c.watches} watch streams ` +
          `(${c.watchDropped} dropped with their connection, ${c.watchSlow} unread until overflow), ${c.tracks} track streams, ${c.events} events, ` +
          `${c.resyncs} resyncs, ${c.errors} expected call failures; evictions ${info.evictions}, expirations ${info.expirations}`,
      );
      say(`RSS per quiet point: ${samples.map((s) => (s.rss / MIB).toFixed(1)).join(" -> ")} MiB; fds ${samples.map((s) => s.fds).join(" -> ")}`);
    } finally {
      churn.stopped = true;
      probe.close();
      await server.stop("SIGKILL");
    }
  });
});
