// Interop: the Connect protocol spoken by hand with curl, as a user without a
// generated client would: JSON over HTTP/1.1 and h2c (prior knowledge),
// Connect GET for NO_SIDE_EFFECTS methods, error bodies and HTTP statuses,
// and the request size limit.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as http2 from "node:http2";
import { requireTool, startServer, type ServerProcess } from "./helpers/server.js";

const SERVICE = "ripplecache.v1.CacheService";

let curlPath: string;
let server: ServerProcess | undefined;
/** A server with small limits: 16 KiB requests, 8 KiB values. */
let small: ServerProcess | undefined;

before(async () => {
  curlPath = requireTool("curl", "curl");
  [server, small] = await Promise.all([startServer(), startServer(["--max-request-bytes", "16KiB", "--max-value-bytes", "8KiB"])]);
});

after(async () => {
  await Promise.all([server?.stop(), small?.stop()]);
});

interface Transfer {
  status: number;
  /** "1.1" or "2" */
  httpVersion: string;
  /** New connections this transfer opened (0 = it reused one). */
  connects: number;
  contentType: string;
  body: string;
}

interface CurlResult {
  exitCode: number | null;
  stderr: string;
  transfers: Transfer[];
}

const MARK = "\n@@curl@@ %{http_code} %{http_version} %{num_connects} %{content_type}@@end@@\n";

/**
 * Runs curl with `args`; every transfer (several with --next) reports its
 * status, HTTP version, new connections and body. A request argument list
 * must contain "-w MARK" via `transfer()`.
 */
function runCurl(args: string[], stdin?: Buffer): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(curlPath, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    proc.stdout.on("data", (d: Buffer) => out.push(d));
    proc.stderr.on("data", (d: Buffer) => err.push(d));
    proc.on("error", reject);
    proc.on("close", (exitCode) => {
      clearTimeout(timer);
      const text = Buffer.concat(out).toString("utf8");
      const transfers: Transfer[] = [];
      const re = /([\s\S]*?)\n@@curl@@ (\d{3}) (\S+) (\d+) (.*?)@@end@@\n/g;
      for (const m of text.matchAll(re)) {
        transfers.push({ body: m[1], status: Number(m[2]), httpVersion: m[3], connects: Number(m[4]), contentType: m[5] });
      }
      resolve({ exitCode, stderr: Buffer.concat(err).toString("utf8"), transfers });
    });
    proc.stdin.end(stdin);
  });
}

/** The curl arguments of one transfer. */
function transfer(url: string, opts: { body?: string | "@-"; contentType?: string | null; method?: string; http2?: boolean; headers?: string[] } = {}): string[] {
  const args = ["-sS", "--max-time", "10", "-w", MARK];
  if (opts.http2) args.push("--http2-prior-knowledge");
  if (opts.method !== undefined) args.push("-X", opts.method);
  if (opts.contentType !== null) args.push("-H", `content-type: ${opts.contentType ?? "application/json"}`);
  for (const h of opts.headers ?? []) args.push("-H", h);
  if (opts.body !== undefined) args.push("--data-binary", opts.body);
  args.push(url);
  return args;
}

/** One request; fails the test unless curl itself succeeded. */
async function request(url: string, opts: Parameters<typeof transfer>[1] = {}, stdin?: Buffer): Promise<Transfer> {
  const r = await runCurl(transfer(url, opts), stdin);
  assert.equal(r.exitCode, 0, `curl failed: ${r.stderr}`);
  assert.equal(r.transfers.length, 1);
  return r.transfers[0];
}

/** POST of a Connect JSON unary request. */
async function post(srv: ServerProcess, method: string, message: unknown, http2 = false): Promise<Transfer & { json: any }> {
  const t = await request(`${srv.url}/${SERVICE}/${method}`, { body: JSON.stringify(message), http2 });
  return { ...t, json: JSON.parse(t.body) };
}

const b64 = (text: string | Buffer) => Buffer.from(text).toString("base64");

