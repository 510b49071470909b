/**
 * `node dist/bench/telemetry.js`: what tracing costs. The same load (bench/load.ts,
 * closed loop, several HTTP/2 connections) against the real server with
 * telemetry off, and with traces exported by OTLP/HTTP protobuf sampled at 10%
 * and 100% (OTEL_TRACES_SAMPLER=traceidratio), to a sink this script runs on
 * loopback (it accepts and discards). It reports throughput and server CPU per
 * call, and the ratios to "off" taken within each round (rounds alternate the
 * order of the scenarios), medians over the rounds. The connect-node load
 * generator saturates its core at a fraction of what the server's fast path
 * serves: read "server CPU per call", not throughput. `npm run bench` runs only
 * the in-process part (--no-e2e) and takes the end-to-end ratio from h2load
 * (bench/anchors.ts).
 *
 * "off" still records rpc.server.call.duration (the /metrics histogram is
 * always on); what it does not do is load the tracing SDK or run anything per
 * call for traces.
 *
 * Then, less sensitive to a busy machine, the in-process cost per call of the
 * telemetry interceptor itself (and of context propagation, with the tracing
 * SDK's AsyncLocalStorage context manager) around a stand-in handler that
 * awaits 30 promises, one child process per mode: the minimum over 5 runs.
 *
 * Flags: --duration MS (3000), --warmup MS (1000), --rounds N (3),
 * --connections N (4), --concurrency N (16), --keys N (10000), --op get|set|getMany (get),
 * --protocol grpc|connect (grpc), --no-e2e (only the in-process figures),
 * --out FILE (bench/results/telemetry.json).
 *
 * A benchmark, not a test: it asserts nothing.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { CacheClient } from "../src/client/client.js";
import { keyName, type BenchProtocol, type LoadConfig, type LoadMessage, type LoadResult, type Op } from "./common.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLI = join(ROOT, "dist/src/cli/main.js");
const LOAD = join(ROOT, "dist/bench/load.js");

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "3000" },
    warmup: { type: "string", default: "1000" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "4" },
    concurrency: { type: "string", default: "16" },
    keys: { type: "string", default: "10000" },
    op: { type: "string", default: "get" },
    protocol: { type: "string", default: "grpc" },
    out: { type: "string", default: join(ROOT, "bench/results/telemetry.json") },
    "micro-child": { type: "string" },
    "no-e2e": { type: "boolean", default: false },
  },
  strict: true,
});
const opts = {
  durationMs: Number(values.duration),
  warmupMs: Number(values.warmup),
  rounds: Number(values.rounds),
  connections: Number(values.connections),
  concurrency: Number(values.concurrency),
  keys: Number(values.keys),
  op: values.op as Op,
  protocol: values.protocol as BenchProtocol,
  out: resolve(values.out),
};

interface Scenario {
  readonly name: string;
  readonly env: (sink: string) => Record<string, string>;
}

const traced = (ratio: string) => (sink: string) => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: sink,
  OTEL_TRACES_SAMPLER: "traceidratio",
  OTEL_TRACES_SAMPLER_ARG: ratio,
  // A queue large enough that no span is dropped at full sampling: the cost measured is the real one.
  OTEL_BSP_MAX_QUEUE_SIZE: "262144",
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2048",
  OTEL_BSP_SCHEDULE_DELAY: "200",
});

const SCENARIOS: readonly Scenario[] = [
  { name: "off", env: () => ({}) },
  { name: "traces 10%", env: traced("0.1") },
  { name: "traces 100%", env: traced("1") },
];

// --- processes ------------------------------------------------------------------

const children = new Set<ChildProcess>();
function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}
process.on("exit", () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** taskset pinning: server on the first allowed CPU, load on the second (when there are two). */
function cpus(): number[] | undefined {
  const r = spawnSync("taskset", ["-cp", String(process.pid)], { encoding: "utf8" });
  const m = r.status === 0 ? /list:\s*([0-9,\-\s]+)$/m.exec(r.stdout) : null;
  if (m === null) return undefined;
  const out: number[] = [];
  for (const part of m[1].trim().split(",")) {
    const [a, b] = part.split("-").map(Number);
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out.length >= 2 ? out : undefined;
}
const CPUS = cpus();
const pinned = (cpu: number | undefined, argv: string[]): [string, string[]] => (cpu === undefined ? [argv[0], argv.slice(1)] : ["taskset", ["-c", String(cpu), ...argv]]);

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout?.trim()) || 100;
function processCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

interface Server {
  readonly addr: string;
  readonly pid: number;
  stop(): Promise<void>;
}

