/** Number formatting and plain-text tables for the bench report; the generated tables of docs/PERFORMANCE.md and README.md. */
import { readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

export const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-");
export const fmtMs = (n: number) => (Number.isFinite(n) ? (Math.abs(n) < 10 ? n.toFixed(2) : n.toFixed(1)) : "-");
export const fmtPct = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : `${Math.round(n * 100)}%`);
export const fmtSec = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? "-" : `${(ms / 1000).toFixed(1)} s`);
export const fmtKiB = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? "-" : `${(bytes / 1024).toFixed(1)} KiB`);
export const fmtMiB = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? "-" : `${fmtInt(bytes / 1048576)} MiB`);

/** Columns padded to their widest cell; the first `alignLeft` columns left-aligned, the rest right-aligned. */
export function table(header: string[], body: string[][], alignLeft: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < alignLeft ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

// --- docs/PERFORMANCE.md and the README's table, generated from a results JSON -------------------------
//
// `npm run bench` writes bench/results/latest.json and then rewrites the part of docs/PERFORMANCE.md and
// of README.md between the markers below; `node dist/bench/format.js --docs` does the same from the
// existing latest.json without running anything (`--check` only compares; test/docs.test.ts does too).
// No figure in those sections is typed by hand.

export const DOCS_MARKERS = {
  performance: { file: "docs/PERFORMANCE.md", start: "<!-- bench:table:start -->", end: "<!-- bench:table:end -->" },
  readme: { file: "README.md", start: "<!-- bench:summary:start -->", end: "<!-- bench:summary:end -->" },
} as const;

export const NOT_MEASURED = "not measured in the latest run";

/** A results JSON as bench/run.ts writes it; read loosely, since older runs lack newer fields. */
export type BenchResults = Record<string, unknown>;

type Json = Record<string, unknown>;
const obj = (x: unknown): Json | undefined => (x !== null && typeof x === "object" && !Array.isArray(x) ? (x as Json) : undefined);
const arr = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
const num = (x: unknown): number | undefined => (typeof x === "number" && Number.isFinite(x) ? x : undefined);
const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);

interface Target {
  readonly op: ">=" | "<=" | "within";
  readonly bound: number;
  /** How the target reads in the table. */
  readonly text: string;
}

interface DocRow {
  readonly figure: string;
  /** undefined: the latest run did not measure it. */
  readonly value: string | undefined;
  /** The number the target is judged on. */
  readonly measure?: number;
  readonly target?: Target;
  /** Shown in the README's short table too. */
  readonly headline?: boolean;
}

export type Verdict = "met" | "not met" | typeof NOT_MEASURED | "";

export function verdict(row: Pick<DocRow, "value" | "measure" | "target">): Verdict {
  if (row.target === undefined) return row.value === undefined ? NOT_MEASURED : "";
  if (row.value === undefined || row.measure === undefined) return NOT_MEASURED;
  const { op, bound } = row.target;
  const ok = op === ">=" ? row.measure >= bound : op === "<=" ? row.measure <= bound : Math.abs(row.measure - 1) <= bound;
  return ok ? "met" : "not met";
}

const fix = (n: number, digits: number) => n.toFixed(digits);
const times = (n: number) => `${n.toFixed(2)}x`;

function anchorRate(r: BenchResults, name: string): number | undefined {
  const row = arr(obj(r.sideBySide)?.rows).map(obj).find((x) => x?.name === name);
  return num(row?.rate);
}
function anchorNote(r: BenchResults, name: string): string | undefined {
  return str(arr(obj(r.sideBySide)?.rows).map(obj).find((x) => x?.name === name)?.note);
}
function anchorRatio(r: BenchResults, name: string): number | undefined {
  return num(arr(obj(r.sideBySide)?.ratios).map(obj).find((x) => x?.name === name)?.value);
}

/** The JSON object on the last line of a section that ran as a script of its own (expiry, telemetry). */
function scriptJson(text: unknown): Json | undefined {
  const line = str(text)?.split("\n").reverse().find((l) => l.trim().startsWith("{"));
  if (line === undefined) return undefined;
  try {
    return obj(JSON.parse(line));
  } catch {
    return undefined;
  }
}

