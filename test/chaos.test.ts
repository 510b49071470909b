/**
 * Chaos: a primary and two replicas under mixed load while nodes are killed
 * (-9), paused (SIGSTOP/SIGCONT), restarted (SIGTERM) and cut off the network,
 * at random from a printed seed. Afterwards the cluster must heal and hold
 * exactly the primary's data, no watcher may have silently missed an event,
 * and no write acknowledged by replicas may be missing on them.
 *
 * The primary is paused and cut off, never killed or restarted: nodes keep
 * nothing on disk (docs/RELIABILITY.md), so a killed primary loses every write
 * by design, acknowledged or not, and there would be nothing to check. A
 * replica killed -9 loses its memory too and full-resyncs (documented); the
 * acknowledged writes are checked on every replica after it healed.
 *
 * Network faults run in network namespaces this test creates (one per node,
 * bridged, 10.213.x.0/24): `isolate` takes a node's link down, `partition`
 * puts blackhole routes between the primary and a replica in both namespaces
 * (both still reach the test). Without namespaces (not root, no `ip`) the test
 * falls back to process faults on loopback and says so loudly; with CI=true it
 * fails instead, because CI runs as root and must exercise the network.
 *
 * RIPPLECACHE_CHAOS_SEED=N replays a fault schedule (timings on a loaded
 * machine differ, the sequence of faults and targets does not);
 * RIPPLECACHE_CHAOS_MS sets the length of the fault phase (default 20000);
 * RIPPLECACHE_CHAOS_NETNS=off forces the loopback fallback.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient } from "../src/client/client.js";
import { EventType, ResyncReason, type WatchResponse } from "../src/gen/ripplecache/v1/cache_pb.js";
import { createNetLab, fdCount, rssBytes, startLabNode, type LabProcess, type NetLab } from "./helpers/netns.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const dec = new TextDecoder();

const SEED = process.env.RIPPLECACHE_CHAOS_SEED !== undefined ? Number(process.env.RIPPLECACHE_CHAOS_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const CHAOS_MS = Number(process.env.RIPPLECACHE_CHAOS_MS ?? 20_000);
/** Sane upper bound on a node's resident memory (a 8 MiB cache; Node itself takes ~70 MiB). */
const RSS_BOUND = 256 * 1024 * 1024;
const MAX_MEMORY = 8 * 1024 * 1024;

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = prng(SEED);
const between = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];

/** Small, frequent heartbeats and keepalives: a paused or cut peer is noticed within about a second. */
const COMMON = [
  "--replication-heartbeat", "100",
  "--keepalive-interval", "300",
  "--keepalive-timeout", "600",
  // A short backlog: longer outages need full resyncs, and watchers see COMPACTED.
  "--change-log-events", "600",
  "--max-memory", `${MAX_MEMORY}`,
  "--shutdown-timeout", "2000",
  "--log-level", "info",
];

class ChaosNode {
  proc: LabProcess | undefined;
  /** Incremented at every (re)start: a different process has a different memory. */
  gen = 0;
  client!: CacheClient;
  paused = false;
  /** A fault currently holds this node. */
  busy = false;
  readonly logs: string[] = [];

  constructor(
    readonly name: string,
    readonly lab: NetLab,
    readonly args: readonly string[],
  ) {}

  get addr(): string {
    return this.lab.addr(this.name);
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.proc.exitCode === null && this.proc.proc.signalCode === null;
  }

  async start(): Promise<void> {
    // A start that fails outright is retried: on a shared machine, a build
    // rewriting dist/ can make one start load half-written modules.
    for (let attempt = 1; ; attempt++) {
      try {
        this.proc = await startLabNode(this.lab, this.name, this.args);
        break;
      } catch (err) {
        if (attempt >= 3) throw err;
        process.stderr.write(`# chaos: ${this.name} failed to start (attempt ${attempt}), retrying: ${String(err).slice(0, 300)}\n`);
        await sleep(1000);
      }
    }
    this.gen++;
    this.paused = false;
    this.resetClient();
  }

  /** A fresh client (a connection to a vanished peer can hang until its PINGs time out). */
  resetClient(old?: CacheClient): void {
    if (old !== undefined && old !== this.client) return;
    this.client?.close();
    this.client = new CacheClient({ addr: this.addr, timeoutMs: 3000, followPrimary: false });
  }

