/**
 * `npm run attack`: each hostile-connection attack of issue 20's audit
 * against both HTTP/2 engines on the same server code, in one run: our
 * engine (`--http2-engine ripple`, the default) and node:http2 (nghttp2).
 *
 * Per attack and engine, on a fresh server: the server's RSS (VmRSS, every
 * 10 ms) before and at its peak, and after a full GC before the attack and 5 s
 * after its start; its CPU time; a probe client's Gets on another connection
 * (one in flight) for the first 5 s, median and max; and how and when the
 * server ended the attacker (bench/attack-wire.ts, run in its own process).
 * Targets per attacking connection, PASS/FAIL: RSS growth at most
 * node:http2's (+4 MiB of sampling noise) and under 64 MiB, probe median
 * under 20 ms and none over 250 ms, the attacker disconnected or refused
 * within 2 s, RSS back (after the GC) within 16 MiB 5 s after the start.
 *
 * Writes bench/results/attack.json, prints a markdown table, and (on a run
 * of every attack) rewrites the table in docs/RELIABILITY.md between its
 * marker comments.
 *
 *   npm run attack [-- --only zero-window,rapid-reset] [--engines ripple] [--hold 6000] [--no-docs] [--out FILE]
 */
import { spawn, spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { CacheClient } from "../src/client/client.js";
import { ATTACK_NAMES, type AttackName, type AttackResult, type ConnectionOutcome } from "./attack-wire.js";
import { exited, pct, processCpuMs, ROOT, rssBytes, sleep, startServer, track, type Server } from "./procs.js";

const MiB = 1024 * 1024;
/** Targets (issue 20, item 7). */
const MAX_GROWTH = 64 * MiB;
/** RSS sampled every 10 ms moves by a few MiB between runs: "at most node:http2's" allows this much over. */
const GROWTH_NOISE = 4 * MiB;
const PROBE_MEDIAN_MS = 20;
const PROBE_MAX_MS = 250;
const ENDED_MS = 2000;
const BACK_MS = 5000;
/**
 * "Back": 5 s after the attack's start, after a full GC in the server (so that
 * heap V8 grew for garbage and has not given back yet does not count), RSS
 * within this of the same reading before the attack.
 */
const BACK_SLACK = 16 * MiB;

type Engine = "ripple" | "node";

interface Row {
  readonly attack: AttackName;
  readonly label: string;
  readonly connections: number;
  /** The attacker ignores GOAWAY and keeps sending: only a closed connection (or one the server stopped reading) ends it. */
  readonly ignoresGoaway: boolean;
  /** A refused stream (RST_STREAM REFUSED_STREAM, ENHANCE_YOUR_CALM, ...) ends the attack: its streams are the load. */
  readonly refusalEnds: boolean;
  /** No attack, no verdict: the probe and one idle connection, for the noise floor of the others. */
  readonly control?: boolean;
}

const ROWS: readonly Row[] = [
  { attack: "control", label: "control: no attack (one idle connection, the probe)", connections: 1, ignoresGoaway: false, refusalEnds: false, control: true },
  { attack: "zero-window", label: "(a) zero window: INITIAL_WINDOW_SIZE=0, 1,000 Gets of a 1 MiB value, no WINDOW_UPDATE", connections: 1, ignoresGoaway: false, refusalEnds: true },
  { attack: "zero-window-x3", label: "(a) zero window, 3 such connections", connections: 3, ignoresGoaway: false, refusalEnds: true },
  { attack: "settings-entries", label: "(b) SETTINGS frames of 2,730 INITIAL_WINDOW_SIZE entries, 1,000 open streams", connections: 1, ignoresGoaway: false, refusalEnds: false },
  { attack: "after-error", label: "(c) DATA on stream 0, then 64 KB chunks, FIN ignored", connections: 1, ignoresGoaway: true, refusalEnds: false },
  { attack: "rapid-reset", label: "(d) rapid reset: HEADERS + RST_STREAM, GOAWAY ignored", connections: 1, ignoresGoaway: true, refusalEnds: false },
  { attack: "continuation", label: "(e) CONTINUATION flood, GOAWAY ignored", connections: 1, ignoresGoaway: true, refusalEnds: false },
  { attack: "hpack-oversize", label: "(f) header blocks over the limit: 16 KB of references to a 4 KB HPACK entry (~64 MB decoded) each", connections: 1, ignoresGoaway: false, refusalEnds: false },
  { attack: "ping-flood", label: "PING flood, ACKs never read", connections: 1, ignoresGoaway: false, refusalEnds: false },
  { attack: "settings-flood", label: "empty SETTINGS flood, ACKs never read", connections: 1, ignoresGoaway: false, refusalEnds: false },
  { attack: "unfinished-bodies", label: "1,000 Sets declaring 1 MiB, 60 KB of each sent, never finished", connections: 1, ignoresGoaway: false, refusalEnds: true },
];

interface Measurement {
  readonly attack: AttackName;
  readonly engine: Engine;
  readonly rssBefore: number;
  readonly rssPeak: number;
  readonly peakAtMs: number;
  readonly growthPerConnection: number;
  readonly cpuSeconds: number;
  readonly probeCalls: number;
  readonly probeErrors: number;
  readonly probeMedianMs: number;
  readonly probeMaxMs: number;
  /** The server's longest event-loop delay in the same 5 s (NaN: no reading). */
  readonly loopStallMaxMs: number;
  /** When the attacker was disconnected or refused (ms from the attack's start), undefined if never within the hold. */
  readonly endedAtMs: number | undefined;
  readonly outcome: string;
  /** RSS after a full GC before the attack, and 5 s after its start (undefined: the server did not answer the GC probe within 10 s). */
  readonly gcRssBefore: number | undefined;
  readonly gcRssAt5s: number | undefined;
  /** Without a forced GC: when RSS came back within BACK_SLACK of before and stayed (ms from the attack's start), undefined if not by the end. */
  readonly naturalBackAtMs: number | undefined;
  readonly observedMs: number;
  readonly connections: ConnectionOutcome[];
  /** RSS (MiB) every 100 ms from the attack's start. */
  readonly rssCurveMiB: number[];
  verdict?: { pass: boolean; failed: string[] };
}

// --- one attack against one engine ----------------------------------------------------

async function measure(row: Row, engine: Engine, holdMs: number): Promise<Measurement> {
  // probe: bench/server-probe.js, a full GC and a memory reading on SIGUSR2.
  // attack-probe: the server's own event-loop stalls.
  const server = await startServer({ cpu: undefined, probe: true, nodeFlags: ["--import", join(ROOT, "dist/bench/attack-probe.js")], args: ["--http2-engine", engine, "--log-level", "error"] });
  try {
    return await measureOn(server, row, engine, holdMs);
  } finally {
    await server.stop();
  }
}

async function measureOn(server: Server, row: Row, engine: Engine, holdMs: number): Promise<Measurement> {
  const setup = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 10_000 });
  await setup.set("big", Buffer.alloc(MiB, 0x5a));
  await setup.set("probe", Buffer.alloc(100, 0x70));
  setup.close();

  // The probe: Gets one at a time on its own connection, from before the attack to the end.
  const probe = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 10_000 });
  const calls: { at: number; ms: number; ok: boolean }[] = [];
  let probing = true;
  let inFlightSince: number | undefined;
  const probeLoop = (async () => {
    while (probing) {
      const start = performance.now();
      inFlightSince = start;
      let ok = true;
      try {
        await probe.get("probe");
      } catch {
        ok = false;
      }
      inFlightSince = undefined;
      calls.push({ at: start, ms: performance.now() - start, ok });
      if (calls.length > 200_000) calls.splice(0, 100_000);
      await sleep(5);
    }
  })();

  // RSS and CPU every 10 ms.
  const samples: { at: number; rss: number }[] = [];
  const sampler = setInterval(() => {
    const rss = rssBytes(server.pid);
    if (rss !== undefined) samples.push({ at: performance.now(), rss });
  }, 10);

  try {
    await sleep(1000); // warm-up: the probe's client and the server's first calls
    const gcBefore = await server.probeMemory();
    await sleep(300);
    const rssBefore = rssBytes(server.pid) ?? NaN;

    const child = track(spawn(process.execPath, [join(ROOT, "dist/bench/attack-client.js"), JSON.stringify({ attack: row.attack, port: Number(server.addr.split(":")[1]), holdMs })], { stdio: ["ignore", "pipe", "inherit"] }));
    let t0 = NaN;
    let cpu0 = NaN;
    let result: AttackResult | undefined;
    const started = new Promise<void>((res) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        const msg = JSON.parse(line) as { event: string } & AttackResult;
        if (msg.event === "start") {
          t0 = performance.now();
          cpu0 = processCpuMs(server.pid) ?? NaN;
          res();
        } else if (msg.event === "result") result = msg;
      });
    });
    const killer = setTimeout(() => child.kill("SIGKILL"), holdMs + 15_000);
    await Promise.race([started, exited(child)]);
    const t0Epoch = Date.now() - (performance.now() - t0);
    let stderrMark = 0;
    const gcAt5s = sleep(t0 + BACK_MS - performance.now()).then(() => {
      stderrMark = server.stderr.length;
      return server.probeMemory();
    });
    await exited(child);
    clearTimeout(killer);
    if (result === undefined || Number.isNaN(t0)) throw new Error(`attacker ${row.attack} failed without a result`);
    // Watch the recovery: until 1.5 s past the hold (or 1 s past a late attacker).
    const observeUntil = Math.max(t0 + holdMs + 1500, performance.now() + 1000);
    await sleep(observeUntil - performance.now());
    const gcAfter = await gcAt5s;
    await sleep(50);
    const loopLine = server.stderr.slice(stderrMark).find((l) => l.startsWith('{"loopProbe"'));
    const loop = loopLine === undefined ? [] : (JSON.parse(loopLine) as { loopProbe: [number, number][] }).loopProbe.filter(([at]) => at >= t0Epoch && at <= t0Epoch + BACK_MS);
    const cpu1 = processCpuMs(server.pid) ?? NaN;
    const end = performance.now();

    const during = samples.filter((s) => s.at >= t0);
    const peak = during.reduce((a, s) => (s.rss > a.rss ? s : a), { at: t0, rss: rssBefore });
    let backAt: number | undefined;
    for (let i = during.length - 1; i >= 0 && during[i].rss <= rssBefore + BACK_SLACK; i--) backAt = during[i].at;

    // The probe's calls before the forced GC at 5 s (its pause is ours, not the attack's).
    const window = calls.filter((c) => c.at >= t0 && c.at < t0 + BACK_MS - 50).map((c) => c.ms);
    if (inFlightSince !== undefined && inFlightSince < t0 + BACK_MS) window.push(end - inFlightSince); // a probe still waiting counts what it has waited
    const errors = calls.filter((c) => c.at >= t0 && c.at < t0 + BACK_MS && !c.ok).length;

    const conns = result.connections;
    const endedAt = Math.max(...conns.map((c) => endedAtOf(row, c) ?? Infinity));
    const curve: number[] = [];
    for (let t = t0; t <= end; t += 100) {
      const s = during.find((x) => x.at >= t);
      if (s !== undefined) curve.push(Math.round((s.rss / MiB) * 10) / 10);
    }
    return {
      attack: row.attack,
      engine,
      rssBefore,
      rssPeak: peak.rss,
      peakAtMs: Math.round(peak.at - t0),
      growthPerConnection: Math.max(0, peak.rss - rssBefore) / row.connections,
      cpuSeconds: (cpu1 - cpu0) / 1000,
      probeCalls: window.length,
      probeErrors: errors,
      probeMedianMs: pct(window, 50),
      probeMaxMs: window.length === 0 ? NaN : Math.max(...window),
      endedAtMs: Number.isFinite(endedAt) ? endedAt : undefined,
      // The connection ended last (the one the verdict is about), or the first.
      outcome: describe(conns.reduce((a, c) => ((endedAtOf(row, c) ?? Infinity) > (endedAtOf(row, a) ?? Infinity) ? c : a)), row.connections),
      loopStallMaxMs: loop.length === 0 ? NaN : Math.max(...loop.map(([, d]) => d)),
      gcRssBefore: gcBefore?.rss,
      gcRssAt5s: gcAfter?.rss,
      naturalBackAtMs: backAt === undefined ? undefined : Math.round(backAt - t0),
      observedMs: Math.round(end - t0),
      connections: conns,
      rssCurveMiB: curve,
    };
  } finally {
    probing = false;
    clearInterval(sampler);
    await Promise.race([probeLoop, sleep(11_000)]);
    probe.close();
  }
}

