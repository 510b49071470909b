import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../src/gen/grpc/health/v1/health_pb.js";
import { CacheClient, type ClientOptions } from "../src/client/client.js";
import { startServer, type ServerProcess } from "./helpers/server.js";
import { expectCode } from "./helpers/assert.js";

/** Every protocol and HTTP version the one port serves. */
const MATRIX: readonly Omit<ClientOptions, "addr">[] = [
  { protocol: "connect", httpVersion: "1.1" },
  { protocol: "connect", httpVersion: "2" },
  { protocol: "connect", httpVersion: "1.1", useJson: true },
  { protocol: "connect", httpVersion: "2", useJson: true },
  { protocol: "grpc" },
  { protocol: "grpc-web", httpVersion: "1.1" },
  { protocol: "grpc-web", httpVersion: "2" },
];


describe("cache API over every protocol", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer(["--max-key-bytes", "64", "--max-value-bytes", "1KiB", "--max-batch", "10"]);
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  for (const options of MATRIX) {
    const name = `${options.protocol} HTTP/${options.protocol === "grpc" ? "2" : options.httpVersion}${options.useJson ? " JSON" : ""}`;
    test(name, async () => {
      const client = new CacheClient({ addr: server.addr, ...options });
      const p = `${name}/`;
      try {
        // Set and Get round-trip bytes, flags and TTL.
        const value = Uint8Array.from([0, 1, 2, 255, 254]);
        const s = await client.set(`${p}a`, value, { flags: 42, ttlMs: 60_000 });
        assert.equal(s.applied, true);
        const g = await client.get(`${p}a`);
        assert.ok(g);
        assert.deepEqual([...g.value], [...value]);
        assert.equal(g.revision, s.revision);
        assert.equal(g.flags, 42);
        assert.ok(g.ttlMs > 59_000 && g.ttlMs <= 60_000, `ttl ${g.ttlMs}`);
        assert.equal(await client.get(`${p}missing`), undefined);

        // Conditions: not met is not an error.
        assert.deepEqual(await client.set(`${p}a`, "x", { ifAbsent: true }), { applied: false, revision: s.revision });
        assert.equal((await client.set(`${p}b`, "x", { ifPresent: true })).applied, false);
        const cas = await client.set(`${p}a`, "y", { ifRevision: s.revision });
        assert.equal(cas.applied, true);
        assert.ok(cas.revision > s.revision);
        assert.equal((await client.set(`${p}a`, "z", { ifRevision: s.revision })).applied, false);

        // GetMany keeps request order and reports misses.
        const many = await client.rpc.getMany({ keys: [`${p}missing`, `${p}a`] });
        assert.deepEqual(
          many.entries.map((e) => [e.key, e.found]),
          [
            [`${p}missing`, false],
            [`${p}a`, true],
          ],
        );
        assert.equal(new TextDecoder().decode(many.entries[1].value), "y");

        // SetMany: one result per entry.
        const sm = await client.rpc.setMany({
          entries: [
            { key: `${p}m1`, value: new TextEncoder().encode("1") },
            { key: `${p}a`, value: new Uint8Array(), condition: { case: "ifAbsent", value: true } },
          ],
        });
        assert.deepEqual(
          sm.results.map((r) => r.applied),
          [true, false],
        );

        // Increment: decimal ASCII, errors with the right codes.
        assert.equal((await client.increment(`${p}n`, 5n)).value, 5n);
        assert.equal((await client.increment(`${p}n`, -7n)).value, -2n);
        assert.equal(new TextDecoder().decode((await client.get(`${p}n`))!.value), "-2");
        await expectCode(client.increment(`${p}a`, 1n), Code.FailedPrecondition, /not a decimal integer/);
        await client.set(`${p}big`, "9223372036854775807");
        await expectCode(client.increment(`${p}big`, 1n), Code.OutOfRange, /overflow/);

        // Touch and Delete.
        const t = await client.rpc.touch({ key: `${p}m1`, ttlMs: 5000n });
        assert.equal(t.found, true);
        assert.ok((await client.get(`${p}m1`))!.ttlMs > 0);
        assert.equal((await client.rpc.touch({ key: `${p}nope`, ttlMs: 1n })).found, false);
        const cur = (await client.get(`${p}m1`))!.revision;
        assert.equal((await client.delete(`${p}m1`, cur - 1)).deleted, false);
        assert.equal((await client.delete(`${p}m1`, cur)).deleted, true);
        assert.equal((await client.delete(`${p}m1`)).deleted, false);

        // Scan pages through exactly the keys with the prefix.
        const keys: string[] = [];
        for await (const e of client.scan(p, { pageSize: 2, keysOnly: true })) {
          keys.push(e.key);
          assert.equal(e.value.length, 0);
        }
        assert.deepEqual(keys.sort(), [`${p}a`, `${p}big`, `${p}n`].sort());

        // Bad input gets INVALID_ARGUMENT with a message that says what to fix.
        await expectCode(client.get(""), Code.InvalidArgument, /key is empty/);
        await expectCode(client.set("k".repeat(65), "v"), Code.InvalidArgument, /65 bytes exceeds max-key-bytes of 64/);
        await expectCode(client.set(`${p}v`, new Uint8Array(1025)), Code.InvalidArgument, /1025 bytes exceeds max-value-bytes of 1024/);
        await expectCode(client.rpc.set({ key: `${p}v`, ttlMs: -1n }), Code.InvalidArgument, /ttl_ms -1/);
        await expectCode(client.rpc.getMany({ keys: Array.from({ length: 11 }, (_, i) => `k${i}`) }), Code.InvalidArgument, /max-batch of 10/);
        await expectCode(client.rpc.scan({ cursor: "not-a-cursor" }), Code.InvalidArgument, /cursor/);
        assert.equal(await client.get(`${p}v`), undefined, "a refused write changes nothing");

        const info = await client.info();
        assert.ok(info.revision > 0n);
        assert.ok(info.hits > 0n && info.misses > 0n);
      } finally {
        client.close();
      }
    });
  }

  test("Load streams entries in (gRPC and Connect over HTTP/2)", async () => {
    for (const protocol of ["grpc", "connect"] as const) {
      const client = new CacheClient({ addr: server.addr, protocol });
      try {
        async function* entries() {
          for (let i = 0; i < 500; i++) yield { key: `load-${protocol}/${i}`, value: new TextEncoder().encode(`v${i}`) };
        }
        const r = await client.rpc.load(entries());
        assert.equal(r.count, 500n);
        assert.ok(r.bytes > 500n * 10n);
        assert.equal(new TextDecoder().decode((await client.get(`load-${protocol}/499`))!.value), "v499");
        async function* bad() {
          yield { key: `load-${protocol}/ok`, value: new Uint8Array(1) };
          yield { key: "", value: new Uint8Array(1) };
        }
        await expectCode(client.rpc.load(bad()), Code.InvalidArgument, /entry 2 of the load: key is empty/);
      } finally {
        client.close();
      }
    }
  });

  test("Flush removes every key and returns its revision", async () => {
    const client = new CacheClient({ addr: server.addr });
    try {
      await client.set("flush/a", "1");
      const before = Number((await client.info()).revision);
      const r = await client.rpc.flush({});
      assert.equal(Number(r.revision), before + 1);
      assert.equal(await client.get("flush/a"), undefined);
      assert.equal((await client.info()).keys, 0n);
    } finally {
      client.close();
    }
  });
});

