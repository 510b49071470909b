import assert from "node:assert/strict";
import { after, before, test, type TestContext } from "node:test";
import { frame, grpcMessage, hpackIndexed, hpackLiteral, hpackLiteralName, rawH2Connection, type RawH2Connection } from "./helpers/h2-frames.js";
import { startServer, type ServerProcess } from "./helpers/server.js";

/*
 * RFC 9113 conformance of our HTTP/2 engine (src/server/h2, validation in
 * validate.ts), one test per rule, titled with its section: raw frames to a
 * real `ripplecache serve`, and the same frames to one on node:http2
 * (`--http2-engine node`, nghttp2). Where nghttp2 does what the RFC asks, the
 * test asserts that both agree; where it is lax (it ignores malformed regular
 * fields and frames on closed streams) or answers with another code, its
 * outcome is only reported. Run: node --test dist/test/h2-conformance.test.js
 */

let ripple: ServerProcess;
let node: ServerProcess;

before(async () => {
  [ripple, node] = await Promise.all([startServer([]), startServer(["--http2-engine", "node"])]);
});

after(async () => {
  await Promise.all([ripple?.stop(), node?.stop()]);
});

// Frame types and flags (RFC 9113 6).
const DATA = 0;
const HEADERS = 1;
const PRIORITY = 2;
const RST_STREAM = 3;
const PING = 6;
const GOAWAY = 7;
const WINDOW_UPDATE = 8;
const CONTINUATION = 9;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const PRIORITY_FLAG = 0x20;

// A gRPC Get's fields, in the order a client sends them (no Huffman, no dynamic table).
const METHOD = hpackIndexed(3); // :method POST
const SCHEME = hpackIndexed(6); // :scheme http
const PATH = hpackLiteralName(4, "/ripplecache.v1.CacheService/Get");
const AUTHORITY = hpackLiteralName(1, "127.0.0.1");
const CONTENT_TYPE = hpackLiteralName(31, "application/grpc");
const TE = hpackLiteral("te", "trailers");
const GET_FIELDS = [METHOD, SCHEME, PATH, AUTHORITY, CONTENT_TYPE, TE];
/** GetRequest { key: "k" }. */
const GET_BODY = grpcMessage(Buffer.from([0x0a, 0x01, 0x6b]));

/** A Get on stream `id` whose header block is `fields`, its body ending the request. */
function get(id: number, fields: Buffer[] = GET_FIELDS): Buffer[] {
  return [frame(HEADERS, END_HEADERS, id, Buffer.concat(fields)), frame(DATA, END_STREAM, id, GET_BODY)];
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value);
  return b;
}

/** A PRIORITY payload (or the HEADERS priority block): dependency and weight. */
function priority(dependency: number): Buffer {
  return Buffer.concat([u32(dependency), Buffer.from([15])]);
}

/** Runs `scenario` on a fresh connection to `server`; returns what it says became of the stream it watches. */
async function on(server: ServerProcess, scenario: (c: RawH2Connection) => Promise<string>): Promise<string> {
  const c = await rawH2Connection(server.port);
  try {
    return await scenario(c);
  } finally {
    c.close();
  }
}

/** Frames sent at once; the outcome of stream `id`. */
const sending = (frames: Buffer[], id: number) => async (c: RawH2Connection) => {
  c.write(...frames);
  return c.outcome(id);
};

/** A Get on stream 1 that completes first (both sides END_STREAM: the stream is closed); then `frames`; the outcome of stream `id`. */
const afterClosedGet = (frames: Buffer[], id = 1) => async (c: RawH2Connection) => {
  c.write(...get(1));
  assert.ok(await c.until(() => c.frames.some((f) => f.id === 1 && (f.type === HEADERS || f.type === DATA) && f.flags & END_STREAM)), "the first Get never completed");
  const from = c.frames.length;
  c.write(...frames);
  return c.settle(id, from);
};

/**
 * Runs the scenario on both engines: ours must give `expected`; node:http2 too when `nodeRule`
 * is "agrees", its error code alone when "same code" (nghttp2 makes some stream errors
 * connection errors), and its outcome is only reported when "reported".
 */