function telemetryMicro(r: BenchResults): Record<string, number | undefined> {
  const fromJson = obj(scriptJson(r.telemetry)?.inProcessUsPerCall);
  const pick = (name: string) => {
    if (fromJson !== undefined) return num(fromJson[name]);
    // Runs before the JSON line: the table's "| traces 10% | 1.78 µs |".
    const m = new RegExp(`^\\| ${name.replace("%", "%")} \\| ([0-9.]+) µs \\|$`, "m").exec(str(r.telemetry) ?? "");
    return m === null ? undefined : Number(m[1]);
  };
  return { off: pick("off"), "traces 10%": pick("traces 10%"), "traces 100%": pick("traces 100%") };
}

function fanout(r: BenchResults, watchers: number): Json | undefined {
  const f = arr(r.watchFanout).map(obj).find((x) => x?.status === "ok" && x.watchers === watchers);
  return f;
}

function lagScenario(r: BenchResults, mode: "max" | "rate", batch: number): Json | undefined {
  const lag = obj(r.replicationLag);
  if (lag?.status !== "ok") return undefined;
  return arr(lag.scenarios)
    .map(obj)
    .find((s) => s?.status === "ok" && s.mode === mode && s.batch === batch && (mode === "max" || s.targetRate === 20_000));
}

const TRACING_ROW = "RippleCache, traces sampled 10%: Get (gRPC)";

