/**
 * Bytes per key of a CacheStore and of Redis, measured in one run.
 *
 *   node --expose-gc dist/bench/memory.js [--keys N] [--calibration-keys N] [--no-redis]
 *
 * Three measurements, each in a process of its own so that one's memory does
 * not stay in the next one's RSS:
 *
 * 1. Our store, N keys (default 1,000,000; `key:0000000` ..., 11 bytes) with
 *    100-byte random values and TTLs (1 to 2 hours), in a store whose bound is
 *    large enough that nothing is evicted; memory read before and after, with a
 *    full GC before each reading. Values are copied by the store from views into
 *    one random pool allocated before the first reading, so what grows is only
 *    what the store keeps. Then a churn phase (below).
 * 2. The same at 1 KiB values (--calibration-keys, default 250,000 keys): the
 *    check of ENTRY_OVERHEAD_BYTES at a second value size.
 * 3. Redis (Debian's `redis-server`, on a Unix socket, no persistence): the
 *    same N keys, the same 100-byte values and TTLs (SET ... PX), pipelined;
 *    INFO memory's `used_memory` and `used_memory_rss` before and after.
 *
 * Our figures:
 * - heap: V8 heap used plus external memory. The values live in the store's
 *   slab arena and its per-slot metadata in typed arrays, both outside the V8
 *   heap, so heap used alone would leave them out; external counts them.
 * - rss: the resident set, which adds the V8 heap's free space (including new
 *   space grown under the insert load) and malloc's slack.
 * - counted: what the store charges against --max-memory (stats().bytesUsed):
 *   key + the value's arena share (chargedValueBytes: 105 for 100 bytes) +
 *   ENTRY_OVERHEAD_BYTES per entry.
 *
 * ENTRY_OVERHEAD_BYTES is a calibration: it was set to the RSS bytes per key
 * beyond key and arena share measured here at 100-byte values, so "counted"
 * equals "rss" at 100 bytes by construction. The 1 KiB measurement is the
 * check: how far counted is from RSS at a value size it was not fitted to.
 *
 * The churn phase overwrites every key with values of 1 to 200 bytes (other
 * size classes) and deletes three keys in four, and reports the arena's slabs
 * against the bytes counted for values: what fragmentation costs beyond the
 * count.
 *
 * Prints human lines, then, as the last stdout line, one JSON object (the
 * 100-byte figures at the top level, `calibration` and `redis` beside them).
 */
import { spawn, spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chargedValueBytes } from "../src/store/arena.js";
import { CacheStore, ENTRY_OVERHEAD_BYTES } from "../src/store/store.js";

const VALUE_BYTES = 100;
const CALIBRATION_VALUE_BYTES = 1024;
const USAGE = "usage: node --expose-gc dist/bench/memory.js [--keys N] [--calibration-keys N] [--no-redis]   (defaults 1000000, 250000)";

interface Args {
  readonly keys: number;
  readonly calibrationKeys: number;
  readonly redis: boolean;
  /** Child mode: measure only our store at this value size and print its JSON. */
  readonly storeOnly: number | undefined;
  readonly churn: boolean;
}

function parseArgv(argv: readonly string[]): Args {
  let keys = 1_000_000;
  let calibrationKeys = 250_000;
  let redis = true;
  let storeOnly: number | undefined;
  let churn = true;
  const int = (name: string, text: string | undefined, min: number) => {
    const n = Number(text?.replace(/_/g, ""));
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} wants an integer >= ${min}, got ${JSON.stringify(text)} (${USAGE})`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [name, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    const value = () => inline ?? argv[++i];
    switch (name) {
      case "--keys":
        keys = int("keys", value(), 1);
        break;
      case "--calibration-keys":
        calibrationKeys = int("calibration-keys", value(), 0);
        break;
      case "--store-only":
        storeOnly = int("store-only", value(), 1);
        break;
      case "--no-redis":
        redis = false;
        break;
      case "--no-churn":
        churn = false;
        break;
      case "--help":
      case "-h":
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${JSON.stringify(arg)} (${USAGE})`);
    }
  }
  return { keys, calibrationKeys, redis, storeOnly, churn };
}

interface Reading {
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly rss: number;
}

function settle(gc: () => void): Reading {
  // Twice: the first full GC can leave work (weak callbacks, finalized backing
  // stores) that the second completes.
  gc();
  gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, rss: m.rss };
}

