/**
 * Watch fan-out section of `npm run bench`: for each watcher count, a fresh
 * server (pinned to the server CPU, --max-streams raised to fit) and one
 * watchers process (bench/watchers.ts, pinned to the load CPU) that opens the
 * watchers and runs the writer.
 *
 * - Delay: from the Set's acknowledgement to each watcher's receipt of the
 *   event, both timed in the watchers process (one clock), over every receipt
 *   of every counted write; also from the Set's send.
 * - Memory per idle watcher: the server's RSS (/proc/PID/status VmRSS) after
 *   the watchers are open and idle for a while, minus its RSS before they were
 *   opened (server warmed up and idle), divided by the count. Includes the
 *   HTTP/2 connections' share (perConnection watchers per connection).
 * - Server CPU over the counted writes, per delivered event.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { CacheClient } from "../src/client/client.js";
import { fmtInt, fmtKiB, fmtMiB, fmtMs, fmtPct, fmtSec, table } from "./format.js";
import { command, exited, machineBusyMs, processCpuMs, ROOT, rssBytes, sleep, startServer, track, type Pinning, type ProbeReading } from "./procs.js";
import type { WatchersCommand, WatchersConfig, WatchersMessage, WatchersResult } from "./watchers.js";

const WATCHERS = join(ROOT, "dist/bench/watchers.js");

export interface FanoutOptions {
  readonly counts: readonly number[];
  readonly perConnection: number;
  readonly writes: number;
  readonly warmupWrites: number;
  readonly valueBytes: number;
  /** How long the opened watchers idle before the RSS reading. */
  readonly idleMs: number;
  readonly gapMs: number;
  /** Node flags for the server (--cpu-prof ...). */
  readonly serverNodeFlags?: readonly string[];
  /** How the watchers read (bench/watchers.ts): raw node:http2 (default) or connect-node's client. */
  readonly client?: "raw" | "connect";
}

export type FanoutStage =
  | {
      readonly status: "ok";
      readonly watchers: number;
      readonly connections: number;
      readonly openMs: number;
      /** Streams the server's Info counted once the watchers were open. */
      readonly serverStreams: number;
      readonly rssBeforeBytes: number | undefined;
      readonly rssAfterBytes: number | undefined;
      readonly rssPerWatcherBytes: number | undefined;
      /** V8 heap used + external after a full GC (bench/server-probe.js), after minus before, per watcher. */
      readonly liveBytesPerWatcher: number | undefined;
      /** RSS after that full GC, after minus before, per watcher. */
      readonly rssAfterGcPerWatcherBytes: number | undefined;
      readonly probeBefore: ProbeReading | undefined;
      readonly probeAfter: ProbeReading | undefined;
      /** Server CPU over the counted writes / their wall time (1 = one core). */
      readonly serverCpu: number | undefined;
      /** CPU used by other processes on the machine over the writes, in cores (noise). */
      readonly otherCpu: number | undefined;
      /** Server CPU time per delivered event, µs. */
      readonly serverUsPerEvent: number | undefined;
      readonly result: WatchersResult;
      readonly serverStderr: string[];
    }
  | { readonly status: "failed"; readonly watchers: number; readonly message: string };

function log(text: string): void {
  process.stderr.write(`bench: ${text}\n`);
}

export async function runFanout(pin: Pinning, opts: FanoutOptions): Promise<FanoutStage[]> {
  const stages: FanoutStage[] = [];
  for (const count of opts.counts) {
    try {
      stages.push(await stage(pin, opts, count));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      log(`fan-out with ${count} watchers failed: ${message}`);
      stages.push({ status: "failed", watchers: count, message });
    }
  }
  return stages;
}

