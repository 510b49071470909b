// Fuzzing every CacheService RPC of a real server process with fast-check
// and raw bytes: random and malformed protobuf (random bytes, unknown
// fields, truncation, wrong wire types, huge length prefixes, invalid UTF-8
// in strings) as gRPC over h2c and as Connect unary over HTTP/1.1; random,
// deep, huge and ill-typed JSON; and gRPC framing faults. Every case must
// end in a valid response or a well-formed error (never INTERNAL/UNKNOWN for
// a client's mistake, save the one case where gRPC's spec demands INTERNAL: a
// compressed flag without grpc-encoding), within a timeout; the process must survive with
// bounded memory; and calls that must be rejected must change nothing, and
// answer the code the specs name for their fault, with a message that says
// what was wrong (src/server/client-faults.ts has the reasons).
//
// Two server processes, both with our HTTP/2 engine (src/server/h2) for h2c:
// unary gRPC over HTTP/2 takes the fast path (src/server/fast-path/) on one
// and connect's handlers on the other (--fast-path off, the target named
// "connect-node"); every other call is connect's on both.
//
// Prints "fuzz: N cases, seed S"; FUZZ_SEED=S replays a run.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import { after, before, test } from "node:test";
import fc from "fast-check";
import { create, fromBinary, fromJsonString, ScalarType, toBinary, type DescField, type DescMessage, type DescMethod } from "@bufbuild/protobuf";
import {
  CacheService,
  DeleteRequestSchema,
  FlushRequestSchema,
  IncrementRequestSchema,
  InfoResponseSchema,
  LoadRequestSchema,
  SetManyRequestSchema,
  SetRequestSchema,
  TouchRequestSchema,
} from "../src/gen/ripplecache/v1/cache_pb.js";
import { startServer, type ServerProcess } from "./helpers/server.js";

const SERVICE = CacheService.typeName;
const METHODS: readonly DescMethod[] = CacheService.methods;
const UNARY = METHODS.filter((m) => m.methodKind === "unary");
const WRITES = ["Set", "SetMany", "Delete", "Increment", "Touch", "Load", "Flush"];
const MAX_REQUEST_BYTES = 64 * 1024;
/** A request that gets no answer within this long is a hang. */
const REQUEST_TIMEOUT_MS = 8_000;
/** Deadline sent with every call, so min_revision waits, replica waits and streams end quickly. */
const DEADLINE_MS = 300;
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);

/** gRPC status names by number; the Connect protocol's snake_case names. */
const GRPC_CODES = [
  "ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied",
  "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
];
/** Codes that say the server failed, not the client: never the answer to a malformed request. */
const SERVER_FAULT = new Set(["unknown", "internal", "data_loss"]);

/** A server under test, and an HTTP/2 connection to it. */
interface Target {
  readonly name: string;
  readonly server: ServerProcess;
  readonly session: http2.ClientHttp2Session;
}
const targets: Target[] = [];
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
let casesRun = 0;
/** Every batch's failure, shrunk: reported together at the end. */
const failures: string[] = [];

before(async () => {
  const args = ["--max-request-bytes", "64KiB", "--max-value-bytes", "16KiB", "--max-key-bytes", "256", "--max-batch", "20"];
  const started = await Promise.allSettled([startServer(args), startServer([...args, "--fast-path", "off"])]);
  for (const [i, s] of started.entries()) {
    if (s.status === "rejected") continue;
    const session = http2.connect(s.value.url);
    session.on("error", () => {});
    targets.push({ name: i === 0 ? "fast path" : "connect-node", server: s.value, session });
  }
  const failed = started.find((s) => s.status === "rejected");
  if (failed !== undefined) throw failed.reason;
});

after(async () => {
  agent.destroy();
  for (const t of targets) {
    t.session.close();
    await t.server.stop();
  }
});

// ---------------------------------------------------------------------------
// Protobuf wire encoding, by hand (so it can also be wrong).

function varint(v: bigint): Buffer {
  let x = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x > 0n) b |= 0x80;
    out.push(b);
  } while (x > 0n);
  return Buffer.from(out);
}
const tag = (field: number, wireType: number) => varint((BigInt(field) << 3n) | BigInt(wireType));
const lengthDelimited = (field: number, payload: Uint8Array) => Buffer.concat([tag(field, 2), varint(BigInt(payload.length)), payload]);

/** Invalid UTF-8: stray continuation, truncated sequence, overlong, surrogate, out of range. */
const INVALID_UTF8: readonly number[][] = [[0xff], [0x80], [0xc3], [0xe2, 0x82], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xfe, 0xfe]];
const invalidUtf8Arb = fc
  .tuple(fc.string({ maxLength: 8 }), fc.constantFrom(...INVALID_UTF8), fc.string({ maxLength: 8 }))
  .map(([a, bad, b]) => Buffer.concat([Buffer.from(`fz/${a}`), Buffer.from(bad), Buffer.from(b)]));

const stringArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom("", "a", "fz/k", "pre/1", "pre/2", "fz/n").map((s) => Buffer.from(s)) },
  { weight: 4, arbitrary: fc.string({ maxLength: 24, unit: "binary" }).map((s) => Buffer.from(`fz/${s}`)) },
  { weight: 1, arbitrary: fc.integer({ min: 250, max: 300 }).map((n) => Buffer.from("k".repeat(n))) },
  { weight: 1, arbitrary: invalidUtf8Arb },
);
const int64Arb = fc.oneof(
  fc.constantFrom(0n, 1n, -1n, 7n, 2n ** 53n, -(2n ** 63n), 2n ** 63n - 1n),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.bigInt({ min: -1000n, max: 1000n }),
);
const uint32Arb = fc.oneof(fc.constantFrom(0n, 1n, 2n ** 32n - 1n), fc.bigInt({ min: 0n, max: 2n ** 32n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const bytesArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 8, arbitrary: fc.uint8Array({ maxLength: 48 }) },
  { weight: 1, arbitrary: fc.integer({ min: 16 * 1024 - 2, max: 16 * 1024 + 2 }).map((n) => new Uint8Array(n).fill(0x41)) },
);

function scalarArb(scalar: ScalarType, field: number): fc.Arbitrary<Buffer> {
  switch (scalar) {
    case ScalarType.STRING:
      return stringArb.map((s) => lengthDelimited(field, s));
    case ScalarType.BYTES:
      return bytesArb.map((b) => lengthDelimited(field, b));
    case ScalarType.BOOL:
      return fc.oneof(fc.constantFrom(0n, 1n), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map((v) => Buffer.concat([tag(field, 0), varint(v)]));
    case ScalarType.UINT32:
    case ScalarType.UINT64:
      return uint32Arb.map((v) => Buffer.concat([tag(field, 0), varint(v)]));
    default:
      return int64Arb.map((v) => Buffer.concat([tag(field, 0), varint(v)]));
  }
}

function fieldArb(f: DescField, depth: number): fc.Arbitrary<Buffer> {
  const one = (): fc.Arbitrary<Buffer> => {
    if (f.fieldKind === "scalar") return scalarArb(f.scalar, f.number);
    if (f.fieldKind === "enum") return int64Arb.map((v) => Buffer.concat([tag(f.number, 0), varint(v)]));
    if (f.fieldKind === "message") return messageArb(f.message, depth + 1).map((m) => lengthDelimited(f.number, m));
    if (f.fieldKind === "list") {
      if (f.listKind === "scalar") return scalarArb(f.scalar, f.number);
      if (f.listKind === "enum") return int64Arb.map((v) => Buffer.concat([tag(f.number, 0), varint(v)]));
      return messageArb(f.message, depth + 1).map((m) => lengthDelimited(f.number, m));
    }
    return fc.constant(Buffer.alloc(0));
  };
  if (f.fieldKind === "list") return fc.array(one(), { maxLength: 4 }).map((parts) => Buffer.concat(parts));
  return one();
}

/** A well-formed message of `desc` (strings may still be invalid UTF-8 or too long). */
function messageArb(desc: DescMessage, depth = 0): fc.Arbitrary<Buffer> {
  if (depth > 2 || desc.fields.length === 0) return fc.constant(Buffer.alloc(0));
  return fc
    .subarray(desc.fields.map((f) => fieldArb(f, depth)))
    .chain((arbs) => (arbs.length === 0 ? fc.constant([] as Buffer[]) : fc.tuple(...arbs)))
    .chain((parts) => fc.shuffledSubarray(parts, { minLength: parts.length, maxLength: parts.length }))
    .map((parts) => Buffer.concat(parts));
}

/** An unknown field with any wire type, including groups and the invalid wire types 6 and 7. */
const unknownFieldArb: fc.Arbitrary<Buffer> = fc
  .tuple(fc.integer({ min: 20, max: 2 ** 29 - 1 }), fc.integer({ min: 0, max: 7 }), fc.uint8Array({ maxLength: 12 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }))
  .map(([n, wt, payload, v]) => {
    switch (wt) {
      case 0:
        return Buffer.concat([tag(n, 0), varint(v)]);
      case 1:
        return Buffer.concat([tag(n, 1), Buffer.alloc(8, 7)]);
      case 2:
        return lengthDelimited(n, payload);
      case 3:
        return Buffer.concat([tag(n, 3), payload.length % 2 === 0 ? tag(n, 4) : Buffer.alloc(0)]);
      case 5:
        return Buffer.concat([tag(n, 5), Buffer.alloc(4, 9)]);
      default:
        return Buffer.concat([tag(n, wt), payload]);
    }
  });

interface Body {
  readonly kind: string;
  readonly bytes: Buffer;
}

/** Random and malformed protobuf bodies for requests of `desc`. */
function protoBodyArb(desc: DescMessage): fc.Arbitrary<Body> {
  const numbers = desc.fields.map((f) => f.number);
  const knownNumber = numbers.length > 0 ? fc.constantFrom(...numbers) : fc.integer({ min: 1, max: 5 });
  return fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => ({ kind: "random bytes", bytes: Buffer.from(b) })),
    messageArb(desc).map((b) => ({ kind: "valid", bytes: b })),
    fc
      .tuple(messageArb(desc), fc.array(unknownFieldArb, { minLength: 1, maxLength: 4 }), fc.boolean())
      .map(([m, unknown, first]) => ({ kind: "unknown fields", bytes: first ? Buffer.concat([...unknown, m]) : Buffer.concat([m, ...unknown]) })),
    fc
      .tuple(messageArb(desc), fc.array(unknownFieldArb, { maxLength: 2 }))
      .map(([m, unknown]) => Buffer.concat([m, ...unknown, lengthDelimited(desc.fields[0]?.number ?? 30, Buffer.from("xy"))]))
      .chain((m) => fc.integer({ min: 1, max: m.length - 1 }).map((n) => ({ kind: "truncated", bytes: m.subarray(0, n) }))),
    fc
      .tuple(messageArb(desc), knownNumber, fc.integer({ min: 0, max: 7 }), fc.uint8Array({ maxLength: 10 }))
      .map(([m, n, wt, rest]) => ({ kind: "wrong wire type", bytes: Buffer.concat([m, tag(n, wt), rest]) })),
    fc
      .tuple(messageArb(desc), fc.oneof(knownNumber, fc.integer({ min: 20, max: 1000 })), fc.constantFrom(2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 65_537n), fc.uint8Array({ maxLength: 8 }))
      .map(([m, n, len, rest]) => ({ kind: "huge length prefix", bytes: Buffer.concat([m, tag(n, 2), varint(len), rest]) })),
    fc
      .tuple(knownNumber, fc.constantFrom(...INVALID_UTF8), messageArb(desc))
      .map(([n, bad, m]) => ({ kind: "invalid utf-8 in a string field", bytes: Buffer.concat([m, lengthDelimited(n, Buffer.from([0x66, ...bad]))]) })),
  );
}

