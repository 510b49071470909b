/**
 * `npm run bench`: throughput and latency of Get, Set and GetMany over gRPC
 * and Connect (binary protobuf), then bytes per key from bench/memory.js,
 * then Watch fan-out (bench/fanout.ts), replication lag and full-resync speed
 * (bench/replication.ts). Each part is a section of the one printed report
 * and of the results JSON; --sections picks some.
 *
 * - The server is the real CLI (`ripplecache serve`) in its own process,
 *   pinned to one core with taskset when it exists.
 * - Load comes from a separate process (bench/load.ts) pinned to another
 *   core: several HTTP/2 connections, many in-flight calls on each.
 * - Each measurement: warm-up, then a fixed window. Rounds alternate the
 *   protocol order so slow drift on a shared machine hits both alike; the
 *   Connect/gRPC ratios are taken within a round.
 * - Server and load-generator CPU use over the window are reported, to show
 *   which side was the bottleneck.
 *
 * Flags: --duration MS, --warmup MS, --connections N, --concurrency N (per
 * connection), --keys N, --value-bytes N, --rounds N, --ops get,set,getMany,
 * --protocols grpc,connect, --memory-keys N, --no-memory, --cpu-prof (profile
 * the server; the summary is printed and the .cpuprofile kept), --out FILE,
 * --sections LIST, --fanout-watchers LIST, --fanout-per-connection N, --fanout-client raw|connect,
 * --fanout-writes N, --repl-duration MS, --repl-rate N, --resync-keys N
 * (0 skips the full resync; 200000 for a quick run).
 *
 * Written to bench/results/latest.json, which then rewrites the generated
 * tables of docs/PERFORMANCE.md and README.md (bench/format.ts; `node
 * dist/bench/format.js --docs` does it again without running anything), and
 * the targets are printed met or not met by this run's figures alone.
 *
 * This is a benchmark, not a test: it asserts nothing about absolute speed.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import { join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { CacheClient } from "../src/client/client.js";
import { keyName, type BenchProtocol, type LoadConfig, type LoadMessage, type LoadResult, type Op } from "./common.js";
import { formatProfile, summarizeProfile, type ProfileSummary } from "./profile.js";
import { formatFanout, runFanout } from "./fanout.js";
import { formatAnchors, runAnchors } from "./anchors.js";
import { formatTls, runTls } from "./tls.js";
import { formatFailover, runFailover } from "./failover.js";
import { formatLag, formatResync, runLag, runResync, type LagOptions, type ResyncOptions, type ResyncResult } from "./replication.js";
import { fmtInt, fmtMs, fmtPct, formatTargets, table, writeDocs } from "./format.js";
import { CLI, ROOT, command, killAll, machineBusyMs, pinning, processCpuMs, startServer, track, type Pinning, type Server } from "./procs.js";

const LOAD = join(ROOT, "dist/bench/load.js");
const MEMORY = join(ROOT, "dist/bench/memory.js");

const OP_NAMES: Record<Op, (batch: number) => string> = {
  get: () => "Get",
  set: () => "Set",
  getMany: (batch) => `GetMany(${batch})`,
};
const PROTOCOL_NAMES: Record<BenchProtocol, string> = { grpc: "gRPC", connect: "Connect proto" };

// --- options -----------------------------------------------------------------

const USAGE = `node dist/bench/run.js [flags]     (npm run bench -- [flags])
  --duration MS        measured window per scenario (default 3000)
  --warmup MS          warm-up before each window (default 1000)
  --connections N      HTTP/2 connections (default 4)
  --concurrency N      in-flight calls per connection (default 16)
  --keys N             keys preloaded and read/written (default 10000)
  --value-bytes N      value size (default 100)
  --batch N            keys per GetMany (default 10)
  --rounds N           repetitions of every scenario, protocol order alternating (default 2)
  --ops LIST           get,set,getMany (default all)
  --protocols LIST     grpc,connect (default both)
  --memory-keys N      keys for bench/memory.js (default 1000000)
  --no-memory          skip the memory measurement
  --memory-script FILE the memory measurement (default dist/bench/memory.js)
  --cpu-prof           run the server under --cpu-prof and print a summary
  --out FILE           results JSON (default bench/results/latest.json, and then the generated tables of
                       docs/PERFORMANCE.md and README.md are rewritten from it)
  --sections LIST      anchors,tls,throughput,memory,fanout,lag,resync,expiry,telemetry,failover (default all)
  --failover-reps N    kill -9 repetitions per system in the failover section (default 5; 6 switchovers after)
  --with-anchors       install the anchors first (apt-get: nghttp2-client, etcd-server, redis-server)
  --anchor-requests N  h2load requests per side-by-side measurement (default 100000)
  --fanout-watchers L  watcher counts for the Watch fan-out, one server each (default 1000,10000)
  --fanout-per-connection N  watchers per HTTP/2 connection (default 100)
  --fanout-client raw|connect  how the watchers read: node:http2 (default) or connect-node's client
  --fanout-writes N    counted writes per fan-out stage, after 2 warm-up writes (default 20)
  --repl-duration MS   measured window per replication-lag scenario (default 5000)
  --repl-rate N        writes/s of the fixed-rate lag scenario (default 0 = half the max Set rate)
  --resync-keys N      keys in the full-resync measurement (default 1000000; 0 = skip it)
`;

const SECTIONS = ["anchors", "tls", "throughput", "memory", "fanout", "lag", "resync", "expiry", "telemetry", "failover"] as const;
type Section = (typeof SECTIONS)[number];

function options() {
  const { values } = parseArgs({
    options: {
      duration: { type: "string", default: "3000" },
      warmup: { type: "string", default: "1000" },
      connections: { type: "string", default: "4" },
      concurrency: { type: "string", default: "16" },
      keys: { type: "string", default: "10000" },
      "value-bytes": { type: "string", default: "100" },
      batch: { type: "string", default: "10" },
      rounds: { type: "string", default: "2" },
      ops: { type: "string", default: "get,set,getMany" },
      protocols: { type: "string", default: "grpc,connect" },
      "memory-keys": { type: "string", default: "1000000" },
      "no-memory": { type: "boolean", default: false },
      "memory-script": { type: "string", default: MEMORY },
      "cpu-prof": { type: "boolean", default: false },
      out: { type: "string", default: join(ROOT, "bench/results/latest.json") },
      sections: { type: "string", default: SECTIONS.join(",") },
      "fanout-watchers": { type: "string", default: "1000,10000" },
      "fanout-per-connection": { type: "string", default: "100" },
      "fanout-client": { type: "string", default: "raw" },
      "fanout-writes": { type: "string", default: "20" },
      "repl-duration": { type: "string", default: "5000" },
      "repl-rate": { type: "string", default: "0" },
      "resync-keys": { type: "string", default: "1000000" },
      "with-anchors": { type: "boolean", default: false },
      "anchor-requests": { type: "string", default: "100000" },
      "failover-reps": { type: "string", default: "5" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const int = (name: string, text: string, min: number) => {
    if (!/^[0-9]+$/.test(text) || Number(text) < min) throw new Error(`--${name} must be an integer >= ${min}, not "${text}"`);
    return Number(text);
  };
  const list = <T extends string>(name: string, text: string, allowed: readonly T[]): T[] => {
    const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
    for (const item of items) if (!allowed.includes(item as T)) throw new Error(`--${name}: "${item}" is not one of ${allowed.join(", ")}`);
    if (items.length === 0) throw new Error(`--${name} is empty`);
    return items as T[];
  };
  return {
    help: values.help,
    durationMs: int("duration", values.duration, 100),
    warmupMs: int("warmup", values.warmup, 0),
    connections: int("connections", values.connections, 1),
    concurrency: int("concurrency", values.concurrency, 1),
    keys: int("keys", values.keys, 1),
    valueBytes: int("value-bytes", values["value-bytes"], 0),
    batch: int("batch", values.batch, 1),
    rounds: int("rounds", values.rounds, 1),
    ops: list("ops", values.ops, ["get", "set", "getMany"] as const),
    protocols: list("protocols", values.protocols, ["grpc", "connect"] as const),
    memoryKeys: int("memory-keys", values["memory-keys"], 1),
    memory: !values["no-memory"],
    memoryScript: resolve(values["memory-script"]),
    cpuProf: values["cpu-prof"],
    out: resolve(values.out),
    sections: list("sections", values.sections, SECTIONS),
    fanoutWatchers: values["fanout-watchers"].split(",").map((x) => int("fanout-watchers", x.trim(), 1)),
    fanoutPerConnection: int("fanout-per-connection", values["fanout-per-connection"], 1),
    fanoutClient: fanoutClient(values["fanout-client"]),
    fanoutWrites: int("fanout-writes", values["fanout-writes"], 1),
    replDurationMs: int("repl-duration", values["repl-duration"], 500),
    replRate: int("repl-rate", values["repl-rate"], 0),
    withAnchors: values["with-anchors"],
    anchorRequests: int("anchor-requests", values["anchor-requests"], 1000),
    resyncKeys: int("resync-keys", values["resync-keys"], 0),
    failoverReps: int("failover-reps", values["failover-reps"], 1),
  };
}
type Options = ReturnType<typeof options>;

async function preload(server: Server, opts: Options): Promise<void> {
  const client = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 30_000 });
  try {
    const value = new Uint8Array(opts.valueBytes).fill(0x61);
    const batch = 500;
    for (let i = 0; i < opts.keys; i += batch) {
      const entries = [];
      for (let k = i; k < Math.min(opts.keys, i + batch); k++) entries.push({ key: keyName(k), value });
      await client.rpc.setMany({ entries });
    }
    const info = await client.info();
    if (Number(info.keys) !== opts.keys) throw new Error(`preload: server holds ${info.keys} keys, expected ${opts.keys} (evicted? raise --max-memory)`);
  } finally {
    client.close();
  }
}

// --- one measurement ----------------------------------------------------------

interface Measurement extends LoadResult {
  readonly op: Op;
  readonly protocol: BenchProtocol;
  readonly round: number;
  /** Server CPU time over the measured window / its length (1 = one core busy). */
  readonly serverCpu: number | undefined;
  /** CPU used by everything else on the machine over the window (other users of a shared machine), in cores. */
  readonly otherCpu: number | undefined;
  /** Server CPU time per call, in microseconds: less sensitive to a noisy machine than ops/s. */
  readonly serverUsPerOp: number | undefined;
}