  keepLogs(): void {
    if (this.proc !== undefined) this.logs.push(`--- ${this.name} gen ${this.gen} ---`, ...this.proc.output.splice(0));
  }

  async kill(): Promise<void> {
    this.keepLogs();
    await this.proc?.kill();
    this.paused = false;
  }
}

/** A completed write whose revision the primary returned: every watcher that covered it must have its event. */
interface WriteRecord {
  readonly key: string;
  readonly revision: number;
  readonly type: EventType;
  readonly value?: string;
}

/** A min_replicas write and what came of it. */
interface AckRecord {
  readonly key: string;
  readonly value: string;
  readonly revision: number;
  readonly minReplicas: number;
  readonly acked: number;
  flushed: boolean;
}

interface Interval {
  lo: number;
  hi: number;
}

/**
 * A watcher that reconnects after any failure with start_revision = the last
 * revision it covered + 1. It records the revision intervals it was told it
 * covers (from Created or a Resync, extended by events and Progress) and
 * checks, message by message: Created first, revisions strictly increasing,
 * and for a watcher of every key (prefix ""), consecutive revisions and no
 * Progress beyond what it received.
 */
class Watcher {
  readonly intervals: Interval[] = [];
  cur: Interval | undefined;
  readonly events = new Map<number, { key: string; type: EventType; value: string }>();
  readonly violations: string[] = [];
  readonly resyncs = new Map<string, number>();
  streams = 0;
  failures = 0;
  messages = 0;
  private stopped = false;
  private abort: AbortController | undefined;
  private readonly done: Promise<void>;

  constructor(
    readonly node: ChaosNode,
    readonly prefix: string,
    readonly withValues: boolean,
  ) {
    this.done = this.run();
  }

  get name(): string {
    return `watcher ${JSON.stringify(this.prefix)} on ${this.node.name}`;
  }

  get covered(): number {
    return this.cur?.hi ?? -1;
  }

  async stop(): Promise<void> {
    if (this.stopped) return this.done;
    this.stopped = true;
    this.abort?.abort();
    await this.done;
  }

  private violation(what: string): void {
    if (this.violations.length < 20) this.violations.push(`${this.name}: ${what}`);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const client = new CacheClient({ addr: this.node.addr, protocol: "grpc" });
      const abort = (this.abort = new AbortController());
      let watchdog: NodeJS.Timeout | undefined;
      const feed = () => {
        clearTimeout(watchdog);
        // Progress comes every 300 ms on an idle stream: 2.5 s of silence is a dead link.
        watchdog = setTimeout(() => abort.abort(), 2500);
      };
      const start = this.cur === undefined ? 0 : this.cur.hi + 1;
      let first = true;
      try {
        feed();
        this.streams++;
        const stream = client.rpc.watch(
          { target: { case: "prefix", value: this.prefix }, startRevision: BigInt(start), withValues: this.withValues, progressIntervalMs: 300 },
          { signal: abort.signal },
        );
        for await (const m of stream) {
          feed();
          this.messages++;
          this.handle(m, first, start);
          first = false;
        }
      } catch {
        this.failures++;
      } finally {
        clearTimeout(watchdog);
        client.close();
      }
      if (!this.stopped) await sleep(50 + Math.floor(Math.random() * 150));
    }
  }

  private handle(m: WatchResponse, first: boolean, start: number): void {
    const k = m.kind;
    if (first !== (k.case === "created")) {
      this.violation(`message ${k.case} where Created ${first ? "must come first" : "came again"}`);
      return;
    }
    switch (k.case) {
      case "created": {
        const r = Number(k.value.revision);
        // A first stream covers what comes after Created; a resumed one asked
        // for start_revision on and is owed everything from there (replayed
        // from the log, or a COMPACTED resync).
        if (this.cur === undefined) this.cur = { lo: r + 1, hi: r };
        else if (start !== this.cur.hi + 1) this.violation(`resumed at ${start}, not after ${this.cur.hi}`);
        return;
      }
      case "events": {
        const cur = this.cur!;
        for (const e of k.value.events) {
          const r = Number(e.revision);
          if (r <= cur.hi) this.violation(`event ${r} (${e.key}) after ${cur.hi}: not in revision order`);
          else if (this.prefix === "" && r !== cur.hi + 1) this.violation(`event ${r} (${e.key}) after ${cur.hi}: revisions ${cur.hi + 1}..${r - 1} missing`);
          if (!e.key.startsWith(this.prefix)) this.violation(`event ${r} for ${e.key} outside the prefix`);
          this.events.set(r, { key: e.key, type: e.type, value: dec.decode(e.value) });
          cur.hi = Math.max(cur.hi, r);
        }
        return;
      }
      case "progress": {
        const cur = this.cur!;
        const r = Number(k.value.revision);
        // Progress says everything up to r was sent.
        if (r > cur.hi) {
          if (this.prefix === "") this.violation(`progress ${r} but events ${cur.hi + 1}..${r} never came`);
          else cur.hi = r;
        }
        return;
      }
      case "resync": {
        const cur = this.cur!;
        const r = Number(k.value.revision);
        const reason = ResyncReason[k.value.reason] ?? String(k.value.reason);
        this.resyncs.set(reason, (this.resyncs.get(reason) ?? 0) + 1);
        if (r < cur.hi) this.violation(`resync ${reason} at ${r}, behind revision ${cur.hi} already delivered`);
        if (cur.hi >= cur.lo) this.intervals.push({ ...cur });
        this.cur = { lo: r + 1, hi: r };
        return;
      }
      default:
        this.violation(`unexpected message ${String(k.case)}`);
    }
  }

  /** Whether this watcher was told it saw every matching change at `revision`. */
  covers(revision: number): boolean {
    const all = this.cur === undefined ? this.intervals : [...this.intervals, this.cur];
    return all.some((i) => i.lo <= revision && revision <= i.hi);
  }
}

