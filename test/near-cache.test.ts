import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CacheClient } from "../src/client/client.js";
import { NearCache } from "../src/client/near-cache.js";
import { startServer, type ServerProcess } from "./helpers/server.js";

describe("near cache", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.stop();
  });

  test("answers locally until a write invalidates the copy", async () => {
    const reader = new CacheClient({ addr: server.addr, protocol: "grpc" });
    const writer = new CacheClient({ addr: server.addr, protocol: "connect" });
    const near = new NearCache(reader);
    try {
      await writer.set("nc/a", "1");
      assert.equal(new TextDecoder().decode((await near.get("nc/a"))!.value), "1");
      assert.equal(near.stats.misses, 1);
      assert.equal(new TextDecoder().decode((await near.get("nc/a"))!.value), "1");
      assert.equal(near.stats.hits, 1, "the second read is local");
      const w = await writer.set("nc/a", "2");
      await near.waitForRevision(w.revision);
      assert.equal(near.size, 0, "the invalidation dropped the copy");
      const r = await near.get("nc/a");
      assert.equal(new TextDecoder().decode(r!.value), "2");
      assert.equal(r!.revision, w.revision);
      // Misses are not cached: a key created later is found.
      assert.equal(await near.get("nc/none"), undefined);
      const c = await writer.set("nc/none", "now");
      await near.waitForRevision(c.revision);
      assert.equal(new TextDecoder().decode((await near.get("nc/none"))!.value), "now");
      // A flush is a Resync: every copy goes.
      await near.get("nc/a");
      assert.ok(near.size > 0);
      const f = await writer.rpc.flush({});
      await near.waitForRevision(Number(f.revision));
      assert.equal(near.size, 0);
      assert.equal(near.stats.resyncs, 1);
    } finally {
      near.close();
      reader.close();
      writer.close();
    }
  });

  test("holds copies within its byte bound; a copy pushed out is untracked", async () => {
    const reader = new CacheClient({ addr: server.addr, protocol: "grpc" });
    const writer = new CacheClient({ addr: server.addr, protocol: "connect" });
    const value = "v".repeat(1000);
    // Room for three copies of 1,000-byte values (plus key and overhead), not four.
    const near = new NearCache(reader, { maxBytes: 3 * 1120 });
    try {
      for (let i = 0; i < 5; i++) await writer.set(`nc/b${i}`, value);
      for (let i = 0; i < 5; i++) assert.equal((await near.get(`nc/b${i}`))!.value.byteLength, 1000);
      assert.equal(near.size, 3, "the two least recently used copies were dropped");
      assert.equal(near.stats.hits, 0);
      assert.ok(await near.get("nc/b4"));
      assert.equal(near.stats.hits, 1, "a held copy is served locally");
      // The server forgot the dropped keys: a write to one reports nothing; a write to a held one does.
      const before = near.stats.invalidations;
      const w0 = await writer.set("nc/b0", "new");
      await near.waitForRevision(w0.revision);
      assert.equal(near.stats.invalidations, before, "no invalidation for an untracked key");
      const w4 = await writer.set("nc/b4", "new");
      await near.waitForRevision(w4.revision);
      assert.equal(near.stats.invalidations, before + 1);
      assert.equal(new TextDecoder().decode((await near.get("nc/b4"))!.value), "new");
    } finally {
      near.close();
      reader.close();
      writer.close();
    }
  });

  test("no stale read once the invalidation for a write was delivered (concurrent readers and writers)", async () => {
    const reader = new CacheClient({ addr: server.addr, protocol: "grpc" });
    const writerA = new CacheClient({ addr: server.addr, protocol: "grpc" });
    const writerB = new CacheClient({ addr: server.addr, protocol: "connect" });
    const near = new NearCache(reader);
    const keys = ["race/0", "race/1", "race/2"];
    let writing = true;
    let reads = 0;
    let checks = 0;
    try {
      // Readers hammer the near cache so fetches race with invalidations.
      const readers = Array.from({ length: 4 }, async () => {
        while (writing) {
          await near.get(keys[reads++ % keys.length]);
          // Local hits resolve at once; let I/O in between reads.
          await new Promise((r) => setImmediate(r));
        }
      });
      const write = async (client: CacheClient, id: string) => {
        for (let i = 0; i < 60; i++) {
          const key = keys[i % keys.length];
          const w = await client.set(key, `${id}-${i}`);
          // Once the stream has delivered everything up to this write, the near
          // cache must not return anything older than it.
          await near.waitForRevision(w.revision);
          const r = await near.get(key);
          assert.ok(r !== undefined && r.revision >= w.revision, `stale read of ${key}: revision ${r?.revision} after write ${w.revision}`);
          checks++;
        }
      };
      await Promise.all([write(writerA, "a"), write(writerB, "b")]);
      writing = false;
      await Promise.all(readers);
      assert.equal(checks, 120);
      assert.ok(reads > 120, `readers ran (${reads} reads)`);
      assert.ok(near.stats.hits > 0, "some reads were answered locally");
      assert.ok(near.stats.invalidations > 0);
    } finally {
      writing = false;
      near.close();
      reader.close();
      writerA.close();
      writerB.close();
    }
  });

  test("does not serve copies while disconnected, and recovers after the server returns", async () => {
    const own = await startServer();
    const port = own.port;
    const reader = new CacheClient({ addr: own.addr, protocol: "grpc", timeoutMs: 2000 });
    const near = new NearCache(reader, { initialBackoffMs: 50, maxBackoffMs: 200 });
    let again: ServerProcess | undefined;
    try {
      const writer = new CacheClient({ addr: own.addr });
      await writer.set("dc/a", "1");
      writer.close();
      await near.get("dc/a");
      assert.equal(near.size, 1);
      const w1 = new CacheClient({ addr: own.addr });
      for (let i = 0; i < 20; i++) await w1.set(`dc/other${i}`, "x");
      w1.close();
      await near.waitForRevision(21);
      const revisionBefore = near.revision;
      assert.equal(await own.stop("SIGKILL"), null);
      // The copy is not served: the fetch goes to the (dead) server and fails.
      const deadline = Date.now() + 5000;
      while (near.connected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(near.connected, false);
      await assert.rejects(near.get("dc/a"));
      // A new server on the same port: the cache reconnects by itself.
      again = await startServer(["--port", String(port)]);
      const w2 = new CacheClient({ addr: again.addr });
      await w2.set("dc/a", "2");
      w2.close();
      let value: string | undefined;
      while (Date.now() < deadline + 5000) {
        try {
          const r = await near.get("dc/a");
          value = r && new TextDecoder().decode(r.value);
          if (near.connected) break;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      assert.equal(value, "2");
      assert.ok(near.stats.reconnects >= 1);
      // The restarted server holds another history: its revision 2 is not the
      // old server's revision 2. The cache resumed with since_history, was told
      // (Resync HISTORY), dropped its copies and follows the new revisions.
      assert.ok(near.stats.resyncs >= 1, "a resume into another history resyncs");
      assert.ok(near.revision < revisionBefore, `the revision went back to the new history's (${near.revision}, was ${revisionBefore})`);
    } finally {
      near.close();
      reader.close();
      await own.stop("SIGKILL");
      await again?.stop();
    }
  });
});