/** Distinct stderr lines of the load generators (warnings), reported at the end. */
const loadStderr = new Set<string>();

function measure(server: Server, pin: Pinning, config: LoadConfig, round: number): Promise<Measurement> {
  const [cmd, args] = command(pin.load, [process.execPath, LOAD, JSON.stringify(config)]);
  const child = track(spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "inherit", "pipe", "ipc"] }));
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => {
    stderr.push(line);
    loadStderr.add(line);
  });
  return new Promise<Measurement>((res, rej) => {
    let start: { server?: number; load?: number; machine?: number; wall: number } = { wall: 0 };
    let serverCpu: number | undefined;
    let otherCpu: number | undefined;
    let settled = false;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`load generator did not finish within ${config.warmupMs + config.durationMs + 60_000} ms`));
    }, config.warmupMs + config.durationMs + 60_000);
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      rej(err);
    };
    child.on("message", (message: LoadMessage) => {
      switch (message.type) {
        case "measure-start":
          start = { server: processCpuMs(server.pid), load: processCpuMs(child.pid!), machine: machineBusyMs(), wall: performance.now() };
          break;
        case "measure-end": {
          const wall = performance.now() - start.wall;
          const [s, l, m] = [processCpuMs(server.pid), processCpuMs(child.pid!), machineBusyMs()];
          if (s !== undefined && start.server !== undefined) serverCpu = (s - start.server) / wall;
          if (s !== undefined && l !== undefined && m !== undefined && start.server !== undefined && start.load !== undefined && start.machine !== undefined) {
            otherCpu = Math.max(0, (m - start.machine - (s - start.server) - (l - start.load)) / wall);
          }
          break;
        }
        case "result": {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const r = message.result;
          const serverUsPerOp = serverCpu !== undefined && r.opsPerSec > 0 ? (serverCpu / r.opsPerSec) * 1e6 : undefined;
          res({ ...r, op: config.op, protocol: config.protocol, round, serverCpu, otherCpu, serverUsPerOp });
          break;
        }
        case "error":
          fail(new Error(`load generator: ${message.message}`));
          break;
      }
    });
    child.once("error", (err) => fail(err));
    child.once("exit", (code, signal) => fail(new Error(`load generator exited (${signal ?? code}) without a result:\n${stderr.join("\n")}`)));
  });
}

