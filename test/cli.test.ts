import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import * as net from "node:net";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { CLI, requireTool, startServer, type ServerProcess } from "./helpers/server.js";

function cli(args: string[], input?: string) {
  // A generous timeout: a busy machine (the whole suite on 2 cores) can take seconds to start node.
  const r = spawnSync(process.execPath, [CLI, ...args], { input, encoding: "utf8", timeout: 60_000 });
  if (r.signal !== null) throw new Error(`ripplecache ${args.join(" ")}: killed by ${r.signal} (timeout?); stderr: ${r.stderr}`);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A failure the user reads: exit code 2 and exactly one line on stderr (no stack trace). */
function oneLineError(r: { code: number | null; stderr: string }, pattern: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^ripplecache: [^\n]+\n$/, `one line: ${r.stderr}`);
  assert.match(r.stderr, pattern);
}

/** A port held by another listener for the test's duration. */
async function takenPort(): Promise<{ port: number; close(): void }> {
  const holder = net.createServer().listen(0, "127.0.0.1");
  await once(holder, "listening");
  return { port: (holder.address() as net.AddressInfo).port, close: () => holder.close() };
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
      assert.equal(info.role, "ROLE_PRIMARY");
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
  test("negative numbers reach the CLI's own validation", () => {
    const base = ["--addr", server.addr];
    const ttl = cli(["set", "neg/k", "v", "--ttl", "-5", ...base]);
    assert.equal(ttl.code, 2);
    assert.equal(ttl.stderr, 'ripplecache: --ttl must be a non-negative integer, not "-5"\n');
    assert.equal(cli(["scan", "--limit", "-1", ...base]).stderr, 'ripplecache: --limit must be a non-negative integer, not "-1"\n');
    assert.equal(cli(["serve", "--port", "-1"]).stderr, 'ripplecache: --port (RIPPLECACHE_PORT): "-1" is not a non-negative integer\n');
    // A negative DELTA is a positional argument, not an option.
    assert.equal(cli(["incr", "neg/n", "-5", ...base]).stdout, "-5\n");
    assert.equal(cli(["incr", "neg/n", "--ttl", "0", "-3", ...base]).stdout, "-8\n");
    // "-" is a value like any other, for an option and as a positional argument.
    assert.equal(cli(["set", "neg/k", "v", "--flags", "-", ...base]).stderr, 'ripplecache: --flags must be a non-negative integer, not "-"\n');
    assert.equal(cli(["set", "neg/dash", "-", ...base]).code, 0);
    assert.equal(cli(["get", "neg/dash", ...base]).stdout, "-");
    // A string option followed by another option is still a forgotten value.
    assert.match(cli(["get", "k", "--addr", "--http1"]).stderr, /argument is ambiguous/);
  });

  test("extra arguments and --timeout 0 are refused", () => {
    oneLineError(cli(["get", "k", "extra", "args", "--addr", server.addr]), /get takes at most 1 argument; unexpected "extra" "args"/);
    oneLineError(cli(["info", "now", "--addr", server.addr]), /info takes no arguments; unexpected "now"/);
    oneLineError(cli(["set", "k", "v", "w", "--addr", server.addr]), /set takes at most 2 arguments; unexpected "w"/);
    oneLineError(cli(["get", "k", "--timeout", "0", "--addr", server.addr]), /--timeout must be more than 0/);
  });

  test("set refuses an empty stdin unless --empty or an explicit '' VALUE", () => {
    const base = ["--addr", server.addr];
    oneLineError(cli(["set", "empty/a", ...base], ""), /empty value from stdin: give --empty/);
    assert.equal(cli(["get", "empty/a", ...base]).code, 1, "nothing was stored");
    assert.match(cli(["set", "empty/a", "--empty", ...base], "").stdout, /^OK revision/);
    assert.match(cli(["set", "empty/b", "", ...base]).stdout, /^OK revision/);
    for (const k of ["empty/a", "empty/b"]) {
      const got = cli(["get", k, ...base]);
      assert.deepEqual([got.code, got.stdout], [0, ""]);
    }
    oneLineError(cli(["set", "empty/c", "v", "--empty", ...base]), /a VALUE or --empty, not both/);
  });

  test("touch sets a key's time to live; flush removes every key", async () => {
    const base = ["--addr", server.addr];
    assert.equal(cli(["set", "touch/a", "v", ...base]).code, 0);
    oneLineError(cli(["touch", "touch/a", ...base]), /touch needs --ttl MS/);
    const missing = cli(["touch", "touch/none", "--ttl", "1000", ...base]);
    assert.deepEqual([missing.code, missing.stderr], [1, "(not found)\n"]);
    assert.match(cli(["touch", "touch/a", "--ttl", "1", ...base]).stdout, /^OK revision \d+\n$/);
    // With a 1 ms time to live the key expires; poll rather than sleep a guessed time.
    const deadline = Date.now() + 60_000;
    while (cli(["get", "touch/a", ...base]).code === 0) {
      assert.ok(Date.now() < deadline, "touch --ttl 1 made the key expire");
      await new Promise((r) => setTimeout(r, 20));
    }

    assert.equal(cli(["set", "flush/a", "1", ...base]).code, 0);
    assert.equal(cli(["set", "flush/b", "2", ...base]).code, 0);
    assert.match(cli(["flush", ...base]).stdout, /^flushed at revision \d+\n$/);
    assert.equal(cli(["scan", ...base]).stdout, "");
  });

  test("get prints a newline after the value on a terminal only", () => {
    const base = ["--addr", server.addr];
    assert.equal(cli(["set", "tty/k", "hello", ...base]).code, 0);
    assert.equal(cli(["get", "tty/k", ...base]).stdout, "hello", "piped: the raw bytes");
    // util-linux's script(1) runs the command on a pseudo-terminal (Debian's bsdutils, always installed); missing, the test fails.
    requireTool("script", "bsdutils");
    const command = [process.execPath, CLI, "get", "tty/k", ...base].map((a) => `'${a}'`).join(" ");
    const tty = spawnSync("script", ["-qec", command, "/dev/null"], { encoding: "utf8", timeout: 15_000 });
    assert.equal(tty.status, 0, tty.stderr);
    assert.equal(tty.stdout, "hello\r\n", "the terminal's line discipline turns \\n into \\r\\n");
  });

  test("info's role is spelled as the API's JSON spells it (curl)", async () => {
    const res = await fetch(`${server.url}/ripplecache.v1.CacheService/Info`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    const json = (await res.json()) as { role: string };
    const info = JSON.parse(cli(["info", "--addr", server.addr]).stdout) as { role: string };
    assert.equal(json.role, "ROLE_PRIMARY");
    assert.equal(info.role, json.role);
  });

  test("the CLI pointed at the admin port says it is not a RippleCache port", () => {
    for (const extra of [[], ["--http1"], ["--protocol", "grpc"]]) {
      oneLineError(cli(["get", "k", "--addr", `127.0.0.1:${server.adminPort}`, ...extra]), /is not a RippleCache port .*admin port.*--addr takes the server's main port/);
    }
  });

  test("every start error of serve is one line naming the flag, exit code 2", async () => {
    const taken = await takenPort();
    try {
      oneLineError(cli(["serve", "--host", "127.0.0.1", "--port", String(taken.port), "--admin-port", "0"]), new RegExp(`127\\.0\\.0\\.1:${taken.port} for --port .*in use; give another --port`));
      oneLineError(cli(["serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", String(taken.port)]), new RegExp(`127\\.0\\.0\\.1:${taken.port} for --admin-port .*in use; give another --admin-port`));
    } finally {
      taken.close();
    }
    oneLineError(cli(["serve", "--port", "0", "--admin-port", "0", "--replica-of", "nowhere"]), /--replica-of \(RIPPLECACHE_REPLICA_OF\): "nowhere" is not HOST:PORT/);
    oneLineError(cli(["serve", "--port", "7", "--admin-port", "7"]), /--admin-port .* and --port are both 7/);
    oneLineError(cli(["serve", "--host", "192.0.2.1", "--port", "0", "--admin-port", "0"]), /--host \(RIPPLECACHE_HOST\): cannot listen on "192\.0\.2\.1"/);
  });

  test("a request over --max-request-bytes names --max-request-bytes", async () => {
    const small = await startServer(["--max-value-bytes", "1KiB", "--max-request-bytes", "8KiB"]);
    try {
      const big = "x".repeat(10_000);
      for (const extra of [[], ["--http1"], ["--protocol", "grpc"], ["--protocol", "grpc-web"], ["--protocol", "grpc-web", "--http1"]]) {
        const r = cli(["set", "big", big, "--addr", small.addr, ...extra]);
        oneLineError(r, /^ripplecache: ResourceExhausted: message size .*larger than the server's --max-request-bytes \(8192 bytes\)\n$/);
      }
    } finally {
      await small.stop();
    }
  });
});
