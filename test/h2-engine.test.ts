import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import http2 from "node:http2";
import * as net from "node:net";
import { test } from "node:test";
import { H2Connection } from "../src/server/h2/connection.js";
import { HpackDecoder, type HeaderMap } from "../src/server/h2/hpack.js";
import type { H2Stream } from "../src/server/h2/stream.js";
import { frame, PREFACE } from "./helpers/h2-frames.js";

/*
 * Our HTTP/2 engine (src/server/h2) against node:http2's client (nghttp2:
 * Huffman strings, a dynamic table, its own flow control) and raw frames.
 * The server-level behaviour (every protocol, both engines) is in the other
 * test files, which run on the default engine; fast-path.test.ts and
 * http2-sessions.test.ts run their cases on both.
 */

/** A server on our engine; `handle` answers each stream. */
async function engineServer(handle: (stream: H2Stream, headers: HeaderMap) => void, options = { maxConcurrentStreams: 100, maxHeaderListSize: 16 * 1024 }) {
  const connections = new Set<H2Connection>();
  const server = net.createServer((socket) => {
    const c = new H2Connection(socket, options);
    connections.add(c);
    c.on("stream", handle);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connections,
    async close() {
      for (const c of connections) c.destroy();
      server.close();
      await once(server, "close");
    },
  };
}

const PREFACE_AND_SETTINGS = Buffer.concat([PREFACE, frame(4, 0, 0)]);
/** :method POST (3), :scheme http (6), :path / (4): indexed fields. */
const POST_ROOT = Buffer.from([0x83, 0x86, 0x84]);

/** A client of raw frames: what it writes goes as is; `frames` collects what the server sent. */
async function rawClient(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.on("error", () => {});
  const frames: { type: number; flags: number; id: number; payload: Buffer }[] = [];
  let input = Buffer.alloc(0);
  socket.on("data", (c: Buffer) => {
    input = Buffer.concat([input, c]);
    while (input.length >= 9) {
      const len = input.readUIntBE(0, 3);
      if (input.length < 9 + len) break;
      frames.push({ type: input[3], flags: input[4], id: input.readUInt32BE(5), payload: input.subarray(9, 9 + len) });
      input = input.subarray(9 + len);
    }
  });
  return {
    socket,
    frames,
    resets: () => frames.filter((f) => f.type === 3).map((f) => [f.id, f.payload.readUInt32BE(0)]),
    goawayCode: () => frames.find((f) => f.type === 7)?.payload.readUInt32BE(4),
  };
}

/** Waits (up to `seconds`) until `condition` holds; fails naming `what` if it never does. */
async function waitFor(what: string, condition: () => boolean, seconds = 1): Promise<void> {
  for (let i = 0; i < seconds * 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(condition(), `timed out waiting for ${what}`);
}

async function readAll(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

function request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: Buffer): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders | undefined; body: Buffer; rstCode: number }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": "/", ...headers });
    let head: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    req.on("response", (h) => (head = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("error", () => {});
    readAll(req).then(
      (b) => req.once("close", () => resolve({ headers: head, trailers, body: b, rstCode: req.rstCode ?? 0 })),
      reject,
    );
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

test("HPACK: the request examples of RFC 7541 C.4 (Huffman, dynamic table)", () => {
  const d = new HpackDecoder();
  const decode = (hex: string) => {
    const out: HeaderMap = {};
    const b = Buffer.from(hex.replace(/\s/g, ""), "hex");
    d.decode(b, 0, b.length, out);
    return out;
  };
  assert.deepEqual(decode("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), { ":method": "GET", ":scheme": "http", ":path": "/", ":authority": "www.example.com" });
  assert.deepEqual(decode("8286 84be 5886 a8eb 1064 9cbf"), { ":method": "GET", ":scheme": "http", ":path": "/", ":authority": "www.example.com", "cache-control": "no-cache" });
  assert.deepEqual(decode("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"), {
    ":method": "GET",
    ":scheme": "https",
    ":path": "/index.html",
    ":authority": "www.example.com",
    "custom-key": "custom-value",
  });
  // An index past the table, and Huffman padding that is not all ones, are errors.
  assert.throws(() => decode("bf00"));
  assert.throws(() => decode("4081 00 81 00"));
});

test("headers of every shape arrive as node:http2 presents them (Huffman, indexing, eviction, repeats)", async () => {
  const server = await engineServer((stream, headers) => {
    stream.on("data", () => {});
    stream.once("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/json", "x-echo": "yes" });
      stream.end(JSON.stringify(headers));
    });
  });
  const session = http2.connect(server.url);
  try {
    for (let i = 0; i < 300; i++) {
      const headers: http2.OutgoingHttpHeaders = {
        "x-same": "the same value on every request",
        [`x-n${i % 17}`]: `value ${i} ${"é".repeat(i % 3)}`,
        // Large values push older entries out of the 4,096-byte table.
        "x-big": randomBytes(200 + (i % 7) * 300).toString("base64"),
        "x-list": ["a", `b${i}`],
        cookie: ["c1=1", `c2=${i}`],
      };
      const res = await request(session, headers);
      assert.equal(res.headers[":status"], 200);
      assert.equal(res.headers["x-echo"], "yes");
      const got = JSON.parse(res.body.toString()) as Record<string, string>;
      assert.equal(got[":method"], "POST");
      assert.equal(got[":path"], "/");
      assert.equal(got["x-same"], headers["x-same"]);
      // node:http2 sends and reads header values as Latin-1.
      assert.equal(got[`x-n${i % 17}`], headers[`x-n${i % 17}`]);
      assert.equal(got["x-big"], headers["x-big"]);
      assert.equal(got["x-list"], `a, b${i}`);
      assert.equal(got.cookie, `c1=1; c2=${i}`);
    }
  } finally {
    session.close();
    await server.close();
  }
});

test("flow control: megabytes each way, through small client windows and frames", async () => {
  const server = await engineServer((stream) => {
    const hash = createHash("sha256");
    let n = 0;
    stream.on("data", (c: Buffer) => {
      hash.update(c);
      n += c.length;
    });
    stream.once("end", () => {
      stream.respond({ ":status": 200 }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "x-sha": hash.digest("hex"), "x-bytes": String(n) }));
      // The answer: 3 MiB in writes of 100 KiB, waiting for "drain" as a Watch does.
      let left = 30;
      const chunk = Buffer.alloc(100 * 1024, 7);
      const pump = () => {
        while (left > 0) {
          left--;
          if (left === 0) {
            stream.end(chunk);
            return;
          }
          if (!stream.write(chunk)) {
            stream.once("drain", pump);
            return;
          }
        }
      };
      pump();
    });
  });
  const body = randomBytes(5 * 1024 * 1024);
  for (const settings of [{}, { initialWindowSize: 1024 }, { initialWindowSize: 70_000, maxFrameSize: 1 << 20 }]) {
    const session = http2.connect(server.url, { settings });
    try {
      const res = await request(session, {}, body);
      assert.equal(res.trailers?.["x-bytes"], String(body.length), JSON.stringify(settings));
      assert.equal(res.trailers?.["x-sha"], createHash("sha256").update(body).digest("hex"));
      assert.equal(res.body.length, 30 * 100 * 1024);
      assert.ok(res.body.every((b) => b === 7));
    } finally {
      session.close();
    }
  }
  await server.close();
});