function rowsOf(r: BenchResults): DocRow[] {
  const rows: DocRow[] = [];
  const add = (row: DocRow) => rows.push(row);
  const rate = (name: string) => anchorRate(r, name);
  const both = (a: number | undefined, b: number | undefined, unit: string) => (a === undefined || b === undefined ? undefined : `${fmtInt(a)} / ${fmtInt(b)} ${unit}`);
  const one = (a: number | undefined, unit: string) => (a === undefined ? undefined : `${fmtInt(a)} ${unit}`);
  const ratioRow = (figure: string, ratioName: string, target: Target | undefined, headline = false): DocRow => {
    const v = anchorRatio(r, ratioName);
    return { figure, value: v === undefined ? undefined : times(v), measure: v, target, headline };
  };
  const atLeast = (bound: number, text = `>= ${bound}x`): Target => ({ op: ">=", bound, text });
  const atMost = (bound: number, text: string): Target => ({ op: "<=", bound, text });

  // Side by side (bench/anchors.ts): h2load against each server pinned to one core.
  add({ figure: "Get, gRPC / Connect binary", value: both(rate("RippleCache: Get (gRPC)"), rate("RippleCache: Get (Connect proto)"), "calls/s"), headline: true });
  add({ figure: "Set, gRPC", value: one(rate("RippleCache: Set (gRPC)"), "calls/s"), headline: true });
  add({ figure: "GetMany(100), gRPC", value: one(rate("RippleCache: GetMany(100) (gRPC)"), "keys/s") });
  const steady = anchorRatio(r, "Get (gRPC): connections kept 20 s / fresh");
  add({ figure: "Get on connections kept 20 s, against fresh ones", value: steady === undefined ? undefined : times(steady) });
  add({
    figure: "Get with `--http2-engine node` (node:http2), gRPC / Connect",
    value: both(rate("RippleCache, --http2-engine node: Get (gRPC)"), rate("RippleCache, --http2-engine node: Get (Connect proto)"), "calls/s"),
  });
  const engine = anchorRatio(r, "Get (gRPC): our engine / node:http2 (fast path on both)");
  add({ figure: "Get: our HTTP/2 engine / node:http2", value: engine === undefined ? undefined : times(engine) });
  add(ratioRow("Get / etcd 3.4 Range (serializable), gRPC", "Get (gRPC) / etcd Range (serializable)", atLeast(2), true));
  add(ratioRow("Get / etcd Range, Connect", "Get (Connect) / etcd Range (serializable)", atLeast(2)));
  add(ratioRow("Set / etcd Put", "Set (gRPC) / etcd Put", atLeast(2), true));
  add(ratioRow("Get / a minimal @grpc/grpc-js server", "Get (gRPC) / minimal grpc-js", atLeast(1)));
  {
    const ours = rate("RippleCache: Get (gRPC), one call in flight");
    const etcd = rate("etcd: Range (serializable), one call in flight");
    const v = anchorRatio(r, "Get p99, one in flight / etcd Range's");
    add({
      figure: "Get p99 with one call in flight / etcd Range's",
      value: ours === undefined || etcd === undefined || v === undefined ? undefined : `${fmtInt(ours)} vs ${fmtInt(etcd)} µs (${times(v)})`,
      measure: v,
      target: atMost(1, "<= 1x"),
    });
  }
  add(ratioRow("GetMany(100) keys/s / Redis MGET of 100 keys", "GetMany(100) keys/s / Redis MGET keys/s", atLeast(1)));
  {
    const floor = rate("V8: GetMany's least work per key (key to string, Map.get, copy key and value)");
    const v = anchorRatio(r, "  Redis MGET's whole ns per key / V8's least (bench/getmany-floor.ts)");
    add({
      figure: "Redis MGET's whole cost per key / V8's least work per key for GetMany (bench/getmany-floor.ts)",
      value: floor === undefined || v === undefined ? undefined : `${times(v)} (V8's least: ${fmtInt(floor)} ns per key)`,
    });
  }
  {
    const v = anchorRatio(r, "Get (gRPC): traces 10% / telemetry off (median of pairs)");
    const cpu = anchorRatio(r, "  same, by server CPU per call (off / traces 10%)");
    const pairs = /ratios ((?:[0-9.]+ ?)+)/.exec(anchorNote(r, TRACING_ROW) ?? "")?.[1]?.trim().split(" ").map(Number) ?? [];
    const spread = pairs.length > 0 ? `, its ${pairs.length} pairs ${fix(Math.min(...pairs), 2)}-${fix(Math.max(...pairs), 2)}` : "";
    add({
      figure: "Get with traces sampled at 10% / telemetry off (median of alternating pairs)",
      value: v === undefined ? undefined : `${fix(v, 2)}${spread}${cpu === undefined ? "" : `; by server CPU per call ${fix(cpu, 2)}`}`,
      measure: v,
      target: atLeast(0.9, ">= 0.90"),
      headline: true,
    });
  }

  // Over TLS (bench/tls.ts): every row above is over h2c.
  {
    const tls = obj(r.tls);
    const tlsRate = (name: string) => num(arr(tls?.rows).map(obj).find((x) => x?.name === name)?.rate);
    add({ figure: "Get over TLS 1.3 (h2), our engine, gRPC", value: one(tlsRate("RippleCache over TLS (our HTTP/2 engine): Get (gRPC)"), "calls/s"), headline: true });
    for (const x of arr(tls?.ratios).map(obj)) {
      const name = str(x?.name);
      if (name === undefined) continue;
      const v = num(x?.value);
      const atLeastBound = num(x?.atLeast);
      add({ figure: name, value: v === undefined ? undefined : times(v), measure: v, target: atLeastBound === undefined ? undefined : atLeast(atLeastBound) });
    }
  }

  // Memory (bench/memory.ts).
  const memory = obj(r.memory);
  const raw = memory?.status === "ok" ? obj(memory.raw) : undefined;
  const keys = num(raw?.keys);
  const valueBytes = num(raw?.valueBytes) ?? 100;
  const shape = keys === undefined ? "" : `, ${fmtInt(keys)} keys x ${valueBytes} B`;
  add({
    figure: `RippleCache bytes per key${shape}: RSS / V8 heap + external / counted`,
    value: raw === undefined ? undefined : `${fmtInt(num(raw.rssBytesPerKey) ?? NaN)} / ${fmtInt(num(raw.heapBytesPerKey) ?? NaN)} / ${fmtInt(num(raw.countedBytesPerKey) ?? NaN)} B`,
    headline: true,
  });
  const redis = obj(raw?.redis);
  const redisOk = redis?.status === "ok";
  add({
    figure: `Redis${redisOk ? ` ${str(redis?.version) ?? ""}` : ""} bytes per key, the same keys and values: RSS / used_memory`,
    value: redisOk ? `${fmtInt(num(redis?.rssBytesPerKey) ?? NaN)} / ${fmtInt(num(redis?.usedMemoryBytesPerKey) ?? NaN)} B` : undefined,
    headline: true,
  });
  {
    const v = num(raw?.rssToRedisRss);
    add({ figure: "RSS per key / Redis's RSS per key", value: v === undefined ? undefined : times(v), measure: v, target: atMost(1.5, "<= 1.5x"), headline: true });
  }
  {
    const rss = num(raw?.rssBytesPerKey);
    const counted = num(raw?.countedBytesPerKey);
    add({
      figure: `Counted / RSS per key at ${valueBytes} B values (ENTRY_OVERHEAD_BYTES = ${num(raw?.entryOverheadBytes) ?? "?"} was calibrated here)`,
      value: rss === undefined || counted === undefined ? undefined : `${fmtInt(counted)} / ${fmtInt(rss)} B = ${fix(counted / rss, 2)}`,
    });
    const c = obj(raw?.calibration);
    const ratio = num(c?.countedToRss);
    add({
      figure: `Counted / RSS per key at ${num(c?.valueBytes) ?? 1024} B values (the calibration checked${c === undefined ? "" : `, ${fmtInt(num(c.keys) ?? NaN)} keys`})`,
      value: c === undefined || ratio === undefined ? undefined : `${fmtInt(num(c.countedBytesPerKey) ?? NaN)} / ${fmtInt(num(c.rssBytesPerKey) ?? NaN)} B = ${fix(ratio, 2)}`,
      measure: ratio,
      target: { op: "within", bound: 0.1, text: "1 +- 0.10" },
    });
  }

  // Watch fan-out (bench/fanout.ts).
  for (const watchers of [1000, 10_000]) {
    const f = fanout(r, watchers);
    const res = obj(f?.result);
    const p99 = num(obj(res?.fromSend)?.p99);
    const p50 = num(obj(res?.fromSend)?.p50);
    add({
      figure: `Watch fan-out, ${fmtInt(watchers)} watchers: every watcher has a write, from the Set's send, p50 / p99`,
      value: p99 === undefined || p50 === undefined ? undefined : `${fix(p50, 1)} / ${fix(p99, 1)} ms`,
      measure: p99,
      target: watchers === 10_000 ? atMost(50, "p99 <= 50 ms") : undefined,
      headline: watchers === 10_000,
    });
  }
  {
    const f = fanout(r, 10_000);
    const rss = num(f?.rssPerWatcherBytes);
    const live = num(f?.liveBytesPerWatcher);
    add({
      figure: "An idle watcher (at 10,000): server RSS / live heap per watcher",
      value: rss === undefined || live === undefined ? undefined : `${fmtKiB(rss)} / ${fmtKiB(live)}`,
      measure: rss,
      target: atMost(10_000, "RSS <= 10 KB"),
    });
  }

  // Replication (bench/replication.ts).
  {
    const s = lagScenario(r, "rate", 100);
    const p99 = num(obj(obj(s?.writer)?.lag)?.p99Ms);
    const p50 = num(obj(obj(s?.writer)?.lag)?.p50Ms);
    add({
      figure: "Replication lag at 20,000 keys/s (SetMany(100)), primary's answer to applied on the replica, p50 / p99",
      value: p99 === undefined || p50 === undefined ? undefined : `${fix(p50, 2)} / ${fix(p99, 2)} ms`,
      measure: p99,
      target: atMost(5, "p99 <= 5 ms"),
      headline: true,
    });
    const max = lagScenario(r, "max", 100);
    add({ figure: "SetMany(100) at the highest rate, with a replica", value: one(num(obj(max?.writer)?.writesPerSec), "keys/s") });
  }
  {
    const rs = obj(r.fullResync);
    const ms = rs?.status === "ok" ? num(rs.resyncMs) : undefined;
    const match = obj(rs?.digest)?.match === true;
    add({
      figure: `Full resync of a replica, ${rs?.status === "ok" ? fmtInt(num(rs.keys) ?? NaN) : "1,000,000"} keys`,
      value: ms === undefined ? undefined : `${fix(ms / 1000, 1)} s${match ? ", digests equal" : ", DIGESTS DIFFER"}`,
      measure: match ? (ms === undefined ? undefined : ms / 1000) : Number.POSITIVE_INFINITY,
      target: atMost(10, "<= 10 s"),
      headline: true,
    });
  }

  // Active expiry (bench/expiry.ts) and telemetry's in-process cost (bench/telemetry.ts).
  {
    const e = scriptJson(r.expiry);
    const p50 = num(e?.delayP50Ms);
    const p99 = num(e?.delayP99Ms);
    add({
      figure: `EXPIRE events of ${e === undefined ? "1,000,000" : fmtInt(num(e.keys) ?? NaN)} keys with TTLs, none read: after the deadline, p50 / p99`,
      value: p50 === undefined || p99 === undefined ? undefined : `${fmtInt(p50)} / ${fmtInt(p99)} ms`,
    });
  }
  {
    const t = telemetryMicro(r);
    const [off, ten, all] = [t.off, t["traces 10%"], t["traces 100%"]];
    add({
      figure: "Telemetry's in-process cost per call (interceptor, spans, export queue): off / traces 10% / 100%",
      value: off === undefined || ten === undefined || all === undefined ? undefined : `${fix(off, 2)} / ${fix(ten, 2)} / ${fix(all, 2)} µs`,
    });
  }
  rows.push(...failoverRows(r));
  return rows;
}