for (const http2 of [false, true]) {
  const proto = http2 ? "h2c" : "HTTP/1.1";

  test(`Connect JSON over ${proto}: Set, Get, miss, Increment with int64 as strings and bytes as base64`, async () => {
    const prefix = http2 ? "h2" : "h1";
    const value = Buffer.from([0, 1, 2, 0xfe, 0xff, ...Buffer.from("hé")]);
    const set = await post(server!, "Set", { key: `${prefix}/a`, value: b64(value), ttlMs: "60000", flags: 9 }, http2);
    assert.equal(set.status, 200);
    assert.equal(set.httpVersion, http2 ? "2" : "1.1");
    assert.equal(set.contentType, "application/json");
    assert.equal(set.json.applied, true);
    assert.equal(typeof set.json.revision, "string", "int64 is a JSON string");
    assert.match(set.json.revision, /^[1-9][0-9]*$/);

    const get = await post(server!, "Get", { key: `${prefix}/a` }, http2);
    assert.equal(get.status, 200);
    assert.equal(get.json.found, true);
    assert.equal(get.json.value, b64(value));
    assert.equal(get.json.revision, set.json.revision);
    assert.equal(get.json.flags, 9);
    assert.equal(typeof get.json.ttlMs, "string");
    assert.ok(Number(get.json.ttlMs) > 55_000 && Number(get.json.ttlMs) <= 60_000);

    // Proto field names are accepted too (ttl_ms), as the JSON mapping requires.
    const snake = await post(server!, "Set", { key: `${prefix}/snake`, value: b64("s"), ttl_ms: "5000" }, http2);
    assert.equal(snake.status, 200);
    assert.ok(Number((await post(server!, "Get", { key: `${prefix}/snake` }, http2)).json.ttlMs) > 0);

    // A miss: proto3 JSON omits default values.
    const miss = await post(server!, "Get", { key: `${prefix}/missing` }, http2);
    assert.equal(miss.status, 200);
    assert.deepEqual(miss.json, {});

    const incr = await post(server!, "Increment", { key: `${prefix}/n`, delta: "9007199254740993" }, http2);
    assert.equal(incr.status, 200);
    assert.equal(incr.json.value, "9007199254740993", "int64 beyond 2^53 is exact");
    const down = await post(server!, "Increment", { key: `${prefix}/n`, delta: "-9007199254740994" }, http2);
    assert.equal(down.json.value, "-1");

    const many = await post(server!, "GetMany", { keys: [`${prefix}/missing`, `${prefix}/n`] }, http2);
    assert.deepEqual(many.json.entries.map((e: any) => [e.key, e.found ?? false]), [
      [`${prefix}/missing`, false],
      [`${prefix}/n`, true],
    ]);
  });

  test(`Connect errors over ${proto}: JSON body {code, message} with the mapped HTTP status`, async () => {
    const empty = await post(server!, "Get", { key: "" }, http2);
    assert.equal(empty.status, 400);
    assert.equal(empty.contentType, "application/json");
    assert.deepEqual(empty.json, { code: "invalid_argument", message: "key is empty: give a key of 1 or more bytes" });

    await post(server!, "Set", { key: "err/text", value: b64("abc") }, http2);
    const notInt = await post(server!, "Increment", { key: "err/text", delta: "1" }, http2);
    assert.equal(notInt.status, 400);
    assert.deepEqual(notInt.json, { code: "failed_precondition", message: 'value of key "err/text" is not a decimal integer' });

    await post(server!, "Set", { key: "err/max", value: b64("9223372036854775807") }, http2);
    const overflow = await post(server!, "Increment", { key: "err/max", delta: "1" }, http2);
    assert.equal(overflow.status, 400);
    assert.equal(overflow.json.code, "out_of_range");

    const negative = await post(server!, "Set", { key: "err/neg", value: b64("v"), ttlMs: "-1" }, http2);
    assert.equal(negative.status, 400);
    assert.equal(negative.json.code, "invalid_argument");
    assert.match(negative.json.message, /ttl_ms -1 is invalid/);
  });
}

test("malformed JSON and wrong JSON types are invalid_argument", async () => {
  const url = `${server!.url}/${SERVICE}/Set`;
  for (const body of ['{"key":', "[1,2]", '{"key":5}', '{"key":"a","value":"not base64!"}', '{"key":"a","ttlMs":"1.5"}', "not json"]) {
    const t = await request(url, { body });
    assert.equal(t.status, 400, `${body}: ${t.body}`);
    const json = JSON.parse(t.body);
    assert.equal(json.code, "invalid_argument", body);
    assert.equal(typeof json.message, "string");
  }
  const incr = await request(`${server!.url}/${SERVICE}/Increment`, { body: '{"key":"n","delta":"9223372036854775808"}' });
  assert.equal(incr.status, 400, "an int64 beyond its range is refused");
  assert.equal(JSON.parse(incr.body).code, "invalid_argument");
});