async function stage(pin: Pinning, opts: FanoutOptions, count: number): Promise<FanoutStage> {
  const server = await startServer({ cpu: pin.server, args: ["--max-streams", String(count + 1000)], probe: true, nodeFlags: opts.serverNodeFlags });
  let child: ReturnType<typeof spawn> | undefined;
  try {
    // Warm the server up (a connection, a write outside the watched prefix, Info), then let it settle.
    const warm = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 10_000 });
    try {
      await warm.set("warmup", "x");
      await warm.info();
    } finally {
      warm.close();
    }
    await sleep(1000);
    const rssBefore = rssBytes(server.pid);
    const liveBefore = await server.probeMemory();

    const config: WatchersConfig = {
      url: server.url,
      watchers: count,
      perConnection: opts.perConnection,
      prefix: "fan/",
      key: "fan/key",
      writes: opts.writes,
      warmupWrites: opts.warmupWrites,
      valueBytes: opts.valueBytes,
      gapMs: opts.gapMs,
      openConcurrency: 200,
      receiptTimeoutMs: 10_000,
      client: opts.client ?? "raw",
    };
    const [cmd, args] = command(pin.load, [process.execPath, WATCHERS, JSON.stringify(config)]);
    const proc = track(spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "inherit", "pipe", "ipc"] }));
    child = proc;
    const stderr: string[] = [];
    createInterface({ input: proc.stderr! }).on("line", (line) => stderr.push(line));
    const messages: WatchersMessage[] = [];
    let wake: (() => void) | undefined;
    proc.on("message", (m: WatchersMessage) => {
      messages.push(m);
      wake?.();
    });
    proc.once("exit", () => wake?.());
    /** The next message of `type` (an "error" message or the child's exit fails it). */
    const next = async <T extends WatchersMessage["type"]>(type: T, timeoutMs: number): Promise<Extract<WatchersMessage, { type: T }>> => {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const i = messages.findIndex((m) => m.type === type || m.type === "error");
        if (i >= 0) {
          const m = messages.splice(i, 1)[0];
          if (m.type === "error") throw new Error(`watchers process: ${m.message}`);
          return m as Extract<WatchersMessage, { type: T }>;
        }
        if (proc.exitCode !== null || proc.signalCode !== null) {
          throw new Error(`watchers process exited (${proc.signalCode ?? proc.exitCode}) before "${type}":\n${stderr.slice(-5).join("\n")}`);
        }
        const left = deadline - performance.now();
        if (left <= 0) throw new Error(`watchers process: no "${type}" within ${timeoutMs} ms`);
        await new Promise<void>((res) => {
          const timer = setTimeout(res, left);
          wake = () => {
            clearTimeout(timer);
            res();
          };
        });
        wake = undefined;
      }
    };
    const sendCommand = (c: WatchersCommand) => proc.send(c);

    const opened = await next("opened", 180_000);
    if (opened.failed > 0) throw new Error(`${opened.failed} of ${count} watchers failed to open: ${opened.firstError ?? "?"}`);
    log(`fan-out: ${count} watchers open on ${opened.connections} connections in ${Math.round(opened.ms)} ms; idling ${opts.idleMs} ms`);
    await sleep(opts.idleMs);
    const rssAfter = rssBytes(server.pid);
    const liveAfter = await server.probeMemory();
    const probe = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 10_000 });
    let serverStreams: number;
    try {
      serverStreams = Number((await probe.info()).streams);
    } finally {
      probe.close();
    }

    sendCommand({ type: "write" });
    await next("writes-start", 60_000);
    const cpu0 = processCpuMs(server.pid);
    const child0 = processCpuMs(proc.pid!);
    const machine0 = machineBusyMs();
    const t0 = performance.now();
    await next("writes-end", (opts.writes + opts.warmupWrites) * 11_000 + 10_000);
    const wall = performance.now() - t0;
    const cpu1 = processCpuMs(server.pid);
    const child1 = processCpuMs(proc.pid!);
    const machine1 = machineBusyMs();
    const { result } = await next("result", 30_000);
    sendCommand({ type: "close" });
    const exit = await Promise.race([exited(proc), sleep(10_000).then(() => undefined)]);
    if (exit === undefined) proc.kill("SIGKILL");

    const serverCpuMs = cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined;
    const childCpuMs = child0 !== undefined && child1 !== undefined ? child1 - child0 : undefined;
    const otherCpu =
      serverCpuMs !== undefined && childCpuMs !== undefined && machine0 !== undefined && machine1 !== undefined
        ? Math.max(0, (machine1 - machine0 - serverCpuMs - childCpuMs) / wall)
        : undefined;
    const rssPer = rssBefore !== undefined && rssAfter !== undefined ? (rssAfter - rssBefore) / count : undefined;
    const live = (r: ProbeReading) => r.heapUsed + r.external;
    const livePer = liveBefore !== undefined && liveAfter !== undefined ? (live(liveAfter) - live(liveBefore)) / count : undefined;
    const rssAfterGcPer = liveBefore !== undefined && liveAfter !== undefined ? (liveAfter.rss - liveBefore.rss) / count : undefined;
    log(
      `fan-out: ${count} watchers: ack->receipt p50 ${result.fromAck.p50.toFixed(1)} ms p99 ${result.fromAck.p99.toFixed(1)} ms max ${result.fromAck.max.toFixed(1)} ms; ` +
        `${result.received}/${result.expected} receipts; server RSS +${rssPer === undefined ? "?" : Math.round(rssPer)} B/watcher (live after GC ${livePer === undefined ? "?" : Math.round(livePer)} B)`,
    );
    return {
      status: "ok",
      watchers: count,
      connections: opened.connections,
      openMs: opened.ms,
      serverStreams,
      rssBeforeBytes: rssBefore,
      rssAfterBytes: rssAfter,
      rssPerWatcherBytes: rssPer,
      liveBytesPerWatcher: livePer,
      rssAfterGcPerWatcherBytes: rssAfterGcPer,
      probeBefore: liveBefore,
      probeAfter: liveAfter,
      serverCpu: serverCpuMs === undefined ? undefined : serverCpuMs / wall,
      otherCpu,
      serverUsPerEvent: serverCpuMs === undefined || result.received === 0 ? undefined : (serverCpuMs * 1000) / result.received,
      result,
      serverStderr: [...new Set(server.stderr)].slice(0, 5),
    };
  } finally {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await server.stop();
  }
}

