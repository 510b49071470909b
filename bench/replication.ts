/**
 * Replication sections of `npm run bench`.
 *
 * Lag: a primary (server CPU) and one replica (load CPU), each its own
 * process, `keys` keys preloaded and fully synced. For each scenario a writer
 * process (bench/writer.ts, load CPU, shared with the replica) writes to the
 * primary while this process asks the primary for Info every `sampleMs` and
 * records replicas[0].lag_revisions and lag_ms. Scenarios: Set at the maximum
 * rate (closed loop), SetMany at the maximum rate, Set at a fixed rate
 * (given, or half the maximum Set rate just measured), and the performance
 * issue's target: SetMany(`targetBatch`) paced open loop at `targetRate` keys/s
 * (what a client pushing 20,000 writes/s does: it batches; the writer cannot
 * issue 20,000 single Sets/s from one shared core). After each: the time
 * until lag_revisions is 0 again; at the end: Digest on both nodes must match.
 *
 * The Info samples are coarse (every `sampleMs`, and lag_ms is the age of the
 * oldest unacknowledged batch, so it includes the ack's trip back). The
 * fixed-rate scenarios also measure lag per write, precisely: the writer
 * watches a probe key on the replica and writes it in every batch (every
 * tenth Set), and times from the primary's answer to the replica's Watch
 * event for that revision, both on the writer's clock (bench/writer.ts says
 * how). That is the lag a client sees: the primary said yes, a reader of the
 * replica can see it.
 *
 * Full resync: a fresh primary (server CPU) loaded with `keys` keys by a
 * writer process (SetMany batches over several connections, load CPU), then a
 * replica process started (load CPU), timed from its spawn until its Info shows
 * link_state "streaming" and as many keys as the primary. Then Digest on both.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { InfoResponse } from "../src/gen/ripplecache/v1/cache_pb.js";
import { CacheClient } from "../src/client/client.js";
import { keyName } from "./common.js";
import { fmtInt, fmtMiB, fmtMs, fmtPct, fmtSec, table } from "./format.js";
import { command, exited, machineBusyMs, pct, processCpuMs, ROOT, rssBytes, sleep, startServer, track, type Pinning, type Server } from "./procs.js";
import type { WriterConfig, WriterMessage, WriterResult } from "./writer.js";

const WRITER = join(ROOT, "dist/bench/writer.js");

function log(text: string): void {
  process.stderr.write(`bench: ${text}\n`);
}

/** Runs bench/writer.js to completion; `hooks` are called on its measure-start/-end messages. */
async function runWriter(cpu: number | undefined, config: WriterConfig, hooks: { start?: (pid: number) => void; end?: (pid: number) => void } = {}, timeoutMs = 600_000): Promise<WriterResult> {
  const [cmd, args] = command(cpu, [process.execPath, WRITER, JSON.stringify(config)]);
  const child = track(spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "inherit", "pipe", "ipc"] }));
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => stderr.push(line));
  try {
    return await new Promise<WriterResult>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`writer did not finish within ${timeoutMs} ms`)), timeoutMs);
      child.on("message", (m: WriterMessage) => {
        if (m.type === "measure-start") hooks.start?.(child.pid!);
        else if (m.type === "measure-end") hooks.end?.(child.pid!);
        else if (m.type === "result") {
          clearTimeout(timer);
          res(m.result);
        } else if (m.type === "error") {
          clearTimeout(timer);
          rej(new Error(`writer: ${m.message}`));
        }
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        rej(new Error(`writer exited (${signal ?? code}) without a result:\n${stderr.slice(-5).join("\n")}`));
      });
    });
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      const exit = await Promise.race([exited(child), sleep(5000).then(() => undefined)]);
      if (exit === undefined) child.kill("SIGKILL");
    }
  }
}

const client = (server: Server) => new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 30_000, followPrimary: false });

