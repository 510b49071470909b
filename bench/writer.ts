/**
 * Write load for the replication sections of `npm run bench` (bench/replication.ts
 * starts it as a child process on its own core). gRPC over `node:http2`
 * directly, `connections` sessions, requests encoded once up front: like
 * h2load, the writer spends its CPU on HTTP/2 and not on protobuf-es,
 * because it shares its core with the replica whose lag is measured (with a
 * connect-node client, SetMany(100) at 20,000 keys/s took 60% of that core).
 * Of an answer it reads only the revision it needs (`answerRevision`).
 *
 * Modes:
 * - "max": closed loop, `concurrency` calls in flight per connection, Set
 *   (batch 1) or SetMany of `batch` entries, random keys of `keys`; warm-up,
 *   then a measured window.
 * - "rate": open loop at `rate` writes/s (keys written per second: Set, or
 *   SetMany of `batch` entries at rate/batch calls/s), issued on a 5 ms tick
 *   and spread over the connections; at most `concurrency` x `connections`
 *   in flight (when that cap holds calls back, the achieved rate shows it).
 * - "load": writes keys 0..keys-1 once, SetMany batches of `batch`, as fast as
 *   `connections` x `concurrency` calls in flight allow.
 *
 * Replication lag probe (`probeUrl`, the replica's URL, "rate" mode): the
 * writer keeps a Watch on the replica for one key, PROBE_KEY, and makes every
 * SetMany (or every PROBE_EVERY-th Set) write that key as its last entry. The
 * primary's answer carries the probe's revision R; the replica's Watch event
 * for R arrives once the replica applied the batch (its watch hub hears a
 * change only after CacheStore.applyChange). Lag of one write = arrival of
 * the event - arrival of the answer, both on this process's clock, so no
 * clock sync is involved and the figure is what a client sees: "the primary
 * said yes" until "a reader of the replica can see it". It includes the
 * replica's Watch delivery (one event per batch, small) and this process's
 * own scheduling delays on the shared core, so it is an upper bound on the
 * replica's apply lag. An event that comes before the answer counts as 0.
 * Probes with no event within 2 s after the window are counted as missing.
 * With LAG_DUMP=FILE in its environment the writer also watches the probe on
 * the primary and writes every probe (ms into the window, lag ms on the
 * replica, the same for the primary's own Watch; the first line the window's
 * start as epoch ms),
 * to line lag spikes up with other processes' logs (e.g. --trace-gc).
 *
 * Messages on the IPC channel: "ready" (connections open), "measure-start",
 * "measure-end", then "result" or "error".
 */
import { performance } from "node:perf_hooks";
import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "../src/client/http2-sessions.js";
import {
  CacheService,
  SetManyRequestSchema,
  SetRequestSchema,
  type SetRequest,
} from "../src/gen/ripplecache/v1/cache_pb.js";
import { keyName } from "./common.js";

export interface WriterConfig {
  readonly url: string;
  readonly mode: "max" | "rate" | "load";
  readonly connections: number;
  readonly concurrency: number;
  /** Entries per call: 1 = Set, more = SetMany. */
  readonly batch: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Writes per second ("rate"). */
  readonly rate: number;
  readonly keys: number;
  readonly valueBytes: number;
  /** The replica's URL: measure replication lag with a watched probe key (mode "rate"). */
  readonly probeUrl?: string;
}

/** Replica apply lag seen by the writer, ms (see the file header). */
export interface ProbeLag {
  /** Probe writes answered by the primary within the window. */
  readonly probes: number;
  /** Of those, how many the replica's Watch never reported. */
  readonly missing: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface WriterResult {
  /** Keys written in the measured window (entries, not calls). */
  readonly writes: number;
  readonly calls: number;
  readonly elapsedMs: number;
  readonly writesPerSec: number;
  /** Call latency, ms. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  /** This process's CPU over the window / its length (1 = one core). */
  readonly cpu: number;
  /** With `probeUrl`. */
  readonly lag?: ProbeLag;
}

/** The key every probe write sets (kept out of keyName's range). */
const PROBE_KEY = "bench:lag-probe";
/** In Set mode, one call in this many is a probe (SetMany: every call). */
const PROBE_EVERY = 10;

export type WriterMessage =
  | { readonly type: "ready" }
  | { readonly type: "measure-start" }
  | { readonly type: "measure-end" }
  | { readonly type: "result"; readonly result: WriterResult }
  | { readonly type: "error"; readonly message: string };

function send(message: WriterMessage): void {
  process.send?.(message);
}

function quantile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** A gRPC frame (uncompressed) of a message's bytes. */
function frame(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out[0] = 0;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** One unary gRPC call with an encoded request frame; resolves with the answer's message bytes, rejects on a non-OK status. */
function unary(session: http2.ClientHttp2Session, path: string, requestFrame: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("trailers", (t) => {
      if (t["grpc-status"] !== "0") {
        reject(new Error(`grpc-status ${String(t["grpc-status"])}: ${String(t["grpc-message"] ?? "")}`));
        return;
      }
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      if (body.length < 5 || body[0] !== 0) {
        reject(new Error("the answer is not one uncompressed gRPC frame"));
        return;
      }
      resolve(body.subarray(5, 5 + body.readUInt32BE(1)));
    });
    req.on("error", reject);
    req.end(requestFrame);
  });
}

