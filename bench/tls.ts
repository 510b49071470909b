/**
 * Get over TLS (issue 20): our HTTP/2 engine, `--http2-engine node` and etcd
 * 3.4, each behind TLS 1.3 with ALPN h2 and the same certificate (ECDSA
 * P-256, made for the run), measured as bench/anchors.ts measures h2c: h2load
 * -c 50 -m 10, gRPC framing, a warm-up of a tenth as many requests, the server
 * pinned to one core and h2load to the other. Our server over h2c, both
 * engines, is measured in the same rounds, for the TLS / h2c ratio. Rounds
 * alternate the order of the servers; each row is the median of its rounds.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetRequestSchema } from "../src/gen/ripplecache/v1/cache_pb.js";
import { CacheClient } from "../src/client/client.js";
import { bin, frame, freePort, h2load, has, installAnchors, spawnPinned, stop, type AnchorRow } from "./anchors.js";
import { fmtInt, table } from "./format.js";
import { pinning, processCpuMs, startServer, type Pinning } from "./procs.js";

export interface TlsBenchOptions {
  /** h2load requests per measurement (after a warm-up of a tenth as many). */
  readonly requests: number;
  readonly rounds: number;
  readonly install: boolean;
}

export interface TlsRow extends AnchorRow {
  /** Median server CPU time per call, µs. */
  readonly cpuUs: number | undefined;
}

export interface TlsRatio {
  readonly name: string;
  /** Of the median rates. */
  readonly value: number | undefined;
  /** The same by server CPU time per call (b's over a's): what the rate ratio is when each server has its core to itself. */
  readonly byCpu: number | undefined;
  /** The value must be at least this (undefined: reported, no target). */
  readonly atLeast: number | undefined;
  /** The ratio in each round. */
  readonly rounds: (number | undefined)[];
}

export interface TlsBenchResult {
  readonly rows: TlsRow[];
  readonly ratios: TlsRatio[];
}

const VALUE = Buffer.alloc(100, 0x78);
const KEYS = 1000;

type Target = "oursTls" | "nodeTls" | "etcdTls" | "oursH2c" | "nodeH2c";
const NAMES: Record<Target, string> = {
  oursTls: "RippleCache over TLS (our HTTP/2 engine): Get (gRPC)",
  nodeTls: "RippleCache over TLS, --http2-engine node: Get (gRPC)",
  etcdTls: "etcd over TLS: Range, serializable",
  oursH2c: "RippleCache over h2c (our HTTP/2 engine): Get (gRPC)",
  nodeH2c: "RippleCache over h2c, --http2-engine node: Get (gRPC)",
};
const TARGETS = Object.keys(NAMES) as Target[];

function median(xs: readonly number[]): number | undefined {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1]! + s[mid]!) / 2;
}

/** A certificate for 127.0.0.1 and its key, in a new directory. */
function makeCertificate(): { dir: string; cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "rc-tls-bench-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
  ], { stdio: "pipe" });
  return { dir, cert, key };
}

interface Measurement {
  readonly rate: number | undefined;
  /** The server's CPU time per call (all its threads), in µs: steadier than the rate when other tenants come and go. */
  readonly cpuUs: number | undefined;
  readonly note: string;
}

/** h2load's warm-up (a tenth as many requests, at least 1,000), then the measured run with the server's CPU time around it. */
function timed(pin: Pinning, url: string, body: Buffer, requests: number, pid: number): Measurement {
  const w = h2load(pin, url, body, "application/grpc", Math.max(1000, Math.round(requests / 10)), false);
  if (w.rate === undefined) return { rate: undefined, cpuUs: undefined, note: w.note };
  const cpu0 = processCpuMs(pid);
  const r = h2load(pin, url, body, "application/grpc", requests, false);
  const cpu1 = processCpuMs(pid);
  if (r.rate === undefined || cpu0 === undefined || cpu1 === undefined) return { rate: r.rate, cpuUs: undefined, note: r.note };
  // Well under 100%: the machine's other tenants (or h2load) held the server back, and the rate with it.
  const share = (cpu1 - cpu0) / ((requests / r.rate) * 1000);
  return { rate: r.rate, cpuUs: ((cpu1 - cpu0) * 1000) / requests, note: [`server CPU ${Math.round(share * 100)}%`, r.note].filter((n) => n !== "").join(" ") };
}

/** One measurement of `target`. */
async function measure(pin: Pinning, target: Target, tls: { cert: string; key: string }, get: Buffer, requests: number): Promise<Measurement> {
  if (target === "etcdTls") {
    const port = await freePort();
    const peer = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "rc-etcd-tls-"));
    const url = `https://127.0.0.1:${port}`;
    const child = await spawnPinned(
      pin.server,
      ["etcd", "--data-dir", dir, "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", `http://127.0.0.1:${peer}`, "--cert-file", tls.cert, "--key-file", tls.key],
      /ready to serve client requests/,
    );
    try {
      const key = Buffer.from("k1");
      const put = Buffer.concat([Buffer.from([0x0a, key.length]), key, Buffer.from([0x12, VALUE.length]), VALUE]);
      h2load(pin, `${url}/etcdserverpb.KV/Put`, frame(put), "application/grpc", 100, false);
      const range = Buffer.concat([Buffer.from([0x0a, key.length]), key, Buffer.from([0x38, 0x01])]);
      // A tenth as many: etcd over TLS answers too slowly for the full count within h2load's time limit on a busy machine.
      return timed(pin, `${url}/etcdserverpb.KV/Range`, frame(range), Math.max(1000, Math.round(requests / 10)), child.pid!);
    } finally {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const overTls = target === "oursTls" || target === "nodeTls";
  const args = [...(target === "nodeTls" || target === "nodeH2c" ? ["--http2-engine", "node"] : []), ...(overTls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : [])];
  const server = await startServer({ cpu: pin.server, args });
  try {
    const client = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 30_000, ...(overTls ? { tls: { caFile: tls.cert } } : {}) });
    try {
      await client.rpc.setMany({ entries: Array.from({ length: KEYS }, (_, i) => ({ key: `k${i}`, value: VALUE })) });
    } finally {
      client.close();
    }
    return timed(pin, `${overTls ? "https" : "http"}://${server.addr}/ripplecache.v1.CacheService/Get`, get, requests, server.pid);
  } finally {
    await server.stop();
  }
}