test("a wrong content type is HTTP 415; no content type too", async () => {
  const url = `${server!.url}/${SERVICE}/Get`;
  assert.equal((await request(url, { body: '{"key":"a"}', contentType: "text/plain" })).status, 415);
  assert.equal((await request(url, { body: '{"key":"a"}', contentType: "application/xml" })).status, 415);
  assert.equal((await request(url, { body: '{"key":"a"}', contentType: null })).status, 415);
  assert.equal((await request(url, { body: '{"key":"a"}', contentType: "text/plain", http2: true })).status, 415);
  // The server still answers the right content type, with parameters.
  assert.equal((await request(url, { body: '{"key":"a"}', contentType: "application/json; charset=utf-8" })).status, 200);
});

test("unknown methods and services are HTTP 404; a wrong HTTP method is 405", async () => {
  assert.equal((await request(`${server!.url}/${SERVICE}/NoSuchMethod`, { body: "{}" })).status, 404);
  assert.equal((await request(`${server!.url}/no.such.Service/Get`, { body: "{}" })).status, 404);
  assert.equal((await request(`${server!.url}/${SERVICE}/NoSuchMethod`, { body: "{}", http2: true })).status, 404);
  assert.equal((await request(`${server!.url}/`, { method: "GET", contentType: null })).status, 404);
  assert.equal((await request(`${server!.url}/${SERVICE}/Get`, { method: "PUT", body: '{"key":"a"}' })).status, 405);
});

test("over h2c, an answer that comes before curl has sent its body (404, 405, 415; a body past the window) completes every time", async () => {
  // curl 7.88 (Debian 12) failed 1 in 8 of these with "(92) Stream error in the HTTP/2 framing layer" when our reset of the
  // unsent rest arrived with the answer; the engine now waits for the request's end (src/server/h2/stream.ts, closeIfDone).
  // Each curl is its own process and connection, so each one races afresh; 0.875^60 < 0.1%.
  const cases = [
    { path: `${SERVICE}/NoSuchMethod`, opts: {}, status: 404 },
    { path: `${SERVICE}/Get`, opts: { method: "PUT" }, status: 405 },
    { path: `${SERVICE}/Get`, opts: { contentType: "text/plain" }, status: 415 },
  ];
  for (let round = 0; round < 20; round++) {
    await Promise.all(
      cases.map(async ({ path, opts, status }) => {
        const t = await request(`${server!.url}/${path}`, { body: '{"key":"a"}', http2: true, ...opts });
        assert.equal(t.status, status, `round ${round}, ${path}`);
        assert.equal(t.httpVersion, "2");
      }),
    );
  }
  // A body of 3 MB, past the stream's window: the engine takes (and drops) up to 1 MiB more while curl reads the 404
  // and stops. Reset at the window's end, curl failed a third of these (so did node:http2).
  const large = Buffer.alloc(3_000_000, 0x20);
  for (let round = 0; round < 8; round++) {
    const t = await request(`${server!.url}/${SERVICE}/NoSuchMethod`, { body: "@-", http2: true }, large);
    assert.equal(t.status, 404, `large body, round ${round}`);
  }
});

test("Connect GET for the NO_SIDE_EFFECTS method Get (plain and base64 message)", async () => {
  await post(server!, "Set", { key: "get/k", value: b64("via GET") });
  const query = (params: Record<string, string>) => new URLSearchParams(params).toString();

  for (const http2 of [false, true]) {
    const plain = await request(`${server!.url}/${SERVICE}/Get?${query({ connect: "v1", encoding: "json", message: '{"key":"get/k"}' })}`, {
      method: "GET",
      contentType: null,
      http2,
    });
    assert.equal(plain.status, 200, plain.body);
    const json = JSON.parse(plain.body);
    assert.equal(json.found, true);
    assert.equal(json.value, b64("via GET"));
  }

  // base64=1: the message is URL-safe base64 without padding.
  const message = Buffer.from('{"key":"get/k"}').toString("base64url");
  const b = await request(`${server!.url}/${SERVICE}/Get?${query({ encoding: "json", base64: "1", message })}`, { method: "GET", contentType: null });
  assert.equal(b.status, 200, b.body);
  assert.equal(JSON.parse(b.body).value, b64("via GET"));

  // GetMany and Info are NO_SIDE_EFFECTS too.
  const info = await request(`${server!.url}/${SERVICE}/Info?${query({ encoding: "json", message: "{}" })}`, { method: "GET", contentType: null });
  assert.equal(info.status, 200, info.body);
  assert.equal(JSON.parse(info.body).role, "ROLE_PRIMARY");

  // Errors come back as Connect error JSON.
  const bad = await request(`${server!.url}/${SERVICE}/Get?${query({ encoding: "json", message: '{"key":""}' })}`, { method: "GET", contentType: null });
  assert.equal(bad.status, 400);
  assert.equal(JSON.parse(bad.body).code, "invalid_argument");

  // Set has side effects: GET is not allowed for it.
  const set = await request(`${server!.url}/${SERVICE}/Set?${query({ encoding: "json", message: '{"key":"get/x","value":"eA=="}' })}`, {
    method: "GET",
    contentType: null,
  });
  assert.equal(set.status, 405);
  assert.deepEqual((await post(server!, "Get", { key: "get/x" })).json, {}, "the refused GET wrote nothing");
});