// --- memory -------------------------------------------------------------------

type MemoryResult =
  | { readonly status: "ok"; readonly keys: number; readonly heapBytesPerKey: number; readonly rssBytesPerKey: number; readonly countedBytesPerKey: number; readonly raw: unknown }
  | { readonly status: "missing" | "failed" | "skipped"; readonly message: string };

async function measureMemory(opts: Options, cpu: number | undefined): Promise<MemoryResult> {
  if (!opts.memory) return { status: "skipped", message: "skipped (--no-memory)" };
  if (!existsSync(opts.memoryScript)) {
    return { status: "missing", message: `not measured: ${relative(ROOT, opts.memoryScript)} does not exist (bench/memory.ts not written or not built yet)` };
  }
  // Ours at 100-byte and 1 KiB values, then Redis with the same keys (bench/memory.ts): about a minute on a quiet machine.
  const timeoutMs = 900_000;
  const [cmd, args] = command(cpu, [process.execPath, "--expose-gc", opts.memoryScript, "--keys", String(opts.memoryKeys)]);
  const child = track(spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] }));
  const stdout: string[] = [];
  const stderr: string[] = [];
  createInterface({ input: child.stdout! }).on("line", (line) => stdout.push(line));
  createInterface({ input: child.stderr! }).on("line", (line) => stderr.push(line));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const [code, signal] = (await new Promise((res) => child.once("exit", (c, s) => res([c, s])))) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  // Let readline deliver the last lines.
  await new Promise((r) => setImmediate(r));
  const tail = [...stderr.slice(-5)].join("\n");
  if (code !== 0) {
    const why = signal === "SIGKILL" ? `killed after ${timeoutMs / 1000} s` : `exited with ${signal ?? code}`;
    return { status: "failed", message: `memory.js ${why}${tail ? `: ${tail}` : ""}` };
  }
  const last = stdout.filter((l) => l.trim() !== "").at(-1);
  try {
    const raw = JSON.parse(last ?? "") as Record<string, unknown>;
    const num = (k: string) => {
      if (typeof raw[k] !== "number") throw new Error(`no number "${k}" in ${last}`);
      return raw[k] as number;
    };
    return {
      status: "ok",
      keys: typeof raw.keys === "number" ? raw.keys : opts.memoryKeys,
      heapBytesPerKey: num("heapBytesPerKey"),
      rssBytesPerKey: num("rssBytesPerKey"),
      countedBytesPerKey: num("countedBytesPerKey"),
      raw,
    };
  } catch (err) {
    return { status: "failed", message: `memory.js output not understood: ${(err as Error).message}` };
  }
}

