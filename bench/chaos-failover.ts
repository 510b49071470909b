/**
 * Failover chaos (issue 21): three RippleCache nodes with `--coordinator
 * etcd` (a real etcd; each node reaches it through a TCP proxy of ours that
 * can be cut) under two write loops (Set with min_replicas 1, and plain Set),
 * and a series of faults, one at a time, each on whichever node is primary:
 *
 * - kill:       kill -9, then the node restarts empty under the same id;
 * - stop:       SIGSTOP for the lease duration + 1 s, writes sent to it while
 *               stopped (long deadlines), then SIGCONT;
 * - cut:        its etcd proxy cut for the lease duration + 1.5 s while its
 *               clients still reach it; writes keep being sent to it;
 * - switchover: `ripplecache failover --to` another node.
 *
 * Counted: faults, failovers (lease terms), acknowledged writes lost per
 * kind (read back from the final primary), writes acknowledged by a node
 * after its lease expired, and the most nodes seen primary with a valid
 * lease at one instant (LeaseMonitor: intervals each node certainly held
 * its lease, from its own Info answers).
 *
 * A write "acknowledged after its node's lease expired" is any of:
 * - a write sent to a SIGSTOPped primary (answered after SIGCONT, by then
 *   past its lease) that was acknowledged;
 * - a write sent to a primary cut from etcd, later than the cut plus the
 *   renew deadline, that was acknowledged;
 * - a loop write sent to a node after a primary of a later term (another
 *   node) had been seen, and acknowledged by that node (unless that node
 *   itself was seen primary of a newer term soon after).
 *
 * `npm run chaos:failover -- --faults 100 [--kinds kill,stop,cut,switchover] [--out FILE]`
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import * as os from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient } from "../src/client/client.js";
import { startEtcd, type EtcdProcess } from "../test/helpers/etcd.js";
import { waitConverged } from "../test/helpers/cluster.js";
import { leaseIntervals, maxSimultaneousLeases } from "../test/helpers/failover.js";
import { CLI } from "../test/helpers/server.js";
import {
  alive,
  candidateArgs,
  NodeSet,
  CutProxy,
  DEFAULT_TIMINGS,
  LeaseMonitor,
  lostAcks,
  nodeId,
  onePrimary,
  RippleTarget,
  sleep,
  WriteLoop,
  type Ack,
  type Node,
} from "./failover-common.js";

const KINDS = ["kill", "stop", "cut", "switchover"] as const;
type FaultKind = (typeof KINDS)[number];

const { values } = parseArgs({
  options: {
    faults: { type: "string", default: "100" },
    kinds: { type: "string", default: KINDS.join(",") },
    out: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});
if (values.help) {
  process.stdout.write("npm run chaos:failover -- [--faults N (100)] [--kinds kill,stop,cut,switchover] [--out FILE (JSON)]\n");
  process.exit(0);
}
const FAULTS = Number(values.faults);
const kinds = values.kinds.split(",").map((k) => k.trim()) as FaultKind[];
for (const k of kinds) if (!KINDS.includes(k)) throw new Error(`--kinds: ${k} is not one of ${KINDS.join(", ")}`);
if (!Number.isInteger(FAULTS) || FAULTS < 1) throw new Error("--faults must be a positive integer");

const T = DEFAULT_TIMINGS;
const enc = new TextEncoder();
const say = (s: string) => process.stderr.write(`chaos:failover: ${s}\n`);

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    say(`${signal}: stopping the processes it started`);
    process.exit(130); // the helpers' exit handlers kill etcd and every node
  });
}

interface Fault {
  readonly n: number;
  readonly kind: FaultKind;
  readonly primary: string;
  at: number;
  /** ms from the fault to the first write acknowledged by another node (switchover: longest gap), plain loop. */
  unavailableMs?: number;
  ok: boolean;
  note?: string;
}

interface Violation {
  readonly how: string;
  readonly node: string;
  readonly key: string;
  readonly sentMs: number;
}