/** Failover (bench/failover.ts): kill -9 of the primary against Redis Sentinel, planned switchovers. */
function failoverRows(r: BenchResults): DocRow[] {
  const f = obj(r.failover);
  const s = obj(f?.summary);
  const k = (sys: string, kind: string) => obj(obj(s?.[sys])?.[kind]);
  const ms = (x: number | undefined) => (x === undefined ? "-" : `${fmtInt(x)} ms`);
  const pm = (x: Json | undefined) => (num(x?.p50Ms) === undefined ? undefined : `${ms(num(x?.p50Ms))} (max ${ms(num(x?.maxMs))})`);
  const rows: DocRow[] = [];
  // A failover section merged into another run's results (bench/failover.js --merge) names its own run.
  const own = str(f?.date) !== undefined && str(f?.date) !== str(obj(r.machine)?.date) ? ` (failover run of ${str(f?.date)})` : "";
  for (const [kind, label] of [["plain", "Set / SET"], ["replicated", "Set min_replicas 1 / SET + WAIT 1"]] as const) {
    const ours = k("ripple", kind);
    const theirs = k("sentinel", kind);
    const a = num(ours?.p50Ms);
    const b = num(theirs?.p50Ms);
    rows.push({
      figure: `Write unavailability after kill -9 of the primary, ${label}: RippleCache (etcd, default lease) / Redis Sentinel (down-after 1000 ms), p50 over ${num(ours?.n) ?? "?"} / ${num(theirs?.n) ?? "?"} runs${own}`,
      value: a === undefined || b === undefined ? undefined : `${pm(ours)} / ${pm(theirs)}`,
      measure: a === undefined || b === undefined ? undefined : a / b,
      target: { op: "<=", bound: 1, text: "<= Sentinel's" },
      headline: kind === "plain",
    });
  }
  {
    const worst = Math.max(num(k("ripple", "plain")?.p50Ms) ?? Number.NaN, num(k("ripple", "replicated")?.p50Ms) ?? Number.NaN);
    rows.push({ figure: "RippleCache write unavailability after kill -9, p50 (the slower kind)", value: Number.isFinite(worst) ? ms(worst) : undefined, measure: Number.isFinite(worst) ? worst / 1000 : undefined, target: { op: "<=", bound: 2, text: "< 2 s" } });
  }
  {
    const lost = (sys: string, kind: string) => num(k(sys, kind)?.lost);
    const [r1, r0, s1, s0] = [lost("ripple", "replicated"), lost("ripple", "plain"), lost("sentinel", "replicated"), lost("sentinel", "plain")];
    rows.push({
      figure: "Acknowledged writes lost after kill -9: RippleCache min_replicas 1 / plain; Sentinel WAIT 1 / plain",
      value: r1 === undefined ? undefined : `${r1} / ${r0}; ${s1} / ${s0}`,
      measure: r1,
      target: { op: "<=", bound: 0, text: "0 with min_replicas 1" },
    });
  }
  for (const [sys, label] of [["failoverCommand", "Planned switchover (`ripplecache failover --to`)"], ["sigterm", "SIGTERM of the primary (lease handed over)"]] as const) {
    const a = k(sys, "plain");
    const b = k(sys, "replicated");
    const worst = Math.max(num(a?.maxMs) ?? Number.NaN, num(b?.maxMs) ?? Number.NaN);
    rows.push({
      figure: `${label} under writes: longest time without an acknowledged write, worst of ${num(a?.n) ?? "?"} (Set and min_replicas 1)`,
      value: Number.isFinite(worst) ? ms(worst) : undefined,
      measure: Number.isFinite(worst) ? worst : undefined,
      target: { op: "<=", bound: 300, text: "< 300 ms" },
      headline: sys === "failoverCommand",
    });
  }
  {
    const lost = obj(s?.switchoverLost);
    const acked = obj(s?.switchoverAcked);
    const total = lost === undefined ? undefined : (num(lost.plain) ?? 0) + (num(lost.replicated) ?? 0);
    rows.push({
      figure: "Acknowledged writes lost over the switchovers (both kinds)",
      value: total === undefined ? undefined : `${total} of ${fmtInt((num(acked?.plain) ?? 0) + (num(acked?.replicated) ?? 0))}`,
      measure: total,
      target: { op: "<=", bound: 0, text: "0" },
    });
  }
  return rows;
}