async function sideBySide(t: TestContext, scenario: (c: RawH2Connection) => Promise<string>, expected: string, nodeRule: "agrees" | "same code" | "reported"): Promise<void> {
  const [ours, theirs] = await Promise.all([on(ripple, scenario), on(node, scenario)]);
  t.diagnostic(`ours: ${ours}; node:http2: ${theirs}`);
  assert.equal(ours, expected, "our engine");
  if (nodeRule === "agrees") assert.equal(theirs, expected, "node:http2");
  if (nodeRule === "same code") assert.equal(theirs.split(" ")[1], expected.split(" ")[1], `node:http2's error code (${theirs})`);
}

const MALFORMED = "RST_STREAM PROTOCOL_ERROR";

// --- 8.3 / 8.2.1: malformed requests are stream errors (PROTOCOL_ERROR) ---

test("RFC 9113 8.3: a pseudo-header after a regular header is PROTOCOL_ERROR", async (t) => {
  await sideBySide(t, sending(get(1, [METHOD, SCHEME, CONTENT_TYPE, PATH, AUTHORITY, TE]), 1), MALFORMED, "agrees");
});

test("RFC 9113 8.3: an unknown pseudo-header (:foo) is PROTOCOL_ERROR", async (t) => {
  await sideBySide(t, sending(get(1, [METHOD, SCHEME, PATH, AUTHORITY, hpackLiteral(":foo", "bar"), CONTENT_TYPE, TE]), 1), MALFORMED, "agrees");
});

test("RFC 9113 8.3.1: :status in a request is PROTOCOL_ERROR", async (t) => {
  await sideBySide(t, sending(get(1, [METHOD, SCHEME, PATH, AUTHORITY, hpackIndexed(8), CONTENT_TYPE, TE]), 1), MALFORMED, "agrees");
});

for (const [name, field] of [
  [":method", METHOD],
  [":scheme", SCHEME],
  [":path", PATH],
] as const) {
  test(`RFC 9113 8.3.1: a duplicated ${name} is PROTOCOL_ERROR`, async (t) => {
    // The same value twice: a header map keeps one, so only the order of fields shows it.
    const fields = [...GET_FIELDS];
    fields.splice(fields.indexOf(field) + 1, 0, field);
    await sideBySide(t, sending(get(1, fields), 1), MALFORMED, "agrees");
  });
}

test("RFC 9113 8.3: a pseudo-header in trailers is PROTOCOL_ERROR", async (t) => {
  const frames = [
    frame(HEADERS, END_HEADERS, 1, Buffer.concat(GET_FIELDS)),
    frame(DATA, 0, 1, GET_BODY),
    frame(HEADERS, END_HEADERS | END_STREAM, 1, hpackLiteralName(4, "/elsewhere")), // :path
  ];
  await sideBySide(t, sending(frames, 1), MALFORMED, "agrees");
});

for (const [what, value] of [
  ["NUL", "a\x00b"],
  ["CR", "a\rb"],
  ["LF", "a\nb"],
] as const) {
  test(`RFC 9113 8.2.1: a field value with ${what} is PROTOCOL_ERROR`, async (t) => {
    // node:http2 drops such a regular field and serves the request (lax).
    await sideBySide(t, sending(get(1, [...GET_FIELDS, hpackLiteral("x-note", value)]), 1), MALFORMED, "reported");
  });
}

test("RFC 9113 8.2.1: a field name with a space or another non-token character is PROTOCOL_ERROR", async (t) => {
  // Each on its own stream of one connection; nghttp2 drops such regular fields (lax).
  const names = ["x y", 'x"y', "x(y", "x,y", "x/y", "x:y", "x@y", "x\x7fy", "x\x00y", "x\xe9y", ""];
  for (const engine of [ripple, node]) {
    const outcomes = await on(engine, async (c) => {
      c.write(...names.flatMap((name, i) => get(1 + 2 * i, [...GET_FIELDS, hpackLiteral(name, "1")])));
      return (await Promise.all(names.map((_, i) => c.outcome(1 + 2 * i)))).map((o, i) => `${JSON.stringify(names[i])}: ${o}`).join(", ");
    });
    t.diagnostic(`${engine === ripple ? "ours" : "node:http2"}: ${outcomes}`);
    if (engine === ripple) assert.equal(outcomes, names.map((name) => `${JSON.stringify(name)}: ${MALFORMED}`).join(", "));
  }
});

