/**
 * The Node anchors of bench/anchors.ts, one per process:
 *   node dist/bench/anchor-servers.js grpcjs PORT   a minimal @grpc/grpc-js server: Get from a Map
 *   node dist/bench/anchor-servers.js raw PORT      raw node:http2 answering every call with fixed gRPC bytes
 *   node dist/bench/anchor-servers.js raw-engine PORT
 *                                                   the same on our HTTP/2 engine (src/server/h2)
 *   node dist/bench/anchor-servers.js sink PORT     an OTLP/HTTP sink: accepts every export and discards it
 *   node dist/bench/anchor-servers.js latency URL FILE N
 *                                                   N gRPC calls one at a time (body from FILE) over one
 *                                                   HTTP/2 connection; prints {"p50Us","p99Us"} of the last 90%
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
  const [url, file, count] = process.argv.slice(3);
  const body = readFileSync(file);
  const session = http2.connect(url);
  const call = () =>
    new Promise<void>((resolve, reject) => {
      const req = session.request({ ":method": "POST", ":path": new URL(url).pathname, "content-type": "application/grpc", te: "trailers" });
      req.on("data", () => {});
      req.on("trailers", (t) => (t["grpc-status"] === "0" ? resolve() : reject(new Error(`grpc-status ${String(t["grpc-status"])}`))));
      req.on("error", reject);
      req.end(body);
    });
  const n = Number(count);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call();
    if (i >= n / 10) times.push((performance.now() - t0) * 1000);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ p50Us: times[Math.floor(times.length * 0.5)], p99Us: times[Math.floor(times.length * 0.99)] }));
  session.close();
} else {
  console.error("usage: anchor-servers.js grpcjs|raw|sink PORT | latency URL FILE N");
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
