import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import { ROOT } from "./helpers/server.js";

const run = promisify(execFile);
const NPM_ENV = { ...process.env, npm_config_update_notifier: "false", npm_config_fund: "false", npm_config_audit: "false", npm_config_loglevel: "error" };
const PKG = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string; files: string[] };

/**
 * What a user gets: the project packed with `npm pack` (which runs the
 * `prepare` build, as an install from git does), installed into an empty
 * project, then used from there as a library, a type source and a command.
 */
describe("the npm package", { timeout: 180_000 }, () => {
  let dir: string;
  let app: string;
  let packed: string[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ripplecache-pack-"));
    // Pack a copy of the sources, not the working tree: prepare then builds into the copy's
    // own dist/ (the shared dist/ is left alone) from nothing, as on a fresh clone.
    const src = join(dir, "src");
    const top = new Set(["package.json", "tsconfig.json", "tsconfig.build.json", "LICENSE", "README.md", "src", ...PKG.files.map((f) => f.split("/")[0])]);
    top.delete("dist");
    for (const name of top) cpSync(join(ROOT, name), join(src, name), { recursive: true });
    symlinkSync(join(ROOT, "node_modules"), join(src, "node_modules"));
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: src, env: NPM_ENV, maxBuffer: 16 << 20 });
    const report = JSON.parse(stdout.slice(stdout.indexOf("["))) as { filename: string; files: { path: string }[] }[];
    packed = report[0].files.map((f) => f.path);
    app = join(dir, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    // The dependencies come from npm's cache when it has them (the project's own install filled it).
    await run("npm", ["install", "--prefer-offline", "--no-save", join(dir, report[0].filename)], { cwd: app, env: NPM_ENV, maxBuffer: 16 << 20 });
  });
  after(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("holds the built library with its types, the command and the licence; no tests, sources or maps", () => {
    for (const f of ["LICENSE", "CHANGELOG.md", "README.md", "package.json", "bin/ripplecache.js", "dist/src/cli/main.js", "dist/src/client/index.js", "dist/src/client/index.d.ts", "dist/src/server/index.d.ts", "dist/src/gen/ripplecache/v1/cache_pb.d.ts"]) {
      assert.ok(packed.includes(f), `${f} is in the package`);
    }
    const unwanted = packed.filter((f) => /^(dist\/(test|bench)\/|test\/|bench\/|src\/)|\.map$|\.tsbuildinfo$/.test(f));
    assert.deepEqual(unwanted, []);
    assert.match(readFileSync(join(app, "node_modules/ripplecache/LICENSE"), "utf8"), /Apache License\s+Version 2\.0/);
  });

  test("type-checks a TypeScript file against the package's types", async () => {
    writeFileSync(
      join(app, "check.ts"),
      `import { CacheClient, NearCache, ResumingWatch, type ValueResult } from "ripplecache";
import { CacheClient as SameClient } from "ripplecache/client";
import { resolveConfig, startServer, type RunningServer } from "ripplecache/server";
import { GetRequestSchema } from "ripplecache/gen/ripplecache/v1/cache_pb";
import { create } from "@bufbuild/protobuf";
const client: CacheClient = new SameClient({ addr: "127.0.0.1:7420", protocol: "grpc" });
export const got: Promise<ValueResult | undefined> = client.get("k");
export const near = new NearCache(client);
export const watch = new ResumingWatch(client, { key: "k" });
export const server: Promise<RunningServer> = startServer(resolveConfig({ port: "0" }));
export const key: string = create(GetRequestSchema, { key: "k" }).key;
// @ts-expect-error a key is a string: were the types missing (any), this line would fail the check
void client.get(42);
`,
    );
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, skipLibCheck: false, typeRoots: [join(ROOT, "node_modules/@types")], types: ["node"] },
        files: ["check.ts"],
      }),
    );
    const tsc = join(ROOT, "node_modules/.bin/tsc");
    const ok = await run(tsc, ["-p", "tsconfig.json"], { cwd: app }).then(
      () => "",
      (err: { stdout?: string }) => err.stdout ?? String(err),
    );
    assert.equal(ok, "");
  });

  test("npx ripplecache --version, then its server answers the package's client (ESM) and command", async () => {
    const version = await run("npx", ["--offline", "ripplecache", "--version"], { cwd: app, env: NPM_ENV });
    assert.equal(version.stdout, `${PKG.version}\n`);

    const bin = join(app, "node_modules/.bin/ripplecache");
    const server = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0"], { cwd: app, stdio: ["ignore", "pipe", "pipe"] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("the installed server did not start within 30 s")), 30_000);
        createInterface({ input: server.stdout! }).on("line", (line) => {
          const record = JSON.parse(line) as { msg?: string; port?: number };
          if (record.msg === "listening" && typeof record.port === "number") {
            clearTimeout(timer);
            resolve(record.port);
          }
        });
        server.once("exit", (code) => reject(new Error(`the installed server exited with ${code}`)));
      });
      writeFileSync(
        join(app, "use.mjs"),
        `import { CacheClient } from "ripplecache";
const client = new CacheClient({ addr: process.argv[2] });
const set = await client.set("pkg/k", "from the package");
const got = await client.get("pkg/k");
console.log(JSON.stringify({ applied: set.applied, value: new TextDecoder().decode(got.value) }));
client.close();
`,
      );
      const used = await run(process.execPath, ["use.mjs", `127.0.0.1:${port}`], { cwd: app });
      assert.deepEqual(JSON.parse(used.stdout), { applied: true, value: "from the package" });
      const get = await run(bin, ["get", "pkg/k", "--addr", `127.0.0.1:${port}`], { cwd: app });
      assert.equal(get.stdout, "from the package");
    } finally {
      server.kill("SIGKILL");
    }
  });
});