/** When the server ended this connection's attack, by the row's rule. */
function endedAtOf(row: Row, c: ConnectionOutcome): number | undefined {
  const times = [c.closedAtMs, c.stalledAtMs];
  if (!row.ignoresGoaway) times.push(c.goaway?.atMs);
  if (row.refusalEnds) times.push(c.firstRefusalAtMs, c.windowShutAtMs);
  const known = times.filter((t): t is number => t !== undefined);
  return known.length === 0 ? undefined : Math.min(...known);
}

function describe(c: ConnectionOutcome, connections: number): string {
  const parts: string[] = [];
  const resets = Object.entries(c.resets).map(([code, n]) => `${n.toLocaleString("en-US")} RST ${code}`);
  if (c.firstRefusalAtMs !== undefined) parts.push(`${resets.join(", ")} (first ${sec(c.firstRefusalAtMs)})`);
  else if (resets.length > 0) parts.push(resets.join(", "));
  if (c.goaway !== undefined) parts.push(`GOAWAY ${c.goaway.code} ${sec(c.goaway.atMs)}`);
  if (c.closedAtMs !== undefined) parts.push(`closed ${sec(c.closedAtMs)}`);
  else if (c.stalledAtMs !== undefined) parts.push(`not read from ${sec(c.stalledAtMs)}`);
  else if (c.windowShutAtMs !== undefined) parts.push(`no window from ${sec(c.windowShutAtMs)}`);
  else parts.push("still open");
  return `${connections > 1 ? `last of ${connections}: ` : ""}${parts.join("; ")}`;
}

