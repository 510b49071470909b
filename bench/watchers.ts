/**
 * Watch fan-out client for `npm run bench` (bench/fanout.ts starts it as a
 * child process on its own core).
 *
 * 1. Opens `watchers` Watch streams on one prefix, `perConnection` per HTTP/2
 *    connection (one Http2SessionManager, so one TCP connection, per group),
 *    gRPC protocol, with values; each counts as open once its Created arrives.
 *    Then reports "opened" and waits for the parent (which reads the server's
 *    RSS with the watchers idle).
 * 2. On "write": one writer, on a connection of its own in this same process,
 *    sets one key under the prefix `writes` times (after `warmupWrites` that
 *    are not counted), one at a time: each write waits until every watcher has
 *    received its event (or `receiptTimeoutMs`), then `gapMs`. Every receipt is
 *    timed with this process's clock, as is the Set's acknowledgement, so the
 *    delays need no clock sync: receipt - ack (may be negative: the server
 *    sends the event before the Set response, and another connection can be
 *    read first) and receipt - send (the write's whole path).
 * 3. Sends "result" and waits for "close".
 *
 * The receipt time is when this process's event loop handles the message: a
 * single-threaded client handing 10,000 messages includes its own decode time
 * in the tail. The parent reports this process's CPU next to the server's.
 */
import { setMaxListeners } from "node:events";
import * as http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CacheService, WatchRequestSchema, WatchResponseSchema, type WatchResponse } from "../src/gen/ripplecache/v1/cache_pb.js";

export interface WatchersConfig {
  readonly url: string;
  readonly watchers: number;
  readonly perConnection: number;
  readonly prefix: string;
  readonly key: string;
  readonly writes: number;
  readonly warmupWrites: number;
  readonly valueBytes: number;
  readonly gapMs: number;
  /** Watch streams being opened at once (awaiting Created). */
  readonly openConcurrency: number;
  readonly receiptTimeoutMs: number;
  /**
   * How the watchers read: "raw" (default), gRPC over node:http2 with the
   * frames decoded by protobuf-es, a frame identical to the one before decoded
   * once (every watcher of a write gets the same bytes); "connect", through
   * connect-node's client, which costs ~100 µs of this process's CPU per event
   * and so, at 10,000 watchers, measured this process rather than the server.
   */
  readonly client?: "raw" | "connect";
}

export interface WriteSample {
  readonly revision: number;
  /** Set round trip (send to acknowledgement), ms. */
  readonly setMs: number;
  readonly receipts: number;
  /** Receipt - ack: median and last receipt of this write, ms. */
  readonly p50Ms: number;
  readonly lastMs: number;
}

export interface WatchersResult {
  readonly watchers: number;
  readonly connections: number;
  readonly openMs: number;
  readonly writes: number;
  /** Receipts expected (watchers x writes) and received. */
  readonly expected: number;
  readonly received: number;
  /** Receipt - ack over every receipt of every counted write, ms. */
  readonly fromAck: { readonly p50: number; readonly p99: number; readonly max: number; readonly min: number; readonly negative: number };
  /** Receipt - send, ms. */
  readonly fromSend: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Set round trip, ms (median over the counted writes). */
  readonly setP50Ms: number;
  /** Last receipt of each write - its ack: median and max over writes (time to reach every watcher). */
  readonly fullFanoutP50Ms: number;
  readonly fullFanoutMaxMs: number;
  readonly perWrite: WriteSample[];
  /** This process's CPU over the writes / their wall time (1 = one core). */
  readonly clientCpu: number;
  readonly writesWallMs: number;
  readonly resyncs: number;
  readonly progress: number;
  readonly streamErrors: number;
  readonly firstError: string | undefined;
}

export type WatchersMessage =
  | { readonly type: "opened"; readonly watchers: number; readonly connections: number; readonly ms: number; readonly failed: number; readonly firstError?: string }
  | { readonly type: "writes-start" }
  | { readonly type: "writes-end" }
  | { readonly type: "result"; readonly result: WatchersResult }
  | { readonly type: "error"; readonly message: string };

export type WatchersCommand = { readonly type: "write" } | { readonly type: "close" };

function send(message: WatchersMessage): void {
  process.send?.(message);
}

function quantile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