function runLine(r: BenchResults): string[] {
  const m = obj(r.machine) ?? {};
  const sections = arr(obj(r.config)?.sections).map(String);
  const all = ["anchors", "tls", "throughput", "memory", "fanout", "lag", "resync", "expiry", "telemetry", "failover"];
  const missing = all.filter((s) => !sections.includes(s));
  const commit = str(m.commit) === undefined ? "" : ` at commit \`${str(m.commit)}\`${m.dirty === true ? " (with uncommitted changes)" : ""}`;
  return [
    `Run of ${str(m.date) ?? "?"}${commit}: ${missing.length === 0 ? "a full run (every section)" : `sections ${sections.join(", ")}; not run: ${missing.join(", ")}`}.`,
    `Machine: ${num(m.nproc) ?? "?"} cores, ${str(m.cpuModel) ?? "?"}, Node ${str(m.node) ?? "?"}, ${str(m.platform) ?? "?"}; load average at the start ${str(m.loadAvg) ?? "?"}.`,
  ];
}

const cell = (s: string) => s.replace(/\|/g, "\\|");

function markdownRows(rows: DocRow[], column = "latest run"): string[] {
  return [
    `| figure | ${column} | target | verdict |`,
    "| --- | --- | --- | --- |",
    ...rows.map((row) => `| ${cell(row.figure)} | ${cell(row.value ?? NOT_MEASURED)} | ${cell(row.target?.text ?? "")} | ${verdict(row) === NOT_MEASURED ? "" : verdict(row)} |`),
  ];
}