// --- reporting ----------------------------------------------------------------

interface Row {
  readonly op: Op;
  readonly protocol: BenchProtocol;
  readonly rounds: Measurement[];
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Half the ops/s range over rounds, relative to the median. */
  readonly spread: number;
  readonly serverCpu: number | undefined;
  readonly serverUsPerOp: number | undefined;
  readonly loadCpu: number;
  readonly otherCpu: number | undefined;
  readonly errors: number;
  readonly misses: number;
}

function median(values: number[]): number {
  const s = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function rows(measurements: Measurement[], opts: Options): Row[] {
  const out: Row[] = [];
  for (const op of opts.ops) {
    for (const protocol of opts.protocols) {
      const ms = measurements.filter((m) => m.op === op && m.protocol === protocol);
      if (ms.length === 0) continue;
      const ops = ms.map((m) => m.opsPerSec);
      const med = median(ops);
      const defined = (xs: (number | undefined)[]) => {
        const d = xs.filter((x): x is number => x !== undefined);
        return d.length > 0 ? median(d) : undefined;
      };
      out.push({
        op,
        protocol,
        rounds: ms,
        opsPerSec: med,
        p50Ms: median(ms.map((m) => m.p50Ms)),
        p99Ms: median(ms.map((m) => m.p99Ms)),
        spread: ms.length > 1 ? (Math.max(...ops) - Math.min(...ops)) / 2 / med : 0,
        serverCpu: defined(ms.map((m) => m.serverCpu)),
        serverUsPerOp: defined(ms.map((m) => m.serverUsPerOp)),
        loadCpu: median(ms.map((m) => m.loadCpu)),
        otherCpu: defined(ms.map((m) => m.otherCpu)),
        errors: ms.reduce((s, m) => s + m.errors, 0),
        misses: ms.reduce((s, m) => s + m.misses, 0),
      });
    }
  }
  return out;
}

interface Ratio {
  readonly op: Op;
  /** Connect ops/s ÷ gRPC ops/s, median over rounds (each round's pair ran back to back). */
  readonly throughput: number;
  readonly perRound: number[];
  /** Connect p50 ÷ gRPC p50, median over rounds. */
  readonly p50: number;
  /** Connect server CPU per call ÷ gRPC server CPU per call, median over rounds. */
  readonly serverCpuPerOp: number | undefined;
}

function ratios(measurements: Measurement[], opts: Options): Ratio[] {
  if (!opts.protocols.includes("grpc") || !opts.protocols.includes("connect")) return [];
  const out: Ratio[] = [];
  for (const op of opts.ops) {
    const perRound: number[] = [];
    const p50: number[] = [];
    const cpu: number[] = [];
    for (let r = 0; r < opts.rounds; r++) {
      const g = measurements.find((m) => m.op === op && m.protocol === "grpc" && m.round === r);
      const c = measurements.find((m) => m.op === op && m.protocol === "connect" && m.round === r);
      if (g && c) {
        perRound.push(c.opsPerSec / g.opsPerSec);
        p50.push(c.p50Ms / g.p50Ms);
        if (c.serverUsPerOp !== undefined && g.serverUsPerOp !== undefined) cpu.push(c.serverUsPerOp / g.serverUsPerOp);
      }
    }
    if (perRound.length > 0) out.push({ op, throughput: median(perRound), perRound, p50: median(p50), serverCpuPerOp: cpu.length > 0 ? median(cpu) : undefined });
  }
  return out;
}

function report(opts: Options, pin: Pinning, rs: Row[], rt: Ratio[], memory: MemoryResult, machine: Record<string, unknown>): string {
  const out: string[] = [];
  const inFlight = opts.connections * opts.concurrency;
  out.push(`RippleCache benchmark  ${machine.date}  node ${machine.node}  ${machine.nproc} CPUs (${machine.cpuModel})  load avg ${machine.loadAvg}`);
  out.push(`${pin.note}`);
  if (rs.length > 0) {
    out.push(
      `${opts.connections} HTTP/2 connections x ${opts.concurrency} in-flight calls = ${inFlight} concurrent; ${opts.valueBytes}-byte values; ` +
        `${fmtInt(opts.keys)} keys preloaded; warm-up ${opts.warmupMs} ms + ${opts.durationMs} ms measured, ${opts.rounds} round(s) (median shown)`,
    );
  }
  out.push("");
  const body = rs.map((r) => [
    OP_NAMES[r.op](opts.batch),
    PROTOCOL_NAMES[r.protocol],
    fmtInt(r.opsPerSec),
    fmtMs(r.p50Ms),
    fmtMs(r.p99Ms),
    r.rounds.length > 1 ? `±${(r.spread * 100).toFixed(1)}%` : "-",
    fmtPct(r.serverCpu),
    r.serverUsPerOp === undefined ? "-" : fmtInt(r.serverUsPerOp),
    fmtPct(r.loadCpu),
    fmtPct(r.otherCpu),
    String(r.errors + r.misses),
  ]);
  const header = ["Operation", "Protocol", "ops/s", "p50 ms", "p99 ms", "ops/s spread", "server CPU", "server µs/op", "load CPU", "other CPU", "errors"];
  if (rs.length > 0) out.push(table(header, body, 2));
  const label = "Memory".padEnd(Math.max(9, ...body.map((r) => r[0].length)));
  out.push(
    memory.status === "ok"
      ? `${label}  bytes/key (${fmtInt(memory.keys)} keys, ${relative(ROOT, opts.memoryScript)}): heap ${fmtInt(memory.heapBytesPerKey)}, rss ${fmtInt(memory.rssBytesPerKey)}, counted ${fmtInt(memory.countedBytesPerKey)}` +
        memoryExtras(memory.raw)
      : `${label}  bytes/key: ${memory.message}`,
  );
  if (rt.length > 0) {
    out.push("");
    out.push("Connect proto vs gRPC (same round, back to back; >1 = Connect faster):");
    for (const r of rt) {
      out.push(
        `  ${OP_NAMES[r.op](opts.batch).padEnd(12)} throughput x${r.throughput.toFixed(2)}` +
          (r.perRound.length > 1 ? ` (rounds: ${r.perRound.map((x) => x.toFixed(2)).join(", ")})` : "") +
          `, p50 latency x${r.p50.toFixed(2)}` +
          (r.serverCpuPerOp === undefined ? "" : `, server CPU per call x${r.serverCpuPerOp.toFixed(2)}`),
      );
    }
  }
  const get = rs.filter((r) => r.op === "get");
  const many = rs.filter((r) => r.op === "getMany");
  if (get.length > 0 && many.length > 0) {
    const keysPerSec = many.map((m) => `${PROTOCOL_NAMES[m.protocol]} ${fmtInt(m.opsPerSec * opts.batch)}`).join(", ");
    const gain = many
      .map((m) => {
        const g = get.find((x) => x.protocol === m.protocol);
        return g ? `${PROTOCOL_NAMES[m.protocol]} x${((m.opsPerSec * opts.batch) / g.opsPerSec).toFixed(1)}` : "";
      })
      .filter((s) => s !== "")
      .join(", ");
    out.push(`  GetMany(${opts.batch}) keys/s: ${keysPerSec} (vs Get keys/s: ${gain})`);
  }
  if (rs.length === 0) return out.join("\n");
  out.push("");
  const other = median(rs.map((r) => r.otherCpu ?? NaN));
  if (other > 0.5) {
    out.push(
      `NOTE: other processes used ${other.toFixed(1)} cores' worth of CPU (median) during the windows: absolute ops/s and latencies ` +
        "are deflated by that contention; server µs/op and the Connect/gRPC ratios are the steadier figures.",
    );
  }
  out.push("server CPU / load CPU: share of one core used over the measured window; near 100% marks the side that limits throughput.");
  out.push("server µs/op: server CPU time per call (steadier than ops/s on a shared machine). other CPU: cores' worth used by other processes meanwhile (noise).");
  return out.join("\n");
}

/** Redis's bytes per key and the 1 KiB check of the calibration, from bench/memory.ts's JSON. */
function memoryExtras(raw: unknown): string {
  const r = raw as { redis?: { status: string; version?: string; rssBytesPerKey?: number; usedMemoryBytesPerKey?: number; message?: string }; rssToRedisRss?: number; calibration?: { valueBytes: number; rssBytesPerKey: number; countedBytesPerKey: number; countedToRss: number } };
  const redis =
    r.redis === undefined
      ? ""
      : r.redis.status === "ok"
        ? `; Redis ${r.redis.version}: rss ${fmtInt(r.redis.rssBytesPerKey ?? NaN)}, used_memory ${fmtInt(r.redis.usedMemoryBytesPerKey ?? NaN)} (ours / Redis rss x${r.rssToRedisRss?.toFixed(2)})`
        : `; Redis: ${r.redis.message}`;
  const c = r.calibration;
  const check = c === undefined ? "" : `; at ${c.valueBytes}-byte values: rss ${fmtInt(c.rssBytesPerKey)}, counted ${fmtInt(c.countedBytesPerKey)} (counted / rss ${c.countedToRss.toFixed(2)})`;
  return redis + check;
}

function git(args: string[]): string | undefined {
  const r = spawnSync("git", args, { cwd: ROOT, encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

// --- main ---------------------------------------------------------------------

async function main(): Promise<number> {
  const opts = options();
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  for (const file of [CLI, LOAD]) {
    if (!existsSync(file)) throw new Error(`${relative(ROOT, file)} is missing: build first (npx tsc -p .)`);
  }
  const pin = pinning();
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() ?? "unknown",
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    loadAvg: os.loadavg().map((l) => l.toFixed(2)).join(" "),
    commit: git(["rev-parse", "--short", "HEAD"]),
    dirty: (git(["status", "--porcelain"]) ?? "") !== "",
  };

  const profileDir = join(ROOT, "bench/results/profiles");
  const profileName = `server-${machine.date.replace(/[:.]/g, "-")}.cpuprofile`;
  const nodeFlags = opts.cpuProf ? ["--cpu-prof", "--cpu-prof-dir", profileDir, "--cpu-prof-name", profileName] : [];
  if (opts.cpuProf) mkdirSync(profileDir, { recursive: true });

  const scenarios = opts.rounds * opts.ops.length * opts.protocols.length;
  process.stderr.write(`bench: sections ${opts.sections.join(", ")} (${pin.note})\n`);
  if (opts.sections.includes("throughput")) process.stderr.write(`bench: ${scenarios} measurements of ${opts.warmupMs + opts.durationMs} ms\n`);

  const want = (section: Section) => opts.sections.includes(section);
  if (want("anchors")) process.stderr.write("bench: side by side with h2load...\n");
  const anchors = want("anchors") ? await runAnchors({ requests: opts.anchorRequests, install: opts.withAnchors }) : undefined;
  // Get over TLS (bench/tls.ts): as many h2load requests as the side-by-side rows, --rounds rounds.
  if (want("tls")) process.stderr.write("bench: Get over TLS with h2load...\n");
  const tlsRows = want("tls") ? await runTls({ requests: opts.anchorRequests, rounds: opts.rounds, install: opts.withAnchors }) : undefined;
  const measurements: Measurement[] = [];
  let serverExit: number | null = 0;
  const server = want("throughput") ? await startServer({ cpu: pin.server, nodeFlags }) : undefined;
  if (server !== undefined) {
    try {
      const t0 = performance.now();
      await preload(server, opts);
      process.stderr.write(`bench: preloaded ${fmtInt(opts.keys)} keys in ${Math.round(performance.now() - t0)} ms\n`);
      for (let round = 0; round < opts.rounds; round++) {
        const protocols = round % 2 === 0 ? opts.protocols : [...opts.protocols].reverse();
        for (const op of opts.ops) {
          for (const protocol of protocols) {
            const config: LoadConfig = {
              url: server.url,
              protocol,
              op,
              connections: opts.connections,
              concurrency: opts.concurrency,
              warmupMs: opts.warmupMs,
              durationMs: opts.durationMs,
              keys: opts.keys,
              valueBytes: opts.valueBytes,
              batch: opts.batch,
            };
            const m = await measure(server, pin, config, round);
            measurements.push(m);
            process.stderr.write(
              `bench: round ${round + 1}/${opts.rounds} ${OP_NAMES[op](opts.batch).padEnd(12)} ${PROTOCOL_NAMES[protocol].padEnd(13)} ` +
                `${fmtInt(m.opsPerSec).padStart(7)} ops/s  p50 ${fmtMs(m.p50Ms)} ms  p99 ${fmtMs(m.p99Ms)} ms  server CPU ${fmtPct(m.serverCpu)}  load CPU ${fmtPct(m.loadCpu)}  other ${fmtPct(m.otherCpu)}` +
                (m.errors > 0 ? `  ${m.errors} errors (${m.firstError})` : "") +
                (m.misses > 0 ? `  ${m.misses} misses` : "") +
                "\n",
            );
          }
        }
      }
    } finally {
      serverExit = await server.stop();
    }
  }
  if (serverExit !== 0) process.stderr.write(`bench: server exited with ${serverExit}:\n${server?.output.slice(-10).join("\n")}\n`);

  let profile: ProfileSummary | undefined;
  if (opts.cpuProf && server !== undefined) {
    const file = join(profileDir, profileName);
    if (existsSync(file)) profile = summarizeProfile(file);
    else process.stderr.write(`bench: no CPU profile was written at ${file}\n`);
  }

  process.stderr.write(want("memory") && opts.memory && existsSync(opts.memoryScript) ? `bench: measuring memory with ${fmtInt(opts.memoryKeys)} keys...\n` : "");
  const memory: MemoryResult = want("memory") ? await measureMemory(opts, pin.server) : { status: "skipped", message: "skipped (--sections)" };

  const fanout = want("fanout")
    ? await runFanout(pin, {
        counts: opts.fanoutWatchers,
        perConnection: opts.fanoutPerConnection,
        client: opts.fanoutClient,
        writes: opts.fanoutWrites,
        warmupWrites: 2,
        valueBytes: opts.valueBytes,
        idleMs: 3000,
        gapMs: 100,
        // One profile per fan-out server, beside the throughput section's.
        serverNodeFlags: opts.cpuProf ? ["--cpu-prof", "--cpu-prof-dir", join(profileDir, "fanout")] : undefined,
      })
    : undefined;
  const lagOptions: LagOptions = {
    keys: opts.keys,
    valueBytes: opts.valueBytes,
    warmupMs: 1000,
    durationMs: opts.replDurationMs,
    connections: opts.connections,
    concurrency: opts.concurrency,
    setManyBatch: 100,
    rate: opts.replRate,
    // The performance issue's target: 20,000 writes/s, batched as a client pushing that many would.
    targetRate: 20_000,
    targetBatch: 100,
    sampleMs: 50,
  };
  if (want("lag")) process.stderr.write("bench: replication lag...\n");
  const lag = want("lag") ? await runLag(pin, lagOptions) : undefined;
  const resyncOptions: ResyncOptions = { keys: opts.resyncKeys, valueBytes: opts.valueBytes, loadConnections: 4, loadConcurrency: 2, loadBatch: 1000, timeoutMs: 300_000 };
  const resync: ResyncResult | undefined = !want("resync")
    ? undefined
    : opts.resyncKeys === 0
      ? { status: "skipped", message: "skipped (--resync-keys 0)" }
      : await runResync(pin, resyncOptions);

  // Two sections run as scripts of their own and are reported as they print.
  const script = (name: string, args: string[]): string => {
    process.stderr.write(`bench: ${name}...\n`);
    const r = spawnSync(process.execPath, [join(ROOT, "dist", "bench", `${name}.js`), ...args], { cwd: ROOT, encoding: "utf8", timeout: 600_000 });
    return r.status === 0 ? r.stdout.trim() : `${name}: failed (${r.status ?? r.signal}): ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`;
  };
  const expiry = want("expiry") ? `Active expiry (bench/expiry.ts):\n${script("expiry", [])}` : undefined;
  // Only the in-process cost: bench/telemetry.ts's end-to-end mode drives the server with
  // connect-node clients, which saturate their core at a fifth of what the server can serve,
  // so its throughput ratio said nothing of the server. The end-to-end ratio is measured with
  // h2load in the side-by-side table (traces 10% / telemetry off, median of pairs).
  // kill -9 of the primary, RippleCache against Redis Sentinel, then planned switchovers (bench/failover.ts).
  if (want("failover")) process.stderr.write("bench: failover, RippleCache and Redis Sentinel...\n");
  const failover = want("failover") ? await runFailover({ reps: opts.failoverReps, switchovers: 6 }) : undefined;
  const telemetryText = want("telemetry") ? `Telemetry, in-process cost of the interceptor (bench/telemetry.ts --no-e2e):\n${script("telemetry", ["--no-e2e"])}` : undefined;

  const firstLines = (lines: Iterable<string>) => [...new Set(lines)].filter((l) => !l.startsWith("(Use `node --trace-warnings")).slice(0, 5);
  const serverStderr = firstLines([
    ...(server?.stderr ?? []),
    ...(fanout ?? []).flatMap((f) => (f.status === "ok" ? f.serverStderr : [])),
    ...(lag?.serverStderr ?? []),
    ...(resync?.status === "ok" ? resync.serverStderr : []),
  ]);
  const loadWarnings = firstLines(loadStderr);
  const warnings = [
    ...(serverStderr.length > 0 ? ["server stderr during the bench:", ...serverStderr.map((l) => `  ${l}`)] : []),
    ...(loadWarnings.length > 0 ? ["load generator stderr:", ...loadWarnings.map((l) => `  ${l}`)] : []),
  ];
  const rs = rows(measurements, opts);
  const rt = ratios(measurements, opts);
  const sectionTexts = [
    anchors === undefined ? undefined : `Side by side, same load generator (bench/anchors.ts):\n${formatAnchors(anchors)}`,
    tlsRows === undefined ? undefined : `Get over TLS, same load generator (bench/tls.ts):\n${formatTls(tlsRows)}`,
    fanout === undefined ? undefined : formatFanout(fanout, opts.fanoutPerConnection, opts.fanoutClient),
    lag === undefined ? undefined : formatLag(lag, lagOptions, pin),
    resync === undefined ? undefined : formatResync(resync, resyncOptions, pin),
    expiry,
    telemetryText,
    failover === undefined ? undefined : formatFailover(failover),
  ].filter((t): t is string => t !== undefined);
  const text = [report(opts, pin, rs, rt, memory, machine), ...sectionTexts].join("\n\n");
  process.stdout.write(`\n${text}\n`);
  if (profile !== undefined) process.stdout.write(`\n${formatProfile(profile)}\n`);

  const results = {
    machine,
    pinning: pin,
    config: {
      durationMs: opts.durationMs,
      warmupMs: opts.warmupMs,
      connections: opts.connections,
      concurrencyPerConnection: opts.concurrency,
      keys: opts.keys,
      valueBytes: opts.valueBytes,
      getManyBatch: opts.batch,
      rounds: opts.rounds,
      memoryKeys: opts.memoryKeys,
      sections: opts.sections,
      fanoutWatchers: opts.fanoutWatchers,
      fanoutPerConnection: opts.fanoutPerConnection,
      fanoutClient: opts.fanoutClient,
      fanoutWrites: opts.fanoutWrites,
      replication: lagOptions,
      resync: resyncOptions,
    },
    results: rs.map((r) => ({
      operation: OP_NAMES[r.op](opts.batch),
      protocol: PROTOCOL_NAMES[r.protocol],
      opsPerSec: r.opsPerSec,
      p50Ms: r.p50Ms,
      p99Ms: r.p99Ms,
      spread: r.spread,
      serverCpu: r.serverCpu,
      serverUsPerOp: r.serverUsPerOp,
      loadCpu: r.loadCpu,
      otherCpu: r.otherCpu,
      errors: r.errors,
      misses: r.misses,
      rounds: r.rounds,
    })),
    connectVsGrpc: rt,
    sideBySide: anchors,
    tls: tlsRows,
    memory,
    watchFanout: fanout,
    replicationLag: lag,
    fullResync: resync,
    expiry,
    telemetry: telemetryText,
    failover,
    profile,
    serverStderr,
    loadStderr: loadWarnings,
    table: text,
  };
  mkdirSync(join(opts.out, ".."), { recursive: true });
  writeFileSync(opts.out, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`\nresults: ${opts.out}\n`);
  // Every target judged on this run's figures alone; then the generated tables of the docs.
  process.stdout.write(`\nTargets (met or not by this run's figures; a section not run is not measured):\n${formatTargets(results)}\n`);
  if (opts.out === join(ROOT, "bench/results/latest.json")) {
    const changed = writeDocs(results, ROOT);
    process.stdout.write(changed.length > 0 ? `rewrote the generated tables of ${changed.join(" and ")}\n` : "docs/PERFORMANCE.md and README.md already matched\n");
  }
  if (profile !== undefined) process.stdout.write(`profile: ${profile.file}\n`);
  if (warnings.length > 0) process.stdout.write(`\n${warnings.join("\n")}\n`);
  const failed =
    rs.some((r) => r.errors > 0 || r.misses > 0) ||
    (fanout ?? []).some((f) => f.status !== "ok" || f.result.received < f.result.expected) ||
    (lag !== undefined && (lag.status !== "ok" || lag.scenarios.some((s) => s.status !== "ok") || lag.digest?.match !== true)) ||
    resync?.status === "failed" ||
    failover?.status === "failed" ||
    (resync?.status === "ok" && !resync.digest.match);
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    killAll("SIGKILL");
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    killAll("SIGKILL");
    process.exit(1);
  },
);

function fanoutClient(v: string): "raw" | "connect" {
  if (v === "raw" || v === "connect") return v;
  throw new Error(`--fanout-client must be raw or connect, not ${JSON.stringify(v)}`);
}