test("RFC 9113 8.2.1: an upper-case field name is PROTOCOL_ERROR, in a request and in trailers", async (t) => {
  await sideBySide(t, sending(get(1, [...GET_FIELDS, hpackLiteral("X-Note", "1")]), 1), MALFORMED, "agrees");
  const trailers = [
    frame(HEADERS, END_HEADERS, 1, Buffer.concat(GET_FIELDS)),
    frame(DATA, 0, 1, GET_BODY),
    frame(HEADERS, END_HEADERS | END_STREAM, 1, hpackLiteral("X-Note", "1")),
  ];
  await sideBySide(t, sending(trailers, 1), MALFORMED, "agrees");
});

test("RFC 9113 8.3.1: an empty :method, a :scheme that is no scheme, a :path without a leading slash are PROTOCOL_ERROR", async (t) => {
  const cases: [string, Buffer[]][] = [
    ["empty :method", [hpackLiteralName(2, ""), SCHEME, PATH, AUTHORITY, CONTENT_TYPE, TE]],
    ["bad :scheme", [METHOD, hpackLiteralName(6, "1ttp"), PATH, AUTHORITY, CONTENT_TYPE, TE]],
    [":path without /", [METHOD, SCHEME, hpackLiteralName(4, "ripplecache.v1.CacheService/Get"), AUTHORITY, CONTENT_TYPE, TE]],
  ];
  const scenario = async (c: RawH2Connection) => {
    c.write(...cases.flatMap(([, fields], i) => get(1 + 2 * i, fields)));
    return (await Promise.all(cases.map((_, i) => c.outcome(1 + 2 * i)))).map((o, i) => `${cases[i][0]}: ${o}`).join(", ");
  };
  await sideBySide(t, scenario, cases.map(([what]) => `${what}: ${MALFORMED}`).join(", "), "agrees");
});

test("RFC 9113 8.1: a second HEADERS without END_STREAM is a stream PROTOCOL_ERROR", async (t) => {
  const frames = [frame(HEADERS, END_HEADERS, 1, Buffer.concat(GET_FIELDS)), frame(HEADERS, END_HEADERS, 1, hpackLiteral("x-more", "1"))];
  await sideBySide(t, sending(frames, 1), MALFORMED, "agrees");
});

// --- Frames ---

test("RFC 9113 5.3.1: HEADERS that depend on their own stream are PROTOCOL_ERROR", async (t) => {
  const frames = [frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, Buffer.concat([priority(1), ...GET_FIELDS])), frame(DATA, END_STREAM, 1, GET_BODY)];
  // A stream error; node:http2 ends the connection, with INTERNAL_ERROR.
  await sideBySide(t, sending(frames, 1), "RST_STREAM PROTOCOL_ERROR", "reported");
});

test("RFC 9113 5.3.1: PRIORITY that depends on its own stream is PROTOCOL_ERROR", async (t) => {
  // Stream 1 is open (its request has not ended).
  const frames = [frame(HEADERS, END_HEADERS, 1, Buffer.concat(GET_FIELDS)), frame(PRIORITY, 0, 1, priority(1))];
  await sideBySide(t, sending(frames, 1), "RST_STREAM PROTOCOL_ERROR", "same code");
});

test("RFC 9113 6.3: PRIORITY of a length other than 5 is FRAME_SIZE_ERROR", async (t) => {
  const frames = [frame(HEADERS, END_HEADERS, 1, Buffer.concat(GET_FIELDS)), frame(PRIORITY, 0, 1, u32(3))];
  await sideBySide(t, sending(frames, 1), "RST_STREAM FRAME_SIZE_ERROR", "same code");
});