/** Reads a varint at `p`: [value, next position]. */
function varint(b: Buffer, p: number): [number, number] {
  let v = 0;
  for (let scale = 1; ; scale *= 0x80) {
    const byte = b[p++];
    v += (byte & 0x7f) * scale;
    if (byte < 0x80) return [v, p];
  }
}

/**
 * SetResponse.revision (field 2) of an encoded SetResponse, or with `many` of
 * the last SetManyResponse.results (field 1); 0 when absent. Our server's
 * answers only, so no checks beyond what a wrong answer would show.
 */
function answerRevision(b: Buffer, many: boolean): number {
  let p = 0;
  let end = b.length;
  if (many) {
    let last: [number, number] = [0, 0];
    while (p < b.length) {
      const [tag, q] = varint(b, p);
      const [len, r] = tag & 7 ? varint(b, q) : [0, q];
      if (tag === 0x0a) last = [r, r + len];
      p = tag & 7 ? r + len : varint(b, q)[1];
    }
    [p, end] = last;
  }
  let revision = 0;
  while (p < end) {
    const [tag, q] = varint(b, p);
    if ((tag & 7) !== 0) return revision;
    const [v, r] = varint(b, q);
    if (tag === 0x10) revision = v;
    p = r;
  }
  return revision;
}

const SET = "/ripplecache.v1.CacheService/Set";
const SET_MANY = "/ripplecache.v1.CacheService/SetMany";

