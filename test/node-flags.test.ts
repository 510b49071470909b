import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SERVER_NODE_FLAGS } from "../src/cli/node-flags.js";
import { ROOT } from "./helpers/server.js";

/*
 * The server's V8 flags (src/cli/node-flags.ts) are given where the server is
 * started: `npm start` and the `ripplecache` command's shebang here, the
 * Dockerfile in k8s.test.ts, and `npm run cluster` and the bench through the
 * constant itself.
 */

test("npm start runs the server with its V8 flags, before the script", () => {
  const scripts = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts;
  const run = /(?:^|&& )node ((?:--\S+ )*)dist\/src\/cli\/main\.js serve$/.exec(scripts.start);
  assert.ok(run, `package.json's start runs node on dist/src/cli/main.js serve: ${scripts.start}`);
  assert.deepEqual(run[1].trim().split(" ").filter((f) => f !== ""), [...SERVER_NODE_FLAGS]);
});

test("the ripplecache command (bin/ripplecache.js, run as an executable) passes them to node", () => {
  const shebang = readFileSync(join(ROOT, "bin/ripplecache.js"), "utf8").split("\n")[0];
  // env -S splits the line into node's arguments (Linux coreutils 8.30+, macOS; npm's Windows shims read it too).
  assert.equal(shebang, `#!/usr/bin/env -S node ${SERVER_NODE_FLAGS.join(" ")}`);
});

test("this Node accepts the flags (an unknown V8 flag would stop the server from starting)", () => {
  const r = spawnSync(process.execPath, [...SERVER_NODE_FLAGS, "-e", "process.stdout.write(JSON.stringify(process.execArgv))"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as string[]).slice(0, SERVER_NODE_FLAGS.length), [...SERVER_NODE_FLAGS]);
  assert.equal(r.stderr, "", "no warning about the flags");
});
