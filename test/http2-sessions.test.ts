import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "../src/client/http2-sessions.js";

/*
 * A server that sends GOAWAY to a connection once its call is done and it sits
 * idle (as a node does when it drains). The client leaves the session in the
 * same tick it hears the GOAWAY (`then`: closing the client, or starting a new
 * call): connect-node's manager has destroyed the session and removed its
 * error listener by the time the destroy error is emitted.
 */
async function goawayRace(manager: (url: string) => Http2SessionManager, then: "abort" | "request"): Promise<string> {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200 });
    stream.end("ok");
    const session = stream.session!; // undefined on the stream once it has closed
    stream.on("close", () => setTimeout(() => session.goaway(http2.constants.NGHTTP2_NO_ERROR), 50).unref());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const sessions = manager(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  try {
    const read = async (stream: http2.ClientHttp2Stream): Promise<string> => {
      stream.end();
      let body = "";
      for await (const chunk of stream) body += String(chunk);
      return body;
    };
    const first = await sessions.request("POST", "/first", {}, {});
    assert.equal(await read(first), "ok");
    const session = first.session!;
    const after = new Promise<string>((resolve, reject) => {
      session.once("goaway", () => {
        if (then === "abort") {
          sessions.abort();
          resolve("aborted");
        } else {
          sessions.request("POST", "/second", {}, {}).then(read).then(resolve, reject);
        }
      });
    });
    const result = await after;
    // The destroy error is emitted on the next tick; give it time to land.
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(session.destroyed, "the session that heard GOAWAY is gone");
    return result;
  } finally {
    sessions.abort();
    server.close();
  }
}

if (process.env.GOAWAY_RACE_UNGUARDED !== undefined) {
  // Run as a child by the first test: connect-node's own manager, unguarded.
  process.on("uncaughtException", (err) => {
    process.stdout.write(`uncaught: ${err.message}\n`);
    process.exit(3);
  });
  await goawayRace((url) => new Http2SessionManager(url), "abort");
  process.stdout.write("no uncaught error\n");
} else {
  test("the race reproduces with connect-node's own manager: an uncaught GOAWAY error", () => {
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, GOAWAY_RACE_UNGUARDED: "1" },
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(child.status, 3, `expected the child to die of the race; stdout: ${child.stdout} stderr: ${child.stderr}`);
    assert.match(child.stdout, /uncaught: .*received GOAWAY without any open streams/);
  });

  for (const then of ["abort", "request"] as const) {
    test(`GuardedHttp2Sessions: GOAWAY on an idle connection, then ${then} in the same tick, throws nothing`, async () => {
      const result = await goawayRace((url) => new GuardedHttp2Sessions(url), then);
      // A new call after the GOAWAY goes over a fresh connection and is answered.
      assert.equal(result, then === "abort" ? "aborted" : "ok");
    });
  }
}