test("a client's reset closes the stream with its code; later streams on the connection still work", async () => {
  const closed: (number | undefined)[] = [];
  const server = await engineServer((stream, headers) => {
    stream.once("close", () => closed.push(stream.rstCode));
    if (headers[":path"] === "/hang") return; // never answers
    stream.on("data", () => {});
    stream.once("end", () => {
      stream.respond({ ":status": 200 });
      stream.end("ok");
    });
  });
  const session = http2.connect(server.url);
  try {
    const req = session.request({ ":method": "POST", ":path": "/hang" });
    req.on("error", () => {});
    req.write("partial");
    await new Promise((r) => setTimeout(r, 50));
    req.close(http2.constants.NGHTTP2_CANCEL);
    await once(req, "close");
    const res = await request(session, {});
    assert.equal(res.body.toString(), "ok");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(closed, [http2.constants.NGHTTP2_CANCEL, 0]);
  } finally {
    session.close();
    await server.close();
  }
});

test("an answer that ends before the request does resets the rest with NO_ERROR once the client sent over 1 MiB more, and the client gets the whole answer", async () => {
  const server = await engineServer((stream) => {
    stream.respond({ ":status": 413 });
    stream.end("too large");
  });
  const session = http2.connect(server.url);
  try {
    const req = session.request({ ":method": "POST", ":path": "/" });
    req.on("error", () => {});
    req.write(Buffer.alloc(3_000_000)); // past what a lingering stream drops (1 MiB): reset then, not after the second's wait
    let status: number | undefined;
    req.on("response", (h) => (status = Number(h[":status"])));
    const body = await readAll(req);
    assert.equal(status, 413);
    assert.equal(body.toString(), "too large");
    if (!req.closed) await once(req, "close");
    assert.equal(req.rstCode, http2.constants.NGHTTP2_NO_ERROR);
  } finally {
    session.close();
    await server.close();
  }
});

