import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CacheService } from "../src/gen/ripplecache/v1/cache_pb.js";
import { requireTool, startServer, type ServerProcess } from "./helpers/server.js";

let dir: string;
let ca: Buffer;
let server: ServerProcess;

before(async () => {
  const openssl = requireTool("openssl", "openssl");
  dir = mkdtempSync(join(tmpdir(), "ripplecache-tls-"));
  // A self-signed certificate for 127.0.0.1, made for this test only.
  execFileSync(openssl, [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
  ], { stdio: "pipe" });
  ca = readFileSync(join(dir, "cert.pem"));
  server = await startServer(["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")]);
});

after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("TLS: Connect over HTTP/1.1 and HTTP/2, gRPC and gRPC-Web on one port (ALPN)", async () => {
  const baseUrl = `https://127.0.0.1:${server.port}`;
  const transports = {
    "connect h1": createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca } }),
    "connect h2": createConnectTransport({ baseUrl, httpVersion: "2", nodeOptions: { ca } }),
    grpc: createGrpcTransport({ baseUrl, nodeOptions: { ca } }),
    "grpc-web h1": createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca } }),
  };
  for (const [name, transport] of Object.entries(transports)) {
    const client = createClient(CacheService, transport);
    const s = await client.set({ key: `tls/${name}`, value: new TextEncoder().encode(name) });
    assert.equal(s.applied, true, name);
    const g = await client.get({ key: `tls/${name}` });
    assert.equal(new TextDecoder().decode(g.value), name);
  }
});

test("TLS: a client that does not trust the certificate is refused", async () => {
  const client = createClient(CacheService, createConnectTransport({ baseUrl: `https://127.0.0.1:${server.port}`, httpVersion: "1.1" }));
  await assert.rejects(client.get({ key: "k" }), /self-signed|certificate/i);
});

test("TLS: plaintext on the TLS port does not get an answer", async () => {
  const client = createClient(CacheService, createConnectTransport({ baseUrl: `http://127.0.0.1:${server.port}`, httpVersion: "1.1" }));
  await assert.rejects(client.get({ key: "k" }, { timeoutMs: 3000 }));
});
