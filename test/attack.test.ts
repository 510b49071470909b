import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { runAttack } from "../bench/attack-wire.js";
import { CacheClient } from "../src/client/client.js";
import { startServer } from "./helpers/server.js";

/*
 * A regression guard for `npm run attack` (bench/attack.ts), small enough
 * for every run: the zero-window attack (SETTINGS_INITIAL_WINDOW_SIZE=0, then
 * Gets of a 1 MiB value, never a WINDOW_UPDATE) from one connection against
 * our engine, 100 Gets instead of 1,000. Unbounded, the server would queue
 * 100 MiB of answers for a client that takes none; the connection's memory
 * budget refuses or closes it long before.
 */

const MiB = 1024 * 1024;

function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  assert.ok(m !== null, "no VmRSS in /proc");
  return Number(m[1]) * 1024;
}

test("zero window from one connection (100 Gets of 1 MiB): the server refuses or closes it within 2 s, RSS grows by less than 32 MiB", async () => {
  const server = await startServer();
  const client = new CacheClient({ addr: server.addr, protocol: "grpc", timeoutMs: 10_000 });
  try {
    await client.set("big", Buffer.alloc(MiB, 0x5a));
    await client.get("big"); // the server's first 1 MiB answer is not the attack's
    const pid = server.proc.pid!;
    const before = rss(pid);
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 10);
    let result;
    try {
      result = await runAttack({ attack: "zero-window", port: server.port, holdMs: 3000, streams: 100 });
    } finally {
      clearInterval(sampler);
    }
    const c = result.connections[0];
    const ended = [c.firstRefusalAtMs, c.goaway?.atMs, c.closedAtMs].filter((t): t is number => t !== undefined);
    assert.ok(ended.length > 0 && Math.min(...ended) <= 2000, `the attacker was neither refused nor disconnected within 2 s: ${JSON.stringify(c)}`);
    assert.ok(peak - before < 32 * MiB, `RSS grew by ${((peak - before) / MiB).toFixed(1)} MiB (${(before / MiB).toFixed(0)} -> ${(peak / MiB).toFixed(0)} MiB)`);
    // The server still serves others.
    assert.equal((await client.get("big"))?.value.length, MiB);
  } finally {
    client.close();
    await server.stop();
  }
});