test("an answer that ends before the request does waits for the request's end: no reset crosses it, a short body is malformed, a request that never ends is reset", async () => {
  // curl 7.88 (Debian 12) fails a transfer whose answer arrives together with a reset while its body is unsent ("(92) Stream
  // error in the HTTP/2 framing layer"); on an error status it stops sending and ends the stream with an empty DATA.
  const server = await engineServer((stream) => stream.respond({ ":status": 404 }, { endStream: true }));
  const client = await rawClient(server.port);
  try {
    // POST / with content-length: 2 (a literal with the static table's name 28).
    const declaresTwo = Buffer.concat([POST_ROOT, Buffer.from([0x0f, 0x0d, 0x01]), Buffer.from("2")]);
    client.socket.write(PREFACE_AND_SETTINGS);
    client.socket.write(Buffer.concat([frame(1, 4, 1, declaresTwo), frame(1, 4, 3, declaresTwo), frame(1, 4, 5, declaresTwo)]));
    const answered = (id: number) => client.frames.some((f) => f.type === 1 && f.id === id && (f.flags & 1) === 1);
    await waitFor("the three answers", () => answered(1) && answered(3) && answered(5));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(client.resets(), [], "no stream is reset while its request may still end");
    client.socket.write(frame(0, 1, 1, Buffer.from("{}"))); // the body, whole: stream 1 just closes
    client.socket.write(frame(0, 1, 3)); // curl's empty end: shorter than its content-length
    await waitFor("the resets of streams 3 and 5", () => client.resets().length === 2, 5);
    assert.deepEqual(client.resets(), [
      [3, http2.constants.NGHTTP2_PROTOCOL_ERROR],
      [5, http2.constants.NGHTTP2_NO_ERROR], // never ended: reset once the wait is over
    ]);
    assert.equal(server.connections.size, 1);
    assert.equal([...server.connections][0].openStreams, 0);
  } finally {
    client.socket.destroy();
    await server.close();
  }
});