const sec = (ms: number | undefined) => (ms === undefined ? "-" : `${(ms / 1000).toFixed(ms < 100 ? 3 : 2)} s`);
const mib = (b: number) => (b / MiB).toFixed(b < 10 * MiB ? 1 : 0);
const ms = (v: number) => (Number.isFinite(v) ? (v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US")) : "-");

function judge(m: Measurement, node: Measurement | undefined, control: boolean): { pass: boolean; failed: string[] } {
  const failed: string[] = [];
  if (control) return { pass: true, failed };
  const limit = m.engine === "node" || node === undefined ? MAX_GROWTH : Math.min(MAX_GROWTH, node.growthPerConnection + GROWTH_NOISE);
  if (!(m.growthPerConnection <= limit)) failed.push("RSS growth");
  if (!(m.probeMedianMs < PROBE_MEDIAN_MS)) failed.push("probe median");
  if (!(m.probeMaxMs <= PROBE_MAX_MS)) failed.push("probe max");
  if (!(m.endedAtMs !== undefined && m.endedAtMs <= ENDED_MS)) failed.push("not ended in 2 s");
  if (!(m.gcRssBefore !== undefined && m.gcRssAt5s !== undefined && m.gcRssAt5s - m.gcRssBefore <= BACK_SLACK)) failed.push("RSS not back in 5 s");
  return { pass: failed.length === 0, failed };
}

function markdown(rows: readonly Row[], ms_: readonly Measurement[]): string {
  const lines = [
    "| attack | engine | RSS before → peak (MiB) | growth per conn. (MiB) | server CPU (s) | probe median / max (ms) | server loop delay max (ms) | how the attacker ended | RSS at 5 s after a GC (MiB) | result |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    for (const [i, m] of ms_.filter((x) => x.attack === row.attack).entries()) {
      const v = m.verdict!;
      lines.push(
        `| ${i === 0 ? row.label : ""} | ${m.engine === "ripple" ? "ours" : "node:http2"} | ${mib(m.rssBefore)} → ${mib(m.rssPeak)} | ${mib(m.growthPerConnection)} | ${m.cpuSeconds.toFixed(2)} | ${ms(m.probeMedianMs)} / ${ms(m.probeMaxMs)}${m.probeErrors > 0 ? ` (${m.probeErrors} failed)` : ""} | ${ms(m.loopStallMaxMs)} | ${m.outcome} | ${m.gcRssBefore === undefined || m.gcRssAt5s === undefined ? "no GC reading" : `${m.gcRssAt5s >= m.gcRssBefore ? "+" : "−"}${mib(Math.abs(m.gcRssAt5s - m.gcRssBefore))}`} | ${row.control === true ? "(control)" : v.pass ? "PASS" : `FAIL: ${v.failed.join(", ")}`} |`,
      );
    }
  }
  return lines.join("\n");
}

// --- main ---------------------------------------------------------------------------

const { values } = parseArgs({
  options: {
    only: { type: "string" },
    engines: { type: "string", default: "ripple,node" },
    hold: { type: "string", default: "6000" },
    out: { type: "string", default: join(ROOT, "bench/results/attack.json") },
    "no-docs": { type: "boolean", default: false },
    /** The commit measured, for a run from an export of the tree (no .git). */
    commit: { type: "string" },
  },
});
const only = values.only?.split(",").filter(Boolean);
for (const name of only ?? []) if (!ATTACK_NAMES.includes(name as AttackName)) throw new Error(`--only: no attack "${name}" (attacks: ${ATTACK_NAMES.join(", ")})`);
const engines = values.engines.split(",") as Engine[];
const holdMs = Number(values.hold);
const rows = ROWS.filter((r) => only === undefined || only.includes(r.attack));

const measurements: Measurement[] = [];
for (const row of rows) {
  // node:http2 first: its growth is what ours is held to.
  for (const engine of [...engines.filter((e) => e === "node"), ...engines.filter((e) => e !== "node")]) {
    process.stderr.write(`attack ${row.attack} on ${engine}... `);
    const m = await measure(row, engine, holdMs);
    const node = measurements.find((x) => x.attack === row.attack && x.engine === "node");
    m.verdict = judge(m, node, row.control === true);
    measurements.push(m);
    process.stderr.write(`${mib(m.rssBefore)} -> ${mib(m.rssPeak)} MiB, probe ${ms(m.probeMedianMs)}/${ms(m.probeMaxMs)} ms, ${m.outcome}: ${m.verdict.pass ? "PASS" : `FAIL (${m.verdict.failed.join(", ")})`}\n`);
  }
}
// Table order: ours, then node:http2.
measurements.sort((a, b) => ROWS.findIndex((r) => r.attack === a.attack) - ROWS.findIndex((r) => r.attack === b.attack) || (a.engine === "ripple" ? -1 : 1));

const commit = values.commit ?? (spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).stdout?.trim() || "unknown");
const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "unknown"}), Node ${process.version}`;
const table = markdown(rows, measurements);
const judged = measurements.filter((m) => m.attack !== "control");
const passed = judged.filter((m) => m.verdict!.pass).length;
mkdirSync(dirname(values.out), { recursive: true });
writeFileSync(
  values.out,
  `${JSON.stringify({ commit, machine, holdMs, targets: { maxGrowthMiB: MAX_GROWTH / MiB, growthNoiseMiB: GROWTH_NOISE / MiB, probeMedianMs: PROBE_MEDIAN_MS, probeMaxMs: PROBE_MAX_MS, endedMs: ENDED_MS, backMs: BACK_MS, backSlackMiBAfterGc: BACK_SLACK / MiB }, measurements }, null, 2)}\n`,
);
process.stdout.write(`\n${table}\n\n${passed} of ${judged.length} PASS (commit ${commit}, ${machine})\n`);

if (only === undefined && !values["no-docs"] && engines.includes("ripple") && engines.includes("node")) {
  const docs = join(ROOT, "docs/RELIABILITY.md");
  const text = readFileSync(docs, "utf8");
  const start = "<!-- attack-table:start -->";
  const end = "<!-- attack-table:end -->";
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) {
    process.stderr.write(`docs/RELIABILITY.md has no ${start} ... ${end}: table not written there\n`);
  } else {
    const block = `${start}\n<!-- Written by \`npm run attack\` (bench/attack.ts); edits here are overwritten. -->\nCommit ${commit}; ${machine}; attacker holds ${holdMs / 1000} s. ${passed} of ${judged.length} PASS.\n\n${table}\n`;
    writeFileSync(docs, text.slice(0, a) + block + text.slice(b));
    process.stderr.write("docs/RELIABILITY.md: attack table rewritten\n");
  }
}