function cli(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.once("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Sends plain and min_replicas 1 writes to `addr` with a long deadline; resolves with the keys it acknowledged. */
async function lateWrites(addr: string, prefix: string, count: number): Promise<string[]> {
  const client = new CacheClient({ addr, timeoutMs: 30_000, followPrimary: false });
  try {
    const calls = Array.from({ length: count }, (_, i) => {
      const key = `${prefix}${i}`;
      return client.rpc.set({ key, value: enc.encode("late"), minReplicas: i % 2, replicaTimeoutMs: 1000 }, { timeoutMs: 30_000 }).then(
        () => key,
        () => undefined,
      );
    });
    return (await Promise.all(calls)).filter((k): k is string => k !== undefined);
  } finally {
    client.close();
  }
}

async function main(): Promise<number> {
  const started = Date.now();
  const loadAvg = os.loadavg().map((l) => l.toFixed(2)).join(" ");
  let etcd: EtcdProcess | undefined;
  const proxies = new Map<string, CutProxy>();
  const cluster = new NodeSet();
  const nodes: Node[] = [];
  const idOf = new Map<string, string>();
  const faults: Fault[] = [];
  const violations: Violation[] = [];
  let monitor: LeaseMonitor | undefined;
  const loops: WriteLoop[] = [];
  const targets: RippleTarget[] = [];
  const group = `chaos-${process.pid}`;
  // Every node process of the run, and when each killed one died (ms since the epoch), for the nodes' own lease logs.
  const everyNode: Node[] = [];
  const killedAt = new Map<Node, number>();
  const start = async (id: string) => {
    const node = await cluster.start(id, candidateArgs(proxies.get(id)!.endpoint, group, id));
    idOf.set(node.addr, id);
    everyNode.push(node);
    return node;
  };
  try {
    etcd = await startEtcd();
    const etcdPort = Number(new URL(etcd.endpoint).port);
    const ids = ["n1", "n2", "n3"];
    for (const id of ids) proxies.set(id, await CutProxy.start(etcdPort));
    nodes.push(...(await Promise.all(ids.map(start))));
    const first = await onePrimary(nodes, 60_000);
    const initialTerm = (await first.client.rpc.info({})).term;
    monitor = new LeaseMonitor(() => nodes);
    const addrs = () => nodes.map((n) => n.addr);
    targets.push(new RippleTarget(addrs, 1), new RippleTarget(addrs, 0));
    const [replicated, plain] = [new WriteLoop(targets[0], "c/r/"), new WriteLoop(targets[1], "c/p/")];
    loops.push(replicated, plain);
    say(`3 nodes, etcd through cut-able proxies, lease ${T.leaseDurationMs}/${T.renewDeadlineMs}/${T.retryPeriodMs} ms; ${FAULTS} faults (${kinds.join(", ")}); machine: ${os.availableParallelism()} cores, load average ${loadAvg}`);

    for (let n = 0; n < FAULTS; n++) {
      const kind = kinds[n % kinds.length];
      let primary: Node;
      try {
        primary = await onePrimary(nodes, 90_000);
        await Promise.all(loops.map((l) => l.waitAcks(10, 60_000)));
      } catch (err) {
        say(`the group did not settle before fault ${n + 1}: ${err instanceof Error ? err.message : String(err)}`);
        faults.push({ n, kind, primary: "?", ok: false, note: "group did not settle", at: performance.now() });
        break;
      }
      const id = nodeId(primary);
      const fault: Fault = { n, kind, primary: id, ok: true, at: performance.now() };
      faults.push(fault);
      const t0 = performance.now();
      try {
        switch (kind) {
          case "kill": {
            primary.server.proc.kill("SIGKILL");
            killedAt.set(primary, Date.now());
            await primary.server.stop("SIGKILL");
            const i = nodes.indexOf(primary);
            await waitAck(plain, t0, primary.addr);
            nodes[i] = await start(id);
            break;
          }
          case "stop": {
            primary.server.proc.kill("SIGSTOP");
            const late = lateWrites(primary.addr, `late/${n}/`, 6);
            await sleep(T.leaseDurationMs + 1000);
            await waitAck(plain, t0, primary.addr).catch(() => undefined);
            primary.server.proc.kill("SIGCONT");
            for (const key of await late) violations.push({ how: "acknowledged by a SIGSTOPped primary after SIGCONT", node: id, key, sentMs: 0 });
            break;
          }
          case "cut": {
            const proxy = proxies.get(id)!;
            proxy.cut();
            const cutAt = performance.now();
            // Writes straight to the cut node, sent after its renew deadline: none may be acknowledged.
            const client = new CacheClient({ addr: primary.addr, timeoutMs: 2000, followPrimary: false });
            let j = 0;
            try {
              await sleep(T.renewDeadlineMs + 20);
              while (performance.now() - cutAt < T.leaseDurationMs + 1500) {
                const key = `cut/${n}/${j++}`;
                const sentMs = performance.now();
                const ok = await client.rpc.set({ key, value: enc.encode("cut"), minReplicas: j % 2 }, { timeoutMs: 1000 }).then(
                  () => true,
                  (err: unknown) => {
                    if (!(err instanceof ConnectError) || ![Code.Unavailable, Code.FailedPrecondition, Code.DeadlineExceeded].includes(err.code)) throw err;
                    return false;
                  },
                );
                if (ok) violations.push({ how: "acknowledged by a primary cut from etcd past its renew deadline", node: id, key, sentMs: sentMs - cutAt });
                await sleep(50);
              }
            } finally {
              client.close();
            }
            proxy.restore();
            await waitAck(plain, t0, primary.addr).catch(() => undefined);
            break;
          }
          case "switchover": {
            const others = nodes.filter((x) => x !== primary && alive(x));
            const to = others[n % others.length];
            const r = await cli(["failover", "--to", nodeId(to), "--addr", primary.addr]);
            if (r.code !== 0) {
              fault.ok = false;
              const logs = primary.output.slice(-4);
              fault.note = `exit ${r.code ?? r.signal}: ${(r.stderr.trim() || r.stdout.trim()).split("\n").slice(-1)[0]}; the primary's log: ${logs.join(" | ")}`;
            }
            break;
          }
        }
      } catch (err) {
        fault.ok = false;
        fault.note = err instanceof Error ? err.message : String(err);
      }
      const done = performance.now();
      await waitAck(plain, done, kind === "switchover" ? "" : primary.addr).catch(() => undefined);
      const w = plain.firstAckAfter(t0, kind === "switchover" ? undefined : primary.addr);
      fault.unavailableMs = kind === "switchover" ? plain.maxGap(t0, done) : w === undefined ? undefined : w.recv - t0;
      say(
        `fault ${n + 1}/${FAULTS} ${kind} of ${id}: ${fault.ok ? "" : `FAILED (${fault.note}) `}` +
          `unavailable ${fault.unavailableMs === undefined ? "-" : `${fault.unavailableMs.toFixed(0)} ms`}; acks ${replicated.acks.length}+${plain.acks.length}, violations ${violations.length}`,
      );
    }

    await Promise.all(loops.map((l) => l.stop()));
    const final = await onePrimary(nodes, 90_000);
    await waitConverged(nodes, 60_000);
    const finalTerm = (await final.client.rpc.info({})).term;
    await monitor.stop();
    violations.push(...afterLaterTerm(monitor, [...replicated.acks, ...plain.acks], idOf));
    // Read back from whichever node is primary when each chunk is read (a loaded machine can still move the lease now).
    let reader = final;
    const read = async (keys: string[]) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await targets[0].read(reader.addr, keys);
        } catch (err) {
          if (attempt >= 10) throw err;
          say(`read-back from ${reader.addr} failed (${err instanceof Error ? err.message : String(err)}); finding the primary again`);
          reader = await onePrimary(nodes, 90_000);
          await waitConverged(nodes, 60_000);
        }
      }
    };
    const lostReplicated = await lostAcks(replicated.acks, read);
    const lostPlain = await lostAcks(plain.acks, read);
    const byKind = Object.fromEntries(
      kinds.map((k) => {
        const fs = faults.filter((f) => f.kind === k);
        const u = fs.map((f) => f.unavailableMs).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
        return [k, { faults: fs.length, failed: fs.filter((f) => !f.ok).length, unavailableP50Ms: u[Math.floor((u.length - 1) / 2)], unavailableMaxMs: u[u.length - 1] }];
      }),
    );
    const byLogs = maxSimultaneousLeases(leaseIntervals(everyNode, killedAt));
    const result = {
      date: new Date(started).toISOString(),
      durationS: Math.round((Date.now() - started) / 1000),
      machine: { nproc: os.availableParallelism(), loadAvgAtStart: loadAvg },
      timings: T,
      faults: faults.length,
      faultsFailed: faults.filter((f) => !f.ok).length,
      failovers: Number(finalTerm - initialTerm),
      byKind,
      acknowledged: { minReplicas1: replicated.acks.length, plain: plain.acks.length },
      lost: { minReplicas1: lostReplicated.length, plain: lostPlain.length },
      lostKeys: { minReplicas1: lostReplicated.slice(0, 10), plain: lostPlain.slice(0, 10) },
      ackedAfterLeaseExpiry: violations.length,
      violations: violations.slice(0, 20),
      maxSimultaneousPrimaries: monitor.maxSimultaneous(true),
      // Each node's own log of when it could acknowledge ("leading" validFrom to "lost the lease" validUntil): one clock for all.
      maxSimultaneousByNodeLogs: byLogs.max,
      nodeLogOverlaps: byLogs.overlaps.slice(0, 5),
      // Without cutting an interval at the node's next "no valid lease" answer: a lease handed over early still counts until its reported validity ran out.
      maxSimultaneousPrimariesUncut: monitor.maxSimultaneous(false),
      failedFaults: faults.filter((f) => !f.ok).slice(0, 20),
    };
    const lines = [
      `Failover chaos: ${result.faults} faults in ${result.durationS} s (${result.machine.nproc} cores, load average ${loadAvg} at the start), lease ${T.leaseDurationMs}/${T.renewDeadlineMs}/${T.retryPeriodMs} ms`,
      ...Object.entries(byKind).map(
        ([k, v]) => `  ${k.padEnd(10)} ${String(v.faults).padStart(3)} faults (${v.failed} failed), unavailable p50 ${v.unavailableP50Ms?.toFixed(0) ?? "-"} ms, max ${v.unavailableMaxMs?.toFixed(0) ?? "-"} ms`,
      ),
      `  failovers (lease terms): ${result.failovers}`,
      `  acknowledged writes lost: min_replicas 1: ${result.lost.minReplicas1} of ${result.acknowledged.minReplicas1}; plain: ${result.lost.plain} of ${result.acknowledged.plain}`,
      `  writes acknowledged after the node's lease expired: ${result.ackedAfterLeaseExpiry}`,
      `  most nodes primary with a valid lease at one instant: ${result.maxSimultaneousPrimaries} by Info polling (${result.maxSimultaneousPrimariesUncut} without ending a handed-over lease early), ${result.maxSimultaneousByNodeLogs} by the nodes' own lease logs`,
    ];
    if (process.env.CHAOS_DEBUG === "1") {
      const iv = monitor.held(true);
      for (const a of iv) for (const b of iv) if (a.node < b.node && a.from < b.to && b.from < a.to) say(`overlap: ${a.node} term ${a.term} [${a.from.toFixed(0)}, ${a.to.toFixed(0)}] / ${b.node} term ${b.term} [${b.from.toFixed(0)}, ${b.to.toFixed(0)}]`);
      for (const f of faults) say(`fault ${f.n} ${f.kind} of ${f.primary} at ${f.at.toFixed(0)}`);
    }
    process.stdout.write(`${lines.join("\n")}\n${JSON.stringify(result)}\n`);
    if (values.out !== undefined) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
    const bad = result.lost.minReplicas1 > 0 || result.ackedAfterLeaseExpiry > 0 || result.maxSimultaneousPrimaries > 1 || result.maxSimultaneousByNodeLogs > 1 || result.faults < FAULTS;
    return bad ? 1 : 0;
  } finally {
    await Promise.all(loops.map((l) => l.stop()));
    for (const t of targets) t.close();
    await monitor?.stop();
    await cluster.stopAll();
    for (const p of proxies.values()) await p.close();
    await etcd?.stop();
  }
}