export async function runTls(options: TlsBenchOptions): Promise<TlsBenchResult> {
  if (options.install) installAnchors();
  if (!has("h2load") || !has("openssl")) {
    return { rows: [{ name: "all", rate: undefined, cpuUs: undefined, unit: "", note: "h2load or openssl not installed (npm run bench -- --with-anchors)" }], ratios: [] };
  }
  const pin = pinning();
  const tls = makeCertificate();
  const get = frame(bin(GetRequestSchema, { key: "k1" }));
  const targets = TARGETS.filter((t) => t !== "etcdTls" || has("etcd"));
  const runs = new Map<Target, Measurement[]>(targets.map((t) => [t, []]));
  try {
    for (let round = 0; round < options.rounds; round++) {
      // The order alternates, so that a machine getting busier or quieter meets every server alike.
      for (const target of round % 2 === 0 ? targets : [...targets].reverse()) {
        process.stderr.write(`bench: tls round ${round + 1}/${options.rounds}: ${NAMES[target]}\n`);
        runs.get(target)!.push(await measure(pin, target, tls, get, options.requests));
      }
    }
  } finally {
    rmSync(tls.dir, { recursive: true, force: true });
  }
  /** The median of the rounds that have a value (a failed round is named in the row's note). */
  const medianOf = (t: Target, pick: (m: Measurement) => number | undefined) =>
    median((runs.get(t) ?? []).map(pick).filter((x): x is number => x !== undefined));
  const rows: TlsRow[] = TARGETS.map((t) => {
    const ms = runs.get(t);
    if (ms === undefined) return { name: NAMES[t], rate: undefined, cpuUs: undefined, unit: "", note: "etcd not installed (npm run bench -- --with-anchors)" };
    return {
      name: NAMES[t],
      rate: medianOf(t, (m) => m.rate),
      cpuUs: medianOf(t, (m) => m.cpuUs),
      unit: "calls/s",
      note: ms.map((m) => (m.rate === undefined ? `failed: ${m.note}` : `${fmtInt(m.rate)} (${m.note})`)).join(", "),
    };
  });
  const ratio = (name: string, a: Target, b: Target, atLeast: number | undefined): TlsRatio => {
    const ra = runs.get(a) ?? [];
    const rb = runs.get(b) ?? [];
    const rounds = ra.map((x, i) => (x.rate === undefined || rb[i]?.rate === undefined || rb[i].rate === 0 ? undefined : x.rate / rb[i].rate!));
    const ra0 = medianOf(a, (m) => m.rate);
    const rb0 = medianOf(b, (m) => m.rate);
    const ca = medianOf(a, (m) => m.cpuUs);
    const cb = medianOf(b, (m) => m.cpuUs);
    return {
      name,
      value: ra0 === undefined || rb0 === undefined || rb0 === 0 ? undefined : ra0 / rb0,
      byCpu: ca === undefined || cb === undefined || ca === 0 ? undefined : cb / ca,
      atLeast,
      rounds,
    };
  };
  return {
    rows,
    ratios: [
      ratio("Get over TLS: our engine / node:http2", "oursTls", "nodeTls", 2.5),
      ratio("Get, our engine: over TLS / over h2c", "oursTls", "oursH2c", 0.6),
      ratio("Get over TLS: our engine / etcd Range (serializable)", "oursTls", "etcdTls", undefined),
      ratio("Get over h2c: our engine / node:http2 (for comparison)", "oursH2c", "nodeH2c", undefined),
      ratio("Get, --http2-engine node: over TLS / over h2c", "nodeTls", "nodeH2c", undefined),
    ],
  };
}

export function formatTls(result: TlsBenchResult): string {
  const rows = table(
    ["server (h2load -c 50 -m 10, TLS 1.3, ALPN h2, one server core)", "rate", "unit", "server µs/call", "rounds (server's CPU share)"],
    result.rows.map((r) => [r.name, r.rate === undefined ? "-" : fmtInt(r.rate), r.unit, r.cpuUs === undefined ? "-" : r.cpuUs.toFixed(1), r.note]),
    1,
  );
  const met = (value: number | undefined, atLeast: number | undefined) =>
    atLeast === undefined ? "" : value === undefined ? "not measured" : value >= atLeast ? "met" : "NOT MET";
  const fixed = (x: number | undefined) => (x === undefined ? "-" : x.toFixed(2));
  const ratios = table(
    ["ratio (same run, medians of rounds)", "by rate", "target", "met", "by server CPU/call", "met", "per round (rate)"],
    result.ratios.map((r) => [
      r.name,
      fixed(r.value),
      r.atLeast === undefined ? "" : `>= ${r.atLeast}`,
      met(r.value, r.atLeast),
      fixed(r.byCpu),
      met(r.byCpu, r.atLeast),
      r.rounds.map(fixed).join(" "),
    ]),
    1,
  );
  return `${rows}\n\n${ratios}`;
}
