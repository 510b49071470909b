/**
 * Bytes per key of a CacheStore, measured.
 *
 *   node --expose-gc dist/bench/memory.js [--keys N]     (default 1,000,000)
 *
 * Inserts N keys (`key:0000000` ..., 11 bytes) with 100-byte random values and
 * TTLs (1 to 2 hours) into a store whose bound is large enough that nothing is
 * evicted, and reads memory before and after, with a full GC before each
 * reading. Values are copied by the store from views into one random pool
 * allocated before the first reading, so what grows is only what the store
 * keeps.
 *
 * - heap: V8 heap used plus external memory. The values live in the store's
 *   slab arena and its per-slot metadata in typed arrays, both outside the V8
 *   heap, so heap used alone would leave them out; external counts them.
 * - rss: the resident set, which adds the V8 heap's free space (including new
 *   space grown under the insert load, a fixed ~24 MiB here) and malloc's slack.
 * - counted: what the store charges against --max-memory (stats().bytesUsed):
 *   key + the value's arena share (chargedValueBytes: 105 for 100 bytes) +
 *   ENTRY_OVERHEAD_BYTES per entry.
 *
 * The honest ENTRY_OVERHEAD_BYTES is RSS bytes per key minus key bytes and the
 * value's arena share (printed as "overhead"). A churn phase then overwrites
 * every key with values of 1 to 200 bytes (other size classes) and deletes
 * three keys in four, and reports the arena's slabs against the bytes counted
 * for values: what fragmentation costs beyond the count.
 *
 * Prints a human line, then, as the last stdout line, one JSON object.
 */
import { randomFillSync } from "node:crypto";
import { chargedValueBytes } from "../src/store/arena.js";
import { CacheStore, ENTRY_OVERHEAD_BYTES } from "../src/store/store.js";

const VALUE_BYTES = 100;

function parseKeys(argv: readonly string[]): number {
  let keys = 1_000_000;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith("--keys=") ? arg.slice("--keys=".length) : undefined;
    if (arg === "--keys" || eq !== undefined) {
      const text = eq ?? argv[++i];
      const n = Number(text?.replace(/_/g, ""));
      if (!Number.isSafeInteger(n) || n < 1) {
        throw new Error(`--keys wants a positive integer, got ${JSON.stringify(text)}`);
      }
      keys = n;
    } else if (arg === "--help" || arg === "-h") {
      console.log("usage: node --expose-gc dist/bench/memory.js [--keys N]   (default 1000000)");
      process.exit(0);
    } else {
      throw new Error(`unknown argument ${JSON.stringify(arg)} (usage: node --expose-gc dist/bench/memory.js [--keys N])`);
    }
  }
  return keys;
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

function main(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== "function") {
    console.error("run with --expose-gc: node --expose-gc dist/bench/memory.js [--keys N]");
    process.exit(2);
  }
  const keys = parseKeys(process.argv.slice(2));

  // Random bytes to copy values from: 1 MiB, allocated before the first reading.
  const pool = randomFillSync(Buffer.alloc(1 << 20));
  const spans = pool.length - VALUE_BYTES;
  // A bound nothing reaches: every key stays.
  const store = new CacheStore({ limits: { maxMemoryBytes: Number.MAX_SAFE_INTEGER } });
  let keyBytes = 0;
  let seed = 0x9e3779b9;

  const before = settle(gc);
  const started = performance.now();
  for (let i = 0; i < keys; i++) {
    const key = keyName(i);
    keyBytes += Buffer.byteLength(key, "utf8");
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const offset = seed % spans;
    const ttlMs = 3_600_000 + (seed % 3_600_000);
    store.set(key, pool.subarray(offset, offset + VALUE_BYTES), { ttlMs });
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
  const chargedValue = chargedValueBytes(VALUE_BYTES);
  const overhead = heapBytesPerKey - keyBytesPerKey - chargedValue;
  const rssOverhead = rssBytesPerKey - keyBytesPerKey - chargedValue;
  const arena = store.arenaStats();
  const round = (n: number) => Math.round(n * 10) / 10;

  console.log(
    `${keys} keys (${round(keyBytesPerKey)}-byte keys, ${VALUE_BYTES}-byte values, TTLs) in ${(insertMs / 1000).toFixed(1)} s: ` +
      `heap ${round(heapBytesPerKey)} B/key (used ${round(heapUsedDelta / keys)} + external ${round(externalDelta / keys)}; ${mib(heapUsedDelta + externalDelta)}), ` +
      `RSS ${round(rssBytesPerKey)} B/key (${mib(after.rss - before.rss)}; V8 heap committed ${round(heapTotalDelta / keys)} B/key), ` +
      `counted ${round(countedBytesPerKey)} B/key; ` +
      `overhead beyond key and value (${chargedValue} B in the arena): heap ${round(overhead)} B, RSS ${round(rssOverhead)} B (ENTRY_OVERHEAD_BYTES = ${ENTRY_OVERHEAD_BYTES}); ` +
      `arena ${arena.slabs} slabs (${mib(arena.slabBytes)}), ${mib(arena.freeBytes)} free`,
  );

  // Churn: other sizes for every key, then three keys in four deleted.
  const churnStarted = performance.now();
  for (let i = 0; i < keys; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const offset = seed % spans;
    store.set(keyName(i), pool.subarray(offset, offset + 1 + (seed % 200)));
  }
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
  console.log(
    JSON.stringify({
      keys,
      valueBytes: VALUE_BYTES,
      heapBytesPerKey: round(heapBytesPerKey),
      rssBytesPerKey: round(rssBytesPerKey),
      countedBytesPerKey: round(countedBytesPerKey),
      keyBytesPerKey: round(keyBytesPerKey),
      heapUsedBytesPerKey: round(heapUsedDelta / keys),
      externalBytesPerKey: round(externalDelta / keys),
      heapCommittedBytesPerKey: round(heapTotalDelta / keys),
      overheadBytesPerKey: round(overhead),
      rssOverheadBytesPerKey: round(rssOverhead),
      entryOverheadBytes: ENTRY_OVERHEAD_BYTES,
      chargedValueBytes: chargedValue,
      churnKeys: store.size,
      churnSlabBytes: churnArena.slabBytes,
      churnChargedValueBytes: chargedValues,
      churnSlabToCountedRatio: Math.round(slackRatio * 1000) / 1000,
      churnMoves: churnArena.moves,
    }),
  );
  // Keep the store and the pool reachable until after the last reading.
  if (store.size !== Math.ceil(keys / 4) || pool.length !== 1 << 20) throw new Error("unreachable");
}

main();