test("a lingering stream opens its window again for what it drops, so a client sending a body larger than the window can read the answer and end", async () => {
  const server = await engineServer((stream) => stream.respond({ ":status": 404 }, { endStream: true }));
  const client = await rawClient(server.port);
  try {
    // POST / with content-length: 300000 (a literal with the static table's name 28).
    client.socket.write(PREFACE_AND_SETTINGS);
    client.socket.write(frame(1, 4, 1, Buffer.concat([POST_ROOT, Buffer.from([0x0f, 0x0d, 0x06]), Buffer.from("300000")])));
    await waitFor("the answer", () => client.frames.some((f) => f.type === 1 && f.id === 1 && (f.flags & 1) === 1));
    // The whole initial window (65,535 bytes), in frames of 16,384 at most.
    for (let sent = 0; sent < 65_535; sent += 16_384) client.socket.write(frame(0, 0, 1, Buffer.alloc(Math.min(16_384, 65_535 - sent))));
    const streamUpdates = () => client.frames.filter((f) => f.type === 8 && f.id === 1).reduce((n, f) => n + f.payload.readUInt32BE(0), 0);
    await waitFor("WINDOW_UPDATEs for stream 1", () => streamUpdates() >= 32_768);
    assert.deepEqual(client.resets(), [], "not reset while it drops less than 1 MiB");
    client.socket.write(frame(0, 1, 1)); // stops, as curl does on an error status: shorter than its content-length
    await waitFor("the reset", () => client.resets().length === 1);
    assert.deepEqual(client.resets(), [[1, http2.constants.NGHTTP2_PROTOCOL_ERROR]]);
  } finally {
    client.socket.destroy();
    await server.close();
  }
});

test("streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused; headers over the limit are reset with ENHANCE_YOUR_CALM", async () => {
  const server = await engineServer(
    (stream) => {
      stream.on("data", () => {}); // never answers
    },
    { maxConcurrentStreams: 2, maxHeaderListSize: 1024 },
  );
  // Raw frames: node's client would queue streams beyond the limit itself.
  const client = await rawClient(server.port);
  const small = POST_ROOT;
  const large = Buffer.concat([small, Buffer.from([0x00, 0x05]), Buffer.from("x-big"), Buffer.from([0x7f, 0x81, 0x08]), Buffer.alloc(1024 + 127 + 1, 0x61)]);
  client.socket.write(PREFACE_AND_SETTINGS);
  client.socket.write(Buffer.concat([frame(1, 4, 1, small), frame(1, 4, 3, small), frame(1, 4, 5, small), frame(1, 4, 7, large)]));
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(client.resets(), [
    [5, http2.constants.NGHTTP2_REFUSED_STREAM],
    [7, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM],
  ]);
  // A protocol violation (DATA on stream 0) ends the connection with GOAWAY PROTOCOL_ERROR.
  client.socket.write(frame(0, 0, 0, Buffer.from("x")));
  await once(client.socket, "close");
  assert.equal(client.goawayCode(), http2.constants.NGHTTP2_PROTOCOL_ERROR);
  await server.close();
});

test("PING is answered; a graceful close sends GOAWAY, lets the open stream finish, then ends the connection", async () => {
  let release: (() => void) | undefined;
  const server = await engineServer((stream) => {
    stream.on("data", () => {});
    stream.once("end", () => {
      release = () => {
        stream.respond({ ":status": 200 });
        stream.end("late");
      };
    });
  });
  const session = http2.connect(server.url);
  try {
    await once(session, "connect"); // a ping before it is cancelled, whatever the server
    await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
    const pending = request(session, {});
    while (release === undefined) await new Promise((r) => setTimeout(r, 10));
    const goaway = once(session, "goaway");
    for (const c of server.connections) c.close();
    await goaway;
    release();
    assert.equal((await pending).body.toString(), "late");
    await once(session, "close");
  } finally {
    session.destroy();
    await server.close();
  }
});

