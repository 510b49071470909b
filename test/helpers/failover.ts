import { Code, ConnectError } from "@connectrpc/connect";
import { performance } from "node:perf_hooks";
import { CacheClient } from "../../src/client/client.js";
import { Role, type InfoResponse } from "../../src/gen/ripplecache/v1/cache_pb.js";
import { logRecords, sleep, waitFor, type Cluster, type Node } from "./cluster.js";

/** Election timings of the tests: short, so a failover takes about a second; the margin (400 ms) is still far above clock-rate differences. */
export const TEST_TIMINGS = { leaseDurationMs: 1000, renewDeadlineMs: 600, retryPeriodMs: 100 };

export function coordinatedArgs(endpoint: string, group: string, nodeId: string, extra: readonly string[] = []): string[] {
  return [
    "--coordinator", "etcd",
    "--etcd-endpoints", endpoint,
    "--group", group,
    "--node-id", nodeId,
    "--lease-duration", String(TEST_TIMINGS.leaseDurationMs),
    "--renew-deadline", String(TEST_TIMINGS.renewDeadlineMs),
    "--retry-period", String(TEST_TIMINGS.retryPeriodMs),
    "--replication-heartbeat", "200",
    ...extra,
  ];
}

export function alive(node: Node): boolean {
  return node.server.proc.exitCode === null && node.server.proc.signalCode === null;
}

export async function info(node: Node, timeoutMs = 1000): Promise<InfoResponse> {
  return node.client.rpc.info({}, { timeoutMs });
}

/** Waits until exactly one live node is primary with a valid lease and every other live node streams from it. */
export async function waitOnePrimary(nodes: readonly Node[], timeoutMs = 20_000): Promise<{ primary: Node; info: InfoResponse }> {
  return waitFor(
    "one primary, every other node streaming from it",
    async () => {
      const live = nodes.filter(alive);
      const infos = await Promise.all(live.map((n) => info(n)));
      const primaries = live.filter((_, i) => infos[i].role === Role.PRIMARY && infos[i].leaseValidMs > 0n);
      if (primaries.length !== 1) throw new Error(`${primaries.length} primaries: ${infos.map((x, i) => `${live[i].name} ${Role[x.role]} term ${x.term} valid ${x.leaseValidMs}`).join("; ")}`);
      const p = primaries[0];
      const ok = live.every((n, i) => n === p || (infos[i].role === Role.REPLICA && infos[i].primaryAddress === p.addr && infos[i].linkState === "streaming"));
      if (!ok) throw new Error(`replicas not all streaming from ${p.name}: ${infos.map((x, i) => `${live[i].name} ${Role[x.role]} -> ${x.primaryAddress} ${x.linkState}`).join("; ")}`);
      return { primary: p, info: infos[live.indexOf(p)] };
    },
    timeoutMs,
    50,
  );
}

/**
 * Polls every node's Info and keeps, per node, intervals during which it
 * held a valid lease: from an answer's arrival to the request's send time
 * plus the validity it reported (the node measured it somewhere between the
 * two). A node may give its lease up before then (a switchover, a release on
 * SIGTERM): its interval ends where a later answer of it shows no lease was
 * asked for. Two nodes' intervals overlapping is two primaries at once.
 */
export class PrimaryMonitor {
  private stopped = false;
  private readonly running: Promise<void>;
  readonly intervals: { node: string; from: number; to: number; term: bigint }[] = [];
  /** performance.now() of the first sighting of each term's primary. */
  readonly termSeen = new Map<bigint, number>();
  private readonly last = new Map<Node, { node: string; from: number; to: number; term: bigint }>();

