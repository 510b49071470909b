/**
 * Active expiry at scale: 1,000,000 keys with TTLs spread over a few seconds,
 * none of them read. Reports how long after its deadline each key's EXPIRE
 * change was published (p50/p99/max), with the real ExpirySweeper and clock.
 * Run: node dist/bench/expiry.js [--keys N]
 */
import { ExpirySweeper } from "../src/store/expiry-sweeper.js";
import { CacheStore } from "../src/store/store.js";

const keysArg = process.argv.indexOf("--keys");
const keys = keysArg > 0 ? Number(process.argv[keysArg + 1]) : 1_000_000;
const store = new CacheStore({ limits: { maxMemoryBytes: 4 * 1024 ** 3 } });
const deadlines = new Map<string, number>();
const delays: number[] = [];
store.onChange((c) => {
  if (c.type === "expire") delays.push(Date.now() - deadlines.get(c.key)!);
});
const value = new Uint8Array(100);
const start = Date.now();
for (let i = 0; i < keys; i++) {
  const ttl = 10_000 + Math.floor(Math.random() * 3000); // after the (synchronous) load
  const key = `k${i}`;
  store.set(key, value, { ttlMs: ttl });
  deadlines.set(key, Date.now() + ttl);
}
const loaded = Date.now() - start;
const sweeper = new ExpirySweeper(store);
sweeper.start();
const timer = setInterval(() => {
  if (store.size > 0) return;
  clearInterval(timer);
  sweeper.stop();
  delays.sort((a, b) => a - b);
  const q = (p: number) => delays[Math.min(delays.length - 1, Math.floor(p * delays.length))];
  const result = { keys, loadMs: loaded, expireEvents: delays.length, delayP50Ms: q(0.5), delayP99Ms: q(0.99), delayMaxMs: delays[delays.length - 1] };
  console.log(`EXPIRE after the deadline, ${keys} keys with TTLs of 10-13 s, none read: p50 ${result.delayP50Ms} ms, p99 ${result.delayP99Ms} ms, max ${result.delayMaxMs} ms (${result.expireEvents} events)`);
  console.log(JSON.stringify(result));
}, 200);