const bigBody = (bytes: number) => JSON.stringify({ key: "big", value: Buffer.alloc(bytes, 7).toString("base64") });

test("a body over --max-request-bytes is resource_exhausted (HTTP 429) on HTTP/1.1, and the connection serves on", async () => {
  const body = Buffer.from(bigBody(75_000)); // 100 KB of JSON
  const r = await runCurl([
    ...transfer(`${small!.url}/${SERVICE}/Set`, { body: "@-" }),
    "--next",
    ...transfer(`${small!.url}/${SERVICE}/Set`, { body: JSON.stringify({ key: "after", value: b64("ok") }) }),
  ], body);
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(r.transfers.length, 2);
  const [big, next] = r.transfers;
  assert.equal(big.status, 429);
  const err = JSON.parse(big.body);
  assert.equal(err.code, "resource_exhausted");
  assert.match(err.message, /16384/);
  assert.equal(next.status, 200, next.body);
  assert.equal(next.connects, 0, "the second request reused the connection");
  assert.equal(JSON.parse(next.body).applied, true);

  // A value over --max-value-bytes in a request under the limit is invalid_argument.
  const value = await request(`${small!.url}/${SERVICE}/Set`, { body: bigBody(9000) });
  assert.equal(value.status, 400);
  assert.equal(JSON.parse(value.body).code, "invalid_argument");
  assert.match(JSON.parse(value.body).message, /exceeds max-value-bytes of 8192/);

  const get = await post(small!, "Get", { key: "after" });
  assert.equal(get.json.value, b64("ok"));
});

test("a body over --max-request-bytes is resource_exhausted over h2c, and the server serves on", async () => {
  // 40 KB fits the HTTP/2 flow-control window (64 KiB), so curl has sent the
  // whole body before the server answers. (With a larger body the server
  // answers early and resets the stream with NO_ERROR, as RFC 9113 8.1 allows;
  // curl 7.88 reports that as error 92. Node's client is used for that below.)
  const t = await request(`${small!.url}/${SERVICE}/Set`, { body: "@-", http2: true }, Buffer.from(bigBody(30_000)));
  assert.equal(t.httpVersion, "2");
  assert.equal(t.status, 429);
  assert.equal(JSON.parse(t.body).code, "resource_exhausted");
  assert.equal((await post(small!, "Set", { key: "after-h2", value: b64("ok") }, true)).json.applied, true);

  // Several oversized requests, larger than the window, on one HTTP/2
  // connection, with and without content-length (gRPC never sends one), then
  // a normal request on the same connection.
  const session = http2.connect(small!.url);
  try {
    const call = (body: Buffer | string, contentLength: boolean) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const headers: http2.OutgoingHttpHeaders = { ":method": "POST", ":path": `/${SERVICE}/Set`, "content-type": "application/json" };
        if (contentLength) headers["content-length"] = Buffer.byteLength(body);
        const req = session.request(headers);
        const timer = setTimeout(() => reject(new Error("no complete response within 5 s")), 5000);
        req.on("end", () => clearTimeout(timer));
        let status = 0;
        let data = "";
        req.on("response", (h) => (status = Number(h[":status"])));
        req.setEncoding("utf8");
        req.on("data", (d: string) => (data += d));
        // Resolve once the response is complete (END_STREAM), not on stream
        // close: without content-length the server leaves the stream
        // half-closed with the upload blocked (reported as a server bug), so
        // the client resets it itself.
        req.on("end", () => {
          resolve({ status, body: data });
          if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
        });
        req.on("error", reject);
        req.end(body);
      });
    for (const contentLength of [true, false, true, false]) {
      const r = await call(Buffer.from(bigBody(150_000)), contentLength);
      assert.equal(r.status, 429, r.body);
      assert.equal(JSON.parse(r.body).code, "resource_exhausted");
    }
    const ok = await call(JSON.stringify({ key: "same-session", value: b64("ok") }), false);
    assert.equal(ok.status, 200, ok.body);
    assert.equal(JSON.parse(ok.body).applied, true);
  } finally {
    session.destroy();
  }
});