test("our PING (keepalive) completes on the ACK that echoes its payload, not on a PING ACK the client sends unasked", async () => {
  const server = await engineServer(() => {});
  const client = await rawClient(server.port);
  try {
    client.socket.write(PREFACE_AND_SETTINGS);
    await waitFor("the connection", () => server.connections.size === 1);
    const [connection] = server.connections;
    const results: (Error | null)[] = [];
    connection.ping((err) => results.push(err));
    connection.ping((err) => results.push(err));
    const ours = () => client.frames.filter((f) => f.type === 6 && (f.flags & 1) === 0);
    await waitFor("our two PINGs", () => ours().length === 2);
    const [first, second] = ours().map((f) => Buffer.from(f.payload));
    assert.ok(!first.equals(second), "each PING carries its own payload");
    // Unasked: an ACK of a payload we never sent changes nothing.
    client.socket.write(frame(6, 1, 0, Buffer.from("unasked!")));
    // A PING of the client's own is answered, and by then the unasked ACK has been read.
    client.socket.write(frame(6, 0, 0, Buffer.from("client-1")));
    await waitFor("the ACK of the client's PING", () => client.frames.some((f) => f.type === 6 && (f.flags & 1) === 1));
    assert.deepStrictEqual(results, [], "no ping completed by the unasked ACK");
    // The ACK of the second completes both (the peer is alive); the first's late ACK is then ignored.
    client.socket.write(frame(6, 1, 0, second));
    client.socket.write(frame(6, 1, 0, first));
    await waitFor("the pings' callbacks", () => results.length === 2);
    assert.deepStrictEqual(results, [null, null]);
  } finally {
    client.socket.destroy();
    await server.close();
  }
});