function keyName(i: number): string {
  return `key:${String(i).padStart(7, "0")}`;
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

const round1 = (n: number) => Math.round(n * 10) / 10;

/** The values and TTLs both stores get: a random pool and a linear congruential walk over it. */
class Values {
  readonly pool = randomFillSync(Buffer.alloc(1 << 20));
  private seed = 0x9e3779b9;
  next(bytes: number): { value: Buffer; ttlMs: number } {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    const offset = this.seed % (this.pool.length - bytes);
    return { value: this.pool.subarray(offset, offset + bytes), ttlMs: 3_600_000 + (this.seed % 3_600_000) };
  }
  nextSize(max: number): number {
    this.seed = (Math.imul(this.seed, 1103515245) + 12345) >>> 0;
    return 1 + (this.seed % max);
  }
}

/** Our store at one value size, in this process. Prints a human line, then its JSON. */
function measureStore(keys: number, valueBytes: number, churn: boolean): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== "function") {
    console.error(`run with --expose-gc: ${USAGE}`);
    process.exit(2);
  }
  // Random bytes to copy values from: 1 MiB, allocated before the first reading.
  const values = new Values();
  // A bound nothing reaches: every key stays.
  const store = new CacheStore({ limits: { maxMemoryBytes: Number.MAX_SAFE_INTEGER } });
  let keyBytes = 0;

  const before = settle(gc);
  const started = performance.now();
  for (let i = 0; i < keys; i++) {
    const key = keyName(i);
    keyBytes += Buffer.byteLength(key, "utf8");
    const { value, ttlMs } = values.next(valueBytes);
    store.set(key, value, { ttlMs });
  }
  const insertMs = performance.now() - started;
  const after = settle(gc);

  const stats = store.stats();
  if (stats.keys !== keys || stats.evictions !== 0) {
    throw new Error(`expected ${keys} keys and no evictions, the store holds ${stats.keys} after ${stats.evictions} evictions`);
  }
  const heapUsedDelta = after.heapUsed - before.heapUsed;
  const externalDelta = after.external - before.external;
  const heapBytesPerKey = (heapUsedDelta + externalDelta) / keys;
  const rssBytesPerKey = (after.rss - before.rss) / keys;
  const heapTotalDelta = after.heapTotal - before.heapTotal;
  const countedBytesPerKey = stats.bytesUsed / keys;
  const keyBytesPerKey = keyBytes / keys;
  const chargedValue = chargedValueBytes(valueBytes);
  const overhead = heapBytesPerKey - keyBytesPerKey - chargedValue;
  const rssOverhead = rssBytesPerKey - keyBytesPerKey - chargedValue;
  const arena = store.arenaStats();

  console.log(
    `ours: ${keys} keys (${round1(keyBytesPerKey)}-byte keys, ${valueBytes}-byte values, TTLs) in ${(insertMs / 1000).toFixed(1)} s: ` +
      `heap ${round1(heapBytesPerKey)} B/key (used ${round1(heapUsedDelta / keys)} + external ${round1(externalDelta / keys)}; ${mib(heapUsedDelta + externalDelta)}), ` +
      `RSS ${round1(rssBytesPerKey)} B/key (${mib(after.rss - before.rss)}; V8 heap committed ${round1(heapTotalDelta / keys)} B/key), ` +
      `counted ${round1(countedBytesPerKey)} B/key (counted / RSS ${(countedBytesPerKey / rssBytesPerKey).toFixed(3)}); ` +
      `overhead beyond key and value (${chargedValue} B in the arena): heap ${round1(overhead)} B, RSS ${round1(rssOverhead)} B (ENTRY_OVERHEAD_BYTES = ${ENTRY_OVERHEAD_BYTES}); ` +
      `arena ${arena.slabs} slabs (${mib(arena.slabBytes)}), ${mib(arena.freeBytes)} free`,
  );
  const result: Record<string, number> = {
    keys,
    valueBytes,
    heapBytesPerKey: round1(heapBytesPerKey),
    rssBytesPerKey: round1(rssBytesPerKey),
    countedBytesPerKey: round1(countedBytesPerKey),
    keyBytesPerKey: round1(keyBytesPerKey),
    heapUsedBytesPerKey: round1(heapUsedDelta / keys),
    externalBytesPerKey: round1(externalDelta / keys),
    heapCommittedBytesPerKey: round1(heapTotalDelta / keys),
    overheadBytesPerKey: round1(overhead),
    rssOverheadBytesPerKey: round1(rssOverhead),
    entryOverheadBytes: ENTRY_OVERHEAD_BYTES,
    chargedValueBytes: chargedValue,
  };

  if (churn) {
    // Churn: other sizes for every key, then three keys in four deleted.
    const churnStarted = performance.now();
    for (let i = 0; i < keys; i++) store.set(keyName(i), values.next(values.nextSize(200)).value);
    for (let i = 0; i < keys; i++) if (i % 4 !== 0) store.delete(keyName(i));
    const churnMs = performance.now() - churnStarted;
    const churned = settle(gc);
    const churnArena = store.arenaStats();
    let chargedValues = 0;
    for (let slot = "", page; (page = store.scan("", slot, 1000, false)).entries.length > 0 || page.nextCursor !== ""; slot = page.nextCursor) {
      for (const e of page.entries) chargedValues += chargedValueBytes(e.value.byteLength);
      if (page.nextCursor === "") break;
    }
    const slackRatio = churnArena.slabBytes / chargedValues;
    console.log(
      `churn (${(churnMs / 1000).toFixed(1)} s): ${store.size} keys left, arena ${churnArena.slabs} slabs (${mib(churnArena.slabBytes)}) for ` +
        `${mib(chargedValues)} counted for values (x${slackRatio.toFixed(3)}), ${churnArena.moves} values moved by compaction; ` +
        `RSS ${mib(churned.rss - before.rss)} (high-water of the first phase ${mib(after.rss - before.rss)}), counted ${mib(store.stats().bytesUsed)}`,
    );
    Object.assign(result, {
      churnKeys: store.size,
      churnSlabBytes: churnArena.slabBytes,
      churnChargedValueBytes: chargedValues,
      churnSlabToCountedRatio: Math.round(slackRatio * 1000) / 1000,
      churnMoves: churnArena.moves,
    });
    if (store.size !== Math.ceil(keys / 4)) throw new Error("unreachable");
  }
  console.log(JSON.stringify(result));
  // Keep the store and the pool reachable until after the last reading.
  if (values.pool.length !== 1 << 20 || store.size === 0) throw new Error("unreachable");
}