/** The generated part of docs/PERFORMANCE.md; `source`: another results file, printed with --print. */
export function renderPerformance(r: BenchResults, source = "bench/results/latest.json"): string {
  const latest = source === "bench/results/latest.json";
  return [
    `<!-- generated from ${source} by bench/format.ts: edit the generator, not this table -->`,
    "",
    ...runLine(r).map((l) => `${l}  `),
    "",
    ...markdownRows(rowsOf(r), latest ? "latest run" : "this run").map((l) => (latest ? l : l.replaceAll(NOT_MEASURED, "not measured in this run"))),
  ].join("\n");
}

/** The generated table of README.md: the headline rows. */
export function renderSummary(r: BenchResults): string {
  const m = obj(r.machine) ?? {};
  return [
    "<!-- generated from bench/results/latest.json by bench/format.ts: edit the generator, not this table -->",
    "",
    ...markdownRows(rowsOf(r).filter((row) => row.headline)),
    "",
    `From the run of ${str(m.date) ?? "?"} on ${num(m.nproc) ?? "?"} cores (${str(m.cpuModel) ?? "?"}), Node ${str(m.node) ?? "?"}; method, machine and every row: [docs/PERFORMANCE.md](docs/PERFORMANCE.md).`,
  ].join("\n");
}

/** The targets with their verdicts, for the bench's printed report. */
export function formatTargets(r: BenchResults): string {
  const rows = rowsOf(r).filter((row) => row.target !== undefined);
  return table(
    ["target (judged on this run alone)", "measured", "target", "verdict"],
    rows.map((row) => [row.figure, row.value ?? "-", row.target!.text, verdict(row)]),
    4,
  );
}

