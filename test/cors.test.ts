import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import http2 from "node:http2";
import { describe, test } from "node:test";
import { cors } from "@connectrpc/connect";
import { CLI, startServer } from "./helpers/server.js";

/*
 * CORS on the main port (--cors-allowed-origins), header by header, over
 * HTTP/1.1 (what browsers use without TLS) and HTTP/2 on both engines, on the
 * fast path's methods too. test/browser.test.ts proves the same in Chromium.
 */

const ALLOWED = "https://app.example.com";
const GET = "/ripplecache.v1.CacheService/Get";

type Answer = { status: number; headers: Record<string, string> };

async function http1(url: string, method: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  const res = await fetch(url + GET, { method, headers, body });
  await res.arrayBuffer();
  return { status: res.status, headers: Object.fromEntries(res.headers) };
}

function h2(url: string, method: string, headers: Record<string, string>, body?: Uint8Array | string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const req = session.request({ ":method": method, ":path": GET, ...headers });
    req.on("response", (h) => {
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(":")) out[k] = String(v);
      req.resume();
      req.on("end", () => {
        session.close();
        resolve({ status: Number(h[":status"]), headers: out });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

const preflight = { origin: ALLOWED, "access-control-request-method": "POST", "access-control-request-headers": "content-type,connect-protocol-version" };
/** A Connect unary call in binary: over HTTP/2 the fast path would take it if there were no Origin. */
const binaryGet = (origin: string) => ({ origin, "content-type": "application/proto", "connect-protocol-version": "1" });

describe("CORS", () => {
  for (const [name, args, send] of [
    ["HTTP/1.1", [], http1],
    ["h2c, our engine", [], h2],
    ["h2c, node:http2", ["--http2-engine", "node"], h2],
  ] as const) {
    test(`${name}: a preflight from an allowed origin gets connect's methods and headers; calls get the origin and exposed headers; a refused origin gets none`, async () => {
      const server = await startServer(["--cors-allowed-origins", `${ALLOWED}, http://localhost:8080`, ...args]);
      try {
        const ok = await send(server.url, "OPTIONS", preflight);
        assert.equal(ok.status, 204);
        assert.equal(ok.headers["access-control-allow-origin"], ALLOWED);
        assert.equal(ok.headers["access-control-allow-methods"], cors.allowedMethods.join(", "));
        assert.equal(ok.headers["access-control-allow-headers"], cors.allowedHeaders.join(", "), "no Authorization: the server checks no token");
        assert.equal(ok.headers["access-control-max-age"], "7200");
        assert.equal(ok.headers["access-control-allow-credentials"], undefined);
        assert.match(ok.headers.vary ?? "", /Origin/);

        const refused = await send(server.url, "OPTIONS", { ...preflight, origin: "https://evil.example.com" });
        assert.equal(refused.status, 204);
        assert.deepEqual(
          Object.keys(refused.headers).filter((h) => h.startsWith("access-control-")),
          [],
          "a refused origin's preflight carries no CORS header, so the browser does not send the call",
        );

        const call = await send(server.url, "POST", binaryGet(ALLOWED), new Uint8Array([10, 1, 107]) as never);
        assert.equal(call.status, 200);
        assert.equal(call.headers["access-control-allow-origin"], ALLOWED);
        assert.equal(call.headers["access-control-expose-headers"], cors.exposedHeaders.join(", "));
        const other = await send(server.url, "POST", binaryGet("https://evil.example.com"), new Uint8Array([10, 1, 107]) as never);
        assert.equal(other.status, 200, "the server answers; the browser withholds the answer from the page");
        assert.equal(other.headers["access-control-allow-origin"], undefined, "never reflects an origin it does not list");
        const none = await send(server.url, "POST", { "content-type": "application/proto", "connect-protocol-version": "1" }, new Uint8Array([10, 1, 107]) as never);
        assert.equal(none.headers["access-control-allow-origin"], undefined);
      } finally {
        await server.stop();
      }
    });
  }

  test("* allows any origin without reflecting it; credentials and Authorization when configured", async () => {
    const any = await startServer(["--cors-allowed-origins", "*"]);
    try {
      const r = await http1(any.url, "OPTIONS", { ...preflight, origin: "https://anything.example" });
      assert.equal(r.headers["access-control-allow-origin"], "*");
      assert.equal(r.headers["access-control-allow-credentials"], undefined);
    } finally {
      await any.stop();
    }
    const creds = await startServer(["--cors-allowed-origins", ALLOWED, "--cors-allow-credentials", "on", "--cors-max-age", "60"], { RIPPLECACHE_AUTH_TOKEN: "s3cret" });
    try {
      const r = await http1(creds.url, "OPTIONS", { ...preflight, "access-control-request-headers": "authorization,content-type" });
      assert.equal(r.headers["access-control-allow-origin"], ALLOWED);
      assert.equal(r.headers["access-control-allow-credentials"], "true");
      assert.equal(r.headers["access-control-max-age"], "60");
      assert.match(r.headers["access-control-allow-headers"], /(^|, )Authorization$/);
      // The token works from a browser: a call with it and an allowed Origin succeeds and carries the CORS headers.
      const call = await http1(creds.url, "POST", { origin: ALLOWED, "content-type": "application/json", authorization: "Bearer s3cret" }, JSON.stringify({ key: "k" }));
      assert.equal(call.status, 200);
      assert.equal(call.headers["access-control-allow-origin"], ALLOWED);
      const denied = await http1(creds.url, "POST", { origin: ALLOWED, "content-type": "application/json" }, JSON.stringify({ key: "k" }));
      assert.equal(denied.status, 401);
      assert.equal(denied.headers["access-control-allow-origin"], ALLOWED, "errors carry CORS headers too, so the page can read the code");
    } finally {
      await creds.stop();
    }
  });

  test("bad settings are refused at start with a message that says what to give", () => {
    for (const [args, message] of [
      [["--cors-allowed-origins", "*", "--cors-allow-credentials", "on"], /\* cannot go with --cors-allow-credentials on/],
      [["--cors-allowed-origins", "app.example.com"], /"app.example.com" is not an origin \(give scheme:\/\/host\[:port\]/],
      [["--cors-allowed-origins", "https://app.example.com/"], /give exactly https:\/\/app.example.com \(no path, no trailing slash\)/],
      [["--cors-allowed-origins", "*, https://a.example"], /\* allows every origin; give it alone/],
    ] as const) {
      const r = spawnSync(process.execPath, [CLI, "serve", "--port", "0", "--admin-port", "off", ...args], { encoding: "utf8", timeout: 10_000 });
      assert.notEqual(r.status, 0, args.join(" "));
      assert.match(r.stderr, message);
    }
  });
});
