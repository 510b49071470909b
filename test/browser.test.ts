import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { build } from "esbuild";
import { chromium, type Browser, type Page } from "playwright-core";
import { CacheService } from "../src/gen/ripplecache/v1/cache_pb.js";
import { eventually } from "./helpers/assert.js";
import { requireTool, ROOT, startServer, type ServerProcess } from "./helpers/server.js";

/*
 * A real browser calls RippleCache: Debian's Chromium, driven by playwright-core,
 * loads examples/browser/ (built with esbuild) from a second origin on loopback
 * and calls the server with connect-web over the Connect protocol and gRPC-Web.
 * The server allows that origin (--cors-allowed-origins); a page from a third
 * origin is refused by the browser. Chromium is required: a missing one fails
 * the test (`apt-get install chromium`; bash .ci/run installs it).
 */

const EXAMPLE = join(ROOT, "examples", "browser");
/** Flags for a headless Chromium on a machine without internet: no background fetches that would be refused. */
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const KINDS = ["connect", "grpc-web"] as const;

/** Serves the example page and its bundle on 127.0.0.1: one origin per server. */
function pageServer(dir: string): Promise<Server> {
  const files: Record<string, [string, string]> = {
    "/index.html": [readFileSync(join(EXAMPLE, "index.html"), "utf8"), "text/html"],
    "/dist/app.js": [readFileSync(join(dir, "app.js"), "utf8"), "text/javascript"],
  };
  const server = createServer((req, res) => {
    const file = files[(req.url ?? "").split("?")[0]];
    if (file === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[1] }).end(file[0]);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

const origin = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

describe("a browser page calls RippleCache with connect-web (Connect and gRPC-Web) across origins", () => {
  const dir = mkdtempSync(join(tmpdir(), "ripplecache-browser-"));
  let allowedPages: Server;
  let refusedPages: Server;
  let server: ServerProcess;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async () => {
    const executablePath = requireTool("chromium", "chromium");
    // The example type-checks against the DOM and connect-web's types as a user's build would.
    const tsc = spawnSync(process.execPath, [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", EXAMPLE], { encoding: "utf8" });
    assert.equal(tsc.status, 0, `tsc -p examples/browser:\n${tsc.stdout}${tsc.stderr}`);
    await build({ entryPoints: [join(EXAMPLE, "app.ts")], bundle: true, format: "esm", target: "es2022", outfile: join(dir, "app.js"), logLevel: "error" });
    allowedPages = await pageServer(dir);
    refusedPages = await pageServer(dir);
    server = await startServer(["--cors-allowed-origins", origin(allowedPages)]);
    browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.goto(`${origin(allowedPages)}/index.html?server=${encodeURIComponent(server.url)}`);
    await page.waitForFunction(() => "ripplecache" in globalThis);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    for (const s of [allowedPages, refusedPages]) await new Promise((resolve) => s?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  for (const kind of KINDS) {
    test(`${kind}: Set, Get, a miss, and invalid_argument for an empty key`, async () => {
      const r = await page.evaluate(([k, key]) => (globalThis as any).ripplecache.tour(k, key), [kind, `browser/${kind}`] as const);
      assert.deepEqual(r, {
        revision: r.revision,
        value: `hello from ${kind}`,
        found: true,
        missFound: false,
        error: { code: "InvalidArgument", message: "key is empty: give a key of 1 or more bytes" },
      });
      assert.ok(Number(r.revision) > 0);
      // The write is real: a Node client sees it.
      const node = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
      assert.equal(new TextDecoder().decode((await node.get({ key: `browser/${kind}` })).value), `hello from ${kind}`);
    });

    test(`${kind}: a Watch in the page receives a change another client makes`, async () => {
      const node = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
      const before = (await node.info({})).streams;
      const prefix = `watched/${kind}/`;
      const event = page.evaluate(([k, p]) => (globalThis as any).ripplecache.watchFirst(k, p), [kind, prefix] as const);
      await eventually("the page's watch is open", async () => (await node.info({})).streams, (n) => n > before);
      await node.set({ key: `${prefix}k`, value: new TextEncoder().encode("from node") });
      const e = await event;
      assert.equal(e.key, `${prefix}k`);
      assert.equal(e.value, "from node");
    });
  }

  test("a page from an origin the server does not list is refused by the browser, and its write never reaches the server", async () => {
    const other = await browser.newPage();
    try {
      await other.goto(`${origin(refusedPages)}/index.html?server=${encodeURIComponent(server.url)}`);
      await other.waitForFunction(() => "ripplecache" in globalThis);
      for (const kind of KINDS) {
        const r = await other.evaluate(([k]) => (globalThis as any).ripplecache.attempt(() => (globalThis as any).ripplecache.tour(k, "refused/key")), [kind] as const);
        assert.equal(r.ok, false, `${kind} from a refused origin must fail`);
        // What connect-web reports when fetch itself is refused (a CORS failure).
        assert.match(r.message, /Failed to fetch/, `${kind}: ${JSON.stringify(r)}`);
      }
      const node = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
      assert.equal((await node.get({ key: "refused/key" })).found, false, "the preflight was refused, so the Set was never sent");
    } finally {
      await other.close();
    }
  });

  test("the page raised no uncaught errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