/** Runs this script in a child process (its own heap and RSS) for one value size; its JSON. */
async function storeChild(keys: number, valueBytes: number, churn: boolean): Promise<Record<string, number>> {
  const args = ["--expose-gc", fileURLToPath(import.meta.url), "--store-only", String(valueBytes), "--keys", String(keys), ...(churn ? [] : ["--no-churn"])];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  const code = await new Promise<number | null>((res) => child.once("exit", (c) => res(c)));
  const lines = out.trim().split("\n");
  for (const line of lines.slice(0, -1)) console.log(line);
  if (code !== 0) throw new Error(`the ${valueBytes}-byte store measurement exited with ${code}`);
  return JSON.parse(lines.at(-1) ?? "") as Record<string, number>;
}

// --- Redis --------------------------------------------------------------------

export type RedisMemory =
  | {
      readonly status: "ok";
      readonly version: string;
      readonly keys: number;
      readonly valueBytes: number;
      readonly usedMemoryBytesPerKey: number;
      readonly rssBytesPerKey: number;
      readonly loadMs: number;
    }
  | { readonly status: "missing" | "failed"; readonly message: string };

/** A RESP connection that sends pipelined commands and counts or reads replies. */
class Resp {
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;
  constructor(private readonly socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.buffered = this.buffered.length === 0 ? d : Buffer.concat([this.buffered, d]);
      this.waiter?.();
    });
    socket.on("error", (err) => {
      this.failure = err;
      this.waiter?.();
    });
  }
  private async until(ready: () => boolean): Promise<void> {
    while (!ready()) {
      if (this.failure) throw this.failure;
      await new Promise<void>((res) => (this.waiter = res));
      this.waiter = undefined;
    }
  }
  static encode(args: (string | Buffer)[]): Buffer {
    const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
    for (const a of args) {
      const b = typeof a === "string" ? Buffer.from(a) : a;
      parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n"));
    }
    return Buffer.concat(parts);
  }
  /** Sends commands whose replies are each "+OK\r\n", and waits for all of them. */
  async allOk(commands: Buffer, count: number): Promise<void> {
    this.socket.write(commands);
    await this.until(() => this.buffered.length >= count * 5 || this.buffered.includes(0x2d /* "-" */));
    const ok = Buffer.from("+OK\r\n".repeat(count));
    if (!this.buffered.subarray(0, ok.length).equals(ok)) throw new Error(`redis: ${this.buffered.subarray(0, 200).toString()}`);
    this.buffered = this.buffered.subarray(ok.length);
  }
  /** One command whose reply is a bulk string or an integer. */
  async call(args: string[]): Promise<string> {
    this.socket.write(Resp.encode(args));
    await this.until(() => {
      const eol = this.buffered.indexOf("\r\n");
      if (eol < 0) return false;
      if (this.buffered[0] !== 0x24 /* "$" */) return true;
      return this.buffered.length >= eol + 2 + Number(this.buffered.subarray(1, eol).toString()) + 2;
    });
    const eol = this.buffered.indexOf("\r\n");
    const head = this.buffered.subarray(0, eol).toString();
    if (head.startsWith("$")) {
      const length = Number(head.slice(1));
      const body = this.buffered.subarray(eol + 2, eol + 2 + length).toString();
      this.buffered = this.buffered.subarray(eol + 2 + length + 2);
      return body;
    }
    this.buffered = this.buffered.subarray(eol + 2);
    if (head.startsWith("-")) throw new Error(`redis: ${head}`);
    return head.slice(1);
  }
}

