/**
 * Write load for the replication sections of `npm run bench` (bench/replication.ts
 * starts it as a child process on its own core). gRPC, one HTTP/2 connection
 * per Http2SessionManager.
 *
 * Modes:
 * - "max": closed loop, `concurrency` calls in flight per connection, Set
 *   (batch 1) or SetMany of `batch` entries, random keys of `keys`; warm-up,
 *   then a measured window.
 * - "rate": open loop at `rate` writes/s (Set), issued on a 5 ms tick and
 *   spread over the connections; at most `concurrency` x `connections` in
 *   flight (when that cap holds calls back, the achieved rate shows it).
 * - "load": writes keys 0..keys-1 once, SetMany batches of `batch`, as fast as
 *   `connections` x `concurrency` calls in flight allow.
 *
 * Messages on the IPC channel: "ready" (connections open), "measure-start",
 * "measure-end", then "result" or "error".
 */
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { CacheService, SetManyRequestSchema, SetRequestSchema, type SetManyRequest, type SetRequest } from "../src/gen/ripplecache/v1/cache_pb.js";
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
}

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

async function run(config: WriterConfig): Promise<WriterResult> {
  const managers: Http2SessionManager[] = [];
  const clients: Client<typeof CacheService>[] = [];
  for (let c = 0; c < config.connections; c++) {
    const sessionManager = new Http2SessionManager(config.url);
    managers.push(sessionManager);
    clients.push(createClient(CacheService, createGrpcTransport({ baseUrl: config.url, sessionManager })));
  }
  await Promise.all(clients.map((c) => c.info({})));

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
  const timed = async (call: () => Promise<unknown>, entries: number) => {
    const t0 = performance.now();
    try {
      await call();
    } catch (err) {
      if (measuring) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      return;
    }
    if (measuring) {
      latencies.push(performance.now() - t0);
      writes += entries;
      calls++;
    }
  };

  send({ type: "ready" });

  if (config.mode === "load") {
    const requests = (from: number): SetManyRequest => {
      const entries: SetRequest[] = [];
      for (let k = from; k < Math.min(config.keys, from + config.batch); k++) entries.push(create(SetRequestSchema, { key: keyName(k), value }));
      return create(SetManyRequestSchema, { entries });
    };
    let next = 0;
    measuring = true;
    send({ type: "measure-start" });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const worker = async (client: Client<typeof CacheService>) => {
      while (next < config.keys) {
        const from = next;
        next += config.batch;
        const req = requests(from);
        await timed(() => client.setMany(req), req.entries.length);
        if (errors > 0) return;
      }
    };
    const workers: Promise<void>[] = [];
    for (const client of clients) for (let i = 0; i < config.concurrency; i++) workers.push(worker(client));
    await Promise.all(workers);
    const elapsedMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    send({ type: "measure-end" });
    for (const m of managers) m.abort();
    const sorted = Float64Array.from(latencies).sort();
    return { writes, calls, elapsedMs, writesPerSec: (writes / elapsedMs) * 1000, p50Ms: quantile(sorted, 50), p99Ms: quantile(sorted, 99), errors, firstError, cpu: (cpu.user + cpu.system) / 1000 / elapsedMs };
  }

  // Requests built up front, so the writer spends its CPU on the RPCs.
  const setRequests: SetRequest[] = [];
  for (let i = 0; i < Math.min(config.keys, 65_536); i++) setRequests.push(create(SetRequestSchema, { key: keyName(Math.floor(random() * config.keys)), value }));
  const manyRequests: SetManyRequest[] = [];
  if (config.batch > 1) {
    for (let i = 0; i < 1024; i++) {
      const entries: SetRequest[] = [];
      for (let k = 0; k < config.batch; k++) entries.push(setRequests[Math.floor(random() * setRequests.length)]);
      manyRequests.push(create(SetManyRequestSchema, { entries }));
    }
  }
  let pick = 0;
  const oneCall = (client: Client<typeof CacheService>) =>
    config.batch > 1
      ? timed(() => client.setMany(manyRequests[pick++ % manyRequests.length]), config.batch)
      : timed(() => client.set(setRequests[pick++ % setRequests.length]), 1);

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
    const worker = async (client: Client<typeof CacheService>) => {
      while (!stopping) await oneCall(client);
    };
    for (const client of clients) for (let i = 0; i < config.concurrency; i++) inFlight.add(worker(client));
    await phases;
  } else {
    const cap = config.concurrency * config.connections;
    const t0 = performance.now();
    let issued = 0;
    let rr = 0;
    const tick = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) / 1000) * config.rate);
      while (issued < due && inFlight.size < cap && !stopping) {
        issued++;
        const p: Promise<void> = oneCall(clients[rr++ % clients.length]).then(() => {
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
  for (const m of managers) m.abort();
  const sorted = Float64Array.from(latencies).sort();
  return {
    ...result,
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