test("RFC 9113 6.4: RST_STREAM of a length other than 4 is a connection FRAME_SIZE_ERROR", async (t) => {
  const frames = [frame(HEADERS, END_HEADERS, 1, Buffer.concat(GET_FIELDS)), frame(RST_STREAM, 0, 1, Buffer.from([0, 0, 8]))];
  await sideBySide(t, sending(frames, 1), "GOAWAY FRAME_SIZE_ERROR", "agrees");
});

test("RFC 9113 6.7: PING of a length other than 8 is a connection FRAME_SIZE_ERROR", async (t) => {
  await sideBySide(t, sending([frame(PING, 0, 0, Buffer.from("1234567"))], 0), "GOAWAY FRAME_SIZE_ERROR", "agrees");
});

test("RFC 9113 6.8: GOAWAY shorter than 8 bytes is a connection FRAME_SIZE_ERROR", async (t) => {
  await sideBySide(t, sending([frame(GOAWAY, 0, 0, u32(0))], 0), "GOAWAY FRAME_SIZE_ERROR", "agrees");
});

test("RFC 9113 5.1: WINDOW_UPDATE on an idle stream is a connection PROTOCOL_ERROR", async (t) => {
  // node:http2 ends the connection too, with INTERNAL_ERROR.
  await sideBySide(t, sending([frame(WINDOW_UPDATE, 0, 1, u32(1000))], 1), "GOAWAY PROTOCOL_ERROR", "reported");
});

// --- 5.1: closed streams ---

test("RFC 9113 5.1: DATA on a closed stream is STREAM_CLOSED", async (t) => {
  // nghttp2 forgets closed streams and ignores frames on them (lax).
  await sideBySide(t, afterClosedGet([frame(DATA, END_STREAM, 1, GET_BODY)]), "GOAWAY STREAM_CLOSED", "reported");
});

test("RFC 9113 5.1: HEADERS on a closed stream is STREAM_CLOSED", async (t) => {
  await sideBySide(t, afterClosedGet([frame(HEADERS, END_HEADERS | END_STREAM, 1, Buffer.concat(GET_FIELDS))]), "GOAWAY STREAM_CLOSED", "reported");
});

test("RFC 9113 5.1: CONTINUATION on a closed stream is STREAM_CLOSED", async (t) => {
  const block = Buffer.concat(GET_FIELDS);
  const frames = [frame(HEADERS, END_STREAM, 1, block.subarray(0, 4)), frame(CONTINUATION, END_HEADERS, 1, block.subarray(4))];
  await sideBySide(t, afterClosedGet(frames), "GOAWAY STREAM_CLOSED", "reported");
});

test("RFC 9113 5.1.1: a new stream id lower than one already used is a connection PROTOCOL_ERROR", async (t) => {
  const scenario = async (c: RawH2Connection) => {
    c.write(...get(5));
    assert.ok(await c.until(() => c.frames.some((f) => f.id === 5 && f.type === HEADERS)), "stream 5 was not answered");
    const from = c.frames.length;
    c.write(...get(3)); // 3 was never used: opening 5 closed it
    return c.settle(3, from);
  };
  await sideBySide(t, scenario, "GOAWAY PROTOCOL_ERROR", "reported");
});

test("RFC 9113 5.4.2 / 6.4: frames on a stream we reset, sent before the reset reached the client, are ignored", async (t) => {
  // Stream 1 is refused at once (malformed: an upper-case name); its DATA, WINDOW_UPDATE and trailers were already on their way. Stream 3 proves the connection lives.
  // A guard for the closed-stream rule above (frames on a stream we reset are not STREAM_CLOSED), not a fix: the old engine passes it too.
  const scenario = async (c: RawH2Connection) => {
    c.write(
      frame(HEADERS, END_HEADERS, 1, Buffer.concat([...GET_FIELDS, hpackLiteral("X-Note", "1")])),
      frame(DATA, 0, 1, GET_BODY),
      frame(WINDOW_UPDATE, 0, 1, u32(1000)),
      frame(HEADERS, END_HEADERS | END_STREAM, 1, hpackLiteral("x-checksum", "1")),
      ...get(3),
    );
    const first = await c.outcome(1);
    const probe = await c.outcome(3);
    return `${first}; then ${probe}`;
  };
  await sideBySide(t, scenario, `${MALFORMED}; then answered`, "agrees");
});