test("a client that opens and resets streams in a loop (rapid reset) loses its connection with ENHANCE_YOUR_CALM", async () => {
  let started = 0;
  const server = await engineServer(() => {
    started++;
  });
  const client = await rawClient(server.port);
  const frames: Buffer[] = [PREFACE_AND_SETTINGS];
  for (let i = 0; i < 1500; i++) {
    const id = 1 + 2 * i;
    frames.push(frame(1, 4, id, POST_ROOT), frame(3, 0, id, Buffer.from([0, 0, 0, 8])));
  }
  client.socket.write(Buffer.concat(frames));
  await once(client.socket, "close");
  assert.equal(client.goawayCode(), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  assert.ok(started > 1000 && started < 1500, `streams started before the cut: ${started}`);
  await server.close();
});

test("malformed requests are reset with PROTOCOL_ERROR: an upper-case name, a body longer or shorter than its content-length", async () => {
  const answered: number[] = [];
  const server = await engineServer((stream) => {
    stream.on("data", () => {});
    stream.once("end", () => {
      answered.push(stream.id);
      stream.respond({ ":status": 200 });
      stream.end();
    });
  });
  const client = await rawClient(server.port);
  // A literal name "X-Up" (with incremental indexing: the table entry is as malformed when used again).
  const upper = Buffer.concat([POST_ROOT, Buffer.from([0x40, 4]), Buffer.from("X-Up"), Buffer.from([1, 0x61])]);
  const length = (n: number) => Buffer.concat([POST_ROOT, Buffer.from([0x0f, 0x0d, String(n).length]), Buffer.from(String(n))]); // content-length: static name 28
  client.socket.write(
    Buffer.concat([
      PREFACE_AND_SETTINGS,
      frame(1, 5, 1, upper),
      frame(1, 5, 3, Buffer.concat([POST_ROOT, Buffer.from([0xbe])])), // the indexed "X-Up" entry
      frame(1, 4, 5, length(3)),
      frame(0, 1, 5, Buffer.from("ab")),
      frame(1, 4, 7, length(1)),
      frame(0, 1, 7, Buffer.from("ab")),
      frame(1, 4, 9, length(2)),
      frame(0, 1, 9, Buffer.from("ab")),
    ]),
  );
  await new Promise((r) => setTimeout(r, 200));
  const P = http2.constants.NGHTTP2_PROTOCOL_ERROR;
  assert.deepEqual(client.resets(), [
    [1, P],
    [3, P],
    [5, P],
    [7, P],
  ]);
  assert.deepEqual(answered, [9]);
  client.socket.destroy();
  await server.close();
});

test("a request body read through read() fails, not ends, when the client resets the stream midway", async () => {
  let outcome: Promise<string> | undefined;
  const server = await engineServer((stream) => {
    outcome = (async () => {
      let bytes = 0;
      try {
        for await (const chunk of stream.read()) bytes += chunk.length;
        return `ended after ${bytes} bytes`;
      } catch (e) {
        return `failed after ${bytes} bytes: ${(e as Error).message}`;
      }
    })();
  });
  // Raw frames: node's client half-closes a stream (END_STREAM) before it resets it.
  const client = await rawClient(server.port);
  client.socket.write(Buffer.concat([PREFACE_AND_SETTINGS, frame(1, 4, 1, POST_ROOT), frame(0, 0, 1, Buffer.alloc(1000))]));
  await new Promise((r) => setTimeout(r, 50));
  client.socket.write(frame(3, 0, 1, Buffer.from([0, 0, 0, 8])));
  while (outcome === undefined) await new Promise((r) => setTimeout(r, 10));
  assert.match(await outcome, /^failed after 1000 bytes: the request stream was reset \(code 8\)/);
  client.socket.destroy();
  await server.close();
});

test("floods that cost the client nothing end the connection (ENHANCE_YOUR_CALM, COMPRESSION_ERROR) before they cost us memory", async () => {
  const server = await engineServer((stream) => stream.respond({ ":status": 200 }, { endStream: true }));
  const P = http2.constants;
  // Endless empty CONTINUATION frames (they add no bytes to the block, but each was kept).
  {
    const client = await rawClient(server.port);
    const frames: Buffer[] = [PREFACE_AND_SETTINGS, frame(1, 0, 1, POST_ROOT)];
    for (let i = 0; i < 10_000; i++) frames.push(frame(9, 0, 1, Buffer.alloc(0)));
    client.socket.write(Buffer.concat(frames));
    await once(client.socket, "close");
    assert.equal(client.goawayCode(), P.NGHTTP2_ENHANCE_YOUR_CALM, "CONTINUATION flood");
  }
  // An HPACK integer of 147 continuation bytes (2 ** shift reached Infinity, and the table size NaN).
  {
    const client = await rawClient(server.port);
    const block = Buffer.concat([Buffer.from([0x3f]), Buffer.alloc(147, 0x80), Buffer.from([0x00]), POST_ROOT]);
    client.socket.write(Buffer.concat([PREFACE_AND_SETTINGS, frame(1, 5, 1, block)]));
    await once(client.socket, "close");
    assert.equal(client.goawayCode(), P.NGHTTP2_COMPRESSION_ERROR, "overlong HPACK integer");
  }
  await server.close();
  // Streams the client makes us reset (a WINDOW_UPDATE of 0 on its request, whose call is running): they count as its own resets.
  let running = 0;
  const slow = await engineServer(() => {
    running++; // never answers
  });
  const client = await rawClient(slow.port);
  const frames: Buffer[] = [PREFACE_AND_SETTINGS];
  for (let i = 0; i < 1500; i++) {
    const id = 1 + 2 * i;
    frames.push(frame(1, 5, id, POST_ROOT), frame(8, 0, id, Buffer.alloc(4)));
  }
  client.socket.write(Buffer.concat(frames));
  await once(client.socket, "close");
  assert.equal(client.goawayCode(), P.NGHTTP2_ENHANCE_YOUR_CALM, "resets the client provoked");
  assert.ok(running > 1000 && running < 1500, `calls started before the cut: ${running}`);
  await slow.close();
});

test("a request with END_STREAM answered at once ends its stream with no reset after the answer", async () => {
  const server = await engineServer((stream) => stream.respond({ ":status": 404 }, { endStream: true }));
  const client = await rawClient(server.port);
  client.socket.write(Buffer.concat([PREFACE_AND_SETTINGS, frame(1, 5, 1, POST_ROOT)]));
  await new Promise((r) => setTimeout(r, 100));
  const headers = client.frames.filter((f) => f.type === 1);
  assert.equal(headers.length, 1);
  assert.equal(headers[0].flags & 1, 1, "END_STREAM on the answer");
  assert.deepEqual(client.resets(), []);
  client.socket.destroy();
  await server.close();
});
