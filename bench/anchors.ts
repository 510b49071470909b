/**
 * Side by side (issue 7): the same load generator (h2load, 50 connections x
 * 10 streams, gRPC framing, 100-byte values) against RippleCache (fast path
 * on and off), a minimal @grpc/grpc-js server, raw node:http2 answering fixed
 * gRPC bytes (the ceiling in Node) and etcd's Range/Put; plus GetMany(100)
 * keys/s against Redis MGET of 100 keys (redis-benchmark -P 1), and Redis's
 * cost per key against the least that V8 can spend per key (getmany-floor.ts);
 * and p99 of one call in flight, Get against etcd Range, both servers up and
 * taking turns (a probe in anchor-servers.ts). Every server
 * runs pinned to one core, h2load to the other, and every h2load measurement
 * follows a warm-up of a tenth as many requests. Anchors that are not installed
 * are reported as such; `npm run bench -- --with-anchors` installs them
 * (Debian: nghttp2-client, etcd-server, redis-server).
 *
 * Ratios are taken within one run; absolute rates on a shared machine are not
 * comparable between runs.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { GetManyRequestSchema, GetRequestSchema, SetRequestSchema } from "../src/gen/ripplecache/v1/cache_pb.js";
import { CacheClient } from "../src/client/client.js";
import { fmtInt, table } from "./format.js";
import { command, exited, pinning, processCpuMs, ROOT, sleep, startServer, track, type Pinning, type Server } from "./procs.js";

export interface AnchorOptions {
  readonly requests: number;
  readonly install: boolean;
}

export interface AnchorRow {
  readonly name: string;
  readonly rate: number | undefined;
  readonly unit: string;
  readonly note: string;
}

export interface AnchorResult {
  readonly rows: AnchorRow[];
  readonly ratios: { readonly name: string; readonly value: number | undefined; readonly target: string }[];
}

const VALUE = Buffer.alloc(100, 0x78);
/**
 * Calls of the one-in-flight latency probe, measured after its client's warm-up (anchor-servers.ts). With 5,000 calls
 * measured from the client's first second, p99 was the client's own start (scavenges every few ms while its young
 * generation grows, its code being compiled): ~1.8 ms for us and etcd alike, against ~0.5 ms once warm.
 */
const LATENCY_CALLS = 20_000;
const KEYS = 1000;
const FLOOR_ROW = "V8: GetMany's least work per key (key to string, Map.get, copy key and value)";
/** Pairs of servers (telemetry off, traces at 10%) whose Get rates give the tracing ratio. */
const TRACING_PAIRS = 4;
/** Seconds of Get on the same connections before the steady-state row's 3 s are measured. */
const STEADY_WARMUP_S = 20;
const STEADY_ROW = `RippleCache: Get (gRPC), connections kept ${STEADY_WARMUP_S} s`;

/** The middle value; of an even count, the mean of the two middle ones (the upper one alone flattered the tracing ratio of 4 pairs). */
function median(xs: readonly number[]): number | undefined {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1]! + s[mid]!) / 2;
}

export function bin<D extends DescMessage>(schema: D, init: MessageInitShape<D>): Buffer {
  return Buffer.from(toBinary(schema, create(schema, init)));
}