// --- report -------------------------------------------------------------------------

export function formatFanout(stages: readonly FanoutStage[], perConnection: number, client: "raw" | "connect" = "raw"): string {
  const out: string[] = [];
  const ok = stages.filter((s): s is Extract<FanoutStage, { status: "ok" }> => s.status === "ok");
  const writes = ok[0]?.result.writes;
  out.push(
    `Watch fan-out: watchers on one prefix (gRPC Watch with values, ${perConnection} per HTTP/2 connection, ` +
      `${client === "raw" ? "read with node:http2 and protobuf-es" : "read with connect-node's client"}) in one process on the load CPU; ` +
      `a fresh server per row; one writer in the watchers' process, ${writes ?? "?"} counted writes (+2 warm-up) one at a time, each awaited by every watcher`,
  );
  const body = ok.map((s) => [
    fmtInt(s.watchers),
    fmtInt(s.connections),
    fmtSec(s.openMs),
    fmtMs(s.result.setP50Ms),
    fmtMs(s.result.fromAck.p50),
    fmtMs(s.result.fromAck.p99),
    fmtMs(s.result.fromAck.max),
    fmtMs(s.result.fromSend.p50),
    fmtMs(s.result.fromSend.p99),
    fmtMs(s.result.fromSend.max),
    s.serverUsPerEvent === undefined ? "-" : fmtInt(s.serverUsPerEvent),
    fmtPct(s.serverCpu),
    fmtPct(s.result.clientCpu),
    fmtPct(s.otherCpu),
    fmtKiB(s.rssPerWatcherBytes),
    fmtKiB(s.liveBytesPerWatcher),
    `${fmtInt(s.result.received)}/${fmtInt(s.result.expected)}`,
  ]);
  const header = [
    "Watchers",
    "Conns",
    "open",
    "Set RTT p50 ms",
    "ack->event p50 ms",
    "p99",
    "max",
    "send->event p50 ms",
    "p99",
    "max",
    "server µs/event",
    "server CPU",
    "client CPU",
    "other CPU",
    "RSS/watcher",
    "live/watcher",
    "events received",
  ];
  if (body.length > 0) out.push(table(header, body, 0));
  for (const s of stages) if (s.status === "failed") out.push(`${fmtInt(s.watchers)} watchers: FAILED: ${s.message}`);
  for (const s of ok) {
    const extra: string[] = [];
    if (s.serverStreams !== s.watchers) extra.push(`server Info counted ${s.serverStreams} streams`);
    if (s.result.resyncs > 0) extra.push(`${s.result.resyncs} resyncs`);
    if (s.result.streamErrors > 0) extra.push(`${s.result.streamErrors} stream errors (${s.result.firstError})`);
    extra.push(`${fmtInt(s.result.fromAck.negative)} of ${fmtInt(s.result.received)} events arrived before the Set's acknowledgement (min ${fmtMs(s.result.fromAck.min)} ms)`);
    extra.push(`time for a write to reach every watcher, from the ack: p50 ${fmtMs(s.result.fullFanoutP50Ms)} ms, max ${fmtMs(s.result.fullFanoutMaxMs)} ms`);
    extra.push(`server RSS ${fmtMiB(s.rssBeforeBytes)} -> ${fmtMiB(s.rssAfterBytes)}`);
    out.push(`  ${fmtInt(s.watchers)} watchers: ${extra.join("; ")}`);
  }
  out.push(
    "ack->event: receipt of the event minus receipt of the Set response, both on the watchers' process clock (negative: the event came first). " +
      "send->event: from sending the Set. client CPU: the watchers' process (one thread decoding every event), over the writes.",
  );
  out.push(
    "RSS/watcher: server VmRSS with the watchers open and idle 3 s, minus before opening, / watchers (connections included). " +
      "live/watcher: V8 heap used + external after a forced full GC (bench/server-probe.js), same difference.",
  );
  return out.join("\n");
}