/** `text` with what lies between the two markers replaced by `body`. */
export function replaceBetween(text: string, start: string, end: string, body: string, file: string): string {
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`${file} has no "${start}" ... "${end}" section to write the bench's table into`);
  return `${text.slice(0, a + start.length)}\n${body}\n${text.slice(b)}`;
}

/** The docs as they should be for these results: file (relative to root) -> content. */
export function docsFor(r: BenchResults, read: (file: string) => string): Map<string, string> {
  const out = new Map<string, string>();
  const p = DOCS_MARKERS.performance;
  out.set(p.file, replaceBetween(read(p.file), p.start, p.end, renderPerformance(r), p.file));
  const s = DOCS_MARKERS.readme;
  out.set(s.file, replaceBetween(read(s.file), s.start, s.end, renderSummary(r), s.file));
  return out;
}

/** Rewrites the generated sections of docs/PERFORMANCE.md and README.md; returns the files changed. */
export function writeDocs(r: BenchResults, root: string): string[] {
  const changed: string[] = [];
  for (const [file, content] of docsFor(r, (f) => readFileSync(join(root, f), "utf8"))) {
    if (readFileSync(join(root, file), "utf8") !== content) {
      writeFileSync(join(root, file), content);
      changed.push(file);
    }
  }
  return changed;
}

// `node dist/bench/format.js --docs [--from FILE] [--check]`
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const { values } = parseArgs({
    options: { docs: { type: "boolean", default: false }, check: { type: "boolean", default: false }, print: { type: "boolean", default: false }, from: { type: "string" } },
    strict: true,
  });
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const from = values.from ?? join(root, "bench/results/latest.json");
  if (!values.docs && !values.check && !values.print) {
    process.stderr.write(
      "usage: node dist/bench/format.js --docs [--from FILE]   (rewrite docs/PERFORMANCE.md and README.md's table)\n" +
        "       node dist/bench/format.js --check [--from FILE]  (exit 1 if they differ)\n" +
        "       node dist/bench/format.js --print [--from FILE]  (print the table of a results file, e.g. an earlier run kept in bench/results/)\n",
    );
    process.exit(2);
  }
  const results = JSON.parse(readFileSync(from, "utf8")) as BenchResults;
  if (values.print) {
    process.stdout.write(`${renderPerformance(results, relative(root, resolve(from)))}\n`);
    process.exit(0);
  }
  if (values.check) {
    const stale = [...docsFor(results, (f) => readFileSync(join(root, f), "utf8"))].filter(([f, c]) => readFileSync(join(root, f), "utf8") !== c).map(([f]) => f);
    process.stdout.write(stale.length === 0 ? "docs match the results\n" : `stale: ${stale.join(", ")} (node dist/bench/format.js --docs)\n`);
    process.exit(stale.length === 0 ? 0 : 1);
  }
  const changed = writeDocs(results, root);
  process.stdout.write(changed.length === 0 ? "docs already match the results\n" : `rewrote ${changed.join(", ")}\n`);
}