  constructor(private readonly nodes: () => readonly Node[]) {
    this.running = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await Promise.all(
        this.nodes()
          .filter(alive)
          .map(async (n) => {
            const sent = performance.now();
            try {
              const i = await info(n, 500);
              const recv = performance.now();
              const last = this.last.get(n);
              if (i.role === Role.PRIMARY && i.leaseValidMs > 0n) {
                if (!this.termSeen.has(i.term)) this.termSeen.set(i.term, recv);
                const interval = { node: i.nodeId, from: recv, to: sent + Number(i.leaseValidMs), term: i.term };
                this.intervals.push(interval);
                this.last.set(n, interval);
              } else if (last !== undefined) {
                last.to = Math.min(last.to, sent);
                this.last.delete(n);
              }
            } catch {
              // a stopped or killed node
            }
          }),
      );
      await sleep(30);
    }
  }

  /** The most nodes certainly holding a valid lease at one instant. */
  maxSimultaneous(): number {
    const events = this.intervals.filter((x) => x.to > x.from).flatMap((x) => [{ at: x.from, node: x.node, d: 1 }, { at: x.to, node: x.node, d: -1 }]);
    events.sort((a, b) => a.at - b.at || a.d - b.d);
    const open = new Map<string, number>();
    let max = 0;
    for (const e of events) {
      open.set(e.node, (open.get(e.node) ?? 0) + e.d);
      max = Math.max(max, [...open.values()].filter((v) => v > 0).length);
    }
    return max;
  }

  /** Pairs of intervals of different nodes that overlap (for the failure message). */
  overlaps(): string[] {
    const out: string[] = [];
    const xs = this.intervals.filter((x) => x.to > x.from);
    for (let i = 0; i < xs.length; i++) {
      for (let j = i + 1; j < xs.length; j++) {
        const [a, b] = [xs[i], xs[j]];
        if (a.node !== b.node && a.from < b.to && b.from < a.to) out.push(`${a.node} term ${a.term} [${a.from.toFixed(0)}, ${a.to.toFixed(0)}] and ${b.node} term ${b.term} [${b.from.toFixed(0)}, ${b.to.toFixed(0)}]`);
      }
    }
    return out;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }
}

/**
 * Writes distinct keys with min_replicas 1 to whichever node is primary (it
 * asks every live node's Info after a failure), and keeps what was
 * acknowledged: an acknowledged write (replicas_acked >= 1) must survive any
 * single failure.
 */
export class FailoverWriter {
  private stopped = false;
  private readonly workers: Promise<void>[] = [];
  private target: Node | undefined;
  private seq = 0;
  /** key -> value of every acknowledged write (replicas_acked >= 1). */
  readonly acked = new Map<string, string>();
  /** Writes answered OK with fewer replicas than asked (not counted as acknowledged). */
  underReplicated = 0;
  /** performance.now() of each acknowledgement, in order. */
  readonly ackTimes: number[] = [];
  errors = 0;

  constructor(
    private readonly nodes: () => readonly Node[],
    private readonly prefix: string,
    concurrency = 2,
  ) {
    for (let i = 0; i < concurrency; i++) this.workers.push(this.run());
  }

  get ops(): number {
    return this.acked.size;
  }

  /** The first acknowledgement at or after `t` (performance.now()). */
  firstAckAfter(t: number): number | undefined {
    return this.ackTimes.find((x) => x >= t);
  }

  /** The longest time without an acknowledgement between `from` and the first acknowledgement after `to` (performance.now()). */
  maxAckGap(from: number, to: number): number {
    let last = from;
    let max = 0;
    for (const t of this.ackTimes) {
      if (t < from) continue;
      max = Math.max(max, t - last);
      last = t;
      if (t > to) break;
    }
    return max;
  }

  async waitAcks(n: number, timeoutMs = 20_000): Promise<void> {
    const target = this.acked.size + n;
    await waitFor(`${n} more acknowledged writes (at ${this.acked.size}, ${this.errors} errors)`, () => this.acked.size >= target, timeoutMs, 20);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
  }

