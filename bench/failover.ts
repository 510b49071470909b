/**
 * The bench's failover section: write unavailability after a kill -9 of the
 * primary, RippleCache (three nodes, `--coordinator etcd`, default lease
 * settings, a real etcd) against Redis Sentinel (a master, two replicas,
 * three sentinels, down-after-milliseconds 1000), repetitions alternating
 * the two; then planned switchovers of RippleCache (`ripplecache failover`
 * and SIGTERM of the primary) under the same write loop.
 *
 * The write loop is the same for both systems (bench/failover-common.ts):
 * two sequential writers of distinct keys per kind of write, 5 ms between
 * writes; after a failure the client asks where the primary is (every node's
 * Info; Sentinel's get-master-addr-by-name) and retries every 10 ms. Two
 * kinds: plain (Set; SET) and replicated (Set with min_replicas 1; SET then
 * WAIT 1 1000, acknowledged only when a replica has it).
 *
 * Unavailability = from the kill to the first write acknowledged by another
 * node. Lost = acknowledged keys missing from the new primary at the end.
 *
 * Standalone: `node dist/bench/failover.js [--reps N] [--switchovers N]
 * [--merge bench/results/latest.json]` (--merge puts the section into an
 * existing results file and rewrites the generated docs tables).
 */
import { spawn } from "node:child_process";
import { readFileSync, realpathSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { startEtcd, type EtcdProcess } from "../test/helpers/etcd.js";
import { CLI } from "../test/helpers/server.js";
import { waitConverged } from "../test/helpers/cluster.js";
import {
  alive,
  candidateArgs,
  NodeSet,
  DEFAULT_TIMINGS,
  DOWN_AFTER_MS,
  lostAcks,
  nodeId,
  onePrimary,
  RippleTarget,
  SentinelGroup,
  SentinelTarget,
  waitFor,
  WriteLoop,
  type Node,
} from "./failover-common.js";
import { fmtInt, table, writeDocs } from "./format.js";

export interface FailoverOptions {
  /** kill -9 repetitions per system. */
  readonly reps: number;
  /** Planned switchovers (half `ripplecache failover`, half SIGTERM). */
  readonly switchovers: number;
}

type Kind = "plain" | "replicated";
const KINDS: readonly Kind[] = ["plain", "replicated"];

export interface KillRep {
  readonly system: "RippleCache" | "Redis Sentinel";
  readonly rep: number;
  readonly status: "ok" | "failed";
  readonly message?: string;
  /** ms from the kill to the first write acknowledged by another node, per kind. */
  readonly unavailableMs?: Record<Kind, number>;
  readonly acked?: Record<Kind, number>;
  readonly lost?: Record<Kind, number>;
}

export interface SwitchRep {
  readonly how: "ripplecache failover" | "SIGTERM";
  readonly rep: number;
  readonly status: "ok" | "failed";
  readonly message?: string;
  /** Longest time without an acknowledgement from the command (or signal) to the first acknowledgement after it completed, per kind. */
  readonly unavailableMs?: Record<Kind, number>;
  /** The same measure over a window as long just before (the write loop's own gaps on this machine). */
  readonly baselineGapMs?: Record<Kind, number>;
  readonly commandMs?: number;
}

export interface Summary {
  readonly n: number;
  readonly p50Ms: number | undefined;
  readonly maxMs: number | undefined;
}

export interface FailoverResult {
  readonly status: "ok" | "failed";
  readonly message?: string;
  readonly date: string;
  readonly nproc: number;
  readonly loadAvg: string;
  readonly settings: Record<string, unknown>;
  readonly kills: KillRep[];
  readonly switchovers: SwitchRep[];
  /** p50/max of unavailability and total lost, per system and kind. */
  readonly summary: {
    readonly ripple: Record<Kind, Summary & { lost: number; acked: number }>;
    readonly sentinel: Record<Kind, Summary & { lost: number; acked: number }>;
    readonly failoverCommand: Record<Kind, Summary>;
    readonly sigterm: Record<Kind, Summary>;
    /** Acknowledged writes lost over all switchovers (failover command and SIGTERM), per kind. */
    readonly switchoverLost: Record<Kind, number>;
    readonly switchoverAcked: Record<Kind, number>;
  };
}

const log = (s: string) => process.stderr.write(`bench: failover: ${s}\n`);

function summarize(xs: number[]): Summary {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return { n: s.length, p50Ms: s.length === 0 ? undefined : s[Math.floor((s.length - 1) / 2)], maxMs: s.length === 0 ? undefined : s[s.length - 1] };
}

const perKind = <T>(f: (k: Kind) => T): Record<Kind, T> => ({ plain: f("plain"), replicated: f("replicated") });

async function loops<T extends { close(): void }>(make: (k: Kind) => T, prefix: string): Promise<{ targets: Record<Kind, T>; w: Record<Kind, WriteLoop> }> {
  const targets = perKind(make);
  const w = perKind((k) => new WriteLoop(targets[k] as never, `${prefix}${k}/`));
  await Promise.all(KINDS.map((k) => w[k].waitAcks(50)));
  return { targets, w };
}

/** Both kinds acknowledged by a node other than `killed` after `t`. */
async function waitRecovered(w: Record<Kind, WriteLoop>, t: number, killed: string): Promise<Record<Kind, number>> {
  await waitFor("writes acknowledged by the new primary", () => KINDS.every((k) => w[k].firstAckAfter(t, killed) !== undefined), 60_000, 10);
  return perKind((k) => w[k].firstAckAfter(t, killed)!.recv - t);
}

async function rippleKill(etcd: EtcdProcess, rep: number): Promise<KillRep> {
  const cluster = new NodeSet();
  const group = `bench-kill-${rep}-${process.pid}`;
  let loopsOf: Awaited<ReturnType<typeof loops<RippleTarget>>> | undefined;
  try {
    const nodes = await Promise.all(["n1", "n2", "n3"].map((id) => cluster.start(id, candidateArgs(etcd.endpoint, group, id))));
    const primary = await onePrimary(nodes);
    loopsOf = await loops((k) => new RippleTarget(() => nodes.map((n) => n.addr), k === "replicated" ? 1 : 0), "f/");
    const { w, targets } = loopsOf;
    const killedAt = performance.now();
    primary.server.proc.kill("SIGKILL");
    const unavailableMs = await waitRecovered(w, killedAt, primary.addr);
    await Promise.all(KINDS.map((k) => w[k].waitAcks(20)));
    await Promise.all(KINDS.map((k) => w[k].stop()));
    const rest = nodes.filter(alive);
    const next = await onePrimary(rest);
    const lost = perKind(() => 0);
    for (const k of KINDS) lost[k] = (await lostAcks(w[k].acks, (keys) => targets[k].read(next.addr, keys))).length;
    return { system: "RippleCache", rep, status: "ok", unavailableMs, acked: perKind((k) => w[k].acks.length), lost };
  } catch (err) {
    return { system: "RippleCache", rep, status: "failed", message: err instanceof Error ? err.message : String(err) };
  } finally {
    if (loopsOf !== undefined) await Promise.all(KINDS.map((k) => loopsOf!.w[k].stop()));
    for (const k of KINDS) loopsOf?.targets[k].close();
    await cluster.stopAll();
  }
}

async function sentinelKill(rep: number): Promise<KillRep> {
  let g: SentinelGroup | undefined;
  let loopsOf: Awaited<ReturnType<typeof loops<SentinelTarget>>> | undefined;
  try {
    g = await SentinelGroup.start();
    const group = g;
    const master = (await group.master())!;
    loopsOf = await loops((k) => new SentinelTarget(group, k === "replicated"), "f/");
    const { w, targets } = loopsOf;
    const killedAt = performance.now();
    group.byAddr(master)!.proc.kill("SIGKILL");
    const unavailableMs = await waitRecovered(w, killedAt, master);
    await Promise.all(KINDS.map((k) => w[k].waitAcks(20)));
    await Promise.all(KINDS.map((k) => w[k].stop()));
    const next = (await group.master())!;
    const lost = perKind(() => 0);
    for (const k of KINDS) lost[k] = (await lostAcks(w[k].acks, (keys) => targets[k].read(next, keys))).length;
    return { system: "Redis Sentinel", rep, status: "ok", unavailableMs, acked: perKind((k) => w[k].acks.length), lost };
  } catch (err) {
    return { system: "Redis Sentinel", rep, status: "failed", message: err instanceof Error ? err.message : String(err) };
  } finally {
    if (loopsOf !== undefined) await Promise.all(KINDS.map((k) => loopsOf!.w[k].stop()));
    for (const k of KINDS) loopsOf?.targets[k].close();
    await g?.stop();
  }
}

/** Runs the CLI without blocking this process's event loop (the write loops run meanwhile). */
function cli(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Whether this build has `ripplecache failover`. */
export async function hasFailoverCommand(): Promise<boolean> {
  const r = await cli(["--help"]);
  return /ripplecache failover/.test(r.stdout + r.stderr);
}

/** Planned switchovers in one group under the write loops: `ripplecache failover --to` a replica, and SIGTERM of the primary (restarted after). */
async function switchovers(etcd: EtcdProcess, count: number, withCommand: boolean): Promise<{ reps: SwitchRep[]; lost: Record<Kind, number>; acked: Record<Kind, number> }> {
  const cluster = new NodeSet();
  const group = `bench-switch-${process.pid}`;
  const reps: SwitchRep[] = [];
  let loopsOf: Awaited<ReturnType<typeof loops<RippleTarget>>> | undefined;
  const nodes: Node[] = [];
  try {
    nodes.push(...(await Promise.all(["s1", "s2", "s3"].map((id) => cluster.start(id, candidateArgs(etcd.endpoint, group, id))))));
    await onePrimary(nodes);
    loopsOf = await loops((k) => new RippleTarget(() => nodes.map((n) => n.addr), k === "replicated" ? 1 : 0), "s/");
    const { w } = loopsOf;
    for (let rep = 0; rep < count; rep++) {
      const how = withCommand && rep % 2 === 0 ? "ripplecache failover" : "SIGTERM";
      try {
        const primary = await onePrimary(nodes);
        await Promise.all(KINDS.map((k) => w[k].waitAcks(50)));
        const started = performance.now();
        if (how === "ripplecache failover") {
          const to = nodes.find((n) => n !== primary && alive(n))!;
          const r = await cli(["failover", "--to", nodeId(to), "--addr", primary.addr]);
          if (r.code !== 0) {
            const errors = primary.output.filter((l) => /"level":"(error|warn)"/.test(l)).slice(-3);
            throw new Error(`ripplecache failover: exit ${r.code}: ${r.stderr.trim()}; the primary's log: ${errors.join(" | ")}`);
          }
        } else {
          await primary.server.stop("SIGTERM");
        }
        const done = performance.now();
        await Promise.all(KINDS.map((k) => w[k].waitAcks(20)));
        const unavailableMs = perKind((k) => w[k].maxGap(started, done));
        const baselineGapMs = perKind((k) => w[k].maxGap(started - Math.max(done - started, 200) - 50, started - 50));
        reps.push({ how, rep, status: "ok", unavailableMs, baselineGapMs, commandMs: done - started });
        log(`${how} #${rep + 1}: ${KINDS.map((k) => `${k} ${unavailableMs[k].toFixed(0)} ms`).join(", ")} (command ${(done - started).toFixed(0)} ms)`);
        if (how === "SIGTERM") {
          // The stopped node comes back (empty, same id) as a replica.
          const i = nodes.indexOf(primary);
          nodes[i] = await cluster.start(nodeId(primary), candidateArgs(etcd.endpoint, group, nodeId(primary)));
        }
      } catch (err) {
        reps.push({ how, rep, status: "failed", message: err instanceof Error ? err.message : String(err) });
      }
    }
    await Promise.all(KINDS.map((k) => w[k].stop()));
    const live = nodes.filter(alive);
    const primary = await onePrimary(live);
    await waitConverged(live, 30_000);
    const lost = perKind(() => 0);
    for (const k of KINDS) lost[k] = (await lostAcks(w[k].acks, (keys) => loopsOf!.targets[k].read(primary.addr, keys))).length;
    return { reps, lost, acked: perKind((k) => w[k].acks.length) };
  } finally {
    if (loopsOf !== undefined) await Promise.all(KINDS.map((k) => loopsOf!.w[k].stop()));
    for (const k of KINDS) loopsOf?.targets[k].close();
    await cluster.stopAll();
  }
}

export async function runFailover(opts: FailoverOptions): Promise<FailoverResult> {
  const date = new Date().toISOString();
  const loadAvg = os.loadavg().map((l) => l.toFixed(2)).join(" ");
  const settings = {
    ripplecache: { nodes: 3, coordinator: "etcd 3.4 (one member, loopback)", ...DEFAULT_TIMINGS, note: "ripplecache serve's defaults" },
    sentinel: { redisNodes: 3, sentinels: 3, quorum: 2, downAfterMs: DOWN_AFTER_MS, parallelSyncs: 1, failoverTimeoutMs: "default (180000)" },
    writeLoop: "2 sequential writers per kind, distinct keys, 5 ms between writes, rediscovery every 10 ms after a failure",
    reps: opts.reps,
    switchovers: opts.switchovers,
  };
  const kills: KillRep[] = [];
  let swReps: SwitchRep[] = [];
  let swLost = perKind(() => 0);
  let swAcked = perKind(() => 0);
  let etcd: EtcdProcess | undefined;
  let message: string | undefined;
  try {
    etcd = await startEtcd();
    for (let rep = 0; rep < opts.reps; rep++) {
      // Alternating which system goes first, so slow drift of a shared machine hits both alike.
      const order = rep % 2 === 0 ? (["ripple", "sentinel"] as const) : (["sentinel", "ripple"] as const);
      for (const which of order) {
        const once = () => (which === "ripple" ? rippleKill(etcd!, rep) : sentinelKill(rep));
        let r = await once();
        // A repetition whose setup failed on the loaded machine is run again once, and says so.
        if (r.status !== "ok") {
          log(`${r.system} #${rep + 1} failed (${r.message}); running it again`);
          r = await once();
        }
        kills.push(r);
        log(
          `${r.system} kill -9 #${rep + 1}: ` +
            (r.status === "ok" ? KINDS.map((k) => `${k} ${r.unavailableMs![k].toFixed(0)} ms (lost ${r.lost![k]} of ${r.acked![k]})`).join(", ") : `failed: ${r.message}`),
        );
      }
    }
    if (opts.switchovers > 0) {
      const withCommand = await hasFailoverCommand();
      if (!withCommand) log("this build has no `ripplecache failover`: measuring SIGTERM of the primary only");
      const s = await switchovers(etcd, opts.switchovers, withCommand);
      swReps = s.reps;
      swLost = s.lost;
      swAcked = s.acked;
    }
  } catch (err) {
    message = err instanceof Error ? err.message : String(err);
  } finally {
    await etcd?.stop();
  }
  const sys = (name: KillRep["system"]) =>
    perKind((k) => {
      const ok = kills.filter((r) => r.system === name && r.status === "ok");
      return { ...summarize(ok.map((r) => r.unavailableMs![k])), lost: ok.reduce((a, r) => a + r.lost![k], 0), acked: ok.reduce((a, r) => a + r.acked![k], 0) };
    });
  const sw = (how: SwitchRep["how"]) => perKind((k) => summarize(swReps.filter((r) => r.how === how && r.status === "ok").map((r) => r.unavailableMs![k])));
  const failed = message !== undefined || kills.some((r) => r.status !== "ok") || swReps.some((r) => r.status !== "ok");
  return {
    status: failed ? "failed" : "ok",
    message: message ?? [...kills, ...swReps].filter((r) => r.status !== "ok").map((r) => r.message).join("; ") ?? undefined,
    date,
    nproc: os.availableParallelism(),
    loadAvg,
    settings,
    kills,
    switchovers: swReps,
    summary: {
      ripple: sys("RippleCache"),
      sentinel: sys("Redis Sentinel"),
      failoverCommand: sw("ripplecache failover"),
      sigterm: sw("SIGTERM"),
      switchoverLost: swLost,
      switchoverAcked: swAcked,
    },
  };
}

// --- targets, shared with bench/format.ts -------------------------------------------

/** Issue 21's targets: kill -9 unavailability p50 at most Sentinel's and under 2 s; a planned switchover under 300 ms with 0 acknowledged writes lost. */
export const FAILOVER_TARGETS = { killP50AbsoluteMs: 2000, switchoverMs: 300 };

const ms = (x: number | undefined) => (x === undefined ? "-" : `${fmtInt(x)} ms`);

export function formatFailover(r: FailoverResult): string {
  const s = r.summary;
  const rows: string[][] = [];
  for (const k of KINDS) {
    const kind = k === "plain" ? "Set / SET" : "Set min_replicas 1 / SET+WAIT 1";
    rows.push([`kill -9 of the primary, ${kind}: RippleCache`, `${s.ripple[k].n}`, ms(s.ripple[k].p50Ms), ms(s.ripple[k].maxMs), `${s.ripple[k].lost} of ${fmtInt(s.ripple[k].acked)}`]);
    rows.push([`kill -9 of the primary, ${kind}: Redis Sentinel`, `${s.sentinel[k].n}`, ms(s.sentinel[k].p50Ms), ms(s.sentinel[k].maxMs), `${s.sentinel[k].lost} of ${fmtInt(s.sentinel[k].acked)}`]);
  }
  for (const k of KINDS) {
    const kind = k === "plain" ? "Set" : "Set min_replicas 1";
    rows.push([`ripplecache failover --to, ${kind}`, `${s.failoverCommand[k].n}`, ms(s.failoverCommand[k].p50Ms), ms(s.failoverCommand[k].maxMs), ""]);
    rows.push([`SIGTERM of the primary, ${kind}`, `${s.sigterm[k].n}`, ms(s.sigterm[k].p50Ms), ms(s.sigterm[k].maxMs), ""]);
  }
  rows.push(["switchovers (both ways), acknowledged writes lost", "", "", "", KINDS.map((k) => `${k} ${s.switchoverLost[k]} of ${fmtInt(s.switchoverAcked[k])}`).join(", ")]);
  const base = KINDS.map((k) => {
    const b = r.switchovers.filter((x) => x.status === "ok").map((x) => x.baselineGapMs![k]);
    return b.length === 0 ? "-" : `${k} ${fmtInt(Math.max(...b))} ms`;
  }).join(", ");
  const v = verdicts(r);
  return [
    `Failover (bench/failover.ts), ${r.nproc} cores shared with other work (load average ${r.loadAvg} at the start); the two systems alternate per repetition.`,
    `RippleCache: 3 nodes, --coordinator etcd (one etcd 3.4 member), default lease settings (${DEFAULT_TIMINGS.leaseDurationMs}/${DEFAULT_TIMINGS.renewDeadlineMs}/${DEFAULT_TIMINGS.retryPeriodMs} ms). Redis ${"7"}: master, 2 replicas, 3 sentinels, quorum 2, down-after-milliseconds ${DOWN_AFTER_MS}.`,
    "Unavailable: from the kill (or the switchover's start) to the first write acknowledged by the new primary (switchover: the longest time without an acknowledgement).",
    table(["case", "runs", "unavailable p50", "max", "acknowledged writes lost"], rows, 1),
    `The write loop's own longest gap in a window as long just before each switchover: ${base}.`,
    ...r.kills.filter((x) => x.status !== "ok").map((x) => `FAILED: ${x.system} #${x.rep + 1}: ${x.message}`),
    ...r.switchovers.filter((x) => x.status !== "ok").map((x) => `FAILED: ${x.how} #${x.rep + 1}: ${x.message}`),
    ...(r.status === "failed" && r.message ? [`status: failed (${r.message})`] : []),
    "Targets:",
    ...v.map((x) => `  ${x.text}: ${x.verdict}`),
  ].join("\n");
}

/** The targets judged on these figures: [text, measured, met]. */
export function verdicts(r: FailoverResult): { text: string; value: string | undefined; measure: number | undefined; bound: number; verdict: "met" | "not met" | "not measured" }[] {
  const s = r.summary;
  const out: ReturnType<typeof verdicts> = [];
  const judge = (text: string, value: string | undefined, measure: number | undefined, bound: number) =>
    out.push({ text, value, measure, bound, verdict: measure === undefined ? "not measured" : measure <= bound ? "met" : "not met" });
  for (const k of KINDS) {
    const rp = s.ripple[k].p50Ms;
    const sp = s.sentinel[k].p50Ms;
    judge(`kill -9, ${k}: RippleCache p50 / Sentinel p50 <= 1`, rp === undefined || sp === undefined ? undefined : `${fmtInt(rp)} / ${fmtInt(sp)} ms`, rp === undefined || sp === undefined ? undefined : rp / sp, 1);
    judge(`kill -9, ${k}: RippleCache p50 < 2 s`, ms(rp), rp, FAILOVER_TARGETS.killP50AbsoluteMs);
  }
  const worst = (x: Record<Kind, Summary>) => (x.plain.maxMs === undefined || x.replicated.maxMs === undefined ? undefined : Math.max(x.plain.maxMs, x.replicated.maxMs));
  const fc = worst(s.failoverCommand);
  judge("ripplecache failover: unavailable < 300 ms (worst of both kinds)", ms(fc), fc, FAILOVER_TARGETS.switchoverMs);
  const st = worst(s.sigterm);
  judge("SIGTERM of the primary: unavailable < 300 ms (worst of both kinds)", ms(st), st, FAILOVER_TARGETS.switchoverMs);
  const lost = r.switchovers.length === 0 ? undefined : s.switchoverLost.plain + s.switchoverLost.replicated;
  judge("switchovers: acknowledged writes lost = 0", lost === undefined ? undefined : String(lost), lost, 0);
  return out;
}

// `node dist/bench/failover.js [--reps N] [--switchovers N] [--merge FILE]`
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const { values } = parseArgs({ options: { reps: { type: "string", default: "5" }, switchovers: { type: "string", default: "6" }, merge: { type: "string" } }, strict: true });
  const root = join(new URL("../../", import.meta.url).pathname);
  runFailover({ reps: Number(values.reps), switchovers: Number(values.switchovers) }).then(
    (r) => {
      process.stdout.write(`${formatFailover(r)}\n`);
      if (values.merge !== undefined) {
        const results = JSON.parse(readFileSync(values.merge, "utf8")) as Record<string, unknown> & { config?: { sections?: string[] } };
        results.failover = r;
        if (results.config?.sections !== undefined && !results.config.sections.includes("failover")) results.config.sections.push("failover");
        writeFileSync(values.merge, `${JSON.stringify(results, null, 2)}\n`);
        process.stdout.write(`merged into ${values.merge}\n`);
        if (realpathSync(values.merge) === realpathSync(join(root, "bench/results/latest.json"))) writeDocs(results, root);
      }
      process.exit(r.status === "ok" ? 0 : 1);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