async function main(config: WatchersConfig): Promise<void> {
  const abort = new AbortController();
  // Every watch stream listens on this one signal.
  setMaxListeners(0, abort.signal);
  const managers: Http2SessionManager[] = [];
  const clients: Client<typeof CacheService>[] = [];
  const connections = Math.ceil(config.watchers / config.perConnection);
  for (let c = 0; c < (config.client === "connect" ? connections : 0); c++) {
    const sessionManager = new Http2SessionManager(config.url);
    managers.push(sessionManager);
    clients.push(createClient(CacheService, createGrpcTransport({ baseUrl: config.url, sessionManager })));
  }

  /** revision -> receipt times (performance.now()) of its event, one per watcher. */
  const receipts = new Map<number, number[]>();
  let awaited: { revision: number; resolve: () => void } | undefined;
  let resyncs = 0;
  let progress = 0;
  let streamErrors = 0;
  let firstError: string | undefined;
  let closing = false;

  const record = (revision: number, t: number) => {
    let times = receipts.get(revision);
    if (times === undefined) receipts.set(revision, (times = []));
    times.push(t);
    if (awaited !== undefined && awaited.revision === revision && times.length >= config.watchers) awaited.resolve();
  };

  const request = { target: { case: "prefix" as const, value: config.prefix }, withValues: true };
  const onMessage = (res: WatchResponse, onCreated: () => void) => {
    const k = res.kind;
    switch (k.case) {
      case "created":
        onCreated();
        break;
      case "events": {
        const t = performance.now();
        for (const e of k.value.events) record(Number(e.revision), t);
        break;
      }
      case "progress":
        progress++;
        break;
      case "resync":
        resyncs++;
        break;
    }
  };
  const failure = (err: unknown) => {
    if (closing) return;
    streamErrors++;
    firstError ??= err instanceof Error ? err.message : String(err);
  };

  const rawSessions: http2.ClientHttp2Session[] = [];
  const requestFrame = envelope(toBinary(WatchRequestSchema, create(WatchRequestSchema, request)));
  /** The last frame decoded, and what it decoded to (a write's event is the same bytes for every watcher). */
  let lastFrame: Buffer | undefined;
  let lastDecoded: WatchResponse | undefined;
  const decode = (frame: Buffer): WatchResponse => {
    if (lastFrame === undefined || !lastFrame.equals(frame)) {
      lastFrame = Buffer.from(frame);
      lastDecoded = fromBinary(WatchResponseSchema, frame);
    }
    return lastDecoded!;
  };
  const openRaw = (session: http2.ClientHttp2Session): Promise<boolean> =>
    new Promise<boolean>((resolveCreated) => {
      let created = false;
      const stream = session.request({ ":method": "POST", ":path": "/ripplecache.v1.CacheService/Watch", "content-type": "application/grpc", te: "trailers" }, { signal: abort.signal });
      let pending: Buffer | undefined;
      stream.on("data", (chunk: Buffer) => {
        let buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
        while (buf.length >= 5) {
          const length = buf.readUInt32BE(1);
          if (buf.length < 5 + length) break;
          onMessage(decode(buf.subarray(5, 5 + length)), () => {
            created = true;
            resolveCreated(true);
          });
          buf = buf.subarray(5 + length);
        }
        pending = buf.length > 0 ? buf : undefined;
      });
      stream.on("trailers", (t) => failure(new Error(`the watch stream ended: grpc-status ${String(t["grpc-status"])} ${String(t["grpc-message"] ?? "")}`)));
      stream.on("error", failure);
      stream.on("close", () => {
        if (!created) resolveCreated(false);
      });
      stream.end(requestFrame);
    });
  const open = (client: Client<typeof CacheService>): Promise<boolean> =>
    new Promise<boolean>((resolveCreated) => {
      let created = false;
      void (async () => {
        try {
          for await (const res of client.watch(request, { signal: abort.signal })) {
            onMessage(res, () => {
              created = true;
              resolveCreated(true);
            });
          }
          if (!closing) throw new Error("the watch stream ended");
        } catch (err) {
          failure(err);
        } finally {
          if (!created) resolveCreated(false);
        }
      })();
    });

  // Open every watcher, at most openConcurrency awaiting Created at once.
  const t0 = performance.now();
  let next = 0;
  let failed = 0;
  const raw = (config.client ?? "raw") === "raw";
  if (raw) {
    for (let c = 0; c < connections; c++) {
      const session = http2.connect(config.url);
      session.on("error", failure);
      rawSessions.push(session);
    }
  }
  const opener = async () => {
    while (next < config.watchers) {
      const i = next++;
      const c = Math.floor(i / config.perConnection);
      if (!(await (raw ? openRaw(rawSessions[c]) : open(clients[c])))) failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(config.openConcurrency, config.watchers) }, opener));
  const openMs = performance.now() - t0;
  send({ type: "opened", watchers: config.watchers - failed, connections, ms: openMs, failed, ...(firstError !== undefined ? { firstError } : {}) });

  const command = await new Promise<WatchersCommand>((res) => process.once("message", (m: WatchersCommand) => res(m)));
  if (command.type === "write") {
    const writerSessions = new Http2SessionManager(config.url);
    managers.push(writerSessions);
    const writer = createClient(CacheService, createGrpcTransport({ baseUrl: config.url, sessionManager: writerSessions }));
    const value = new Uint8Array(config.valueBytes).fill(0x62);
    // Open the writer's connection before anything is timed (Info, not a write: watchers would hear a write).
    await writer.info({});

    const samples: { revision: number; sent: number; acked: number }[] = [];
    const cpu0 = process.cpuUsage();
    let wall0 = performance.now();
    const total = config.warmupWrites + config.writes;
    for (let i = 0; i < total; i++) {
      if (i === config.warmupWrites) {
        send({ type: "writes-start" });
        wall0 = performance.now();
      }
      const sent = performance.now();
      const res = await writer.set({ key: config.key, value });
      const acked = performance.now();
      const revision = Number(res.revision);
      if (i >= config.warmupWrites) samples.push({ revision, sent, acked });
      if ((receipts.get(revision)?.length ?? 0) < config.watchers) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, config.receiptTimeoutMs);
          awaited = {
            revision,
            resolve: () => {
              clearTimeout(timer);
              resolve();
            },
          };
        });
        awaited = undefined;
      }
      await new Promise((r) => setTimeout(r, config.gapMs));
    }
    const writesWallMs = performance.now() - wall0;
    const cpu = process.cpuUsage(cpu0);
    send({ type: "writes-end" });

    const fromAck: number[] = [];
    const fromSend: number[] = [];
    const perWrite: WriteSample[] = [];
    for (const s of samples) {
      const times = receipts.get(s.revision) ?? [];
      const d = Float64Array.from(times, (t) => t - s.acked).sort();
      for (const t of times) {
        fromAck.push(t - s.acked);
        fromSend.push(t - s.sent);
      }
      perWrite.push({ revision: s.revision, setMs: s.acked - s.sent, receipts: times.length, p50Ms: quantile(d, 50), lastMs: d.length > 0 ? d[d.length - 1] : NaN });
    }
    const a = Float64Array.from(fromAck).sort();
    const b = Float64Array.from(fromSend).sort();
    const lasts = Float64Array.from(perWrite.map((w) => w.lastMs)).sort();
    const result: WatchersResult = {
      watchers: config.watchers - failed,
      connections,
      openMs,
      writes: samples.length,
      expected: samples.length * (config.watchers - failed),
      received: a.length,
      fromAck: {
        p50: quantile(a, 50),
        p99: quantile(a, 99),
        max: a.length > 0 ? a[a.length - 1] : NaN,
        min: a.length > 0 ? a[0] : NaN,
        negative: a.filter((x) => x < 0).length,
      },
      fromSend: { p50: quantile(b, 50), p99: quantile(b, 99), max: b.length > 0 ? b[b.length - 1] : NaN },
      setP50Ms: quantile(Float64Array.from(perWrite.map((w) => w.setMs)).sort(), 50),
      fullFanoutP50Ms: quantile(lasts, 50),
      fullFanoutMaxMs: lasts.length > 0 ? lasts[lasts.length - 1] : NaN,
      perWrite,
      clientCpu: (cpu.user + cpu.system) / 1000 / writesWallMs,
      writesWallMs,
      resyncs,
      progress,
      streamErrors,
      firstError,
    };
    send({ type: "result", result });
    await new Promise<WatchersCommand>((res) => process.once("message", (m: WatchersCommand) => res(m)));
  }
  closing = true;
  abort.abort();
  for (const m of managers) m.abort();
  for (const s of rawSessions) s.destroy();
}

/** A gRPC message frame (uncompressed). */
function envelope(data: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + data.byteLength);
  frame.writeUInt32BE(data.byteLength, 1);
  frame.set(data, 5);
  return frame;
}

const config = JSON.parse(process.argv[2] ?? "{}") as WatchersConfig;
// The parent going away (Ctrl-C, a crash) ends this process too.
process.on("disconnect", () => process.exit(2));
main(config).then(
  () => process.exit(0),
  (err: unknown) => {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`watchers failed: ${message}\n`);
    if (process.send === undefined) process.exit(1);
    process.send({ type: "error", message } satisfies WatchersMessage, () => process.exit(1));
  },
);