function isTransient(err: unknown): boolean {
  return err instanceof ConnectError && [Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Aborted, Code.Internal, Code.Unknown].includes(err.code);
}

type FaultKind = "kill" | "restart" | "pause-replica" | "pause-primary" | "isolate" | "partition";
const FAULT_KINDS: readonly FaultKind[] = ["kill", "restart", "pause-replica", "pause-primary", "isolate", "partition"];
const NETWORK_FAULTS: readonly FaultKind[] = ["isolate", "partition"];

let lab: NetLab | undefined;
const nodes: ChaosNode[] = [];
/** Stops the load and the watchers (they would otherwise run on after a failure and keep the process alive). */
let stopWork: (() => Promise<void>) | undefined;
async function cleanup(): Promise<void> {
  await stopWork?.();
  await Promise.all(nodes.map((n) => n.kill()));
  for (const n of nodes) n.client?.close();
  lab?.destroy();
}
// The namespaces go even when the test fails or the runner interrupts it.
after(cleanup);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    lab?.destroy();
    process.exit(130);
  });
}

describe("chaos", () => {
  test("a primary and two replicas under load, process and network faults", { timeout: 180_000 }, async (t) => {
    const say = (line: string) => {
      t.diagnostic(line);
      process.stdout.write(`# chaos: ${line}\n`);
    };
    say(`seed ${SEED} (replay with RIPPLECACHE_CHAOS_SEED=${SEED}), fault phase ${CHAOS_MS} ms`);
    const forced = process.env.RIPPLECACHE_CHAOS_NETNS === "off" ? "RIPPLECACHE_CHAOS_NETNS=off" : undefined;
    lab = await createNetLab(["p", "r1", "r2"], { forceLoopback: forced });
    if (lab.mode === "loopback") {
      const line = `NETWORK FAULTS DISABLED: ${lab.reason}; only process faults on loopback (kill, pause, restart)`;
      process.stderr.write(`\n#### chaos: ${line} ####\n\n`);
      say(line);
      if (process.env.CI === "true") assert.fail(`chaos test in CI needs network namespaces (run as root with iproute2): ${lab.reason}`);
    } else {
      say(`network namespaces: nodes at ${["p", "r1", "r2"].map((n) => lab!.addr(n)).join(", ")}`);
    }
    const kinds = lab.mode === "netns" ? FAULT_KINDS : FAULT_KINDS.filter((k) => !NETWORK_FAULTS.includes(k));

    const p = new ChaosNode("p", lab, COMMON);
    const r1 = new ChaosNode("r1", lab, [...COMMON, "--replica-of", lab.addr("p")]);
    const r2 = new ChaosNode("r2", lab, [...COMMON, "--replica-of", lab.addr("p")]);
    nodes.push(p, r1, r2);
    const replicas = [r1, r2];
    await Promise.all(nodes.map((n) => n.start()));
    await waitUntil("replicas to finish their first sync", 30_000, async () => {
      for (const r of replicas) await r.client.get("warmup");
      return true;
    });

    const figures = {
      faults: new Map<string, number>(),
      writes: 0,
      writeErrors: 0,
      reads: 0,
      readErrors: 0,
      ackWrites: 0,
      ackedBy: [0, 0, 0],
      ackSpotChecks: 0,
      rywChecks: 0,
      rywUnanswered: 0,
      watcherChecks: 0,
      finalAckChecks: 0,
    };
    const violations: string[] = [];
    const violation = (what: string) => {
      if (violations.length < 50) violations.push(what);
    };
    const writes: WriteRecord[] = [];
    const acks: AckRecord[] = [];
    let flushRevision = 0;
    let flushEpoch = 0;

    const watchers = nodes.flatMap((n) => [new Watcher(n, "", false), new Watcher(n, "ack/", true)]);

    // --- load ---
    let loadStopped = false;
    const primaryCall = async <T>(f: (c: CacheClient) => Promise<T>): Promise<T | undefined> => {
      const c = p.client;
      try {
        const r = await f(c);
        figures.writes++;
        return r;
      } catch (err) {
        if (!isTransient(err)) throw err;
        figures.writeErrors++;
        if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) p.resetClient(c);
        await sleep(50);
        return undefined;
      }
    };

    async function writer(w: number): Promise<void> {
      for (let i = 0; !loadStopped; i++) {
        const n = between(0, 99);
        const r = rnd();
        if (r < 0.4) {
          const value = `v${w}.${i}`;
          const res = await primaryCall((c) => c.set(`k/${n}`, value, { flags: n % 3 }));
          if (res !== undefined) writes.push({ key: `k/${n}`, revision: res.revision, type: EventType.PUT });
        } else if (r < 0.55) {
          const res = await primaryCall((c) => c.set(`ttl/${n}`, `t${i}`, { ttlMs: between(100, 400) }));
          if (res !== undefined) writes.push({ key: `ttl/${n}`, revision: res.revision, type: EventType.PUT });
        } else if (r < 0.7) {
          const res = await primaryCall((c) => c.delete(`k/${n}`));
          if (res?.deleted === true) writes.push({ key: `k/${n}`, revision: res.revision, type: EventType.DELETE });
        } else if (r < 0.8) {
          const res = await primaryCall((c) => c.increment(`c/${n % 10}`, between(-5, 5)));
          if (res !== undefined) writes.push({ key: `c/${n % 10}`, revision: res.revision, type: EventType.PUT });
        } else if (r < 0.95) {
          const entries = Array.from({ length: 5 }, (_, j) => ({ key: `m/${(n + j) % 100}`, value: enc.encode(`m${w}.${i}`) }));
          const res = await primaryCall((c) => c.rpc.setMany({ entries }));
          res?.results.forEach((s, j) => writes.push({ key: entries[j].key, revision: Number(s.revision), type: EventType.PUT }));
        } else {
          // Larger values: full resyncs carry more than one small chunk.
          const res = await primaryCall((c) => c.set(`blob/${n % 20}`, new Uint8Array(between(2048, 32768)).fill(n)));
          if (res !== undefined) writes.push({ key: `blob/${n % 20}`, revision: res.revision, type: EventType.PUT });
        }
        await sleep(between(0, 4));
      }
    }

    /** Reads on random nodes; every answer is counted, errors are expected while nodes are down. */
    async function reader(): Promise<void> {
      while (!loadStopped) {
        const node = pick(nodes);
        const c = node.client;
        try {
          if (rnd() < 0.7) await c.rpc.get({ key: `k/${between(0, 99)}` }, { timeoutMs: 1500 });
          else await c.rpc.getMany({ keys: Array.from({ length: 10 }, (_, i) => `m/${i * 10}`) }, { timeoutMs: 1500 });
          figures.reads++;
        } catch (err) {
          if (!isTransient(err)) throw err;
          figures.readErrors++;
          if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) node.resetClient(c);
          await sleep(50);
        }
        await sleep(between(0, 5));
      }
    }

    /**
     * min_replicas writes to unique keys (never overwritten, deleted or
     * evicted; only the one Flush removes them), each followed by checks on
     * the replicas: a replica process that was running for the whole write
     * and answers a plain Get must hold it if it acknowledged it (counted: at
     * least `acked` of the replicas that answered, minus those that did not),
     * and a min_revision read that answers must see it.
     */
    async function ackWriter(w: number, flushAt: number | undefined): Promise<void> {
      for (let i = 0; !loadStopped; i++) {
        if (flushAt !== undefined && flushRevision === 0 && Date.now() >= flushAt) {
          flushEpoch++;
          const f = await primaryCall((c) => c.rpc.flush({}));
          if (f !== undefined) {
            flushRevision = Number(f.revision);
            for (const a of acks) if (a.revision < flushRevision) a.flushed = true;
            say(`flush at revision ${flushRevision}`);
          }
          flushEpoch++;
        }
        // Checks that overlap the flush prove nothing: they are dropped.
        const epoch = flushEpoch;
        const key = `ack/${w}/${i}`;
        const value = `a${i}.${SEED}`;
        const minReplicas = i % 4 === 0 ? 1 : 2;
        const gens = replicas.map((r) => r.gen);
        const res = await primaryCall((c) => c.rpc.set({ key, value: enc.encode(value), minReplicas, replicaTimeoutMs: 800 }, { timeoutMs: 4000 }));
        if (res === undefined) continue;
        figures.ackWrites++;
        figures.ackedBy[res.replicasAcked]++;
        const revision = Number(res.revision);
        acks.push({ key, value, revision, minReplicas, acked: res.replicasAcked, flushed: false });
        writes.push({ key, revision, type: EventType.PUT, value });
        if (res.replicasAcked > 0) {
          const answers = await Promise.all(
            replicas.map(async (r, j) => {
              const c = r.client;
              try {
                const g = await c.rpc.get({ key }, { timeoutMs: 1000 });
                return r.gen === gens[j] ? g : undefined;
              } catch (err) {
                if (!isTransient(err)) throw err;
                if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) r.resetClient(c);
                return undefined;
              }
            }),
          );
          if (epoch !== flushEpoch) continue;
          const unanswered = answers.filter((a) => a === undefined).length;
          const holding = answers.filter((a) => a !== undefined && a.found && dec.decode(a.value) === value && Number(a.revision) === revision).length;
          for (const [j, a] of answers.entries()) {
            if (a !== undefined && a.found && (dec.decode(a.value) !== value || Number(a.revision) !== revision)) {
              violation(`${key}: ${replicas[j].name} holds ${dec.decode(a.value)}@${a.revision}, written ${value}@${revision}`);
            }
          }
          if (holding < res.replicasAcked - unanswered) {
            violation(`${key}@${revision} acknowledged by ${res.replicasAcked} replicas, but only ${holding} of ${2 - unanswered} that answered hold it`);
          }
          figures.ackSpotChecks++;
        }
        // Read-your-writes on a replica: an answer to min_revision must include the write.
        const r = pick(replicas);
        const c = r.client;
        try {
          const g = await c.rpc.get({ key, minRevision: BigInt(revision) }, { timeoutMs: 3000 });
          if (epoch !== flushEpoch) continue;
          figures.rywChecks++;
          if (!g.found || dec.decode(g.value) !== value || Number(g.revision) !== revision) {
            violation(`${key}: ${r.name} answered min_revision ${revision} with ${g.found ? `${dec.decode(g.value)}@${g.revision}` : "not found"}`);
          }
        } catch (err) {
          if (!isTransient(err)) throw err;
          figures.rywUnanswered++;
          if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) r.resetClient(c);
        }
      }
    }

    const chaosStart = Date.now();
    const load = [writer(0), writer(1), reader(), ackWriter(0, chaosStart + CHAOS_MS * 0.4), ackWriter(1, undefined), ackWriter(2, undefined)];
    stopWork = async () => {
      loadStopped = true;
      await Promise.allSettled(load);
      await Promise.allSettled(watchers.map((w) => w.stop()));
    };

    // --- faults ---
    const active = new Set<Promise<void>>();
    const partitions = new Set<string>();
    const count = (kind: string) => figures.faults.set(kind, (figures.faults.get(kind) ?? 0) + 1);
    const faultLog: string[] = [];
    const note = (line: string) => faultLog.push(`${((Date.now() - chaosStart) / 1000).toFixed(1)}s ${line}`);

    async function fault(kind: FaultKind, target: ChaosNode): Promise<void> {
      const other = kind === "partition" ? pick(replicas.filter((r) => !r.busy)) : undefined;
      if (kind === "partition" && other === undefined) return;
      target.busy = true;
      if (other !== undefined) other.busy = true;
      try {
        switch (kind) {
          case "kill": {
            const down = between(200, 1500);
            note(`kill -9 ${target.name}, restart after ${down} ms`);
            await target.kill();
            await sleep(down);
            await target.start();
            break;
          }
          case "restart": {
            note(`restart ${target.name} (SIGTERM)`);
            target.keepLogs();
            await target.proc!.terminate(5000);
            await target.start();
            break;
          }
          case "pause-replica":
          case "pause-primary": {
            const d = kind === "pause-primary" ? between(300, 1500) : between(300, 2500);
            note(`SIGSTOP ${target.name} for ${d} ms`);
            target.proc!.signal("SIGSTOP");
            target.paused = true;
            try {
              await sleep(d);
            } finally {
              target.proc!.signal("SIGCONT");
              target.paused = false;
            }
            break;
          }
          case "isolate": {
            const d = between(500, 2500);
            note(`link of ${target.name} down for ${d} ms`);
            lab!.isolate(target.name);
            try {
              await sleep(d);
            } finally {
              lab!.rejoin(target.name);
            }
            break;
          }
          case "partition": {
            const d = between(500, 3000);
            note(`partition ${target.name} | ${other!.name} for ${d} ms`);
            lab!.partition(target.name, other!.name);
            partitions.add(other!.name);
            try {
              await sleep(d);
            } finally {
              lab!.heal(target.name, other!.name);
              partitions.delete(other!.name);
            }
            break;
          }
        }
        count(kind);
      } finally {
        target.busy = false;
        if (other !== undefined) other.busy = false;
      }
    }

    // The kinds in seeded shuffles, one full round after another: every kind happens.
    const schedule: FaultKind[] = [];
    const nextKind = (): FaultKind => {
      if (schedule.length === 0) {
        const round = [...kinds];
        for (let i = round.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [round[i], round[j]] = [round[j], round[i]];
        }
        schedule.push(...round);
      }
      return schedule.shift()!;
    };
    let faultError: unknown;
    while (Date.now() - chaosStart < CHAOS_MS && faultError === undefined) {
      await sleep(between(200, 900));
      if (active.size >= 2) continue;
      const kind = nextKind();
      const candidates = kind === "pause-primary" || kind === "partition" ? [p] : kind === "isolate" ? nodes : replicas;
      const free = candidates.filter((n) => !n.busy);
      if (free.length === 0) {
        schedule.unshift(kind);
        continue;
      }
      const f = fault(kind, pick(free)).catch((err: unknown) => {
        faultError ??= err;
      });
      active.add(f);
      void f.finally(() => active.delete(f));
    }
    await Promise.all(active);
    if (faultError !== undefined) throw faultError;
    // Healed: every process runs and is resumed, every link is up.
    for (const n of nodes) {
      assert.ok(n.running, `${n.name} runs`);
      n.proc!.signal("SIGCONT");
      n.resetClient();
    }
    const chaosMs = Date.now() - chaosStart;
    loadStopped = true;
    await Promise.all(load);

    // --- convergence ---
    // A last write every watcher must reach: they are live and caught up.
    const endRevision = await waitUntil("a last write", 20_000, async () => (await p.client.set("end", "1")).revision);
    await waitUntil("every watcher to reach the last write", 30_000, () => {
      const behind = watchers.filter((w) => w.covered < endRevision);
      if (behind.length > 0) throw new Error(behind.map((w) => `${w.name} at ${w.covered}`).join("; "));
      return true;
    });
    await Promise.all(watchers.map((w) => w.stop()));
    // TTL keys expire on the primary only; afterwards the dataset changes no more.
    await waitUntil("every key with a TTL to expire on the primary", 20_000, async () => {
      for await (const e of p.client.scan("ttl/", { keysOnly: true, pageSize: 1000 })) throw new Error(`${e.key} still there`);
      const info = await p.client.info();
      let live = 0;
      for await (const _ of p.client.scan("", { keysOnly: true, pageSize: 1000 })) live++;
      return info.keys === BigInt(live);
    });
    const digest = await waitUntil("replicas to converge to the primary's digest", 30_000, async () => {
      const ds = await Promise.all(nodes.map((n) => n.client.admin.digest({}, { timeoutMs: 2000 })));
      const [pd, ...rd] = ds;
      if (rd.every((d) => d.revision === pd.revision && d.digest === pd.digest)) return pd;
      throw new Error(ds.map((d, i) => `${nodes[i].name} rev ${d.revision} ${d.digest.slice(0, 10)} keys ${d.keys}`).join("; "));
    });
    await waitUntil("the primary to list both replicas streaming, once each, caught up", 20_000, async () => {
      const info = await p.client.info();
      const got = info.replicas.map((r) => `${r.address} ${r.state} ${r.ackedRevision}`).sort();
      const want = replicas.map((r) => `${r.addr} streaming ${info.revision}`).sort();
      if (JSON.stringify(got) === JSON.stringify(want)) return true;
      throw new Error(`replicas [${got.join("; ")}], want [${want.join("; ")}]`);
    });

    // Exactly the same entries (values, revisions, flags) on every node.
    const dumps = await Promise.all(nodes.map((n) => dump(n.client)));
    assert.equal(dumps[0].length, Number(digest.keys));
    for (const [i, d] of dumps.entries()) assert.deepEqual(d, dumps[0], `${nodes[i].name} holds exactly the primary's entries`);

    // Every acknowledged write since the flush is on every replica (and on the primary).
    const acked = acks.filter((a) => a.acked > 0 && !a.flushed && a.revision > flushRevision);
    for (const n of nodes) {
      for (let i = 0; i < acked.length; i += 500) {
        const batch = acked.slice(i, i + 500);
        const got = await n.client.rpc.getMany({ keys: batch.map((a) => a.key) });
        got.entries.forEach((e, j) => {
          figures.finalAckChecks++;
          const a = batch[j];
          if (!e.found || dec.decode(e.value) !== a.value || Number(e.revision) !== a.revision) {
            violation(`acknowledged ${a.key}@${a.revision} (acked by ${a.acked}) is ${e.found ? `${dec.decode(e.value)}@${e.revision}` : "missing"} on ${n.name}`);
          }
        });
      }
    }

    // Watchers: no violation seen live; every completed write a watcher
    // covered is among its events, same key, type (and value); no flush inside
    // a covered interval (a flush must arrive as a Resync).
    for (const w of watchers) {
      violations.push(...w.violations);
      assert.ok(w.events.size > 0, `${w.name} received events`);
      for (const rec of writes) {
        if (!rec.key.startsWith(w.prefix) || !w.covers(rec.revision)) continue;
        figures.watcherChecks++;
        const e = w.events.get(rec.revision);
        if (e === undefined || e.key !== rec.key || e.type !== rec.type || (w.withValues && rec.value !== undefined && e.value !== rec.value)) {
          violation(`${w.name} covered revision ${rec.revision} (${EventType[rec.type]} ${rec.key}) but got ${e === undefined ? "nothing" : `${EventType[e.type]} ${e.key}=${e.value}`}`);
        }
      }
      if (flushRevision > 0 && w.covers(flushRevision)) violation(`${w.name} covered the flush at ${flushRevision} without a Resync`);
    }

    // Memory: within the cache bound, and resident memory sane.
    const memory: string[] = [];
    for (const n of nodes) {
      const info = await n.client.info();
      assert.ok(info.bytesUsed <= info.bytesLimit, `${n.name}: bytes_used ${info.bytesUsed} <= bytes_limit ${info.bytesLimit}`);
      const rss = rssBytes(n.proc!.pid);
      assert.ok(rss !== undefined && rss < RSS_BOUND, `${n.name}: RSS ${rss} under ${RSS_BOUND}`);
      memory.push(`${n.name} used ${info.bytesUsed}/${info.bytesLimit} B, RSS ${((rss ?? 0) / 2 ** 20).toFixed(0)} MiB, ${fdCount(n.proc!.pid)} fds`);
    }
    const pinfo = await p.client.info();
    assert.equal(pinfo.evictions, 0n, "no eviction (the acknowledged-write check relies on it)");

    const faults = [...figures.faults.values()].reduce((a, b) => a + b, 0);
    const fullResyncs = nodes.flatMap((n) => [...n.logs, ...(n.proc?.output ?? [])]).filter((l) => l.includes('"msg":"full resync"')).length;
    const partialResyncs = nodes.flatMap((n) => [...n.logs, ...(n.proc?.output ?? [])]).filter((l) => l.includes('"msg":"partial resync"')).length;
    const watcherResyncs = new Map<string, number>();
    for (const w of watchers) for (const [k, v] of w.resyncs) watcherResyncs.set(k, (watcherResyncs.get(k) ?? 0) + v);
    const checked = figures.ackSpotChecks + figures.rywChecks + figures.finalAckChecks + figures.watcherChecks + dumps[0].length * 3;
    say(`faults injected: ${faults} in ${chaosMs} ms (${[...figures.faults].map(([k, v]) => `${k} ${v}`).join(", ")}; network: ${lab.mode})`);
    for (const line of faultLog) say(`  ${line}`);
    say(
      `operations: ${figures.writes} writes (${figures.writeErrors} failed during faults), ${figures.reads} reads (${figures.readErrors} failed), ` +
        `${figures.ackWrites} min_replicas writes (acked by 0/1/2 replicas: ${figures.ackedBy.slice(0, 3).join("/")})`,
    );
    say(
      `operations checked: ${checked} (${figures.ackSpotChecks} acked-write spot checks, ${figures.rywChecks} min_revision reads (${figures.rywUnanswered} unanswered), ` +
        `${figures.finalAckChecks} acked writes on the 3 nodes at the end, ${figures.watcherChecks} watcher event checks, ${dumps[0].length} entries x 3 nodes compared)`,
    );
    say(
      `resyncs: replicas ${fullResyncs} full / ${partialResyncs} partial; watchers ${[...watcherResyncs].map(([k, v]) => `${k} ${v}`).join(", ") || "none"}; ` +
        `watch streams opened ${watchers.reduce((a, w) => a + w.streams, 0)}`,
    );
    say(`final revision ${digest.revision}, ${digest.keys} keys, digests equal; bytes lost: ${violations.length === 0 ? 0 : "see violations"}`);
    for (const line of memory) say(`  ${line}`);

    if (violations.length > 0) {
      for (const n of nodes) n.keepLogs();
      const logs = nodes.flatMap((n) => n.logs.filter((l) => /resync|link down|protocol|error/i.test(l))).slice(-80);
      assert.fail(`seed ${SEED}: ${violations.length} violations:\n${violations.join("\n")}\nfaults:\n${faultLog.join("\n")}\nlogs:\n${logs.join("\n")}`);
    }
    assert.ok(faults >= Math.min(6, kinds.length), `at least ${Math.min(6, kinds.length)} faults were injected (${faults})`);
    for (const k of kinds) assert.ok((figures.faults.get(k) ?? 0) > 0 || CHAOS_MS < 15_000, `a ${k} fault happened`);
    assert.ok(figures.ackedBy[1] + figures.ackedBy[2] > 10, "some writes were acknowledged by replicas");
    assert.ok(figures.rywChecks > 5, "some min_revision reads were answered");
  });
});

async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | false> | T | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const r = await probe();
      if (r !== false) return r;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${last instanceof Error ? last.message : String(last)}`);
    await sleep(100);
  }
}

async function dump(client: CacheClient): Promise<string[]> {
  const out: string[] = [];
  for await (const e of client.scan("", { pageSize: 1000 })) out.push(`${e.key}=${dec.decode(e.value).slice(0, 40)}/${e.value.length}@${e.revision}/${e.flags}/${e.ttlMs > 0}`);
  return out.sort();
}