export function frame(payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

export function has(tool: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** p50 and p99 of one call at a time (bench/anchor-servers.js latency), in µs. */
/** What the latency probe measured; `note` for the table. */
interface Latency {
  readonly p50Us: number;
  readonly p99Us: number;
  readonly p999Us: number;
  readonly calls: number;
}

function latencyNote(l: Latency | undefined): string {
  return l === undefined ? "failed" : `p50 ${Math.round(l.p50Us)} µs, p99.9 ${Math.round(l.p999Us)} µs; ${l.calls} calls`;
}

/** The one-in-flight probe (anchor-servers.ts latency): each target's latency, the targets taking turns; undefined if it failed. */
function latency(pin: Pinning, targets: readonly { readonly url: string; readonly body: Buffer }[], calls: number): Latency[] | undefined {
  const dir = mkdtempSync(join(tmpdir(), "rc-latency-"));
  const args = targets.flatMap((t, i) => {
    const file = join(dir, `body${i}`);
    writeFileSync(file, t.body);
    return [t.url, file];
  });
  const [cmd, argv] = command(pin.load, [process.execPath, join(ROOT, "dist/bench/anchor-servers.js"), "latency", String(calls), ...args]);
  const r = spawnSync(cmd, argv, { encoding: "utf8", timeout: 300_000 });
  rmSync(dir, { recursive: true, force: true });
  try {
    const results = JSON.parse(r.stdout.trim()) as Latency[];
    return results.length === targets.length ? results : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Get with one call in flight, on a loaded RippleCache server and (when its Range URL is given) etcd, both up on
 * the server core and taking turns (anchor-servers.ts), so that both meet the same machine.
 */
async function oneInFlight(pin: Pinning, rows: AnchorRow[], get: Buffer, requests: number, etcdRange?: { readonly url: string; readonly body: Buffer }): Promise<void> {
  const server = await loadedServer(pin, []);
  try {
    const url = `${server.url}/ripplecache.v1.CacheService/Get`;
    h2load(pin, url, get, "application/grpc", warmupRequests(requests), false); // compiled, as in the rate rows
    const l = latency(pin, [{ url, body: get }, ...(etcdRange === undefined ? [] : [etcdRange])], LATENCY_CALLS);
    rows.push({ name: "RippleCache: Get (gRPC), one call in flight", rate: l?.[0].p99Us, unit: "µs p99", note: latencyNote(l?.[0]) });
    if (etcdRange !== undefined) rows.push({ name: "etcd: Range (serializable), one call in flight", rate: l?.[1].p99Us, unit: "µs p99", note: latencyNote(l?.[1]) });
  } finally {
    await server.stop();
  }
}

/**
 * h2load's completed requests per second, or undefined when it failed; after
 * a warm-up of a tenth as many requests (at least 1,000) on fresh
 * connections, unless `warmup` is false. Every server gets the same warm-up:
 * without one, a Node server's rate included compiling its code, and a
 * traced one had more to compile (the tracing ratio read low).
 */
export function h2load(pin: Pinning, url: string, body: Buffer, contentType: string, requests: number, warmup = true, serverPid?: number): { rate: number | undefined; note: string } {
  if (warmup) {
    const w = h2loadOnce(pin, url, body, contentType, warmupRequests(requests));
    if (w.rate === undefined) return w;
  }
  const cpu0 = serverPid === undefined ? undefined : processCpuMs(serverPid);
  const r = h2loadOnce(pin, url, body, contentType, requests);
  const cpu1 = serverPid === undefined ? undefined : processCpuMs(serverPid);
  if (r.rate === undefined || cpu0 === undefined || cpu1 === undefined) return r;
  // Well under 100%: h2load (one core) was the limit, not the server, and the rate is a lower bound.
  const share = (cpu1 - cpu0) / ((requests / r.rate) * 1000);
  return { rate: r.rate, note: [`server CPU ${Math.round(share * 100)}%`, r.note].filter((n) => n !== "").join("; ") };
}

function warmupRequests(requests: number): number {
  return Math.max(1000, Math.round(requests / 10));
}

/** A run of h2load: a number of requests, or a timed run after a warm-up on the same connections. */
type H2loadRun = number | { readonly warmupS: number; readonly durationS: number };

function h2loadOnce(pin: Pinning, url: string, body: Buffer, contentType: string, run: H2loadRun): { rate: number | undefined; note: string } {
  const dir = mkdtempSync(join(tmpdir(), "rc-h2load-"));
  const file = join(dir, "body");
  writeFileSync(file, body);
  const amount = typeof run === "number" ? ["-n", String(run)] : ["--warm-up-time", `${run.warmupS}s`, "-D", `${run.durationS}s`];
  const [cmd, args] = command(pin.load, ["h2load", ...amount, "-c", "50", "-m", "10", "-d", file, "-H", `content-type: ${contentType}`, "-H", "te: trailers", url]);
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 120_000 });
  rmSync(dir, { recursive: true, force: true });
  const rate = /finished in [0-9.]+m?s, ([0-9.]+) req\/s/.exec(r.stdout ?? "");
  const ok = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded/.exec(r.stdout ?? "");
  if (rate === null || ok === null) return { rate: undefined, note: `h2load failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || "").trim().split("\n").slice(-2).join(" / ")}` };
  const failed = (typeof run === "number" ? run : Number(ok[1])) - Number(ok[2]);
  return { rate: Number(rate[1]), note: failed > 0 ? `${failed} requests failed` : "" };
}

/**
 * Starts a server pinned to `cpu`, its output going to a file: h2load runs
 * synchronously, so a pipe would go unread and a chatty server (etcd) would
 * block on its own logging. Ready when the file shows `ready`.
 */
export async function spawnPinned(cpu: number | undefined, argv: string[], ready: RegExp): Promise<ChildProcess> {
  const dir = mkdtempSync(join(tmpdir(), "rc-anchor-"));
  const logFile = join(dir, "output.log");
  const fd = openSync(logFile, "w");
  const [cmd, args] = command(cpu, argv);
  const child = track(spawn(cmd, args, { stdio: ["ignore", fd, fd] }));
  closeSync(fd);
  child.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const out = readFileSync(logFile, "utf8");
    if (ready.test(out)) return child;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${argv[0]} did not start: ${out.slice(-500)}`);
    }
    await sleep(50);
  }
}

export async function stop(child: ChildProcess): Promise<void> {
  child.kill("SIGKILL");
  await exited(child);
}

export function installAnchors(): void {
  const missing = [
    ["h2load", "nghttp2-client"],
    ["etcd", "etcd-server"],
    ["redis-server", "redis-server"],
  ].filter(([tool]) => !has(tool));
  if (missing.length === 0) return;
  const packages = missing.map(([, pkg]) => pkg);
  process.stderr.write(`bench: installing ${packages.join(", ")}\n`);
  const r = spawnSync("apt-get", ["install", "-y", "--no-install-recommends", ...packages], { stdio: "inherit" });
  if (r.status !== 0) process.stderr.write(`bench: apt-get install failed (${r.status}); anchors that are missing are skipped\n`);
}

/** Our server on the server core, KEYS keys of VALUE set (Get and GetMany ask for k0, k1, ...). */
async function loadedServer(pin: Pinning, args: string[], env?: Record<string, string>): Promise<Server> {
  const server = await startServer({ cpu: pin.server, args, env });
  const client = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 30_000 });
  try {
    await client.rpc.setMany({ entries: Array.from({ length: KEYS }, (_, i) => ({ key: `k${i}`, value: VALUE })) });
    return server;
  } catch (err) {
    await server.stop();
    throw err;
  } finally {
    client.close();
  }
}

export async function runAnchors(options: AnchorOptions): Promise<AnchorResult> {
  if (options.install) installAnchors();
  const pin = pinning();
  const rows: AnchorRow[] = [];
  let tracingRatio: number | undefined;
  let tracingCpuRatio: number | undefined;
  const n = options.requests;
  if (!has("h2load")) {
    return { rows: [{ name: "all", rate: undefined, unit: "", note: "h2load not installed (npm run bench -- --with-anchors)" }], ratios: [] };
  }
  const get = frame(bin(GetRequestSchema, { key: "k1" }));
  const set = frame(bin(SetRequestSchema, { key: "k1", value: VALUE }));
  const getMany = bin(GetManyRequestSchema, { keys: Array.from({ length: 100 }, (_, i) => `k${i}`) });

  // Our server three ways: as it runs by default (our HTTP/2 engine, the fast path); the fast path
  // on node:http2 (what our engine gains); connect-node alone on node:http2 (what the fast path gains).
  const variants = {
    default: { label: "RippleCache", args: [] as string[] },
    nodeEngine: { label: "RippleCache, --http2-engine node", args: ["--http2-engine", "node"] },
    connectNode: { label: "RippleCache, --fast-path off --http2-engine node", args: ["--fast-path", "off", "--http2-engine", "node"] },
  };
  const ours = async (variant: keyof typeof variants) => {
    const { label, args } = variants[variant];
    const full = variant === "default";
    const server = await loadedServer(pin, args);
    try {
      const base = `${server.url}/ripplecache.v1.CacheService`;
      const g = h2load(pin, `${base}/Get`, get, "application/grpc", n, true, server.pid);
      rows.push({ name: `${label}: Get (gRPC)`, rate: g.rate, unit: "calls/s", note: g.note });
      const c = h2load(pin, `${base}/Get`, get.subarray(5), "application/proto", n, true, server.pid);
      rows.push({ name: `${label}: Get (Connect proto)`, rate: c.rate, unit: "calls/s", note: c.note });
      if (variant !== "connectNode") {
        const s = h2load(pin, `${base}/Set`, set, "application/grpc", n, true, server.pid);
        rows.push({ name: `${label}: Set (gRPC)`, rate: s.rate, unit: "calls/s", note: s.note });
      }
      if (full) {
        const m = h2load(pin, `${base}/GetMany`, frame(getMany), "application/grpc", Math.max(1000, Math.round(n / 10)), true, server.pid);
        rows.push({ name: `${label}: GetMany(100) (gRPC)`, rate: m.rate === undefined ? undefined : m.rate * 100, unit: "keys/s", note: m.note });
        // Get again, measured after STEADY_WARMUP_S of calls on the same connections, as clients
        // that stay connected make them. The rows above (fresh connections, ~1 s each) can end before
        // a slower steady state sets in: one did, for as long as our HTTP/2 engine kept a connection's
        // streams in a Map (src/server/h2/stream-table.ts). The ratio to the first Get row shows one.
        const steady = h2loadOnce(pin, `${base}/Get`, get, "application/grpc", { warmupS: STEADY_WARMUP_S, durationS: 3 });
        rows.push({ name: STEADY_ROW, rate: steady.rate, unit: "calls/s", note: steady.note });
      }
    } finally {
      await server.stop();
    }
  };
  await ours("default");
  await ours("nodeEngine");
  await ours("connectNode");
  // Tracing on, 10% of calls sampled, spans exported by OTLP/HTTP to a sink in its own
  // process, against telemetry off: servers in pairs, the order alternating, and the
  // median of the pairs' ratios (one run of each swung by +-10% with the machine's load).
  {
    const port = await freePort();
    const sink = await spawnPinned(pin.load, [process.execPath, join(ROOT, "dist/bench/anchor-servers.js"), "sink", String(port)], /listening/);
    const traced = {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_TRACES_SAMPLER: "traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.1",
      OTEL_METRICS_EXPORTER: "none",
    };
    /** Get calls/s, and the server's CPU time per call (reported beside the ratio). */
    const getRate = async (env: Record<string, string> | undefined): Promise<{ rate: number; cpuUs: number } | undefined> => {
      const server = await loadedServer(pin, [], env);
      try {
        // As many as the Get row above: with a third as many, a measured run lasted ~0.5 s, the
        // rate of even the untraced server read ~30% under that row's (JIT compilation was still
        // going on), and the traced one, with more code to compile, lost more (ratio 0.77 vs 0.83).
        const requests = n;
        const url = `${server.url}/ripplecache.v1.CacheService/Get`;
        // The warm-up, outside the CPU reading, is as long as the run: after the usual tenth, the
        // traced server's first 100,000 calls still cost ~2 µs more each than the next 500,000 (the
        // untraced one's ~0.7 µs more). The sampled path had run only ~1,000 times and was still
        // being compiled; the ratio read 0.85 there and ~0.9 after (both servers at steady state).
        if (h2load(pin, url, get, "application/grpc", requests, false).rate === undefined) return undefined;
        const cpu0 = processCpuMs(server.pid);
        const rate = h2load(pin, url, get, "application/grpc", requests, false).rate;
        const cpu1 = processCpuMs(server.pid);
        return rate === undefined || cpu0 === undefined || cpu1 === undefined ? undefined : { rate, cpuUs: ((cpu1 - cpu0) * 1000) / requests };
      } finally {
        await server.stop();
      }
    };
    try {
      const pairs: { off: number; on: number; cpuOff: number; cpuOn: number }[] = [];
      for (let round = 0; round < TRACING_PAIRS; round++) {
        const first = await getRate(round % 2 === 0 ? undefined : traced);
        const second = await getRate(round % 2 === 0 ? traced : undefined);
        const [off, on] = round % 2 === 0 ? [first, second] : [second, first];
        if (off !== undefined && on !== undefined) pairs.push({ off: off.rate, on: on.rate, cpuOff: off.cpuUs, cpuOn: on.cpuUs });
      }
      const ratios = pairs.map((p) => p.on / p.off).sort((a, b) => a - b);
      tracingRatio = median(ratios);
      // The same comparison by the server's CPU time per call (all its threads): steadier than
      // rates when other tenants come and go, and what the rate ratio is when the server is the bottleneck.
      const cpuOn = median(pairs.map((p) => p.cpuOn));
      const cpuOff = median(pairs.map((p) => p.cpuOff));
      tracingCpuRatio = cpuOn === undefined || cpuOff === undefined ? undefined : cpuOff / cpuOn;
      rows.push({
        name: "RippleCache, traces sampled 10%: Get (gRPC)",
        rate: median(pairs.map((p) => p.on)),
        unit: "calls/s",
        note: `${pairs.length} pairs with telemetry off (${median(pairs.map((p) => p.off))?.toFixed(0) ?? "?"} calls/s), ratios ${ratios.map((r) => r.toFixed(2)).join(" ")}; server CPU per call ${median(pairs.map((p) => p.cpuOn))?.toFixed(1) ?? "?"} vs ${median(pairs.map((p) => p.cpuOff))?.toFixed(1) ?? "?"} µs`,
      });
    } finally {
      await stop(sink);
    }
  }

  // A minimal grpc-js server and raw node:http2, each answering Get from a Map / with fixed bytes.
  for (const [name, script] of [
    ["minimal @grpc/grpc-js server: Get (gRPC)", "grpcjs"],
    ["raw node:http2, fixed gRPC bytes: Get", "raw"],
    ["our HTTP/2 engine, fixed gRPC bytes: Get", "raw-engine"],
  ] as const) {
    const port = await freePort();
    const child = await spawnPinned(pin.server, [process.execPath, join(ROOT, "dist/bench/anchor-servers.js"), script, String(port)], /listening/);
    try {
      const r = h2load(pin, `http://127.0.0.1:${port}/ripplecache.v1.CacheService/Get`, get, "application/grpc", n, true, child.pid);
      rows.push({ name, rate: r.rate, unit: "calls/s", note: r.note });
    } finally {
      await stop(child);
    }
  }

  // etcd 3.4: Range (linearizable and serializable) and Put, gRPC on its client port.
  if (has("etcd")) {
    const port = await freePort();
    const peer = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "rc-etcd-"));
    const child = await spawnPinned(
      pin.server,
      ["etcd", "--data-dir", dir, "--listen-client-urls", `http://127.0.0.1:${port}`, "--advertise-client-urls", `http://127.0.0.1:${port}`, "--listen-peer-urls", `http://127.0.0.1:${peer}`],
      /ready to serve client requests|serving insecure client requests/,
    );
    try {
      const key = Buffer.from("k1");
      const put = Buffer.concat([Buffer.from([0x0a, key.length]), key, Buffer.from([0x12, VALUE.length]), VALUE]);
      const base = `http://127.0.0.1:${port}/etcdserverpb.KV`;
      h2load(pin, `${base}/Put`, frame(put), "application/grpc", 100, false);
      const range = Buffer.concat([Buffer.from([0x0a, key.length]), key]);
      const lin = h2load(pin, `${base}/Range`, frame(range), "application/grpc", n, true, child.pid);
      rows.push({ name: "etcd: Range, linearizable", rate: lin.rate, unit: "calls/s", note: lin.note });
      const ser = h2load(pin, `${base}/Range`, frame(Buffer.concat([range, Buffer.from([0x38, 0x01])])), "application/grpc", n, true, child.pid);
      rows.push({ name: "etcd: Range, serializable", rate: ser.rate, unit: "calls/s", note: ser.note });
      await oneInFlight(pin, rows, get, n, { url: `${base}/Range`, body: frame(Buffer.concat([range, Buffer.from([0x38, 0x01])])) });
      const p = h2load(pin, `${base}/Put`, frame(put), "application/grpc", Math.round(n / 2), true, child.pid);
      rows.push({ name: "etcd: Put", rate: p.rate, unit: "calls/s", note: p.note });
    } finally {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    }
  } else {
    rows.push({ name: "etcd", rate: undefined, unit: "", note: "not installed (npm run bench -- --with-anchors)" });
    await oneInFlight(pin, rows, get, n);
  }

  // Redis: MGET of 100 keys, one at a time per connection (-P 1), 50 connections.
  if (has("redis-server") && has("redis-benchmark")) {
    const port = await freePort();
    const child = await spawnPinned(pin.server, ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], /Ready to accept connections/);
    try {
      const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
      spawnSync("redis-cli", ["-p", String(port), "MSET", ...keys.flatMap((k) => [k, VALUE.toString()])]);
      const [cmd, args] = command(pin.load, ["redis-benchmark", "-p", String(port), "-c", "50", "-n", String(Math.max(1000, Math.round(n / 10))), "-P", "1", "-q", "MGET", ...keys]);
      const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 120_000 });
      const m = /([0-9.]+) requests per second/.exec(r.stdout ?? "");
      rows.push({ name: "Redis: MGET of 100 keys (-P 1)", rate: m === null ? undefined : Number(m[1]) * 100, unit: "keys/s", note: m === null ? `redis-benchmark failed: ${r.stderr}` : "" });
    } finally {
      await stop(child);
    }
  } else {
    rows.push({ name: "Redis", rate: undefined, unit: "", note: "not installed (npm run bench -- --with-anchors)" });
  }

  // GetMany's least work per key in V8, with no server around it (bench/getmany-floor.ts), beside Redis's whole cost.
  const [floorCmd, floorArgs] = command(pin.server, [process.execPath, join(ROOT, "dist/bench/getmany-floor.js")]);
  const floor = spawnSync(floorCmd, floorArgs, { encoding: "utf8", timeout: 120_000 });
  let nsPerKey: number | undefined;
  try {
    nsPerKey = (JSON.parse(floor.stdout.trim()) as { nsPerKey: number }).nsPerKey;
  } catch {
    nsPerKey = undefined;
  }
  rows.push({ name: FLOOR_ROW, rate: nsPerKey, unit: "ns/key", note: nsPerKey === undefined ? `failed: ${floor.stderr.trim().split("\n").pop() ?? ""}` : "one process, no network" });

  const rate = (name: string) => rows.find((r) => r.name === name)?.rate;
  const ratio = (a: string, b: string) => {
    const x = rate(a);
    const y = rate(b);
    return x === undefined || y === undefined || y === 0 ? undefined : x / y;
  };
  const ratios = [
    { name: "Get (gRPC) / etcd Range (serializable)", value: ratio("RippleCache: Get (gRPC)", "etcd: Range, serializable"), target: ">= 2" },
    { name: "Get (Connect) / etcd Range (serializable)", value: ratio("RippleCache: Get (Connect proto)", "etcd: Range, serializable"), target: ">= 2" },
    { name: "Get p99, one in flight / etcd Range's", value: ratio("RippleCache: Get (gRPC), one call in flight", "etcd: Range (serializable), one call in flight"), target: "<= 1" },
    { name: `Get (gRPC): connections kept ${STEADY_WARMUP_S} s / fresh`, value: ratio(STEADY_ROW, "RippleCache: Get (gRPC)"), target: "(~1: no slower steady state)" },
    { name: "Get (gRPC) / minimal grpc-js", value: ratio("RippleCache: Get (gRPC)", "minimal @grpc/grpc-js server: Get (gRPC)"), target: ">= 1" },
    { name: "Get (gRPC) / raw node:http2 (fixed bytes)", value: ratio("RippleCache: Get (gRPC)", "raw node:http2, fixed gRPC bytes: Get"), target: "" },
    { name: "Get (gRPC) / our engine with fixed bytes", value: ratio("RippleCache: Get (gRPC)", "our HTTP/2 engine, fixed gRPC bytes: Get"), target: "(ceiling)" },
    { name: "Set (gRPC) / etcd Put", value: ratio("RippleCache: Set (gRPC)", "etcd: Put"), target: ">= 2" },
    { name: "GetMany(100) keys/s / Redis MGET keys/s", value: ratio("RippleCache: GetMany(100) (gRPC)", "Redis: MGET of 100 keys (-P 1)"), target: ">= 1" },
    { name: "  Redis MGET's whole ns per key / V8's least (bench/getmany-floor.ts)", value: redisOverFloor(rate("Redis: MGET of 100 keys (-P 1)"), rate(FLOOR_ROW)), target: "(< 1: no V8 server reaches it)" },
    { name: "Get (gRPC): traces 10% / telemetry off (median of pairs)", value: tracingRatio, target: ">= 0.9" },
    { name: "  same, by server CPU per call (off / traces 10%)", value: tracingCpuRatio, target: ">= 0.9" },
    { name: "Get (gRPC): our engine / node:http2 (fast path on both)", value: ratio("RippleCache: Get (gRPC)", "RippleCache, --http2-engine node: Get (gRPC)"), target: "" },
    { name: "Get (gRPC): fast path / connect-node (on node:http2)", value: ratio("RippleCache, --http2-engine node: Get (gRPC)", "RippleCache, --fast-path off --http2-engine node: Get (gRPC)"), target: "" },
  ];
  return { rows, ratios };
}

/** Redis's nanoseconds per key (from its keys/s) over V8's least per key. */
function redisOverFloor(redisKeysPerSec: number | undefined, floorNsPerKey: number | undefined): number | undefined {
  return redisKeysPerSec === undefined || floorNsPerKey === undefined || redisKeysPerSec === 0 ? undefined : 1e9 / redisKeysPerSec / floorNsPerKey;
}

export function formatAnchors(result: AnchorResult): string {
  const rows = table(
    ["server (h2load -c 50 -m 10, one server core)", "rate", "unit", "note"],
    result.rows.map((r) => [r.name, r.rate === undefined ? "-" : fmtInt(r.rate), r.unit, r.note]),
    1,
  );
  const ratios = table(
    ["ratio (same run)", "value", "target"],
    result.ratios.map((r) => [r.name, r.value === undefined ? "-" : r.value.toFixed(2), r.target]),
    1,
  );
  return `${rows}\n\n${ratios}`;
}