/** Polls `check` every `everyMs` until it returns a value, or throws after `timeoutMs`. */
async function until<T>(what: string, timeoutMs: number, everyMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      lastError = err;
    }
    if (performance.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms${lastError instanceof Error ? ` (last error: ${lastError.message})` : ""}`);
    }
    await sleep(everyMs);
  }
}

async function digests(primary: CacheClient, replica: CacheClient): Promise<{ match: boolean; revision: number; note: string; ms: number }> {
  const t0 = performance.now();
  for (let attempt = 0; attempt < 5; attempt++) {
    const [p, r] = await Promise.all([primary.admin.digest({}, { timeoutMs: 120_000 }), replica.admin.digest({}, { timeoutMs: 120_000 })]);
    if (p.revision === r.revision) {
      const match = p.digest === r.digest && p.keys === r.keys;
      return { match, revision: Number(p.revision), ms: performance.now() - t0, note: match ? `equal at revision ${p.revision}` : `DIFFERENT at revision ${p.revision}: primary ${p.keys} keys ${p.digest.slice(0, 12)}, replica ${r.keys} keys ${r.digest.slice(0, 12)}` };
    }
    await sleep(200);
  }
  return { match: false, revision: NaN, ms: performance.now() - t0, note: "revisions never matched in 5 tries" };
}

// --- lag ------------------------------------------------------------------------

export interface LagOptions {
  readonly keys: number;
  readonly valueBytes: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly connections: number;
  readonly concurrency: number;
  readonly setManyBatch: number;
  /** Fixed-rate scenario: writes/s; 0 = half the maximum Set rate measured just before. */
  readonly rate: number;
  /** The target scenario: keys/s, written as SetMany of `targetBatch` entries (0 = skip it). */
  readonly targetRate: number;
  readonly targetBatch: number;
  readonly sampleMs: number;
}

export interface Stats {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export type LagScenario =
  | {
      readonly status: "ok";
      readonly name: string;
      readonly mode: "max" | "rate";
      readonly batch: number;
      /** Requested rate (mode "rate"). */
      readonly targetRate: number | undefined;
      readonly writer: WriterResult;
      readonly samples: number;
      /** Samples in which the primary listed no replica, or a replica not streaming. */
      readonly notStreaming: number;
      readonly lagRevisions: Stats;
      readonly lagMs: Stats;
      /** From the end of the writes until lag_revisions was 0. */
      readonly catchUpMs: number | undefined;
      readonly primaryCpu: number | undefined;
      readonly replicaCpu: number | undefined;
      /** CPU used by other processes on the machine over the window, in cores (noise). */
      readonly otherCpu: number | undefined;
    }
  | { readonly status: "failed"; readonly name: string; readonly message: string };

export interface LagResult {
  readonly status: "ok" | "failed";
  readonly message?: string;
  readonly scenarios: LagScenario[];
  readonly digest?: { match: boolean; revision: number; note: string };
  readonly fullResyncs?: number;
  readonly serverStderr: string[];
}

const stats = (values: number[]): Stats => ({ p50: pct(values, 50), p99: pct(values, 99), max: values.length === 0 ? NaN : Math.max(...values) });

export async function runLag(pin: Pinning, opts: LagOptions): Promise<LagResult> {
  const scenarios: LagScenario[] = [];
  let primary: Server | undefined;
  let replica: Server | undefined;
  const clients: CacheClient[] = [];
  try {
    primary = await startServer({ cpu: pin.server });
    const pc = client(primary);
    clients.push(pc);
    const value = new Uint8Array(opts.valueBytes).fill(0x61);
    for (let i = 0; i < opts.keys; i += 1000) {
      const entries = [];
      for (let k = i; k < Math.min(opts.keys, i + 1000); k++) entries.push({ key: keyName(k), value });
      await pc.rpc.setMany({ entries });
    }
    replica = await startServer({ cpu: pin.load, args: ["--replica-of", primary.addr] });
    const rc = client(replica);
    clients.push(rc);
    await until("replica streaming", 60_000, 50, async () => {
      const [p, r] = await Promise.all([pc.info(), rc.info()]);
      return p.replicas[0]?.state === "streaming" && r.linkState === "streaming" && r.keys === p.keys ? true : undefined;
    });
    log(`replication lag: primary with ${opts.keys} keys and its replica are streaming`);

    const scenario = async (name: string, mode: "max" | "rate", batch: number, rate: number): Promise<LagScenario> => {
      const samples: InfoResponse[] = [];
      let sampling = false;
      let sampler: Promise<void> | undefined;
      type Cpu = [number | undefined, number | undefined, number | undefined, number | undefined];
      const readCpu = (writerPid: number): Cpu => [processCpuMs(primary!.pid), processCpuMs(replica!.pid), processCpuMs(writerPid), machineBusyMs()];
      let cpu0: Cpu = [undefined, undefined, undefined, undefined];
      let cpu1: Cpu = [undefined, undefined, undefined, undefined];
      let t0 = 0;
      let t1 = 0;
      const sample = async () => {
        while (sampling) {
          const started = performance.now();
          try {
            samples.push(await pc.info());
          } catch {
            // a missed sample
          }
          await sleep(Math.max(0, opts.sampleMs - (performance.now() - started)));
        }
      };
      const writer = await runWriter(
        pin.load,
        {
          url: primary!.url,
          mode,
          connections: opts.connections,
          concurrency: mode === "max" && batch > 1 ? Math.max(1, Math.floor(opts.concurrency / 4)) : opts.concurrency,
          batch,
          warmupMs: opts.warmupMs,
          durationMs: opts.durationMs,
          rate,
          keys: opts.keys,
          valueBytes: opts.valueBytes,
          probeUrl: mode === "rate" ? replica!.url : undefined,
        },
        {
          start: (pid) => {
            t0 = performance.now();
            cpu0 = readCpu(pid);
            sampling = true;
            sampler = sample();
          },
          end: (pid) => {
            t1 = performance.now();
            cpu1 = readCpu(pid);
            sampling = false;
          },
        },
      );
      sampling = false;
      await sampler;
      let catchUpMs: number | undefined;
      try {
        await until("replica caught up", 60_000, 20, async () => {
          const p = await pc.info();
          return p.replicas[0] !== undefined && p.replicas[0].lagRevisions === 0n ? true : undefined;
        });
        catchUpMs = performance.now() - t1;
      } catch {
        catchUpMs = undefined;
      }
      const wall = t1 - t0;
      const cpu = (i: 0 | 1 | 2 | 3) => (cpu0[i] !== undefined && cpu1[i] !== undefined ? (cpu1[i]! - cpu0[i]!) / wall : undefined);
      const [pCpu, rCpu, wCpu, mCpu] = [cpu(0), cpu(1), cpu(2), cpu(3)];
      const otherCpu = pCpu !== undefined && rCpu !== undefined && wCpu !== undefined && mCpu !== undefined ? Math.max(0, mCpu - pCpu - rCpu - wCpu) : undefined;
      const streaming = samples.filter((s) => s.replicas[0]?.state === "streaming");
      const result: LagScenario = {
        status: "ok",
        name,
        mode,
        batch,
        targetRate: mode === "rate" ? rate : undefined,
        writer,
        samples: samples.length,
        notStreaming: samples.length - streaming.length,
        lagRevisions: stats(streaming.map((s) => Number(s.replicas[0].lagRevisions))),
        lagMs: stats(streaming.map((s) => Number(s.replicas[0].lagMs))),
        catchUpMs,
        primaryCpu: pCpu,
        replicaCpu: rCpu,
        otherCpu,
      };
      log(
        `replication lag: ${name}: ${Math.round(writer.writesPerSec)} writes/s; lag revisions p50 ${result.lagRevisions.p50} p99 ${result.lagRevisions.p99}; ` +
          `lag ms p50 ${result.lagMs.p50} p99 ${result.lagMs.p99}; ${samples.length} samples` +
          (writer.lag === undefined
            ? ""
            : `; answer -> applied on the replica p50 ${writer.lag.p50Ms.toFixed(2)} p99 ${writer.lag.p99Ms.toFixed(2)} max ${writer.lag.maxMs.toFixed(2)} ms (${writer.lag.probes} probes, ${writer.lag.missing} missing)`) +
          (writer.errors > 0 ? `; ${writer.errors} errors (${writer.firstError})` : ""),
      );
      return result;
    };
    const attempt = async (name: string, run: () => Promise<LagScenario>) => {
      try {
        scenarios.push(await run());
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        log(`replication lag: ${name} failed: ${message}`);
        scenarios.push({ status: "failed", name, message });
      }
    };
    const inFlight = opts.connections * opts.concurrency;
    await attempt(`Set, max rate (${inFlight} in flight)`, () => scenario(`Set, max rate (${inFlight} in flight)`, "max", 1, 0));
    const manyInFlight = opts.connections * Math.max(1, Math.floor(opts.concurrency / 4));
    await attempt(`SetMany(${opts.setManyBatch}), max rate`, () => scenario(`SetMany(${opts.setManyBatch}), max rate (${manyInFlight} in flight)`, "max", opts.setManyBatch, 0));
    const maxSet = scenarios[0]?.status === "ok" ? scenarios[0].writer.writesPerSec : NaN;
    const rate = opts.rate > 0 ? opts.rate : Number.isFinite(maxSet) ? Math.max(50, Math.floor(maxSet / 2 / 50) * 50) : 200;
    const rateName = `Set, fixed ${rate}/s${opts.rate > 0 ? "" : " (half the max)"}`;
    await attempt(rateName, () => scenario(rateName, "rate", 1, rate));
    if (opts.targetRate > 0) {
      const targetName = `SetMany(${opts.targetBatch}), fixed ${opts.targetRate} keys/s (${Math.round(opts.targetRate / opts.targetBatch)} calls/s, open loop)`;
      await attempt(targetName, () => scenario(targetName, "rate", opts.targetBatch, opts.targetRate));
    }

    const digest = await digests(pc, rc);
    const info = await pc.info();
    return {
      status: "ok",
      scenarios,
      digest,
      fullResyncs: info.replicas[0] === undefined ? undefined : Number(info.replicas[0].fullResyncs),
      serverStderr: [...new Set([...primary.stderr, ...replica.stderr])].slice(0, 5),
    };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log(`replication lag failed: ${message}`);
    return { status: "failed", message, scenarios, serverStderr: [...new Set([...(primary?.stderr ?? []), ...(replica?.stderr ?? [])])].slice(0, 5) };
  } finally {
    for (const c of clients) c.close();
    await Promise.all([replica?.stop(), primary?.stop()]);
  }
}

// --- full resync ----------------------------------------------------------------------

export interface ResyncOptions {
  readonly keys: number;
  readonly valueBytes: number;
  readonly loadConnections: number;
  readonly loadConcurrency: number;
  readonly loadBatch: number;
  readonly timeoutMs: number;
}

export type ResyncResult =
  | {
      readonly status: "ok";
      readonly keys: number;
      /** Key and value bytes of the dataset. */
      readonly dataBytes: number;
      readonly load: WriterResult;
      readonly loadMs: number;
      /** Primary CPU over the load / its length (1 = one core). */
      readonly loadPrimaryCpu: number | undefined;
      /** Replica spawn -> its Info shows "streaming" and every key. */
      readonly resyncMs: number;
      /** Replica spawn -> it logged "listening". */
      readonly startMs: number;
      /** Replica spawn -> the primary first listed it (in full-resync), and -> listed it streaming (50 ms polling). */
      readonly firstSeenMs: number | undefined;
      readonly primaryStreamingMs: number | undefined;
      readonly keysPerSec: number;
      readonly mbPerSec: number;
      readonly primaryCpuMs: number | undefined;
      readonly replicaCpuMs: number | undefined;
      /** CPU used by other processes over the resync, in cores (noise). */
      readonly otherCpu: number | undefined;
      readonly primaryRssBytes: number | undefined;
      readonly replicaRssBytes: number | undefined;
      readonly digest: { match: boolean; revision: number; note: string; ms: number };
      readonly serverStderr: string[];
    }
  | { readonly status: "failed" | "skipped"; readonly message: string };

export async function runResync(pin: Pinning, opts: ResyncOptions): Promise<ResyncResult> {
  let primary: Server | undefined;
  let replica: Server | undefined;
  const clients: CacheClient[] = [];
  try {
    // Room for every key: key + value + 620 B counted per entry, with a margin.
    const maxMemory = Math.max(256, Math.ceil((opts.keys * (opts.valueBytes + 11 + 620) * 1.5) / 1048576));
    primary = await startServer({ cpu: pin.server, args: ["--max-memory", `${maxMemory}MiB`] });
    const pc = client(primary);
    clients.push(pc);
    log(`full resync: loading ${opts.keys} keys into the primary (SetMany x${opts.loadBatch}, ${opts.loadConnections} connections x ${opts.loadConcurrency} in flight)...`);
    let loadCpu0: number | undefined;
    let loadCpu1: number | undefined;
    const load = await runWriter(
      pin.load,
      {
        url: primary.url,
        mode: "load",
        connections: opts.loadConnections,
        concurrency: opts.loadConcurrency,
        batch: opts.loadBatch,
        warmupMs: 0,
        durationMs: 0,
        rate: 0,
        keys: opts.keys,
        valueBytes: opts.valueBytes,
      },
      { start: () => (loadCpu0 = processCpuMs(primary!.pid)), end: () => (loadCpu1 = processCpuMs(primary!.pid)) },
    );
    const loadPrimaryCpu = loadCpu0 !== undefined && loadCpu1 !== undefined ? (loadCpu1 - loadCpu0) / load.elapsedMs : undefined;
    if (load.errors > 0) throw new Error(`loading the primary: ${load.errors} errors (${load.firstError})`);
    const loaded = await pc.info();
    if (Number(loaded.keys) !== opts.keys) throw new Error(`the primary holds ${loaded.keys} keys after the load, not ${opts.keys} (evictions: ${loaded.evictions})`);
    log(`full resync: primary loaded in ${(load.elapsedMs / 1000).toFixed(1)} s; starting the replica`);
    let dataBytes = 0;
    for (let i = 0; i < opts.keys; i++) dataBytes += keyName(i).length + opts.valueBytes;

    const primaryCpu0 = processCpuMs(primary.pid);
    const machine0 = machineBusyMs();
    const replicaStart = startServer({ cpu: pin.load, args: ["--replica-of", primary.addr, "--max-memory", `${maxMemory}MiB`] });
    const spawnedAt = performance.now();
    let firstSeenMs: number | undefined;
    let primaryStreamingMs: number | undefined;
    // The primary's view while the replica starts: when it first lists it, and when streaming.
    // Polled until it shows streaming, for up to 10 s after the replica has every key: a busy
    // primary's Info can lag the replica's, and stopping with the replica left that time unknown.
    let watchUntil = Number.POSITIVE_INFINITY;
    const primaryWatch = (async () => {
      while (primaryStreamingMs === undefined && performance.now() < watchUntil) {
        try {
          const p = await pc.info();
          const r = p.replicas[0];
          if (r !== undefined && firstSeenMs === undefined) firstSeenMs = performance.now() - spawnedAt;
          if (r?.state === "streaming" && primaryStreamingMs === undefined) primaryStreamingMs = performance.now() - spawnedAt;
        } catch {
          // keep polling
        }
        await sleep(50);
      }
    })();
    try {
      replica = await replicaStart;
    } catch (err) {
      watchUntil = 0;
      await primaryWatch;
      throw err;
    }
    const startMs = replica.listeningAt - replica.spawnedAt;
    const rc = client(replica);
    clients.push(rc);
    let resyncMs: number;
    try {
      resyncMs = await until("replica streaming with every key", opts.timeoutMs, 50, async () => {
        const r = await rc.info();
        return r.linkState === "streaming" && Number(r.keys) === opts.keys ? performance.now() - replica!.spawnedAt : undefined;
      });
    } catch (err) {
      watchUntil = 0;
      await primaryWatch;
      throw err;
    }
    // Awaited after the CPU and memory readings below, which the extra polling must not stretch.
    watchUntil = performance.now() + 10_000;
    const primaryCpuMs = primaryCpu0 === undefined ? undefined : (processCpuMs(primary.pid) ?? NaN) - primaryCpu0;
    const replicaCpuMs = processCpuMs(replica.pid);
    const machine1 = machineBusyMs();
    const otherCpu =
      primaryCpuMs !== undefined && replicaCpuMs !== undefined && machine0 !== undefined && machine1 !== undefined
        ? Math.max(0, (machine1 - machine0 - primaryCpuMs - replicaCpuMs) / resyncMs)
        : undefined;
    const primaryRssBytes = rssBytes(primary.pid);
    const replicaRssBytes = rssBytes(replica.pid);
    log(`full resync: replica streaming with ${opts.keys} keys ${(resyncMs / 1000).toFixed(1)} s after its start; comparing digests...`);
    await primaryWatch;
    const digest = await digests(pc, rc);
    return {
      status: "ok",
      keys: opts.keys,
      dataBytes,
      load,
      loadMs: load.elapsedMs,
      loadPrimaryCpu,
      resyncMs,
      startMs,
      firstSeenMs,
      primaryStreamingMs,
      keysPerSec: (opts.keys / resyncMs) * 1000,
      mbPerSec: dataBytes / 1e6 / (resyncMs / 1000),
      primaryCpuMs,
      replicaCpuMs,
      otherCpu,
      primaryRssBytes,
      replicaRssBytes,
      digest,
      serverStderr: [...new Set([...primary.stderr, ...replica.stderr])].slice(0, 5),
    };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log(`full resync failed: ${message}`);
    return { status: "failed", message };
  } finally {
    for (const c of clients) c.close();
    await Promise.all([replica?.stop(), primary?.stop()]);
  }
}

// --- report -------------------------------------------------------------------------

const cpuNote = (pin: Pinning, what: string) => (pin.server === undefined ? "(not pinned)" : `(primary on CPU ${pin.server}; ${what} on CPU ${pin.load})`);

export function formatLag(r: LagResult, opts: LagOptions, pin: Pinning): string {
  const out: string[] = [];
  out.push(
    `Replication lag: a primary and 1 replica, separate processes ${cpuNote(pin, "replica and writer")}; ${fmtInt(opts.keys)} keys, ${opts.valueBytes}-byte values; ` +
      `primary Info every ${opts.sampleMs} ms over a ${opts.durationMs} ms window after ${opts.warmupMs} ms warm-up; gRPC writes over ${opts.connections} connections`,
  );
  const ok = r.scenarios.filter((s): s is Extract<LagScenario, { status: "ok" }> => s.status === "ok");
  const body = ok.map((s) => [
    s.name,
    fmtInt(s.writer.writesPerSec),
    fmtMs(s.writer.p50Ms),
    fmtInt(s.lagRevisions.p50),
    fmtInt(s.lagRevisions.p99),
    fmtInt(s.lagRevisions.max),
    fmtInt(s.lagMs.p50),
    fmtInt(s.lagMs.p99),
    fmtInt(s.lagMs.max),
    s.catchUpMs === undefined ? "never" : fmtInt(s.catchUpMs),
    fmtPct(s.primaryCpu),
    fmtPct(s.replicaCpu),
    fmtPct(s.writer.cpu),
    fmtPct(s.otherCpu),
    `${s.samples}${s.notStreaming > 0 ? ` (${s.notStreaming} not streaming)` : ""}`,
    s.writer.lag === undefined ? "-" : fmtMs(s.writer.lag.p50Ms),
    s.writer.lag === undefined ? "-" : fmtMs(s.writer.lag.p99Ms),
    s.writer.lag === undefined ? "-" : fmtMs(s.writer.lag.maxMs),
    s.writer.lag === undefined ? "-" : `${s.writer.lag.probes}${s.writer.lag.missing > 0 ? ` (${s.writer.lag.missing} missing)` : ""}`,
    String(s.writer.errors),
  ]);
  const header = [
    "Writes",
    "writes/s",
    "call p50 ms",
    "lag rev p50",
    "p99",
    "max",
    "lag ms p50",
    "p99",
    "max",
    "catch-up ms",
    "primary CPU",
    "replica CPU",
    "writer CPU",
    "other CPU",
    "samples",
    "applied ms p50",
    "p99",
    "max",
    "probes",
    "errors",
  ];
  if (body.length > 0) out.push(table(header, body, 1));
  for (const s of r.scenarios) if (s.status === "failed") out.push(`${s.name}: FAILED: ${s.message}`);
  if (r.status === "failed") out.push(`FAILED: ${r.message}`);
  if (r.digest !== undefined) out.push(`  Digest on primary and replica after the scenarios: ${r.digest.note}; full resyncs of the replica: ${r.fullResyncs ?? "?"}`);
  out.push(
    "lag rev: replicas[0].lag_revisions (primary revision - replica's acked revision); lag ms: replicas[0].lag_ms (age of the oldest change sent and not acknowledged). " +
      "catch-up: from the end of the window until lag_revisions was 0. " +
      "applied ms: per probe write, from the primary's answer to the replica's Watch event for its revision, on the writer's clock (fixed-rate scenarios).",
  );
  return out.join("\n");
}

export function formatResync(r: ResyncResult, opts: ResyncOptions, pin: Pinning): string {
  if (r.status !== "ok") return `Full resync: ${r.status === "failed" ? "FAILED: " : ""}${r.message}`;
  const mb = r.dataBytes / 1e6;
  const out: string[] = [];
  out.push(`Full resync: ${fmtInt(r.keys)} keys, ${opts.valueBytes}-byte values = ${mb.toFixed(1)} MB of keys + values (MB = 10^6 bytes) ${cpuNote(pin, "loader, then replica")}`);
  out.push(
    `  load the primary:  ${fmtSec(r.loadMs)} = ${fmtInt(r.load.writesPerSec)} keys/s, ${(mb / (r.loadMs / 1000)).toFixed(1)} MB/s ` +
      `(SetMany x${opts.loadBatch}, ${opts.loadConnections} connections x ${opts.loadConcurrency} in flight; call p50 ${fmtMs(r.load.p50Ms)} ms; primary CPU ${fmtPct(r.loadPrimaryCpu)}, loader CPU ${fmtPct(r.load.cpu)})`,
  );
  out.push(
    `  replica start -> streaming with every key: ${fmtSec(r.resyncMs)} = ${fmtInt(r.keysPerSec)} keys/s, ${r.mbPerSec.toFixed(1)} MB/s ` +
      `(listening after ${fmtSec(r.startMs)}; the primary listed it after ${fmtSec(r.firstSeenMs)} and showed it streaming after ${fmtSec(r.primaryStreamingMs)})`,
  );
  out.push(
    `  CPU meanwhile: primary ${fmtSec(r.primaryCpuMs)}, replica ${fmtSec(r.replicaCpuMs)} (start-up included), other processes ${fmtPct(r.otherCpu)} of a core; ` +
      `RSS after: primary ${fmtMiB(r.primaryRssBytes)}, replica ${fmtMiB(r.replicaRssBytes)}`,
  );
  out.push(`  Digest on primary and replica: ${r.digest.note} (${fmtSec(r.digest.ms)})`);
  return out.join("\n");
}
