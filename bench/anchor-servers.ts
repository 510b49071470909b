/**
 * The Node anchors of bench/anchors.ts, one per process:
 *   node dist/bench/anchor-servers.js grpcjs PORT   a minimal @grpc/grpc-js server: Get from a Map
 *   node dist/bench/anchor-servers.js raw PORT      raw node:http2 answering every call with fixed gRPC bytes
 *   node dist/bench/anchor-servers.js raw-engine PORT
 *                                                   the same on our HTTP/2 engine (src/server/h2)
 *   node dist/bench/anchor-servers.js sink PORT     an OTLP/HTTP sink: accepts every export and discards it
 *   node dist/bench/anchor-servers.js latency N URL FILE [URL FILE ...]
 *                                                   N gRPC calls one at a time to each URL (body from FILE),
 *                                                   one HTTP/2 connection each, the URLs taking turns, after
 *                                                   a warm-up; prints [{"p50Us","p99Us","p999Us","calls"}] per URL
 * Each prints "listening" when ready.
 */
import { readFileSync } from "node:fs";
import * as http from "node:http";
import { performance } from "node:perf_hooks";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { GetRequestSchema, GetResponseSchema } from "../src/gen/ripplecache/v1/cache_pb.js";
import { H2Connection } from "../src/server/h2/connection.js";
import type { CallStream } from "../src/server/fast-path/call.js";

const [kind, portText] = process.argv.slice(2);
const port = Number(portText);
const value = new Uint8Array(100).fill(0x78);

if (kind === "grpcjs") {
  const store = new Map<string, Uint8Array>();
  for (let i = 0; i < 1000; i++) store.set(`k${i}`, value);
  const identity = (b: Buffer) => b;
  const service: grpc.ServiceDefinition = {
    Get: {
      path: "/ripplecache.v1.CacheService/Get",
      requestStream: false,
      responseStream: false,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  };
  const server = new grpc.Server();
  server.addService(service, {
    Get: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const req = fromBinary(GetRequestSchema, call.request);
      const found = store.get(req.key);
      const res = create(GetResponseSchema, found === undefined ? {} : { found: true, value: found, revision: 1n });
      callback(null, Buffer.from(toBinary(GetResponseSchema, res)));
    },
  });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
    console.log("listening");
  });
} else if (kind === "raw") {
  const server = http2.createServer();
  server.on("stream", fixedAnswer());
  server.listen(port, "127.0.0.1", () => console.log("listening"));
} else if (kind === "raw-engine") {
  const answer = fixedAnswer();
  const server = net.createServer((socket) => {
    new H2Connection(socket, { maxConcurrentStreams: 1000, maxHeaderListSize: 16 * 1024 }).on("stream", answer);
  });
  server.listen(port, "127.0.0.1", () => console.log("listening"));
} else if (kind === "sink") {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200, { "content-type": "application/x-protobuf" }).end());
  });
  server.listen(port, "127.0.0.1", () => console.log("listening"));
} else if (kind === "latency") {
  // Targets take turns, CHUNK calls each, so that every one meets the same machine (a noisy minute on a shared host
  // would otherwise land on whichever server was measured then). A fresh Node client scavenges every few ms while its
  // young generation grows, and compiles its code: timed, that was its own start, not the server's (p99 1.8 ms for any
  // server, ~0.5 ms once warm), hence the warm-up.
  const LATENCY_WARMUP = 3000;
  const CHUNK = 100;
  const n = Number(process.argv[3]);
  const targets: { url: URL; body: Buffer; session: http2.ClientHttp2Session; times: number[] }[] = [];
  for (let i = 4; i + 1 < process.argv.length; i += 2) {
    const url = new URL(process.argv[i]);
    targets.push({ url, body: readFileSync(process.argv[i + 1]), session: http2.connect(url.origin), times: [] });
  }
  const call = (t: (typeof targets)[number]): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const req = t.session.request({ ":method": "POST", ":path": t.url.pathname, "content-type": "application/grpc", te: "trailers" });
      req.on("data", () => {});
      req.on("trailers", (h) => (h["grpc-status"] === "0" ? resolve() : reject(new Error(`grpc-status ${String(h["grpc-status"])}`))));
      req.on("error", reject);
      req.end(t.body);
    });
  for (const t of targets) for (let i = 0; i < LATENCY_WARMUP; i++) await call(t);
  for (let done = 0; done < n; done += CHUNK) {
    for (const t of targets) {
      for (let i = 0; i < CHUNK; i++) {
        const t0 = performance.now();
        await call(t);
        t.times.push((performance.now() - t0) * 1000);
      }
    }
  }
  const results = targets.map(({ times, session }) => {
    session.close();
    times.sort((a, b) => a - b);
    const at = (q: number) => times[Math.floor(times.length * q)];
    return { p50Us: at(0.5), p99Us: at(0.99), p999Us: at(0.999), calls: times.length };
  });
  console.log(JSON.stringify(results));
} else {
  console.error("usage: anchor-servers.js grpcjs|raw|raw-engine|sink PORT | latency N URL FILE [URL FILE ...]");
  process.exit(2);
}

/** The raw servers' answer to every call: one fixed Get response (found, the 100-byte value), then grpc-status 0. */
function fixedAnswer(): (stream: CallStream) => void {
  const payload = toBinary(GetResponseSchema, create(GetResponseSchema, { found: true, value, revision: 1n }));
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt32BE(payload.length, 1);
  frame.set(payload, 5);
  return (stream) => {
    stream.on("data", () => {});
    stream.once("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(frame);
    });
  };
}