describe("memory bound", () => {
  test("least recently used keys are evicted and bytes stay under the bound", async () => {
    const server = await startServer(["--max-memory", "1MiB"]);
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      const value = new Uint8Array(1000);
      await client.set("hot", value);
      for (let i = 0; i < 1100; i++) {
        await client.set(`cold/${i}`, value);
        if (i % 50 === 0) await client.get("hot"); // keep "hot" recently used
      }
      const info = await client.info();
      assert.ok(info.bytesUsed <= info.bytesLimit, `${info.bytesUsed} > ${info.bytesLimit}`);
      assert.equal(info.bytesLimit, 1048576n);
      assert.ok(info.evictions > 0n);
      assert.ok(await client.get("hot"), "a recently used key survives");
      assert.equal(await client.get("cold/0"), undefined, "the least recently used key is gone");
    } finally {
      client.close();
      await server.stop();
    }
  });

  test("expired keys are removed without being read", async () => {
    const server = await startServer();
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      await client.rpc.setMany({ entries: Array.from({ length: 500 }, (_, i) => ({ key: `ttl/${i}`, value: new Uint8Array(10), ttlMs: 50n })) });
      const deadline = Date.now() + 5000;
      let info = await client.info();
      while (info.keys > 0n && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        info = await client.info();
      }
      assert.equal(info.keys, 0n);
      assert.equal(info.expirations, 500n);
      assert.equal(info.hits + info.misses, 0n, "no key was read");
    } finally {
      client.close();
      await server.stop();
    }
  });
});

describe("auth", () => {
  test("a missing or wrong token gets UNAUTHENTICATED; health needs none", async () => {
    const server = await startServer([], { RIPPLECACHE_AUTH_TOKEN: "s3cret" });
    try {
      for (const protocol of ["grpc", "connect"] as const) {
        const none = new CacheClient({ addr: server.addr, protocol });
        const wrong = new CacheClient({ addr: server.addr, protocol, token: "s3cre7" });
        const right = new CacheClient({ addr: server.addr, protocol, token: "s3cret" });
        try {
          await expectCode(none.get("k"), Code.Unauthenticated, /missing token/);
          await expectCode(wrong.get("k"), Code.Unauthenticated, /invalid token/);
          assert.equal((await right.set("k", "v")).applied, true);
          const health = createClient(Health, protocol === "grpc" ? createGrpcTransport({ baseUrl: server.url }) : createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
          assert.equal((await health.check({ service: "" })).status, HealthCheckResponse_ServingStatus.SERVING);
        } finally {
          none.close();
          wrong.close();
          right.close();
        }
      }
      assert.ok(!server.output.some((line) => line.includes("s3cret")), "the token is never logged");
    } finally {
      await server.stop();
    }
  });
});

describe("shutdown", () => {
  test("SIGTERM lets in-flight calls finish and exits 0", async () => {
    const server = await startServer();
    const client = new CacheClient({ addr: server.addr, protocol: "grpc" });
    try {
      async function* slow() {
        for (let i = 0; i < 5; i++) {
          yield { key: `slow/${i}`, value: new Uint8Array(1) };
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const inFlight = client.rpc.load(slow());
      await new Promise((r) => setTimeout(r, 150));
      const exit = server.stop("SIGTERM");
      const r = await inFlight;
      assert.equal(r.count, 5n);
      assert.equal(await exit, 0);
    } finally {
      client.close();
      await server.stop("SIGKILL");
    }
  });
});
