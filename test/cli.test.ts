import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { CLI, startServer, type ServerProcess } from "./helpers/server.js";

function cli(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, encoding: "utf8", timeout: 15_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("ripplecache CLI", () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.stop();
  });

  for (const protocol of ["connect", "grpc", "grpc-web"]) {
    test(`set, get, incr, del, scan, info over ${protocol}`, () => {
      const base = ["--addr", server.addr, "--protocol", protocol];
      const k = `cli-${protocol}`;
      assert.match(cli(["set", `${k}/a`, "hello", ...base]).stdout, /^OK revision \d+/);
      const get = cli(["get", `${k}/a`, ...base]);
      assert.equal(get.code, 0);
      assert.equal(get.stdout, "hello");
      // Value from stdin, bytes kept exactly.
      assert.equal(cli(["set", `${k}/b`, ...base], "line1\nline2\n").code, 0);
      assert.equal(cli(["get", `${k}/b`, ...base]).stdout, "line1\nline2\n");
      // A miss exits 1.
      const miss = cli(["get", `${k}/none`, ...base]);
      assert.equal(miss.code, 1);
      assert.equal(miss.stdout, "");
      assert.equal(cli(["incr", `${k}/n`, "41", ...base]).stdout, "41\n");
      assert.equal(cli(["incr", `${k}/n`, ...base]).stdout, "42\n");
      const notInt = cli(["incr", `${k}/a`, ...base]);
      assert.equal(notInt.code, 2);
      assert.match(notInt.stderr, /^ripplecache: FailedPrecondition: value of key .* is not a decimal integer\n$/);
      assert.equal(cli(["set", `${k}/a`, "x", "--if-absent", ...base]).code, 1);
      assert.equal(cli(["scan", `${k}/`, "--keys-only", ...base]).stdout.split("\n").filter(Boolean).sort().join(","), `${k}/a,${k}/b,${k}/n`);
      assert.equal(cli(["del", `${k}/a`, ...base]).code, 0);
      assert.equal(cli(["del", `${k}/a`, ...base]).code, 1);
      const info = JSON.parse(cli(["info", ...base]).stdout) as { role: string; keys: number };
      assert.equal(info.role, "PRIMARY");
      assert.ok(info.keys >= 2);
    });
  }

  test("watch prints events as they come and exits 0 on SIGINT", async () => {
    const watcher = spawn(process.execPath, [CLI, "watch", "--prefix", "cliwatch/", "--json", "--addr", server.addr], { stdio: ["ignore", "pipe", "pipe"] });
    const records: { type: string; key?: string; value?: string; revision: number; history?: string }[] = [];
    const lines = createInterface({ input: watcher.stdout! });
    const seen = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`watch printed ${JSON.stringify(records)}`)), 10_000);
        const check = () => {
          if (records.length >= n) {
            clearTimeout(timer);
            lines.off("line", onLine);
            resolve();
          }
        };
        const onLine = (line: string) => {
          records.push(JSON.parse(line) as (typeof records)[number]);
          check();
        };
        lines.on("line", onLine);
        check();
      });
    try {
      await seen(1);
      assert.equal(records[0].type, "CREATED");
      assert.match(records[0].history ?? "", /^[0-9a-f]{40}$/, "Created names the history to resume with (--from-history)");
      assert.equal(cli(["set", "cliwatch/a", "v1", "--addr", server.addr]).code, 0);
      assert.equal(cli(["set", "other", "v1", "--addr", server.addr]).code, 0);
      assert.equal(cli(["del", "cliwatch/a", "--addr", server.addr]).code, 0);
      await seen(3);
      assert.deepEqual(
        records.slice(1).map((r) => [r.type, r.key, r.value]),
        [
          ["PUT", "cliwatch/a", "v1"],
          ["DELETE", "cliwatch/a", ""],
        ],
      );
      assert.ok(records[2].revision > records[1].revision);
      const exit = new Promise<number | null>((resolve) => watcher.once("exit", (code) => resolve(code)));
      watcher.kill("SIGINT");
      assert.equal(await exit, 0);
    } finally {
      watcher.kill("SIGKILL");
    }
  });

  test("errors are one line a person understands", () => {
    const down = cli(["get", "k", "--addr", "127.0.0.1:1"]);
    assert.equal(down.code, 2);
    assert.match(down.stderr, /^ripplecache: Unavailable: .*is the server running at that address\?\)\n$/);
    const usage = cli(["get", "--addr", server.addr]);
    assert.equal(usage.stderr, "ripplecache: get needs a KEY\n");
    assert.match(cli(["frobnicate"]).stderr, /unknown command "frobnicate"/);
    assert.match(cli(["serve", "--max-memory", "lots"]).stderr, /^ripplecache: --max-memory \(RIPPLECACHE_MAX_MEMORY\): "lots" is not a size/);
    assert.match(cli(["get", "k", "--bogus"]).stderr, /^ripplecache: Unknown option '--bogus'/);
  });
});