/** A gRPC length-prefixed message. */
function frame(payload: Uint8Array, flags = 0, length = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(Math.min(length, 2 ** 32 - 1), 1);
  return Buffer.concat([head, payload]);
}

// ---------------------------------------------------------------------------
// Clients: raw gRPC over h2c, raw Connect over HTTP/1.1.

interface Outcome {
  /** "ok", or the error code's snake_case name, or "http <status>" when the server refused the request before RPC handling. */
  readonly code: string;
  readonly detail: string;
}

function describeCase(protocol: string, method: string, body: Buffer, headers: Record<string, string> = {}): string {
  const hex = body.length > 96 ? `${body.subarray(0, 96).toString("hex")}… (${body.length} bytes)` : body.toString("hex");
  return `${protocol} ${method} headers=${JSON.stringify(headers)} body=${hex}`;
}

function withTimeout<T>(what: string, run: (settle: (v: T) => void, fail: (e: Error) => void) => () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let cancel: () => void = () => {};
    const timer = setTimeout(() => {
      cancel();
      reject(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms (hang): ${what}`));
    }, REQUEST_TIMEOUT_MS);
    cancel = run(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** Parses gRPC length-prefixed messages; throws on a malformed response. */
function parseFrames(data: Buffer, output: DescMessage): number {
  let off = 0;
  let n = 0;
  while (off < data.length) {
    assert.ok(off + 5 <= data.length, "response ends inside a frame header");
    const flags = data[off];
    const len = data.readUInt32BE(off + 1);
    assert.equal(flags, 0, "response frame is compressed though the client accepts no encoding");
    assert.ok(off + 5 + len <= data.length, "response ends inside a message");
    fromBinary(output, data.subarray(off + 5, off + 5 + len));
    off += 5 + len;
    n++;
  }
  return n;
}

/** Sends one gRPC call (the body is sent as is: framing is the caller's) and checks the response is well formed. */
function grpcCall(target: Target, method: DescMethod, body: Buffer, headers: Record<string, string> = {}): Promise<Outcome> {
  casesRun++;
  const what = `${target.name}: ${describeCase("gRPC", method.name, body, headers)}`;
  const streaming = method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
  return withTimeout<Outcome>(what, (settle, fail) => {
    const stream = target.session.request({
      ":method": "POST",
      ":path": `/${SERVICE}/${method.name}`,
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": `${DEADLINE_MS}m`,
      ...headers,
    });
    const chunks: Buffer[] = [];
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let done = false;
    const finish = (trailers: http2.IncomingHttpHeaders | undefined) => {
      if (done) return;
      done = true;
      try {
        const status = Number(responseHeaders[":status"]);
        if (status !== 200) {
          assert.ok(status >= 400 && status < 600, `HTTP status ${status}`);
          settle({ code: `http ${status}`, detail: "" });
          return;
        }
        const all = { ...responseHeaders, ...trailers };
        const grpcStatus = all["grpc-status"];
        assert.ok(typeof grpcStatus === "string", `no grpc-status in headers or trailers (headers ${JSON.stringify(responseHeaders)})`);
        const code = GRPC_CODES[Number(grpcStatus)];
        assert.ok(code !== undefined && /^\d+$/.test(grpcStatus), `grpc-status ${grpcStatus} is not a status code`);
        const messages = parseFrames(Buffer.concat(chunks), method.output);
        if (method.methodKind === "unary" || method.methodKind === "client_streaming") {
          assert.equal(messages, code === "ok" ? 1 : 0, `${messages} response messages with status ${code}`);
        }
        settle({ code, detail: decodeURIComponent(String(all["grpc-message"] ?? "")) });
      } catch (err) {
        fail(new Error(`malformed response (${(err as Error).message}): ${what}`));
      }
    };
    stream.on("response", (h) => (responseHeaders = h));
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      // A stream that answers with a valid message is working: stop it.
      if (streaming && !done && Number(responseHeaders[":status"]) === 200) {
        const data = Buffer.concat(chunks);
        if (data.length >= 5 && data.length >= 5 + data.readUInt32BE(1)) {
          try {
            fromBinary(method.output, data.subarray(5, 5 + data.readUInt32BE(1)));
          } catch (err) {
            done = true;
            fail(new Error(`malformed stream message (${(err as Error).message}): ${what}`));
            return;
          }
          done = true;
          stream.close(http2.constants.NGHTTP2_CANCEL);
          settle({ code: "ok", detail: "stream answered" });
        }
      }
    });
    stream.on("trailers", (t) => finish(t));
    stream.on("end", () => finish(undefined));
    stream.on("close", () => {
      if (!done) {
        done = true;
        fail(new Error(`stream closed without an answer (rst code ${stream.rstCode}): ${what}`));
      }
    });
    stream.on("error", () => {});
    stream.end(body);
    return () => stream.close(http2.constants.NGHTTP2_CANCEL);
  });
}

const CONNECT_CODES = new Set(GRPC_CODES.slice(1));

/** Sends one Connect call over HTTP/1.1 and checks the response is well formed. */
function connectCall(target: Target, method: DescMethod, body: Buffer, contentType: string, headers: Record<string, string> = {}): Promise<Outcome> {
  casesRun++;
  const what = `${target.name}: ${describeCase(`Connect HTTP/1.1 ${contentType}`, method.name, body, headers)}`;
  return withTimeout<Outcome>(what, (settle, fail) => {
    const req = http.request(
      {
        agent,
        host: "127.0.0.1",
        port: target.server.port,
        method: "POST",
        path: `/${SERVICE}/${method.name}`,
        headers: { "content-type": contentType, "connect-protocol-version": "1", "connect-timeout-ms": String(DEADLINE_MS), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => fail(new Error(`response error ${e.message}: ${what}`)));
        res.on("end", () => {
          const text = Buffer.concat(chunks);
          try {
            const status = res.statusCode ?? 0;
            const type = String(res.headers["content-type"] ?? "");
            if (status === 200) {
              assert.ok(type === contentType, `200 with content-type ${type}`);
              if (type === "application/proto") fromBinary(method.output, text);
              else fromJsonString(method.output, text.toString("utf8"));
              settle({ code: "ok", detail: "" });
              return;
            }
            if (status === 415) {
              settle({ code: "http 415", detail: "" });
              return;
            }
            assert.match(type, /^application\/json/, `error status ${status} with content-type ${type}`);
            const err = JSON.parse(text.toString("utf8")) as { code?: unknown; message?: unknown };
            assert.ok(typeof err.code === "string" && CONNECT_CODES.has(err.code), `error JSON without a valid code: ${text.toString("utf8").slice(0, 200)}`);
            settle({ code: err.code, detail: String(err.message ?? "") });
          } catch (err) {
            fail(new Error(`malformed response (${(err as Error).message}): ${what}`));
          }
        });
      },
    );
    req.on("error", (e) => fail(new Error(`request failed (${e.message}): ${what}`)));
    req.end(body);
    return () => req.destroy();
  });
}

/** Every answer, valid or an error, must not blame the server for the client's bytes. */
function checkNotServerFault(o: Outcome, what: string): void {
  assert.ok(!SERVER_FAULT.has(o.code), `${o.code.toUpperCase()} (${o.detail}) for a client's request: ${what}`);
}

/** A well-formed Info call: the revision and key count. */
function info(target: Target): Promise<{ revision: bigint; keys: bigint }> {
  return withTimeout(`Info`, (settle, fail) => {
    const stream = target.session.request({ ":method": "POST", ":path": `/${SERVICE}/Info`, "content-type": "application/grpc", te: "trailers" });
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", fail);
    stream.on("end", () => {
      try {
        const data = Buffer.concat(chunks);
        const r = fromBinary(InfoResponseSchema, data.subarray(5, 5 + data.readUInt32BE(1)));
        settle({ revision: r.revision, keys: r.keys });
      } catch (e) {
        fail(e as Error);
      }
    });
    stream.end(frame(new Uint8Array()));
    return () => stream.close(http2.constants.NGHTTP2_CANCEL);
  });
}

function rssMiB(server: ServerProcess): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${server.proc.pid}/status`, "utf8"));
  assert.ok(m, "no VmRSS");
  return Number(m[1]) / 1024;
}

function methodByName(name: string): DescMethod {
  const m = METHODS.find((x) => x.name === name);
  assert.ok(m, name);
  return m;
}

/** Runs `numRuns` batches of 16 concurrent cases; fast-check shrinks a failing batch to its failing case. */
async function fuzz<T>(name: string, arb: fc.Arbitrary<T>, numRuns: number, run: (c: T) => Promise<void>): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(arb, { minLength: 4, maxLength: 16 }), async (cases) => {
      await Promise.all(cases.map(run));
    }),
    { numRuns, seed: SEED, interruptAfterTimeLimit: 60_000 },
  ).catch((err: Error) => {
    const cause = err.cause instanceof Error ? err.cause.message : "";
    // Go on with the other batches, so one run reports every kind of failure.
    failures.push(`${name} (FUZZ_SEED=${SEED}): ${cause}\n${err.message.split("\n").slice(0, 3).join("\n")}`);
  });
}

// ---------------------------------------------------------------------------
// Cases.

const methodArb = fc.constantFrom(...METHODS);
const unaryArb = fc.constantFrom(...UNARY);

/** gRPC calls with random and malformed protobuf in well-formed frames. */
const grpcProtoCase = methodArb.chain((m) =>
  (m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming"
    ? fc.array(protoBodyArb(m.input), { minLength: 0, maxLength: 3 })
    : protoBodyArb(m.input).map((b) => [b])
  ).map((bodies) => ({ method: m, body: Buffer.concat(bodies.map((b) => frame(b.bytes))) })),
);

/** Connect unary over HTTP/1.1 with random and malformed protobuf. */
const connectProtoCase = unaryArb.chain((m) => protoBodyArb(m.input).map((b) => ({ method: m, body: b.bytes })));

/** Request-shaped JSON with values of any type. */
function jsonShapedArb(desc: DescMessage): fc.Arbitrary<string> {
  const names = desc.fields.flatMap((f) => [f.jsonName, f.name]);
  const valueArb = fc.oneof(
    fc.jsonValue({ maxDepth: 3 }),
    fc.constantFrom("", "fz/k", "pre/1", "AAAA", "not base64!", "-1", "9223372036854775808", "1e400", "NaN", "Infinity", "0x10", "1.5"),
    fc.constantFrom(-1, 1.5, 1e300, 2 ** 64, true, null),
  );
  return fc.dictionary(names.length > 0 ? fc.constantFrom(...names) : fc.string(), valueArb, { maxKeys: 5 }).map((o) => JSON.stringify(o));
}

const jsonBodyArb = (desc: DescMessage): fc.Arbitrary<Buffer> =>
  fc.oneof(
    { weight: 4, arbitrary: jsonShapedArb(desc).map((s) => Buffer.from(s)) },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => Buffer.from(JSON.stringify(v))) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 30_000 }).map((n) => Buffer.from(`{"key":${"[".repeat(n)}${"]".repeat(n)}}`)) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 30_000 }).map((n) => Buffer.from(`${'{"a":'.repeat(n)}1${"}".repeat(n)}`)) },
    { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 200_000 }).map((n) => Buffer.from(`{"key":"${"x".repeat(n)}"}`)) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 2_000 }).map((n) => Buffer.from(`{"keys":[${Array.from({ length: n }, (_, i) => `"k${i}"`).join(",")}]}`)) },
    { weight: 2, arbitrary: fc.string({ maxLength: 40, unit: "binary" }).map((s) => Buffer.from(s)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) },
  );

const connectJsonCase = unaryArb.chain((m) => jsonBodyArb(m.input).map((body) => ({ method: m, body })));

// Rejected-only cases: each must fail and change nothing.

/** A valid request to each write method that would change the revision if applied. */
const VALID_WRITE: Record<string, Buffer> = {
  Set: Buffer.from(toBinary(SetRequestSchema, create(SetRequestSchema, { key: "rej/a", value: new Uint8Array([1, 2, 3]) }))),
  SetMany: Buffer.from(toBinary(SetManyRequestSchema, create(SetManyRequestSchema, { entries: [{ key: "rej/b" }] }))),
  Delete: Buffer.from(toBinary(DeleteRequestSchema, create(DeleteRequestSchema, { key: "pre/1" }))),
  Increment: Buffer.from(toBinary(IncrementRequestSchema, create(IncrementRequestSchema, { key: "rej/n", delta: 1n }))),
  Touch: Buffer.from(toBinary(TouchRequestSchema, create(TouchRequestSchema, { key: "pre/2", ttlMs: 100_000n }))),
  Load: Buffer.from(toBinary(LoadRequestSchema, create(LoadRequestSchema, { key: "rej/l" }))),
  Flush: Buffer.from(toBinary(FlushRequestSchema, create(FlushRequestSchema, {}))),
};
const VALID_WRITE_JSON: Record<string, string> = {
  Set: '{"key":"rej/a","value":"AQID"}',
  SetMany: '{"entries":[{"key":"rej/b"}]}',
  Delete: '{"key":"pre/1"}',
  Increment: '{"key":"rej/n","delta":"1"}',
  Touch: '{"key":"pre/2","ttlMs":"100000"}',
  Flush: "{}",
};
const writeArb = fc.constantFrom(...WRITES);
const unaryWriteArb = fc.constantFrom(...WRITES.filter((w) => w !== "Load"));

/** Each write with its key (or first entry's key) replaced by invalid UTF-8. */
function invalidKeyWrite(name: string, bad: Buffer): Buffer {
  const key = lengthDelimited(1, bad);
  switch (name) {
    case "SetMany":
      return lengthDelimited(1, key);
    case "Flush":
      return Buffer.alloc(0); // has no string: never used
    case "Increment":
      return Buffer.concat([key, tag(2, 0), varint(1n)]);
    case "Touch":
      return Buffer.concat([key, tag(2, 0), varint(1000n)]);
    default:
      return Buffer.concat([key, lengthDelimited(2, Buffer.from("v"))]);
  }
}

/** What a rejected call must answer: the code its fault calls for, and words its message must have. */
interface Expected {
  readonly code: string;
  readonly detail?: RegExp;
}

interface RejectedCase {
  readonly kind: string;
  readonly expected: Expected;
  /** Load writes each whole entry as it arrives (as its errors say), so a fault after one is not a clean rejection. */
  readonly writes?: boolean;
  readonly run: (target: Target) => Promise<Outcome>;
  readonly what: string;
}

const TRUNCATED: Expected = { code: "invalid_argument", detail: /incomplete envelope/ };
/** Not UTF-8, in protobuf or in JSON: the client's bytes are wrong (src/server/client-faults.ts). */
const NOT_UTF8: Expected = { code: "invalid_argument", detail: /UTF-8/ };

const REJECTED: readonly fc.Arbitrary<RejectedCase>[] = [
  // A frame whose length prefix promises more than the body holds (for Flush, whose
  // request is empty, the body is the 5-byte prefix alone).
  fc.tuple(writeArb, fc.integer({ min: 1, max: 4096 }), fc.boolean()).map(([name, extra, cut]) => {
    const payload = VALID_WRITE[name];
    const body = cut && payload.length > 1 ? frame(payload.subarray(0, payload.length - 1), 0, payload.length) : frame(payload, 0, payload.length + extra);
    return { kind: "truncated frame", expected: TRUNCATED, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, methodByName(name), body) };
  }),
  // A whole message, then one cut short: its 5-byte prefix alone, or part of its bytes
  // (connect's own decoder took a lone prefix for a clean end of the stream).
  ...[unaryWriteArb, fc.constant("Load")].map((names) =>
    fc.tuple(names, fc.integer({ min: 1, max: 100 }), fc.nat()).map(([name, promised, have]): RejectedCase => {
      const body = Buffer.concat([frame(VALID_WRITE[name]), frame(Buffer.alloc(0), 0, promised), Buffer.alloc(have % promised, 0x0a)]);
      const load = name === "Load";
      const kind = load ? "whole message, then a truncated one (Load)" : "whole message, then a truncated one";
      return { kind, expected: TRUNCATED, writes: load, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, methodByName(name), body) };
    }),
  ),
  // The frame header itself is cut short.
  fc.tuple(writeArb, fc.integer({ min: 1, max: 4 })).map(([name, n]) => {
    const body = frame(VALID_WRITE[name]).subarray(0, n);
    return { kind: "truncated frame header", expected: TRUNCATED, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, methodByName(name), body) };
  }),
  // A compressed message without grpc-encoding. INTERNAL is what the spec demands:
  // grpc/grpc doc/compression.md, test case 6: "An ill-constructed message with its
  // Compressed-Flag bit set but lacking a grpc-encoding entry different from identity
  // in its metadata MUST fail with INTERNAL status, its associated description
  // indicating the invalid Compressed-Flag condition" (grpc-go: "grpc: compressed flag
  // set with identity or empty encoding"; connect-go: INTERNAL too).
  writeArb.map((name) => {
    const body = frame(VALID_WRITE[name], 1);
    const expected = { code: "internal", detail: /compressed/ };
    return { kind: "compressed flag without grpc-encoding", expected, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, methodByName(name), body) };
  }),
  // An encoding the server does not support (it supports gzip and br): UNIMPLEMENTED,
  // naming the supported ones (doc/compression.md).
  fc.tuple(writeArb, fc.constantFrom("x-fuzz", "snappy", "zstd", "lz4"), fc.constantFrom(0, 1)).map(([name, enc, flag]) => {
    const body = frame(VALID_WRITE[name], flag);
    const headers = { "grpc-encoding": enc };
    const expected = { code: "unimplemented", detail: /gzip/ };
    return { kind: "unknown grpc-encoding", expected, what: describeCase("gRPC", name, body, headers), run: (t) => grpcCall(t, methodByName(name), body, headers) };
  }),
  // gzip declared, garbage sent.
  fc.tuple(writeArb, fc.uint8Array({ minLength: 1, maxLength: 32 })).map(([name, junk]) => {
    const body = frame(junk, 1);
    const headers = { "grpc-encoding": "gzip" };
    const expected = { code: "invalid_argument", detail: /gzip data is corrupt/ };
    return { kind: "corrupt gzip", expected, what: describeCase("gRPC", name, body, headers), run: (t) => grpcCall(t, methodByName(name), body, headers) };
  }),
  // A length prefix over --max-request-bytes (with the body as long as the prefix, or not).
  fc.tuple(writeArb, fc.integer({ min: MAX_REQUEST_BYTES + 1, max: 2 ** 32 - 1 }), fc.boolean()).map(([name, len, full]) => {
    const payload = full && len < MAX_REQUEST_BYTES + 1024 ? Buffer.alloc(len, 0) : VALID_WRITE[name];
    const body = frame(payload, 0, len);
    const expected = { code: "resource_exhausted", detail: /larger than/ };
    return { kind: "length prefix over max-request-bytes", expected, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, methodByName(name), body) };
  }),
  // Content types the server does not speak, over HTTP/2 and HTTP/1.1.
  fc.tuple(writeArb, fc.constantFrom("text/plain", "application/grpcx", "application/octet-stream", "application/grpc+fuzz", "multipart/form-data")).map(([name, type]) => {
    const body = frame(VALID_WRITE[name]);
    const headers = { "content-type": type };
    return { kind: "wrong content-type (h2)", expected: { code: "http 415" }, what: describeCase("gRPC", name, body, headers), run: (t) => grpcCall(t, methodByName(name), body, headers) };
  }),
  fc.tuple(unaryWriteArb, fc.constantFrom("text/plain", "application/xml", "application/protobuf-x", "application/x-www-form-urlencoded")).map(([name, type]) => {
    const body = VALID_WRITE[name];
    return { kind: "wrong content-type (HTTP/1.1)", expected: { code: "http 415" }, what: describeCase(`Connect ${type}`, name, body), run: (t) => connectCall(t, methodByName(name), body, type) };
  }),
  // Malformed JSON: a valid write cut short, or broken.
  fc.tuple(unaryWriteArb, fc.nat()).map(([name, cut]) => {
    const json = VALID_WRITE_JSON[name];
    const body = Buffer.from(json.slice(0, cut % json.length) + (name === "Flush" ? "x" : ""));
    const expected = { code: "invalid_argument", detail: /JSON/ };
    return { kind: "malformed JSON", expected, what: describeCase("Connect JSON", name, body), run: (t) => connectCall(t, methodByName(name), body, "application/json") };
  }),
  // Invalid UTF-8 in the key: protobuf over gRPC and Connect, and JSON. JSON is
  // rejected too, not decoded with U+FFFD for the bad bytes (as Go's encoding/json
  // would): that would write a key the client never sent. Go's protojson (connect-go)
  // rejects it as well.
  fc.tuple(fc.constantFrom(...WRITES.filter((w) => w !== "Flush")), invalidUtf8Arb, fc.constantFrom("grpc", "connect", "json")).map(([name, bad, via]) => {
    const method = methodByName(name);
    if (via === "grpc") {
      const body = frame(invalidKeyWrite(name, bad));
      return { kind: "invalid UTF-8 key (gRPC)", expected: NOT_UTF8, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, method, body) };
    }
    if (via === "connect" && name !== "Load") {
      const body = invalidKeyWrite(name, bad);
      return { kind: "invalid UTF-8 key (Connect proto)", expected: NOT_UTF8, what: describeCase("Connect proto", name, body), run: (t) => connectCall(t, method, body, "application/proto") };
    }
    const unaryName = name === "Load" ? "Set" : name;
    const json = name === "SetMany" ? Buffer.concat([Buffer.from('{"entries":[{"key":"'), bad, Buffer.from('"}]}')]) : Buffer.concat([Buffer.from('{"key":"'), bad, Buffer.from('"}')]);
    return { kind: "invalid UTF-8 key (JSON)", expected: NOT_UTF8, what: describeCase("Connect JSON", unaryName, json), run: (t) => connectCall(t, methodByName(unaryName), json, "application/json") };
  }),
  // A huge length prefix inside the protobuf of a write.
  fc.tuple(fc.constantFrom("Set", "Delete", "Increment", "Touch"), fc.constantFrom(2n ** 31n, 2n ** 32n - 1n, 2n ** 63n, 2n ** 64n - 1n, 1000n)).map(([name, len]) => {
    const inner = Buffer.concat([tag(1, 2), varint(len), Buffer.from("abc")]);
    const body = frame(inner);
    const expected = { code: "invalid_argument", detail: /invalid protobuf/ };
    return { kind: "huge length prefix in protobuf", expected, what: describeCase("gRPC", name, body), run: (t) => grpcCall(t, methodByName(name), body) };
  }),
];

// ---------------------------------------------------------------------------

test("fuzz every CacheService RPC: malformed input never crashes, hangs, blames the server or changes data", { timeout: 120_000 }, async () => {
  const started = Date.now();
  console.log(`fuzz seed: FUZZ_SEED=${SEED}`);

  // Keys the cases name, so deletes and touches can hit something.
  for (const target of targets) {
    for (const key of ["pre/1", "pre/2", "fz/k", "fz/n"]) {
      const o = await grpcCall(target, methodByName("Set"), frame(toBinary(SetRequestSchema, create(SetRequestSchema, { key, value: new TextEncoder().encode("1") }))));
      assert.equal(o.code, "ok");
    }
  }

  // 1. Rejected-only cases, kind by kind: every one fails with its code, and nothing changes.
  const rejectedKinds = new Map<string, Map<string, number>>();
  for (const target of targets) {
    for (const arb of REJECTED) {
      const before = await info(target);
      const kinds = new Set<string>();
      let writes = false;
      await fuzz(`rejected cases (${target.name})`, arb, 20, async (c) => {
        kinds.add(c.kind);
        writes ||= c.writes === true;
        const o = await c.run(target);
        const codes = rejectedKinds.get(c.kind) ?? new Map<string, number>();
        codes.set(o.code, (codes.get(o.code) ?? 0) + 1);
        rejectedKinds.set(c.kind, codes);
        const what = `${target.name}: ${c.kind}: ${c.what}`;
        assert.notEqual(o.code, "ok", `a call that must be rejected succeeded: ${what}`);
        assert.equal(o.code, c.expected.code, `answered ${o.code.toUpperCase()} (${o.detail}), not ${c.expected.code.toUpperCase()}: ${what}`);
        if (c.expected.detail !== undefined) assert.match(o.detail, c.expected.detail, `the message does not say what was wrong: ${what}`);
      });
      const after = await info(target);
      if (!writes && (after.revision !== before.revision || after.keys !== before.keys)) {
        failures.push(`${target.name}: rejected calls (${[...kinds].join(", ")}) changed data: revision ${before.revision} -> ${after.revision}, keys ${before.keys} -> ${after.keys}`);
      }
    }
  }
  for (const [kind, codes] of rejectedKinds) console.log(`  rejected: ${kind}: ${[...codes].map(([c, n]) => `${c}×${n}`).join(" ")}`);

  // 2. Random and malformed protobuf as gRPC over h2c, for every method, on both paths.
  for (const target of targets) {
    await fuzz(`gRPC protobuf (${target.name})`, grpcProtoCase, 120, async ({ method, body }) => {
      checkNotServerFault(await grpcCall(target, method, body), `${target.name}: ${describeCase("gRPC", method.name, body)}`);
    });
  }

  // HTTP/1.1 calls are connect-node's on either server: the default one takes them.
  const main = targets[0];

  // 3. The same as Connect unary over HTTP/1.1 (application/proto).
  await fuzz("Connect protobuf", connectProtoCase, 80, async ({ method, body }) => {
    checkNotServerFault(await connectCall(main, method, body, "application/proto"), describeCase("Connect proto", method.name, body));
  });

  // 4. Random, deep, huge and ill-typed JSON, and bytes that are not UTF-8.
  await fuzz("Connect JSON", connectJsonCase, 80, async ({ method, body }) => {
    checkNotServerFault(await connectCall(main, method, body, "application/json"), describeCase("Connect JSON", method.name, body));
  });

  // The servers are alive, answer normally and stayed within their memory bound.
  const rss: number[] = [];
  for (const { name, server } of targets) {
    assert.equal(server.proc.exitCode, null, `${name}: the server exited:\n${server.output.slice(-20).join("\n")}`);
    assert.equal(server.proc.signalCode, null);
    rss.push(rssMiB(server));
  }
  for (const target of targets) {
    const get = await grpcCall(target, methodByName("Get"), frame(toBinary(methodByName("Get").input, create(methodByName("Get").input, { key: "pre/2" }))));
    assert.equal(get.code, "ok", `${target.name}: Get after the fuzzing`);
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(`fuzz: ${casesRun} cases, seed ${SEED}`);
  console.log(`fuzz: ${seconds.toFixed(1)} s; server RSS ${rss.map((r) => `${r.toFixed(0)} MiB`).join(", ")}`);
  assert.deepEqual(failures, [], `failures:\n${failures.join("\n\n")}`);
  for (const r of rss) assert.ok(r < 400, `server RSS ${r.toFixed(0)} MiB`);
  assert.ok(casesRun >= 4000, `only ${casesRun} cases ran`);
  for (const { name, server } of targets) {
    const crashes = server.output.filter((l) => /uncaught|unhandled|FATAL|RangeError|TypeError/i.test(l));
    assert.deepEqual(crashes, [], `${name}: the server logged crashes`);
  }
});