async function startServer(env: Record<string, string>): Promise<Server> {
  const [cmd, args] = pinned(CPUS?.[0], [process.execPath, CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--shutdown-timeout", "2000"]);
  const proc = track(spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] }));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const port = await new Promise<number>((res, rej) => {
    const timer = setTimeout(() => rej(new Error("server did not start within 15 s")), 15_000);
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      try {
        const r = JSON.parse(line) as { msg?: string; port?: number };
        if (r.msg === "listening" && typeof r.port === "number") {
          clearTimeout(timer);
          res(r.port);
        }
      } catch {
        // not JSON
      }
    });
    proc.once("exit", (code) => rej(new Error(`server exited with ${code}`)));
  });
  return {
    addr: `127.0.0.1:${port}`,
    pid: proc.pid!,
    async stop() {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function preload(addr: string): Promise<void> {
  const client = new CacheClient({ addr, protocol: "grpc", timeoutMs: 30_000 });
  try {
    const value = new Uint8Array(100).fill(0x61);
    for (let i = 0; i < opts.keys; i += 500) {
      const entries = [];
      for (let k = i; k < Math.min(opts.keys, i + 500); k++) entries.push({ key: keyName(k), value });
      await client.rpc.setMany({ entries });
    }
  } finally {
    client.close();
  }
}

/** The OTLP sink: accepts every export, counts requests and bytes. */
async function startSink(): Promise<{ url: string; stats: { requests: number; bytes: number }; close(): Promise<void> }> {
  const stats = { requests: 0, bytes: 0 };
  const server = http.createServer((req, res) => {
    req.on("data", (c: Buffer) => (stats.bytes += c.length));
    req.on("end", () => {
      stats.requests++;
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stats,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

interface Result {
  readonly scenario: string;
  readonly round: number;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly serverUsPerOp: number | undefined;
  readonly errors: number;
  readonly exportedBytes: number;
}

async function measure(server: Server, scenario: string, round: number, sink: { stats: { bytes: number } }): Promise<Result> {
  const config: LoadConfig = {
    url: `http://${server.addr}`,
    protocol: opts.protocol,
    op: opts.op,
    connections: opts.connections,
    concurrency: opts.concurrency,
    warmupMs: opts.warmupMs,
    durationMs: opts.durationMs,
    keys: opts.keys,
    valueBytes: 100,
    batch: 10,
  };
  const [cmd, args] = pinned(CPUS?.[1], [process.execPath, LOAD, JSON.stringify(config)]);
  const child = track(spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "inherit", "inherit", "ipc"] }));
  let cpuStart: number | undefined;
  let cpuEnd: number | undefined;
  const bytesStart = sink.stats.bytes;
  const result = await new Promise<LoadResult>((res, rej) => {
    child.on("message", (m: LoadMessage) => {
      if (m.type === "measure-start") cpuStart = processCpuMs(server.pid);
      else if (m.type === "measure-end") cpuEnd = processCpuMs(server.pid);
      else if (m.type === "result") res(m.result);
      else if (m.type === "error") rej(new Error(m.message));
    });
    child.once("exit", (code) => code !== 0 && rej(new Error(`load generator exited with ${code}`)));
  });
  return {
    scenario,
    round,
    opsPerSec: result.opsPerSec,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    serverUsPerOp: cpuStart !== undefined && cpuEnd !== undefined && result.ops > 0 ? ((cpuEnd - cpuStart) * 1000) / result.ops : undefined,
    errors: result.errors,
    exportedBytes: sink.stats.bytes - bytesStart,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const { results, summary } = values["no-e2e"] ? { results: [], summary: [] } : await endToEnd();
  const micro: { scenario: string; usPerCall: number }[] = [];
  for (const scenario of ["off", "traces 10%", "traces 100%"]) {
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--micro-child", scenario], { cwd: ROOT, encoding: "utf8" });
    if (child.status !== 0) throw new Error(`micro ${scenario} failed: ${child.stderr}`);
    micro.push({ scenario, usPerCall: Number(JSON.parse(child.stdout.trim().split("\n").pop()!).usPerCall) });
  }
  process.stdout.write(`\n| telemetry | interceptor + context cost per call (in process) |\n|---|---:|\n`);
  for (const m of micro) process.stdout.write(`| ${m.scenario} | ${m.usPerCall.toFixed(2)} µs |\n`);
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(
    opts.out,
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, pinned: CPUS !== undefined, options: opts, summary, results, micro }, null, 2)}\n`,
  );
  process.stdout.write(`\nwritten to ${opts.out}\n`);
  // The last line, for the bench's report and docs/PERFORMANCE.md (bench/format.ts reads it).
  process.stdout.write(`${JSON.stringify({ inProcessUsPerCall: Object.fromEntries(micro.map((m) => [m.scenario, Math.round(m.usPerCall * 100) / 100])) })}\n`);
}

async function endToEnd() {
  const sink = await startSink();
  const results: Result[] = [];
  process.stderr.write(
    `bench/telemetry: ${opts.op} over ${opts.protocol}, ${opts.connections}x${opts.concurrency} in flight, ${opts.durationMs} ms windows, ${opts.rounds} rounds; ${CPUS ? `server on CPU ${CPUS[0]}, load on CPU ${CPUS[1]}` : "not pinned"}\n`,
  );
  try {
    for (let round = 0; round < opts.rounds; round++) {
      const order = round % 2 === 0 ? SCENARIOS : [...SCENARIOS].reverse();
      for (const scenario of order) {
        const server = await startServer(scenario.env(sink.url));
        try {
          await preload(server.addr);
          const r = await measure(server, scenario.name, round, sink);
          results.push(r);
          process.stderr.write(
            `  round ${round + 1} ${scenario.name.padEnd(12)} ${Math.round(r.opsPerSec).toString().padStart(7)} ops/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  server ${r.serverUsPerOp?.toFixed(1) ?? "?"} µs/op  exported ${(r.exportedBytes / 1e6).toFixed(1)} MB${r.errors > 0 ? `  ERRORS ${r.errors}` : ""}\n`,
          );
        } finally {
          await server.stop();
        }
      }
    }
  } finally {
    await sink.close();
  }

  const summary = SCENARIOS.map((s) => {
    const mine = results.filter((r) => r.scenario === s.name);
    const ratios = mine.map((r) => r.opsPerSec / results.find((o) => o.scenario === "off" && o.round === r.round)!.opsPerSec);
    const cpuRatios = mine.map((r) => (r.serverUsPerOp ?? NaN) / (results.find((o) => o.scenario === "off" && o.round === r.round)!.serverUsPerOp ?? NaN));
    return {
      scenario: s.name,
      opsPerSec: median(mine.map((r) => r.opsPerSec)),
      throughputVsOff: median(ratios),
      serverUsPerOp: median(mine.map((r) => r.serverUsPerOp ?? NaN)),
      serverCpuPerOpVsOff: median(cpuRatios),
    };
  });
  process.stdout.write(`\n| telemetry | ${opts.op} ops/s (${opts.protocol}) | throughput vs off | server CPU per call | CPU per call vs off |\n|---|---:|---:|---:|---:|\n`);
  for (const s of summary) {
    process.stdout.write(`| ${s.scenario} | ${Math.round(s.opsPerSec)} | ${s.throughputVsOff.toFixed(3)} | ${s.serverUsPerOp.toFixed(1)} µs | ${s.serverCpuPerOpVsOff.toFixed(3)} |\n`);
  }
  return { results, summary };
}

/**
 * One mode of the in-process measurement (a child process, so that the SDK
 * of one mode does not stay registered for the next): prints {"usPerCall"}.
 */
async function microChild(scenario: string): Promise<void> {
  const env: Record<string, string> = scenario === "off" ? {} : { ...traced(scenario === "traces 10%" ? "0.1" : "1")("http://127.0.0.1:9"), OTEL_METRICS_EXPORTER: "none" };
  Object.assign(process.env, env);
  const { startTelemetry } = await import("../src/telemetry/telemetry.js");
  const { createContextValues } = await import("@connectrpc/connect");
  const { CacheService } = await import("../src/gen/ripplecache/v1/cache_pb.js");
  const stub = {} as never;
  const telemetry = await startTelemetry({ sources: { store: stub, log: stub, hub: stub, replication: stub }, shuttingDown: () => false });
  const handler = async (): Promise<void> => {
    for (let i = 0; i < 30; i++) await Promise.resolve(i);
  };
  const wrapped = telemetry.interceptor(async () => {
    await handler();
    return { stream: false, message: {} } as never;
  });
  const req = {
    stream: false,
    // The real descriptors: the interceptor names spans after method.parent.
    service: CacheService,
    method: CacheService.method.get,
    header: new Headers({ "content-type": "application/grpc", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }),
    contextValues: createContextValues(),
    signal: new AbortController().signal,
    url: "http://127.0.0.1/ripplecache.v1.CacheService/Get",
    requestMethod: "POST",
    message: {},
  } as never;
  const time = async (fn: () => Promise<unknown>, n: number) => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await fn();
    return ((performance.now() - t0) * 1000) / n;
  };
  await time(() => wrapped(req), 20_000);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const base = await time(handler, 50_000);
    const with_ = await time(() => wrapped(req), 50_000);
    best = Math.min(best, with_ - base);
  }
  process.stdout.write(`${JSON.stringify({ scenario, usPerCall: best })}\n`);
}

(values["micro-child"] !== undefined ? microChild(values["micro-child"]) : main()).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench/telemetry failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
