/**
 * Chaos: a primary and two replicas under mixed load while nodes are killed
 * (-9), paused (SIGSTOP/SIGCONT), restarted (SIGTERM) and cut off the network,
 * and while the primary itself is killed and replaced, at random from a
 * printed seed. Afterwards the cluster must heal and hold exactly the
 * primary's data, no watcher may have silently missed an event, and no write
 * acknowledged by replicas may be missing.
 *
 * Failover ("kill-primary"): the test acts as an operator would (as Redis
 * Sentinel does). It kills the primary -9, promotes the running replica with
 * the highest applied revision (AdminService.Promote), re-points the other
 * one to it (ReplicaOf), and restarts the old primary's process as a replica
 * of the new one, so the roles rotate among the three namespaces; load,
 * watchers and faults follow the current primary. Nodes keep nothing on disk,
 * so a failover loses the writes that only the old primary had applied: that
 * is asynchronous replication (docs/RELIABILITY.md), counted and printed, not
 * a violation. A write acknowledged by a replica that still runs is never
 * lost: the replica promoted is at least as far along as that one.
 *
 * Revisions name changes only within a history (a replication id). A
 * promoted node starts a new history that continues the old one up to the
 * promotion revision, and past it reuses revisions the old primary gave to
 * the writes now lost. So every write is tagged with the history of the
 * primary that answered it, every watcher interval with the history the
 * server told it (Created, Progress, Resync), and the two are compared at
 * the same position of the lineage of histories (`Lineage.root`).
 *
 * Network faults run in network namespaces this test creates (one per node,
 * bridged, 10.213.x.0/24): `isolate` takes a node's link down, `partition`
 * puts blackhole routes between the primary and a replica in both namespaces
 * (both still reach the test). Without namespaces (not root, no `ip`) the test
 * falls back to process faults on loopback and says so loudly; with CI=true it
 * fails instead, because CI runs as root and must exercise the network.
 *
 * RIPPLECACHE_CHAOS_SEED=N replays a fault schedule: the sequence of fault
 * kinds and of random choices is the same; on a loaded machine timings differ,
 * and with them which nodes are free for a fault and which replica is
 * furthest along at a failover;
 * RIPPLECACHE_CHAOS_MS sets the length of the fault phase (default 20000);
 * RIPPLECACHE_CHAOS_NETNS=off forces the loopback fallback.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient } from "../src/client/client.js";
import { EventType, ResyncReason, type InfoResponse, type WatchResponse } from "../src/gen/ripplecache/v1/cache_pb.js";
import { createNetLab, fdCount, rssBytes, startLabNode, type LabProcess, type NetLab } from "./helpers/netns.js";
import { mulberry32 } from "./helpers/prng.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const dec = new TextDecoder();

const SEED = process.env.RIPPLECACHE_CHAOS_SEED !== undefined ? Number(process.env.RIPPLECACHE_CHAOS_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const CHAOS_MS = Number(process.env.RIPPLECACHE_CHAOS_MS ?? 20_000);
/** Sane upper bound on a node's resident memory (a 8 MiB cache; Node itself takes ~70 MiB). */
const RSS_BOUND = 256 * 1024 * 1024;
const MAX_MEMORY = 8 * 1024 * 1024;
/** Node names, one namespace each; roles rotate among them at every failover. */
const NAMES = ["n1", "n2", "n3"] as const;

