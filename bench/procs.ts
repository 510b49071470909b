/**
 * Child processes of `npm run bench` (servers, load generators, watchers):
 * every one is tracked and killed on the way out, also on errors and Ctrl-C.
 * Plus CPU pinning and per-process CPU and RSS readings from /proc.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { SERVER_NODE_FLAGS } from "../src/cli/node-flags.js";

/** The repository root (this file runs from dist/bench/). */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const CLI = join(ROOT, "dist/src/cli/main.js");

// --- tracking -----------------------------------------------------------------

const children = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

export function killAll(signal: NodeJS.Signals): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  }
}

process.on("exit", () => killAll("SIGKILL"));
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    process.stderr.write(`\nbench: ${signal}, stopping the processes it started\n`);
    killAll("SIGKILL");
    process.exit(130);
  });
}

/** Resolves with [code, signal] when the child exits (at once if it already has). */
export function exited(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve([child.exitCode, child.signalCode]);
  return new Promise((res) => child.once("exit", (code, signal) => res([code, signal])));
}

// --- pinning --------------------------------------------------------------------

/** CPUs this process may run on (from taskset), or undefined when pinning is unavailable. */
function pinnableCpus(): number[] | undefined {
  if (process.platform !== "linux") return undefined;
  const r = spawnSync("taskset", ["-cp", String(process.pid)], { encoding: "utf8" });
  if (r.status !== 0) return undefined;
  const m = /list:\s*([0-9,\-\s]+)$/m.exec(r.stdout);
  if (m === null) return undefined;
  const cpus: number[] = [];
  for (const part of m[1].trim().split(",")) {
    const [a, b] = part.split("-").map(Number);
    for (let c = a; c <= (b ?? a); c++) cpus.push(c);
  }
  return cpus.length >= 2 ? cpus : undefined;
}

export interface Pinning {
  readonly server: number | undefined;
  readonly load: number | undefined;
  readonly note: string;
}

export function pinning(): Pinning {
  const cpus = pinnableCpus();
  if (cpus === undefined) {
    return { server: undefined, load: undefined, note: "not pinned (taskset missing or fewer than 2 CPUs allowed)" };
  }
  return { server: cpus[0], load: cpus[1], note: `server on CPU ${cpus[0]}, load generator on CPU ${cpus[1]} (taskset)` };
}

/** argv, run under `taskset -c CPU` when a CPU is given (taskset execs, so the pid is the program's). */
export function command(cpu: number | undefined, argv: string[]): [string, string[]] {
  return cpu === undefined ? [argv[0], argv.slice(1)] : ["taskset", ["-c", String(cpu), ...argv]];
}

// --- servers ------------------------------------------------------------------

export interface Server {
  readonly url: string;
  readonly addr: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** performance.now() when the process was spawned and when it logged "listening". */
  readonly spawnedAt: number;
  readonly listeningAt: number;
  /** Every line of stdout and stderr. */
  readonly output: string[];
  /** The server's stderr lines (warnings end up here), without the probe's lines. */
  readonly stderr: string[];
  /**
   * Full GC, then the server's own memory reading (process.memoryUsage()):
   * needs `probe: true`; undefined without it, or when no answer comes in 10 s.
   */
  probeMemory(): Promise<ProbeReading | undefined>;
  stop(): Promise<number | null>;
}

export interface ProbeReading {
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
  readonly rss: number;
}

const PROBE = join(ROOT, "dist/bench/server-probe.js");

export interface ServerOptions {
  readonly cpu: number | undefined;
  readonly nodeFlags?: readonly string[];
  /** Extra `serve` flags (--max-streams, --replica-of, ...). */
  readonly args?: readonly string[];
  /** Load bench/server-probe.js (with --expose-gc), for probeMemory(). */
  readonly probe?: boolean;
  /** Extra environment (OTEL_* for the telemetry comparison). */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * Starts `ripplecache serve` on 127.0.0.1, a free port and a free admin port
 * (the default admin port 9090 would collide between two servers, or with
 * anything else on the machine), and resolves once it logs "listening".
 */
export async function startServer(options: ServerOptions): Promise<Server> {
  const argv = [
    process.execPath,
    ...SERVER_NODE_FLAGS,
    ...(options.nodeFlags ?? []),
    ...(options.probe === true ? ["--expose-gc", "--import", PROBE] : []),
    CLI,
    "serve",
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--admin-port",
    "0",
    "--shutdown-timeout",
    "2000",
    ...(options.args ?? []),
  ];
  const [cmd, args] = command(options.cpu, argv);
  const spawnedAt = performance.now();
  const proc = track(spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } }));
  const output: string[] = [];
  const stderr: string[] = [];
  let probeWaiter: ((r: ProbeReading) => void) | undefined;
  createInterface({ input: proc.stderr! }).on("line", (line) => {
    if (line.startsWith('{"probe":"memory"')) {
      probeWaiter?.(JSON.parse(line) as ProbeReading);
      return;
    }
    output.push(line);
    stderr.push(line);
  });
  const exit = exited(proc);
  const port = await new Promise<number>((res, rej) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      rej(new Error(`server did not start within 15 s:\n${output.join("\n")}`));
    }, 15_000);
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      output.push(line);
      try {
        const record = JSON.parse(line) as { msg?: string; port?: number };
        if (record.msg === "listening" && typeof record.port === "number") {
          clearTimeout(timer);
          res(record.port);
        }
      } catch {
        // not a JSON log line
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`server exited with ${code} before listening:\n${output.join("\n")}`));
    });
  });
  const listeningAt = performance.now();
  return {
    url: `http://127.0.0.1:${port}`,
    addr: `127.0.0.1:${port}`,
    pid: proc.pid!,
    proc,
    spawnedAt,
    listeningAt,
    output,
    stderr,
    async probeMemory() {
      if (options.probe !== true || proc.exitCode !== null || proc.signalCode !== null) return undefined;
      return new Promise<ProbeReading | undefined>((res) => {
        const timer = setTimeout(() => {
          probeWaiter = undefined;
          res(undefined);
        }, 10_000);
        probeWaiter = (r) => {
          clearTimeout(timer);
          probeWaiter = undefined;
          res(r);
        };
        proc.kill("SIGUSR2");
      });
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      try {
        return (await exit)[0];
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

// --- /proc readings -------------------------------------------------------------

const CLK_TCK = (() => {
  const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const n = Number(r.stdout?.trim());
  return r.status === 0 && n > 0 ? n : 100;
})();

/** Busy CPU time of the whole machine in ms (all cores), from /proc/stat; undefined where there is none. */
export function machineBusyMs(): number | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
    // cpu user nice system idle iowait irq softirq steal ...
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return ((user + nice + system + irq + softirq + (steal || 0)) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** User + system CPU time of a process in ms, from /proc; undefined where there is no /proc. */
export function processCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** Resident set size of a process in bytes (VmRSS in /proc/PID/status); undefined where there is no /proc. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

// --- small helpers -----------------------------------------------------------------

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Nearest-rank percentile of unsorted values (sorts a copy). */
export function pct(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = Float64Array.from(values).sort();
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}
