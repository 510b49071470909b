import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { connectNodeAdapter } from "@connectrpc/connect-node";

import { fixGrpcMessageEncoding } from "./grpc-message.js";

type NodeHandlerFn = ReturnType<typeof connectNodeAdapter>;

export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  readonly tlsCertFile?: string;
  readonly tlsKeyFile?: string;
  /** HTTP/2 PING (and TCP keepalive) interval for detecting dead peers. */
  readonly keepaliveIntervalMs: number;
  /** A PING unanswered this long drops the connection and frees its streams. */
  readonly keepaliveTimeoutMs: number;
}

/** One port serving HTTP/1.1 and HTTP/2 (h2c, or ALPN h2 + http/1.1 with TLS). */
export interface Listener {
  readonly port: number;
  readonly address: string;
  /** Stops accepting connections; new requests on open connections are refused. */
  stopAccepting(): void;
  /** Asks clients to go away (HTTP/2 GOAWAY, idle HTTP/1.1 closed), waits up to `graceMs` for open connections to end, then destroys the rest. */
  close(graceMs: number): Promise<void>;
}

/** Every HTTP/2 connection starts with this preface; no HTTP/1.1 request starts with "PRI ". */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export async function listen(connectHandler: NodeHandlerFn, options: ListenOptions): Promise<Listener> {
  const handler: NodeHandlerFn = (req, res) => {
    fixGrpcMessageEncoding(res as unknown as Parameters<typeof fixGrpcMessageEncoding>[0]);
    return connectHandler(req, res);
  };
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  const track = (socket: net.Socket) => {
    socket.setKeepAlive(true, options.keepaliveIntervalMs);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };

  let server: net.Server;
  let h1: http.Server | undefined;
  let h2: http2.Http2Server | http2.Http2SecureServer;
  if (options.tlsCertFile !== undefined && options.tlsKeyFile !== undefined) {
    // With TLS, ALPN picks the protocol and Node's secure server serves both.
    h2 = http2.createSecureServer(
      { cert: readFileSync(options.tlsCertFile), key: readFileSync(options.tlsKeyFile), allowHTTP1: true },
      handler,
    );
    h2.on("secureConnection", (socket: net.Socket) => track(socket));
    server = h2;
  } else {
    // Node's plaintext HTTP/2 server refuses HTTP/1.1, so one net.Server peeks
    // at the first bytes and hands the socket to the server that speaks them.
    const h1Server = http.createServer(handler);
    // It never listens itself; "listening" starts its connection tracking, which
    // enforces headersTimeout/requestTimeout (slow clients) and closeIdleConnections.
    h1Server.emit("listening");
    h1 = h1Server;
    const h2c = http2.createServer(handler);
    h2 = h2c;
    server = net.createServer((socket) => {
      track(socket);
      socket.once("data", (chunk: Buffer) => {
        socket.pause();
        socket.unshift(chunk);
        const n = Math.min(chunk.length, H2_PREFACE.length);
        if (chunk.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
          h2c.emit("connection", socket);
        } else {
          h1Server.emit("connection", socket);
          socket.resume();
        }
      });
    });
  }
  // A stream whose response is complete while its client is still sending
  // (a request body over the size limit, a bidi stream the client has not
  // half-closed) discards the rest of the request: otherwise the client stays
  // blocked on flow control and the stream never closes. At shutdown such
  // streams are reset with NO_ERROR so they cannot hold the connection open.
  const streams = new Set<http2.ServerHttp2Stream>();
  h2.on("stream", (stream: http2.ServerHttp2Stream) => {
    streams.add(stream);
    stream.once("close", () => streams.delete(stream));
    stream.once("finish", () => {
      if (stream.readableEnded) return;
      // The compatibility layer's request was destroyed with the response and
      // would pause the stream again: read the stream directly, to nowhere.
      stream.removeAllListeners("data");
      stream.on("data", () => {});
      stream.resume();
    });
  });
  h2.on("session", (session: http2.Http2Session) => {
    sessions.add(session);
    // Node's HTTP/2 server answers pings but sends none: without this, a peer
    // that vanished (power loss, SIGSTOP, a cut network) holds its streams forever.
    const keepalive = setInterval(() => {
      const timeout = setTimeout(() => session.destroy(), options.keepaliveTimeoutMs);
      try {
        session.ping((err) => {
          clearTimeout(timeout);
          if (err) session.destroy();
        });
      } catch {
        clearTimeout(timeout);
        session.destroy();
      }
    }, options.keepaliveIntervalMs);
    keepalive.unref();
    session.once("close", () => {
      clearInterval(keepalive);
      sessions.delete(session);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as net.AddressInfo;

  let accepting = true;
  const stopAccepting = () => {
    if (!accepting) return;
    accepting = false;
    server.close();
  };

  return {
    port: address.port,
    address: address.address,
    stopAccepting,
    async close(graceMs: number) {
      stopAccepting();
      for (const session of sessions) session.close();
      const deadline = Date.now() + graceMs;
      while (sockets.size > 0 && Date.now() < deadline) {
        h1?.closeIdleConnections();
        for (const stream of streams) {
          if (stream.writableFinished && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const socket of sockets) socket.destroy();
      h1?.close();
    },
  };
}