const rnd = mulberry32(SEED);
const between = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
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
    /** The primary this node follows (host:port), undefined while it is the primary: a restart keeps the node's role. */
    public replicaOf: string | undefined,
  ) {}

  get addr(): string {
    return this.lab.addr(this.name);
  }

  get args(): string[] {
    return this.replicaOf === undefined ? [...COMMON] : [...COMMON, "--replica-of", this.replicaOf];
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

/** A promotion: `history` continues `parent` up to and including revision `upTo`. */
interface Promotion {
  readonly history: string;
  readonly parent: string;
  readonly upTo: number;
  readonly killed: ChaosNode;
  readonly promoted: ChaosNode;
  /** The replicas' process generations when the primary was killed: which of them restarted since a write. */
  readonly gens: ReadonlyMap<ChaosNode, number>;
  /** Where (seconds into the fault phase) and what the operator saw. */
  readonly note: string;
}

/**
 * The histories the cluster went through, in the order their primaries
 * served, and how each promoted one continues its parent. Two (history,
 * revision) pairs name the same change when their roots are equal.
 */
class Lineage {
  readonly order: string[] = [];
  readonly promotions = new Map<string, Promotion>();

  constructor(first: string) {
    this.order.push(first);
  }

  get current(): string {
    return this.order[this.order.length - 1];
  }

  add(p: Promotion): void {
    this.promotions.set(p.history, p);
    this.order.push(p.history);
  }

  /** The oldest history in which `revision` of `history` already existed. */
  root(history: string, revision: number): string {
    let h = history;
    for (let p = this.promotions.get(h); p !== undefined && revision <= p.upTo; p = this.promotions.get(h)) h = p.parent;
    return h;
  }

  same(a: string, b: string, revision: number): boolean {
    return this.root(a, revision) === this.root(b, revision);
  }

  /**
   * Whether a write answered at (a, ra) came before one answered at (b, rb):
   * a primary serves until it is killed, then the next history's primary is
   * promoted, so histories order writes first and revisions within one.
   */
  before(a: string, ra: number, b: string, rb: number): boolean {
    const ia = this.order.indexOf(a);
    const ib = this.order.indexOf(b);
    return ia !== ib ? ia < ib : ra < rb;
  }
}

/** Which node is the primary now, of which history; a failover replaces all three fields at once. */
interface Cluster {
  primary: ChaosNode;
  /** Replaced, never mutated: a check that took it at a write still names that write's replicas. */
  replicas: readonly ChaosNode[];
  history: string;
}

/** A completed write whose revision the primary returned: every watcher that covered it must have its event. */
interface WriteRecord {
  readonly key: string;
  readonly revision: number;
  /** The history of the primary that answered. */
  readonly history: string;
  readonly type: EventType;
  readonly value?: string;
}

/** A min_replicas write and what came of it. */
interface AckRecord {
  readonly key: string;
  readonly value: string;
  readonly revision: number;
  readonly history: string;
  readonly minReplicas: number;
  readonly acked: number;
  /** The primary's replicas when the write was sent, and their process generations then. */
  readonly replicas: readonly ChaosNode[];
  readonly gens: readonly number[];
}

interface WatchedEvent {
  readonly key: string;
  readonly type: EventType;
  readonly value: string;
}

/**
 * A run of revisions a watcher was told it receives every matching change
 * of: from `lo` to `hi`, of `history`. The server names the history only in
 * Created, Progress and Resync, so events after the last of those
 * (`confirmed`) may belong to a history the watcher has not heard of yet (a
 * promotion just happened): only lo..min(hi, confirmed) counts as covered.
 */
interface Interval {
  /** "" until the server names it (a replica that holds no complete dataset). */
  history: string;
  readonly lo: number;
  hi: number;
  confirmed: number;
  /** By revision: revisions repeat across histories, so events live with their interval. */
  readonly events: Map<number, WatchedEvent>;
}

/** The server said, without a Resync, that `to` continues `from` through `through`; checked against the lineage at the end. */
interface HistoryChange {
  readonly from: string;
  readonly to: string;
  readonly through: number;
}

/**
 * A watcher bound to one node that reconnects after any failure with
 * start_revision = the last revision it covered + 1 and start_history = the
 * history it was last told. It records the intervals it was told it covers
 * and checks, message by message: Created first, revisions strictly
 * increasing within a history, and for a watcher of every key (prefix ""),
 * consecutive revisions and no Progress beyond what it received. A Resync
 * HISTORY may go back: the node's history is another one.
 */
class Watcher {
  readonly intervals: Interval[] = [];
  cur: Interval | undefined;
  readonly violations: string[] = [];
  readonly changes: HistoryChange[] = [];
  readonly resyncs = new Map<string, number>();
  streams = 0;
  failures = 0;
  messages = 0;
  /** Resumes that started afresh because the history of the last interval was never named. */
  freshStarts = 0;
  private stopped = false;
  private abort: AbortController | undefined;
  private readonly done: Promise<void>;
  /** A resumed stream's Created, until the next message says whether the server continued it. */
  private resumed: { readonly history: string; readonly start: number } | undefined;

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

  get all(): Interval[] {
    return this.cur === undefined ? this.intervals : [...this.intervals, this.cur];
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

  private close(): void {
    if (this.cur !== undefined && this.cur.hi >= this.cur.lo) this.intervals.push(this.cur);
    this.cur = undefined;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const client = new CacheClient({ addr: this.node.addr, protocol: "grpc" });
      const abort = (this.abort = new AbortController());
      let watchdog: NodeJS.Timeout | undefined;
      const feed = (): void => {
        clearTimeout(watchdog);
        // Progress comes every 300 ms on an idle stream: 2.5 s of silence is a dead link.
        watchdog = setTimeout(() => abort.abort(), 2500);
      };
      // Revisions of an unnamed history cannot be resumed safely (the node
      // may hold another history by now): such an interval ends here.
      if (this.cur !== undefined && this.cur.history === "") {
        this.close();
        this.freshStarts++;
      }
      const start = this.cur === undefined ? 0 : this.cur.hi + 1;
      const startHistory = this.cur?.history ?? "";
      this.resumed = undefined;
      let first = true;
      try {
        feed();
        this.streams++;
        const stream = client.rpc.watch(
          { target: { case: "prefix", value: this.prefix }, startRevision: BigInt(start), startHistory, withValues: this.withValues, progressIntervalMs: 300 },
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

  /**
   * The server named `history` for the current interval through `revision`
   * (Progress, or a resume it accepted). A name other than the one the
   * watcher held claims that the new history continues the old one through
   * `through`, which the lineage checks at the end.
   */
  private rename(history: string, revision: number, through: number): void {
    const cur = this.cur!;
    if (history === "") return;
    if (history !== cur.history && cur.history !== "") this.changes.push({ from: cur.history, to: history, through });
    cur.history = history;
    cur.confirmed = Math.max(cur.confirmed, revision);
  }

  private handle(m: WatchResponse, first: boolean, start: number): void {
    const k = m.kind;
    if (first !== (k.case === "created")) {
      this.violation(`message ${k.case} where Created ${first ? "must come first" : "came again"}`);
      return;
    }
    if (this.resumed !== undefined && k.case !== "resync") {
      // No Resync right after Created: the node continues the history the
      // watcher named through start - 1 (its own, or the one it was promoted from).
      const r = this.resumed;
      this.resumed = undefined;
      this.rename(r.history, r.start - 1, r.start - 1);
    }
    this.resumed = undefined;
    switch (k.case) {
      case "created": {
        const r = Number(k.value.revision);
        // A first stream covers what comes after Created; a resumed one asked
        // for start_revision on and is owed everything from there (replayed
        // from the log, or a Resync).
        if (this.cur === undefined) this.cur = { history: k.value.history, lo: r + 1, hi: r, confirmed: r, events: new Map() };
        else if (start !== this.cur.hi + 1) this.violation(`resumed at ${start}, not after ${this.cur.hi}`);
        else this.resumed = { history: k.value.history, start };
        return;
      }
      case "events": {
        const cur = this.cur!;
        for (const e of k.value.events) {
          const r = Number(e.revision);
          if (r <= cur.hi) this.violation(`event ${r} (${e.key}) after ${cur.hi}: not in revision order`);
          else if (this.prefix === "" && r !== cur.hi + 1) this.violation(`event ${r} (${e.key}) after ${cur.hi}: revisions ${cur.hi + 1}..${r - 1} missing`);
          if (!e.key.startsWith(this.prefix)) this.violation(`event ${r} for ${e.key} outside the prefix`);
          cur.events.set(r, { key: e.key, type: e.type, value: dec.decode(e.value) });
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
        this.rename(k.value.history, Math.min(r, cur.hi), cur.confirmed);
        return;
      }
      case "resync": {
        const cur = this.cur!;
        const r = Number(k.value.revision);
        const reason = ResyncReason[k.value.reason] ?? String(k.value.reason);
        this.resyncs.set(reason, (this.resyncs.get(reason) ?? 0) + 1);
        // Only another history may number its changes below what was delivered.
        if (r < cur.hi && k.value.reason !== ResyncReason.HISTORY) this.violation(`resync ${reason} at ${r}, behind revision ${cur.hi} already delivered`);
        this.close();
        this.cur = { history: k.value.history, lo: r + 1, hi: r, confirmed: r, events: new Map() };
        return;
      }
      default:
        this.violation(`unexpected message ${String(k.case)}`);
    }
  }

  /** Whether the current interval has been told it holds everything through `revision` of `history`. */
  reached(lineage: Lineage, history: string, revision: number): boolean {
    const c = this.cur;
    return c !== undefined && c.history !== "" && Math.min(c.hi, c.confirmed) >= revision && lineage.same(c.history, history, revision);
  }
}

function isTransient(err: unknown): boolean {
  return err instanceof ConnectError && [Code.Unavailable, Code.DeadlineExceeded, Code.Canceled, Code.Aborted, Code.Internal, Code.Unknown].includes(err.code);
}

type FaultKind = "kill" | "restart" | "pause-replica" | "pause-primary" | "isolate" | "partition" | "kill-primary";
const FAULT_KINDS: readonly FaultKind[] = ["kill", "restart", "pause-replica", "pause-primary", "isolate", "partition", "kill-primary"];
const NETWORK_FAULTS: readonly FaultKind[] = ["isolate", "partition"];
/** Faults aimed at whichever node is the primary when they start. */
const PRIMARY_FAULTS: readonly FaultKind[] = ["pause-primary", "partition", "kill-primary"];

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
  test("a primary and two replicas under load, process and network faults, failovers", { timeout: 180_000 }, async (t) => {
    const say = (line: string): void => {
      t.diagnostic(line);
      process.stdout.write(`# chaos: ${line}\n`);
    };
    say(`seed ${SEED} (replay with RIPPLECACHE_CHAOS_SEED=${SEED}), fault phase ${CHAOS_MS} ms`);
    const forced = process.env.RIPPLECACHE_CHAOS_NETNS === "off" ? "RIPPLECACHE_CHAOS_NETNS=off" : undefined;
    lab = await createNetLab(NAMES, { forceLoopback: forced });
    if (lab.mode === "loopback") {
      const line = `NETWORK FAULTS DISABLED: ${lab.reason}; only process faults on loopback (kill, pause, restart, failover)`;
      process.stderr.write(`\n#### chaos: ${line} ####\n\n`);
      say(line);
      if (process.env.CI === "true") assert.fail(`chaos test in CI needs network namespaces (run as root with iproute2): ${lab.reason}`);
    } else {
      say(`network namespaces: nodes at ${NAMES.map((n) => lab!.addr(n)).join(", ")}`);
    }
    const kinds = lab.mode === "netns" ? FAULT_KINDS : FAULT_KINDS.filter((k) => !NETWORK_FAULTS.includes(k));

    const first = new ChaosNode(NAMES[0], lab, undefined);
    nodes.push(first, ...NAMES.slice(1).map((n) => new ChaosNode(n, lab!, first.addr)));
    await Promise.all(nodes.map((n) => n.start()));
    const cluster: Cluster = { primary: first, replicas: nodes.slice(1), history: "" };
    await waitUntil("replicas to finish their first sync", 30_000, async () => {
      for (const r of cluster.replicas) await r.client.get("warmup");
      return true;
    });
    cluster.history = (await first.client.info()).replicationId;
    const lineage = new Lineage(cluster.history);

    const figures = {
      faults: new Map<string, number>(),
      failovers: 0,
      failoversSkipped: 0,
      writes: 0,
      writeErrors: 0,
      reads: 0,
      readErrors: 0,
      ackWrites: 0,
      ackedBy: [0, 0, 0],
      ackSpotChecks: 0,
      rywChecks: 0,
      rywUnanswered: 0,
      failoverAckChecks: 0,
      watcherChecks: 0,
      finalAckChecks: 0,
    };
    const violations: string[] = [];
    const violation = (what: string): void => {
      if (violations.length < 50) violations.push(what);
    };
    const writes: WriteRecord[] = [];
    const acks: AckRecord[] = [];
    let flush: { readonly history: string; readonly revision: number } | undefined;
    /** Whether an acknowledged write came after the flush (the flush removed the ones before). */
    const sinceFlush = (a: AckRecord): boolean => flush === undefined || lineage.before(flush.history, flush.revision, a.history, a.revision);

    // A flush or a failover changes what a replica must hold: a check that
    // overlaps one proves nothing and is dropped. `epoch` moves at both ends.
    let epoch = 0;
    let unsettled = 0;
    const unsettle = (): void => {
      epoch++;
      unsettled++;
    };
    const settle = (): void => {
      epoch++;
      unsettled--;
    };
    const checkpoint = (): number => (unsettled === 0 ? epoch : -1);

    const watchers = nodes.flatMap((n) => [new Watcher(n, "", false), new Watcher(n, "ack/", true)]);

    // --- load ---
    let loadStopped = false;
    /** A write to whichever node is the primary now; the history it answers in is the primary's. */
    const primaryCall = async <T>(f: (c: CacheClient) => Promise<T>): Promise<{ res: T; history: string } | undefined> => {
      const node = cluster.primary;
      const history = cluster.history;
      const c = node.client;
      try {
        const res = await f(c);
        figures.writes++;
        return { res, history };
      } catch (err) {
        // A node that stopped being the primary meanwhile refuses writes: not an answer either.
        const demoted = err instanceof ConnectError && err.code === Code.FailedPrecondition && cluster.primary !== node;
        if (!isTransient(err) && !demoted) throw err;
        figures.writeErrors++;
        if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) node.resetClient(c);
        await sleep(50);
        return undefined;
      }
    };

    async function writer(w: number): Promise<void> {
      const record = (key: string, at: { history: string } | undefined, revision: number, type: EventType): void => {
        if (at !== undefined) writes.push({ key, revision, history: at.history, type });
      };
      for (let i = 0; !loadStopped; i++) {
        const n = between(0, 99);
        const r = rnd();
        if (r < 0.4) {
          const value = `v${w}.${i}`;
          const a = await primaryCall((c) => c.set(`k/${n}`, value, { flags: n % 3 }));
          record(`k/${n}`, a, a?.res.revision ?? 0, EventType.PUT);
        } else if (r < 0.55) {
          const a = await primaryCall((c) => c.set(`ttl/${n}`, `t${i}`, { ttlMs: between(100, 400) }));
          record(`ttl/${n}`, a, a?.res.revision ?? 0, EventType.PUT);
        } else if (r < 0.7) {
          const a = await primaryCall((c) => c.delete(`k/${n}`));
          if (a?.res.deleted === true) record(`k/${n}`, a, a.res.revision, EventType.DELETE);
        } else if (r < 0.8) {
          const a = await primaryCall((c) => c.increment(`c/${n % 10}`, between(-5, 5)));
          record(`c/${n % 10}`, a, a?.res.revision ?? 0, EventType.PUT);
        } else if (r < 0.95) {
          const entries = Array.from({ length: 5 }, (_, j) => ({ key: `m/${(n + j) % 100}`, value: enc.encode(`m${w}.${i}`) }));
          const a = await primaryCall((c) => c.rpc.setMany({ entries }));
          a?.res.results.forEach((s, j) => record(entries[j].key, a, Number(s.revision), EventType.PUT));
        } else {
          // Larger values: full resyncs carry more than one small chunk.
          const a = await primaryCall((c) => c.set(`blob/${n % 20}`, new Uint8Array(between(2048, 32768)).fill(n)));
          record(`blob/${n % 20}`, a, a?.res.revision ?? 0, EventType.PUT);
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
     * the replicas the primary had: a replica process that was running for
     * the whole write and answers a plain Get must hold it if it acknowledged
     * it (counted: at least `acked` of the replicas that answered, minus
     * those that did not), and a min_revision read that answers must see it.
     */
    async function ackWriter(w: number, flushAt: number | undefined): Promise<void> {
      for (let i = 0; !loadStopped; i++) {
        if (flushAt !== undefined && flush === undefined && Date.now() >= flushAt) {
          unsettle();
          try {
            const f = await primaryCall((c) => c.rpc.flush({}));
            if (f !== undefined) {
              flush = { history: f.history, revision: Number(f.res.revision) };
              say(`flush at revision ${flush.revision} of history ${flush.history.slice(0, 8)}`);
            }
          } finally {
            settle();
          }
        }
        const mark = checkpoint();
        const key = `ack/${w}/${i}`;
        const value = `a${i}.${SEED}`;
        const minReplicas = i % 4 === 0 ? 1 : 2;
        const reps = cluster.replicas;
        const gens = reps.map((r) => r.gen);
        const a = await primaryCall((c) => c.rpc.set({ key, value: enc.encode(value), minReplicas, replicaTimeoutMs: 800 }, { timeoutMs: 4000 }));
        if (a === undefined) continue;
        const res = a.res;
        figures.ackWrites++;
        figures.ackedBy[res.replicasAcked]++;
        const revision = Number(res.revision);
        acks.push({ key, value, revision, history: a.history, minReplicas, acked: res.replicasAcked, replicas: reps, gens });
        writes.push({ key, revision, history: a.history, type: EventType.PUT, value });
        if (res.replicasAcked > 0) {
          const answers = await Promise.all(
            reps.map(async (r, j) => {
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
          if (mark !== epoch) continue;
          const unanswered = answers.filter((g) => g === undefined).length;
          const holding = answers.filter((g) => g !== undefined && g.found && dec.decode(g.value) === value && Number(g.revision) === revision).length;
          for (const [j, g] of answers.entries()) {
            if (g !== undefined && g.found && (dec.decode(g.value) !== value || Number(g.revision) !== revision)) {
              violation(`${key}: ${reps[j].name} holds ${dec.decode(g.value)}@${g.revision}, written ${value}@${revision}`);
            }
          }
          if (holding < res.replicasAcked - unanswered) {
            violation(`${key}@${revision} acknowledged by ${res.replicasAcked} replicas, but only ${holding} of ${2 - unanswered} that answered hold it`);
          }
          figures.ackSpotChecks++;
        }
        // Read-your-writes on a replica: an answer to min_revision must include the write.
        const r = pick(reps);
        const c = r.client;
        try {
          const g = await c.rpc.get({ key, minRevision: BigInt(revision) }, { timeoutMs: 3000 });
          if (mark !== epoch) continue;
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
    const count = (kind: string): void => void figures.faults.set(kind, (figures.faults.get(kind) ?? 0) + 1);
    const faultLog: string[] = [];
    const at = (): string => `${((Date.now() - chaosStart) / 1000).toFixed(1)}s`;
    const note = (line: string): void => void faultLog.push(`${at()} ${line}`);
    const infoOf = async (n: ChaosNode): Promise<InfoResponse | undefined> => {
      const c = n.client;
      try {
        return await c.rpc.info({}, { timeoutMs: 1500 });
      } catch (err) {
        if (!isTransient(err)) throw err;
        if (err instanceof ConnectError && err.code === Code.DeadlineExceeded) n.resetClient(c);
        return undefined;
      }
    };

    /**
     * The operator's failover: kill -9 the primary, promote the replica with
     * the highest applied revision (it holds every write a replica that still
     * runs acknowledged), re-point the other replica, restart the old primary
     * as a replica of the new one; with `lag` (network namespaces only), the
     * primary is cut off from its replicas that long before the kill. Holds every node. Returns false when no
     * replica holds the primary's history (a replica just restarted and is
     * still loading): an operator would not fail over then, and neither does the test.
     */
    async function failover(down: number, lag: number): Promise<boolean> {
      const old = cluster.primary;
      const parent = cluster.history;
      const replicas = cluster.replicas;
      const ready = await Promise.all(replicas.map(async (r) => {
        const info = await infoOf(r);
        return info !== undefined && info.linkState === "streaming" && info.replicationId === parent;
      }));
      if (!ready.includes(true)) {
        note(`kill-primary skipped: no replica of ${old.name} is streaming`);
        return false;
      }
      unsettle();
      let promoted: ChaosNode;
      let upTo: number;
      try {
        const gens = new Map(nodes.filter((n) => n !== old).map((n) => [n, n.gen] as const));
        if (lag > 0 && lab!.mode === "netns") {
          // The primary dies while its replicas lag behind it, so that it
          // takes writes no replica gets: its link to them drops packets
          // (a stalled replica would still read them from its socket buffer).
          note(`partition primary ${old.name} | ${replicas.map((r) => r.name).join(" and ")} for ${lag} ms, then kill it`);
          for (const r of replicas) lab!.partition(old.name, r.name);
          try {
            await sleep(lag);
            await old.kill();
          } finally {
            for (const r of replicas) lab!.heal(old.name, r.name);
          }
        } else {
          await old.kill();
        }
        // What the replicas had in flight from the dead primary lands within
        // milliseconds; the operator looks only after that.
        await sleep(200);
        const infos = await Promise.all(replicas.map((r) => infoOf(r)));
        let best = -1;
        let chosen: ChaosNode | undefined;
        for (const [j, info] of infos.entries()) {
          if (info !== undefined && info.replicationId === parent && Number(info.revision) > best) {
            best = Number(info.revision);
            chosen = replicas[j];
          }
        }
        const seen = infos.map((info, j) => `${replicas[j].name} ${info === undefined ? "no answer" : `at ${info.revision} of ${info.replicationId.slice(0, 8) || "none"}`}`).join(", ");
        if (chosen === undefined) throw new Error(`failover: after killing ${old.name}, no replica holds history ${parent} (${seen})`);
        promoted = chosen;
        const res = await promoted.client.admin.promote({}, { timeoutMs: 5000 });
        upTo = Number(res.revision);
        const other = replicas.find((r) => r !== promoted)!;
        promoted.replicaOf = undefined;
        other.replicaOf = promoted.addr;
        old.replicaOf = promoted.addr;
        const line = `kill -9 primary ${old.name}; ${seen}; promote ${promoted.name}: history ${res.replicationId.slice(0, 8)} continues ${parent.slice(0, 8)} through ${upTo}`;
        note(line);
        lineage.add({ history: res.replicationId, parent, upTo, killed: old, promoted, gens, note: `${at()} ${line}` });
        // Writes follow from here on: the new primary answers in the new history.
        cluster.primary = promoted;
        cluster.replicas = [other, old];
        cluster.history = res.replicationId;
        await waitUntil(`${other.name} to follow ${promoted.name}`, 10_000, async () => {
          await other.client.admin.replicaOf({ primaryAddress: promoted.addr }, { timeoutMs: 3000 });
          return true;
        });
        note(`${other.name} replica-of ${promoted.name}; ${old.name} restarts as its replica after ${down} ms`);
        await sleep(down);
        await old.start();
        figures.failovers++;
      } finally {
        settle();
      }
      // The new primary holds every write a replica acknowledged up to the promotion (unique keys: nothing overwrites them).
      const mark = checkpoint();
      const due = acks.filter((a) => a.acked > 0 && a.history === parent && a.revision <= upTo && sinceFlush(a));
      const missing = await acksMissingOn(promoted, due);
      if (missing === undefined) return true;
      if (mark === epoch) {
        figures.failoverAckChecks += due.length;
        for (const m of missing.slice(0, 10)) violation(`after the failover to ${promoted.name} at ${upTo}: acknowledged ${m} on the new primary`);
      }
      return true;
    }

    /** Which of `due` `node` does not hold as written; undefined when it did not answer. */
    async function acksMissingOn(node: ChaosNode, due: readonly AckRecord[]): Promise<string[] | undefined> {
      const missing: string[] = [];
      for (let i = 0; i < due.length; i += 500) {
        const batch = due.slice(i, i + 500);
        try {
          const got = await node.client.rpc.getMany({ keys: batch.map((a) => a.key) }, { timeoutMs: 3000 });
          got.entries.forEach((e, j) => {
            const a = batch[j];
            if (!e.found || dec.decode(e.value) !== a.value || Number(e.revision) !== a.revision) {
              missing.push(`${a.key}@${a.revision} (acked by ${a.acked}) is ${e.found ? `${dec.decode(e.value)}@${e.revision}` : "missing"}`);
            }
          });
        } catch (err) {
          if (!isTransient(err)) throw err;
          return undefined;
        }
      }
      return missing;
    }

    async function fault(kind: FaultKind, target: ChaosNode): Promise<void> {
      const other = kind === "partition" ? pick(cluster.replicas.filter((r) => !r.busy)) : undefined;
      if (kind === "partition" && other === undefined) return;
      // Drawn before anything can go one way or another, so the seed replays the same draws.
      const down = between(200, 1500);
      const lag = rnd() < 0.5 ? 0 : between(150, 600);
      const held = kind === "kill-primary" ? [...nodes] : other !== undefined ? [target, other] : [target];
      for (const n of held) n.busy = true;
      try {
        switch (kind) {
          case "kill": {
            note(`kill -9 ${target.name}, restart after ${down} ms`);
            await target.kill();
            await sleep(down);
            await target.start();
            break;
          }
          case "kill-primary": {
            if (!(await failover(down, lag))) {
              figures.failoversSkipped++;
              return;
            }
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
            note(`SIGSTOP ${kind === "pause-primary" ? "primary " : ""}${target.name} for ${d} ms`);
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
            note(`partition primary ${target.name} | ${other!.name} for ${d} ms`);
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
        for (const n of held) n.busy = false;
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
      const candidates = PRIMARY_FAULTS.includes(kind) ? [cluster.primary] : kind === "isolate" ? nodes : cluster.replicas;
      // A failover needs every node: the primary to kill, both replicas to choose from and re-point.
      const free = kind === "kill-primary" && nodes.some((n) => n.busy) ? [] : candidates.filter((n) => !n.busy);
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
    const { primary, replicas } = cluster;
    const final = cluster.history;
    const all = [primary, ...replicas];
    // A last write every watcher must reach: they are live and caught up.
    const endRevision = await waitUntil("a last write", 20_000, async () => (await primary.client.set("end", "1")).revision);
    await waitUntil("every watcher to reach the last write", 30_000, () => {
      const behind = watchers.filter((w) => !w.reached(lineage, final, endRevision));
      if (behind.length > 0) throw new Error(behind.map((w) => `${w.name} at ${w.cur?.hi} of ${w.cur?.history.slice(0, 8) || "no history"}`).join("; "));
      return true;
    });
    await Promise.all(watchers.map((w) => w.stop()));
    // TTL keys expire on the primary only; afterwards the dataset changes no more.
    await waitUntil("every key with a TTL to expire on the primary", 20_000, async () => {
      for await (const e of primary.client.scan("ttl/", { keysOnly: true, pageSize: 1000 })) throw new Error(`${e.key} still there`);
      const info = await primary.client.info();
      let live = 0;
      for await (const _ of primary.client.scan("", { keysOnly: true, pageSize: 1000 })) live++;
      return info.keys === BigInt(live);
    });
    const digest = await waitUntil("replicas to converge to the primary's digest", 30_000, async () => {
      const ds = await Promise.all(all.map((n) => n.client.admin.digest({}, { timeoutMs: 2000 })));
      const [pd, ...rd] = ds;
      if (rd.every((d) => d.revision === pd.revision && d.digest === pd.digest)) return pd;
      throw new Error(ds.map((d, i) => `${all[i].name} rev ${d.revision} ${d.digest.slice(0, 10)} keys ${d.keys}`).join("; "));
    });
    // Recorded, not thrown: the data checks below still run and the figures still print.
    await waitUntil("the primary to list both replicas streaming, once each, caught up", 20_000, async () => {
      const info = await primary.client.info();
      const got = info.replicas.map((r) => `${r.address} ${r.state} ${r.ackedRevision}`).sort();
      const want = replicas.map((r) => `${r.addr} streaming ${info.revision}`).sort();
      if (JSON.stringify(got) === JSON.stringify(want)) return true;
      throw new Error(`replicas [${got.join("; ")}], want [${want.join("; ")}]`);
    }).catch((err: unknown) => violation(`primary ${primary.name}: ${err instanceof Error ? err.message : String(err)}`));

    // Exactly the same entries (values, revisions, flags) on every node.
    const dumps = await Promise.all(all.map((n) => dump(n.client)));
    assert.equal(dumps[0].length, Number(digest.keys));
    for (const [i, d] of dumps.entries()) assert.deepEqual(d, dumps[0], `${all[i].name} holds exactly the primary's entries`);

    // Writes lost at failovers: what the killed primary had answered past the
    // revision of the replica promoted. Allowed for a write no replica
    // acknowledged, or whose acknowledging replicas did not all run on until
    // that failover (they may have been the ones that held it).
    const lost = (h: string, r: number): boolean => !lineage.same(h, final, r);
    const lostAt = [...lineage.promotions.values()].map((p) => ({
      p,
      writes: writes.filter((w) => lineage.same(w.history, p.parent, w.revision) && !lineage.same(w.history, p.history, w.revision)).length,
      acks: acks.filter((a) => lineage.same(a.history, p.parent, a.revision) && !lineage.same(a.history, p.history, a.revision)),
    }));
    let lostAckedAllowed = 0;
    for (const { p, acks: lostAcks } of lostAt) {
      for (const a of lostAcks) {
        if (a.acked === 0) continue;
        const gone = a.replicas.filter((r, j) => r === p.killed || p.gens.get(r) !== a.gens[j]).length;
        if (a.acked > gone) {
          violation(`${a.key}@${a.revision} of ${a.history.slice(0, 8)} acknowledged by ${a.acked} replicas (${gone} of them restarted since) is lost at the failover: ${p.note}`);
        } else {
          lostAckedAllowed++;
        }
      }
    }
    const lostWrites = writes.filter((w) => lost(w.history, w.revision)).length;
    assert.equal(lostAt.reduce((s, l) => s + l.writes, 0), lostWrites, "every lost write was lost at one failover");

    // Every acknowledged write since the flush that no failover lost is on every node.
    const acked = acks.filter((a) => a.acked > 0 && sinceFlush(a) && !lost(a.history, a.revision));
    for (const n of all) {
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
    // covered (same position of the same history) is among its events, same
    // key, type (and value); no flush inside a covered interval (a flush must
    // arrive as a Resync); every history a Progress or a resume renamed an
    // interval to does continue the old one.
    const byRevision = new Map<number, WriteRecord[]>();
    for (const w of writes) byRevision.set(w.revision, [...(byRevision.get(w.revision) ?? []), w]);
    let unnamed = 0;
    for (const w of watchers) {
      violations.push(...w.violations);
      const intervals = w.all;
      assert.ok(intervals.some((iv) => iv.events.size > 0), `${w.name} received events`);
      for (const iv of intervals) {
        if (iv.history === "") {
          unnamed++;
          continue;
        }
        const top = Math.min(iv.hi, iv.confirmed);
        for (let r = iv.lo; r <= top; r++) {
          for (const rec of byRevision.get(r) ?? []) {
            if (!rec.key.startsWith(w.prefix) || !lineage.same(rec.history, iv.history, r)) continue;
            figures.watcherChecks++;
            const e = iv.events.get(r);
            if (e === undefined || e.key !== rec.key || e.type !== rec.type || (w.withValues && rec.value !== undefined && e.value !== rec.value)) {
              violation(`${w.name} covered revision ${r} of ${iv.history.slice(0, 8)} (${EventType[rec.type]} ${rec.key}) but got ${e === undefined ? "nothing" : `${EventType[e.type]} ${e.key}=${e.value}`}`);
            }
          }
        }
        if (flush !== undefined && iv.lo <= flush.revision && flush.revision <= top && lineage.same(flush.history, iv.history, flush.revision)) {
          violation(`${w.name} covered the flush at ${flush.revision} without a Resync`);
        }
      }
      for (const c of w.changes) {
        if (!lineage.same(c.from, c.to, c.through)) violation(`${w.name} was told history ${c.to.slice(0, 8)} without a Resync, but it does not continue ${c.from.slice(0, 8)} through ${c.through}`);
      }
    }

    // Memory: within the cache bound, and resident memory sane.
    const memory: string[] = [];
    for (const n of all) {
      const info = await n.client.info();
      assert.ok(info.bytesUsed <= info.bytesLimit, `${n.name}: bytes_used ${info.bytesUsed} <= bytes_limit ${info.bytesLimit}`);
      const rss = rssBytes(n.proc!.pid);
      assert.ok(rss !== undefined && rss < RSS_BOUND, `${n.name}: RSS ${rss} under ${RSS_BOUND}`);
      memory.push(`${n.name} (${n === primary ? "primary" : "replica"}) used ${info.bytesUsed}/${info.bytesLimit} B, RSS ${((rss ?? 0) / 2 ** 20).toFixed(0)} MiB, ${fdCount(n.proc!.pid)} fds`);
    }
    const pinfo = await primary.client.info();
    assert.equal(pinfo.evictions, 0n, "no eviction (the acknowledged-write check relies on it)");

    const faults = [...figures.faults.values()].reduce((a, b) => a + b, 0);
    const logLines = nodes.flatMap((n) => [...n.logs, ...(n.proc?.output ?? [])]);
    const fullResyncs = logLines.filter((l) => l.includes('"msg":"full resync"')).length;
    const partialResyncs = logLines.filter((l) => l.includes('"msg":"partial resync"')).length;
    const watcherResyncs = new Map<string, number>();
    for (const w of watchers) for (const [k, v] of w.resyncs) watcherResyncs.set(k, (watcherResyncs.get(k) ?? 0) + v);
    const checked = figures.ackSpotChecks + figures.rywChecks + figures.failoverAckChecks + figures.finalAckChecks + figures.watcherChecks + dumps[0].length * 3;
    say(`faults injected: ${faults} in ${chaosMs} ms (${[...figures.faults].map(([k, v]) => `${k} ${v}`).join(", ")}; network: ${lab.mode})`);
    for (const line of faultLog) say(`  ${line}`);
    say(
      `failovers: ${figures.failovers}${figures.failoversSkipped > 0 ? ` (${figures.failoversSkipped} skipped: no replica streaming)` : ""}; ` +
        `writes lost at failover: ${lostWrites} (${lostAt.map((l) => l.writes).join(" + ") || "0"}), ` +
        (lostAckedAllowed === 0 ? "none acknowledged by a replica" : `${lostAckedAllowed} acknowledged only by replicas restarted or killed before that failover`),
    );
    say(
      `operations: ${figures.writes} writes (${figures.writeErrors} failed during faults), ${figures.reads} reads (${figures.readErrors} failed), ` +
        `${figures.ackWrites} min_replicas writes (acked by 0/1/2 replicas: ${figures.ackedBy.slice(0, 3).join("/")})`,
    );
    say(
      `operations checked: ${checked} (${figures.ackSpotChecks} acked-write spot checks, ${figures.rywChecks} min_revision reads (${figures.rywUnanswered} unanswered), ` +
        `${figures.failoverAckChecks} acked writes on new primaries, ${figures.finalAckChecks} acked writes on the 3 nodes at the end, ` +
        `${figures.watcherChecks} watcher event checks, ${dumps[0].length} entries x 3 nodes compared)`,
    );
    say(
      `resyncs: replicas ${fullResyncs} full / ${partialResyncs} partial; watchers ${[...watcherResyncs].map(([k, v]) => `${k} ${v}`).join(", ") || "none"}; ` +
        `watch streams opened ${watchers.reduce((a, w) => a + w.streams, 0)}, ${watchers.reduce((a, w) => a + w.freshStarts, 0)} started afresh, ${unnamed} intervals of no named history unchecked`,
    );
    say(`final primary ${primary.name}, history ${final.slice(0, 8)} (${lineage.order.length} histories), revision ${digest.revision}, ${digest.keys} keys, digests equal; violations: ${violations.length}`);
    for (const line of memory) say(`  ${line}`);

    if (violations.length > 0) {
      for (const n of nodes) n.keepLogs();
      const logs = nodes.flatMap((n) => n.logs.filter((l) => /resync|link down|protocol|error|promoted/i.test(l))).slice(-80);
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