async function run(config: WriterConfig): Promise<WriterResult> {
  const sessions: http2.ClientHttp2Session[] = [];
  for (let c = 0; c < config.connections; c++) {
    const session = http2.connect(config.url);
    session.on("error", () => {});
    sessions.push(session);
  }
  await Promise.all(sessions.map((s) => new Promise<void>((res, rej) => (s.connecting ? s.once("connect", () => res()).once("error", rej) : res()))));
  const closeSessions = () => {
    for (const s of sessions) s.destroy();
  };

  const value = new Uint8Array(config.valueBytes);
  for (let i = 0; i < value.length; i++) value[i] = (i * 31 + 7) & 0xff;
  let seed = 0x2545f491;
  const random = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 4294967296;
  };

  let measuring = false;
  let stopping = false;
  let writes = 0;
  let calls = 0;
  let errors = 0;
  let firstError: string | undefined;
  let latencies: number[] = [];
  const timed = async <R>(call: () => Promise<R>, entries: number, onAnswer?: (answer: R, at: number) => void) => {
    const t0 = performance.now();
    let answer: R;
    try {
      answer = await call();
    } catch (err) {
      if (measuring) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      return;
    }
    if (measuring) {
      const at = performance.now();
      latencies.push(at - t0);
      writes += entries;
      calls++;
      onAnswer?.(answer, at);
    }
  };

  send({ type: "ready" });

  if (config.mode === "load") {
    const requests = (from: number): { frame: Buffer; entries: number } => {
      const entries: SetRequest[] = [];
      for (let k = from; k < Math.min(config.keys, from + config.batch); k++) entries.push(create(SetRequestSchema, { key: keyName(k), value }));
      return { frame: frame(toBinary(SetManyRequestSchema, create(SetManyRequestSchema, { entries }))), entries: entries.length };
    };
    let next = 0;
    measuring = true;
    send({ type: "measure-start" });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const worker = async (session: http2.ClientHttp2Session) => {
      while (next < config.keys) {
        const from = next;
        next += config.batch;
        const req = requests(from);
        await timed(() => unary(session, SET_MANY, req.frame), req.entries);
        if (errors > 0) return;
      }
    };
    const workers: Promise<void>[] = [];
    for (const session of sessions) for (let i = 0; i < config.concurrency; i++) workers.push(worker(session));
    await Promise.all(workers);
    const elapsedMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    send({ type: "measure-end" });
    closeSessions();
    const sorted = Float64Array.from(latencies).sort();
    return { writes, calls, elapsedMs, writesPerSec: (writes / elapsedMs) * 1000, p50Ms: quantile(sorted, 50), p99Ms: quantile(sorted, 99), errors, firstError, cpu: (cpu.user + cpu.system) / 1000 / elapsedMs };
  }

  // Requests built up front, so the writer spends its CPU on the RPCs.
  const setMessages: SetRequest[] = [];
  for (let i = 0; i < Math.min(config.keys, 65_536); i++) setMessages.push(create(SetRequestSchema, { key: keyName(Math.floor(random() * config.keys)), value }));
  const probing = config.probeUrl !== undefined && config.mode === "rate";
  // The probe's entry (the last of every SetMany, or every PROBE_EVERY-th Set).
  const probeRequest = create(SetRequestSchema, { key: PROBE_KEY, value });
  if (probing && config.batch === 1) for (let i = 0; i < setMessages.length; i += PROBE_EVERY) setMessages[i] = probeRequest;
  const setRequests = config.batch > 1 ? [] : setMessages.map((m) => ({ frame: frame(toBinary(SetRequestSchema, m)), probe: m === probeRequest }));
  const manyRequests: Buffer[] = [];
  if (config.batch > 1) {
    for (let i = 0; i < 1024; i++) {
      const entries: SetRequest[] = [];
      for (let k = 0; k < config.batch; k++) entries.push(probing && k === config.batch - 1 ? probeRequest : setMessages[Math.floor(random() * setMessages.length)]);
      manyRequests.push(frame(toBinary(SetManyRequestSchema, create(SetManyRequestSchema, { entries }))));
    }
  }

  // Probe revision -> when the primary's answer arrived / when the replica's Watch reported it.
  const answeredAt = new Map<number, number>();
  const appliedAt = new Map<number, number>();
  // With LAG_DUMP, the probe is watched on the primary too: a late event there as well says the
  // primary stalled (or its sending did), one late only on the replica points at the replica or link.
  const primaryAt = new Map<number, number>();
  const probeAbort = new AbortController();
  const probeManagers: Http2SessionManager[] = [];
  const probeStreams: Promise<void>[] = [];
  // Kept, not thrown, so that a failed Watch is reported at the end instead of as an unhandled rejection.
  let probeError: unknown;
  const watchProbe = async (url: string, seen: Map<number, number>): Promise<void> => {
    const manager = new GuardedHttp2Sessions(url);
    probeManagers.push(manager);
    const client = createClient(CacheService, createGrpcTransport({ baseUrl: url, sessionManager: manager }));
    const stream = client.watch({ target: { case: "key", value: PROBE_KEY } }, { signal: probeAbort.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
    // Writes start only once the Watch is established, or early probes would be missing.
    const first = await stream.next();
    if (first.done || first.value.kind.case !== "created") throw new Error(`the probe Watch on ${url} did not start with created`);
    probeStreams.push(
      (async () => {
        try {
          for (let next = await stream.next(); !next.done; next = await stream.next()) {
            const at = performance.now();
            const k = next.value.kind;
            if (k.case === "events") for (const e of k.value.events) seen.set(Number(e.revision), at);
            else if (k.case === "resync") throw new Error(`the probe Watch on ${url} was resynced (${k.value.reason})`);
          }
        } catch (err) {
          if (!probeAbort.signal.aborted) probeError = err;
        }
      })(),
    );
  };
  if (probing) {
    await watchProbe(config.probeUrl!, appliedAt);
    if (process.env.LAG_DUMP) await watchProbe(config.url, primaryAt);
  }
  const onSetMany = probing ? (answer: Buffer, at: number) => answeredAt.set(answerRevision(answer, true), at) : undefined;
  const onSet = probing ? (answer: Buffer, at: number, probe: boolean) => (probe ? answeredAt.set(answerRevision(answer, false), at) : undefined) : undefined;

  let pick = 0;
  const oneCall = (session: http2.ClientHttp2Session) => {
    if (config.batch > 1) return timed(() => unary(session, SET_MANY, manyRequests[pick++ % manyRequests.length]), config.batch, onSetMany);
    const req = setRequests[pick++ % setRequests.length];
    return timed(() => unary(session, SET, req.frame), 1, onSet === undefined ? undefined : (answer: Buffer, at: number) => onSet(answer, at, req.probe));
  };

  let cpuStart = process.cpuUsage();
  let measureStart = 0;
  let measureEnd = 0;
  const phases = new Promise<void>((resolve) => {
    setTimeout(() => {
      measuring = true;
      latencies = [];
      writes = 0;
      calls = 0;
      cpuStart = process.cpuUsage();
      measureStart = performance.now();
      send({ type: "measure-start" });
      setTimeout(() => {
        measureEnd = performance.now();
        measuring = false;
        stopping = true;
        send({ type: "measure-end" });
        resolve();
      }, config.durationMs);
    }, config.warmupMs);
  });

  const inFlight = new Set<Promise<void>>();
  if (config.mode === "max") {
    const worker = async (session: http2.ClientHttp2Session) => {
      while (!stopping) await oneCall(session);
    };
    for (const session of sessions) for (let i = 0; i < config.concurrency; i++) inFlight.add(worker(session));
    await phases;
  } else {
    const cap = config.concurrency * config.connections;
    const t0 = performance.now();
    let issued = 0;
    let rr = 0;
    // `issued` and `due` count keys: a SetMany of `batch` keys is due once that many are.
    const tick = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * config.rate);
      while (issued + config.batch <= due && inFlight.size < cap && !stopping) {
        issued += config.batch;
        const p: Promise<void> = oneCall(sessions[rr++ % sessions.length]).then(() => {
          inFlight.delete(p);
        });
        inFlight.add(p);
      }
      // Calls held back by the cap are not owed later: the schedule moves on.
      if (inFlight.size >= cap) issued = due;
    }, 5);
    await phases;
    clearInterval(tick);
  }
  const cpu = process.cpuUsage(cpuStart);
  const elapsedMs = measureEnd - measureStart;
  const result = { writes, calls, errors, firstError };
  await Promise.all(inFlight);
  closeSessions();
  let lag: ProbeLag | undefined;
  if (probing) {
    const seen = () => [...answeredAt.keys()].every((r) => appliedAt.has(r));
    for (const deadline = performance.now() + 2000; !seen() && performance.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
    probeAbort.abort();
    await Promise.all(probeStreams);
    for (const m of probeManagers) m.abort();
    if (probeError !== undefined) throw probeError;
    const lags: number[] = [];
    for (const [revision, answered] of answeredAt) {
      const applied = appliedAt.get(revision);
      if (applied !== undefined) lags.push(Math.max(0, applied - answered));
    }
    if (process.env.LAG_DUMP) {
      const rows = [...answeredAt].map(
        ([revision, answered]) => `${(answered - measureStart).toFixed(1)} ${((appliedAt.get(revision) ?? NaN) - answered).toFixed(2)} ${((primaryAt.get(revision) ?? NaN) - answered).toFixed(2)}`,
      );
      (await import("node:fs")).writeFileSync(process.env.LAG_DUMP, [`# measure start epoch ms ${(performance.timeOrigin + measureStart).toFixed(1)}`, ...rows].join("\n"));
    }
    const sortedLags = Float64Array.from(lags).sort();
    lag = {
      probes: answeredAt.size,
      missing: answeredAt.size - lags.length,
      p50Ms: quantile(sortedLags, 50),
      p99Ms: quantile(sortedLags, 99),
      maxMs: sortedLags.length === 0 ? NaN : sortedLags[sortedLags.length - 1],
    };
  }
  const sorted = Float64Array.from(latencies).sort();
  return {
    ...result,
    lag,
    elapsedMs,
    writesPerSec: (result.writes / elapsedMs) * 1000,
    p50Ms: quantile(sorted, 50),
    p99Ms: quantile(sorted, 99),
    cpu: (cpu.user + cpu.system) / 1000 / elapsedMs,
  };
}

const config = JSON.parse(process.argv[2] ?? "{}") as WriterConfig;
process.on("disconnect", () => process.exit(2));
run(config).then(
  (result) => finish({ type: "result", result }, 0),
  (err: unknown) => {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`writer failed: ${message}\n`);
    finish({ type: "error", message }, 1);
  },
);

function finish(message: WriterMessage, code: number): void {
  if (process.send === undefined) {
    process.stdout.write(`${JSON.stringify(message)}\n`);
    process.exit(code);
  }
  process.send(message, () => process.exit(code));
}