  private async findPrimary(): Promise<Node | undefined> {
    for (const n of this.nodes().filter(alive)) {
      try {
        const i = await info(n, 500);
        if (i.role === Role.PRIMARY && i.leaseValidMs > 0n) return n;
      } catch {
        // next
      }
    }
    return undefined;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const target = (this.target ??= await this.findPrimary());
      if (target === undefined) {
        await sleep(20);
        continue;
      }
      const key = `${this.prefix}${++this.seq}`;
      const value = `v${this.seq}`;
      try {
        const r = await target.client.rpc.set({ key, value: new TextEncoder().encode(value), minReplicas: 1, replicaTimeoutMs: 1000 }, { timeoutMs: 2000 });
        if (r.replicasAcked >= 1) {
          this.acked.set(key, value);
          this.ackTimes.push(performance.now());
        } else {
          this.underReplicated++;
        }
      } catch {
        this.errors++;
        if (this.target === target) this.target = undefined;
        await sleep(10);
      }
    }
  }
}

/** Checks every acknowledged key on `node`; returns the keys missing or different. */
export async function missingAcked(node: Node, acked: ReadonlyMap<string, string>): Promise<string[]> {
  const missing: string[] = [];
  const keys = [...acked.keys()];
  for (let i = 0; i < keys.length; i += 500) {
    const chunk = keys.slice(i, i + 500);
    const r = await node.client.rpc.getMany({ keys: chunk }, { timeoutMs: 5000 });
    chunk.forEach((k, j) => {
      const got = r.entries[j];
      if (got === undefined || !got.found || new TextDecoder().decode(got.value) !== acked.get(k)) missing.push(k);
    });
  }
  return missing;
}

/** Whether `err` is a refusal that tells the client no write happened here or its outcome is unknown (never an OK). */
export function isRefusal(err: unknown): boolean {
  return err instanceof ConnectError && [Code.Unavailable, Code.FailedPrecondition, Code.DeadlineExceeded, Code.Canceled].includes(err.code);
}

/** Starts a node of a coordinated group. */
export async function startCandidate(cluster: Cluster, endpoint: string, group: string, nodeId: string, extra: readonly string[] = []): Promise<Node> {
  const node = await cluster.start(nodeId, coordinatedArgs(endpoint, group, nodeId, extra));
  return node;
}

/** A client with a long deadline for a paused node's address: its calls wait in the socket until the node resumes. */
export function patientClient(addr: string): CacheClient {
  return new CacheClient({ addr, timeoutMs: 15_000, followPrimary: false });
}

/**
 * Each node's own account of when it could acknowledge writes, from its log:
 * "leading" (validFrom) to "lost the lease" (validUntil), or to its kill
 * (`killedAt`, ms since the epoch) or now. Nodes of one machine share the
 * clock, so these intervals compare exactly, unlike polling.
 */
export function leaseIntervals(nodes: readonly Node[], killedAt: ReadonlyMap<Node, number>): { node: string; from: number; to: number; term: number }[] {
  const out: { node: string; from: number; to: number; term: number }[] = [];
  for (const n of nodes) {
    let open: { node: string; from: number; to: number; term: number } | undefined;
    for (const r of logRecords(n)) {
      if (r.msg === "leading") open = { node: n.name, from: Number(r.validFrom), to: Infinity, term: Number(r.term) };
      if (r.msg === "lost the lease" && open !== undefined) {
        out.push({ ...open, to: Number(r.validUntil) });
        open = undefined;
      }
    }
    if (open !== undefined) out.push({ ...open, to: killedAt.get(n) ?? Date.now() });
  }
  return out;
}

/** The most intervals of different nodes open at one instant, and the overlapping pairs. */
export function maxSimultaneousLeases(intervals: readonly { node: string; from: number; to: number; term: number }[]): { max: number; overlaps: string[] } {
  const overlaps: string[] = [];
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const [a, b] = [intervals[i], intervals[j]];
      if (a.from < b.to && b.from < a.to) overlaps.push(`${a.node} term ${a.term} [${a.from}, ${a.to}] and ${b.node} term ${b.term} [${b.from}, ${b.to}]`);
    }
  }
  const events = intervals.flatMap((x) => [{ at: x.from, d: 1 }, { at: x.to, d: -1 }]).sort((a, b) => a.at - b.at || a.d - b.d);
  let open = 0;
  let max = 0;
  for (const e of events) {
    open += e.d;
    max = Math.max(max, open);
  }
  return { max, overlaps };
}