function infoField(info: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)`, "m").exec(info);
  if (m === null) throw new Error(`redis INFO has no ${name}`);
  return Number(m[1]);
}

async function measureRedis(keys: number, valueBytes: number): Promise<RedisMemory> {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined || probe.status !== 0) {
    return { status: "missing", message: "redis-server is not installed (Debian: apt-get install redis-server; npm run bench -- --with-anchors installs it)" };
  }
  const version = /v=([0-9.]+)/.exec(probe.stdout)?.[1] ?? probe.stdout.trim();
  const dir = mkdtempSync(join(tmpdir(), "ripplecache-redis-"));
  const socketPath = join(dir, "redis.sock");
  const server = spawn(
    "redis-server",
    ["--port", "0", "--unixsocket", socketPath, "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning", "--maxmemory", "0"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  server.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  let socket: net.Socket | undefined;
  try {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        socket = await new Promise<net.Socket>((res, rej) => {
          const s = net.connect(socketPath, () => res(s));
          s.once("error", rej);
        });
        break;
      } catch (err) {
        if (Date.now() > deadline || server.exitCode !== null) throw new Error(`redis-server did not start: ${(err as Error).message} ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const redis = new Resp(socket);
    const values = new Values();
    const before = await redis.call(["INFO", "memory"]);
    const started = performance.now();
    const batch = 10_000;
    for (let i = 0; i < keys; i += batch) {
      const commands: Buffer[] = [];
      const n = Math.min(batch, keys - i);
      for (let k = i; k < i + n; k++) {
        const { value, ttlMs } = values.next(valueBytes);
        commands.push(Resp.encode(["SET", keyName(k), value, "PX", String(ttlMs)]));
      }
      await redis.allOk(Buffer.concat(commands), n);
    }
    const loadMs = performance.now() - started;
    const size = Number(await redis.call(["DBSIZE"]));
    if (size !== keys) throw new Error(`redis holds ${size} keys, expected ${keys}`);
    const after = await redis.call(["INFO", "memory"]);
    const used = (infoField(after, "used_memory") - infoField(before, "used_memory")) / keys;
    const rss = (infoField(after, "used_memory_rss") - infoField(before, "used_memory_rss")) / keys;
    console.log(
      `redis ${version}: ${keys} keys (${valueBytes}-byte values, TTLs) in ${(loadMs / 1000).toFixed(1)} s: used_memory ${round1(used)} B/key, RSS ${round1(rss)} B/key`,
    );
    return { status: "ok", version, keys, valueBytes, usedMemoryBytesPerKey: round1(used), rssBytesPerKey: round1(rss), loadMs: Math.round(loadMs) };
  } catch (err) {
    return { status: "failed", message: (err as Error).message };
  } finally {
    socket?.destroy();
    server.kill("SIGKILL");
    await new Promise((r) => (server.exitCode !== null || server.signalCode !== null ? r(undefined) : server.once("exit", r)));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = parseArgv(process.argv.slice(2));
  if (args.storeOnly !== undefined) {
    measureStore(args.keys, args.storeOnly, args.churn);
    return;
  }
  const ours = await storeChild(args.keys, VALUE_BYTES, true);
  const calibration = args.calibrationKeys > 0 ? await storeChild(args.calibrationKeys, CALIBRATION_VALUE_BYTES, false) : undefined;
  const redis: RedisMemory = args.redis ? await measureRedis(args.keys, VALUE_BYTES) : { status: "missing", message: "not measured (--no-redis)" };
  if (redis.status !== "ok") console.log(`redis: ${redis.message}`);
  console.log(
    JSON.stringify({
      ...ours,
      calibration:
        calibration === undefined
          ? undefined
          : {
              keys: calibration.keys,
              valueBytes: calibration.valueBytes,
              rssBytesPerKey: calibration.rssBytesPerKey,
              countedBytesPerKey: calibration.countedBytesPerKey,
              heapBytesPerKey: calibration.heapBytesPerKey,
              countedToRss: Math.round((calibration.countedBytesPerKey! / calibration.rssBytesPerKey!) * 1000) / 1000,
            },
      redis,
      rssToRedisRss: redis.status === "ok" ? Math.round((ours.rssBytesPerKey! / redis.rssBytesPerKey) * 1000) / 1000 : undefined,
    }),
  );
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
