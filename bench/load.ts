/**
 * Load generator for `npm run bench` (bench/run.ts starts it as a child process
 * on its own core, one process per measurement).
 *
 * It opens `connections` HTTP/2 connections (each transport has its own
 * Http2SessionManager, so each is one TCP connection) and runs `concurrency`
 * closed-loop workers per connection: each worker issues one call, waits for
 * the answer, and issues the next. A warm-up phase runs first; then only calls
 * that complete inside the measured window are counted.
 *
 * Input: one JSON argument (LoadConfig). Output: messages on the IPC channel
 * ("ready", "measure-start", "measure-end", "result"), so the parent can sample
 * the server's CPU time over exactly the measured window.
 */
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { keyName, percentile, type LoadConfig, type LoadMessage, type LoadResult } from "./common.js";
import {
  CacheService,
  GetManyRequestSchema,
  GetRequestSchema,
  SetRequestSchema,
  type GetManyRequest,
  type GetRequest,
  type SetRequest,
} from "../src/gen/ripplecache/v1/cache_pb.js";

/** Small, fast, deterministic PRNG (xorshift32), so key choice costs the client little. */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

function send(message: LoadMessage): void {
  process.send?.(message);
}

async function run(config: LoadConfig): Promise<LoadResult> {
  const managers: Http2SessionManager[] = [];
  const clients: Client<typeof CacheService>[] = [];
  for (let c = 0; c < config.connections; c++) {
    const sessionManager = new Http2SessionManager(config.url);
    managers.push(sessionManager);
    const transport: Transport =
      config.protocol === "grpc"
        ? createGrpcTransport({ baseUrl: config.url, sessionManager })
        : createConnectTransport({ baseUrl: config.url, httpVersion: "2", useBinaryFormat: true, sessionManager });
    clients.push(createClient(CacheService, transport));
  }

  // Requests are built up front (create() returns a message as is), so the
  // client spends its CPU on the RPC, not on building requests.
  const value = new Uint8Array(config.valueBytes);
  for (let i = 0; i < value.length; i++) value[i] = (i * 31 + 7) & 0xff;
  const getRequests: GetRequest[] = [];
  const setRequests: SetRequest[] = [];
  for (let i = 0; i < config.keys; i++) {
    getRequests.push(create(GetRequestSchema, { key: keyName(i) }));
    setRequests.push(create(SetRequestSchema, { key: keyName(i), value }));
  }
  const pick = rng(0x9e3779b9 ^ (config.connections * 131 + config.concurrency));
  const getManyRequests: GetManyRequest[] = [];
  for (let i = 0; i < 4096; i++) {
    const keys: string[] = [];
    for (let k = 0; k < config.batch; k++) keys.push(keyName(Math.floor(pick() * config.keys)));
    getManyRequests.push(create(GetManyRequestSchema, { keys }));
  }

  let misses = 0;
  const call = async (client: Client<typeof CacheService>, r: number): Promise<void> => {
    switch (config.op) {
      case "get": {
        const res = await client.get(getRequests[Math.floor(r * getRequests.length)]);
        if (!res.found) misses++;
        return;
      }
      case "set":
        await client.set(setRequests[Math.floor(r * setRequests.length)]);
        return;
      case "getMany": {
        const res = await client.getMany(getManyRequests[Math.floor(r * getManyRequests.length)]);
        for (const e of res.entries) if (!e.found) misses++;
        return;
      }
    }
  };

  // Open every connection before the clock starts.
  await Promise.all(clients.map((client) => client.get(getRequests[0])));
  send({ type: "ready" });
  misses = 0;

  let latencies = new Float64Array(1 << 16);
  let count = 0;
  let errors = 0;
  let firstError: string | undefined;
  let measureStart = Infinity;
  let measureEnd = Infinity;
  let stopping = false;

  const worker = async (client: Client<typeof CacheService>, seed: number) => {
    const next = rng(seed);
    while (!stopping) {
      const t0 = performance.now();
      try {
        await call(client, next());
      } catch (err) {
        const t = performance.now();
        if (t >= measureStart && t <= measureEnd) {
          errors++;
          firstError ??= err instanceof Error ? err.message : String(err);
        }
        continue;
      }
      const t1 = performance.now();
      if (t1 >= measureStart && t1 <= measureEnd) {
        if (count === latencies.length) {
          const grown = new Float64Array(latencies.length * 2);
          grown.set(latencies);
          latencies = grown;
        }
        latencies[count++] = t1 - t0;
      }
    }
  };

  let cpuStart = process.cpuUsage();
  const phases = new Promise<void>((resolve) => {
    setTimeout(() => {
      measureStart = performance.now();
      misses = 0;
      cpuStart = process.cpuUsage();
      send({ type: "measure-start" });
      setTimeout(() => {
        measureEnd = performance.now();
        stopping = true;
        send({ type: "measure-end" });
        resolve();
      }, config.durationMs);
    }, config.warmupMs);
  });

  const workers: Promise<void>[] = [];
  let seed = 1;
  for (const client of clients) {
    for (let i = 0; i < config.concurrency; i++) workers.push(worker(client, seed++ * 2654435761));
  }
  await phases;
  const cpu = process.cpuUsage(cpuStart);
  const elapsedMs = measureEnd - measureStart;
  await Promise.all(workers);
  for (const m of managers) m.abort();

  const sorted = latencies.subarray(0, count).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    ops: count,
    errors,
    firstError,
    misses,
    elapsedMs,
    opsPerSec: (count / elapsedMs) * 1000,
    p50Ms: percentile(sorted, 50),
    p90Ms: percentile(sorted, 90),
    p99Ms: percentile(sorted, 99),
    maxMs: count > 0 ? sorted[count - 1] : NaN,
    meanMs: count > 0 ? sum / count : NaN,
    loadCpu: (cpu.user + cpu.system) / 1000 / elapsedMs,
  };
}

const config = JSON.parse(process.argv[2] ?? "{}") as LoadConfig;
run(config).then(
  (result) => finish({ type: "result", result }, 0),
  (err: unknown) => {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`load generator failed: ${message}\n`);
    finish({ type: "error", message }, 1);
  },
);

/** Sends the last message, then exits (open handles must not keep the process alive). */
function finish(message: LoadMessage, code: number): void {
  if (process.send === undefined) {
    process.stdout.write(`${JSON.stringify(message)}\n`);
    process.exit(code);
  }
  process.send(message, () => process.exit(code));
}