/** Waits (bounded) until `loop` has a write acknowledged after `t` by a node other than `except`. */
async function waitAck(loop: WriteLoop, t: number, except: string): Promise<void> {
  const deadline = performance.now() + 60_000;
  while (loop.firstAckAfter(t, except) === undefined) {
    if (performance.now() > deadline) throw new Error("no write acknowledged by another node within 60 s");
    await sleep(10);
  }
}

/** Loop writes a node acknowledged though they were sent after a primary of a later term (another node) had been seen. */
function afterLaterTerm(monitor: LeaseMonitor, acks: readonly Ack[], idOf: ReadonlyMap<string, string>): Violation[] {
  const firstSeen = new Map<bigint, { node: string; at: number }>();
  for (const x of monitor.intervals) {
    const f = firstSeen.get(x.term);
    if (f === undefined || x.from < f.at) firstSeen.set(x.term, { node: x.node, at: x.from });
  }
  const terms = [...firstSeen.entries()].map(([term, f]) => ({ term, ...f })).sort((a, b) => a.at - b.at);
  const out: Violation[] = [];
  for (const a of acks) {
    const id = idOf.get(a.node);
    let latest: (typeof terms)[number] | undefined;
    for (const t of terms) {
      if (t.at > a.sent) break;
      latest = t;
    }
    if (latest === undefined || latest.node === id) continue;
    // The node may have won a newer term the monitor had not seen yet when the write was sent.
    const regained = terms.some((t) => t.term > latest.term && t.node === id && t.at <= a.recv + 2000);
    if (!regained) out.push({ how: `acknowledged after term ${latest.term} (${latest.node}) was seen`, node: id ?? a.node, key: a.key, sentMs: a.sent });
  }
  return out;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos:failover: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
