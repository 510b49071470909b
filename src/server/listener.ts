import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as tls from "node:tls";
import type { connectNodeAdapter } from "@connectrpc/connect-node";

import { logLine } from "../log.js";
import { ConfigError } from "./config.js";
import type { FastStreamHandler } from "./fast-path/index.js";
import { fixGrpcMessageEncoding } from "./grpc-message.js";
import { H2Connection } from "./h2/connection.js";
import type { HeaderMap } from "./h2/hpack.js";
import type { H2Stream } from "./h2/stream.js";

type NodeHandlerFn = ReturnType<typeof connectNodeAdapter>;

export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  readonly tlsCertFile?: string;
  readonly tlsKeyFile?: string;
  /** With TLS: require client certificates signed by this CA bundle (mutual TLS). */
  readonly tlsClientCaFile?: string;
  /** How often the TLS files are read for changes, which are loaded without a restart (0 = never). */
  readonly tlsReloadIntervalMs?: number;
  /** HTTP/2 PING (and TCP keepalive) interval for detecting dead peers. */
  readonly keepaliveIntervalMs: number;
  /** A PING unanswered this long drops the connection and frees its streams. */
  readonly keepaliveTimeoutMs: number;
  /** Most connections open at once; further ones are closed on accept (0 = no limit). */
  readonly maxConnections?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of every HTTP/2 connection. */
  readonly maxConcurrentStreams?: number;
  /** Largest request header block (HTTP/1.1 431; HTTP/2 stream reset with ENHANCE_YOUR_CALM). */
  readonly maxHeaderBytes?: number;
  /** Our HTTP/2 engine: a connection's memory budget (0 = none), and how long an answer may wait on a window the client keeps shut (0 = forever). */
  readonly maxConnectionMemory?: number;
  readonly stallTimeoutMs?: number;
  /** A connection must finish its TLS handshake and the headers of its first request this fast (HTTP/1.1: of every request). */
  readonly requestHeaderTimeoutMs?: number;
  /** An HTTP/2 connection without open streams this long is closed with GOAWAY (0 = never). */
  readonly idleTimeoutMs?: number;
  /** Serves the HTTP/2 streams it accepts (the fast path) before connect-node sees them. */
  readonly fastStream?: FastStreamHandler;
  /**
   * Serves HTTP/2 on our own HTTP/2 engine (src/server/h2) instead of
   * node:http2, h2c and TLS connections that negotiate ALPN h2 alike: streams
   * the fast path does not take go to this (connect's handlers, through
   * connect-bridge.ts). Without it node:http2 serves both.
   */
  readonly ownEngine?: (stream: H2Stream, headers: HeaderMap) => void;
}

/** What the listener's timers need of an HTTP/2 connection: node:http2's Http2Session and our H2Connection alike. */
interface SupervisedSession {
  readonly destroyed: boolean;
  readonly closed: boolean;
  ping(callback: (err: Error | null) => void): unknown;
  close(): void;
  destroy(): void;
  on(event: "stream", listener: (stream: { once(event: "close", listener: () => void): unknown }) => void): unknown;
  once(event: "close", listener: () => void): unknown;
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

/** A request that is still being received after this long (headers done, body trickling) is answered 408 on HTTP/1.1. Streams over HTTP/2 are never cut. */
const H1_REQUEST_TIMEOUT_MS = 300_000;

interface TlsFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca?: Buffer;
}

export async function listen(connectHandler: NodeHandlerFn, options: ListenOptions): Promise<Listener> {
  const handler: NodeHandlerFn = (req, res) => {
    fixGrpcMessageEncoding(res as unknown as Parameters<typeof fixGrpcMessageEncoding>[0]);
    return connectHandler(req, res);
  };
  const headerTimeoutMs = options.requestHeaderTimeoutMs ?? 10_000;
  const idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
  const maxHeaderBytes = options.maxHeaderBytes ?? 16 * 1024;
  const h2Options = {
    settings: { maxConcurrentStreams: options.maxConcurrentStreams ?? 1000, maxHeaderListSize: maxHeaderBytes },
  };
  const h1Options: http.ServerOptions = {
    maxHeaderSize: maxHeaderBytes,
    headersTimeout: headerTimeoutMs,
    requestTimeout: Math.max(H1_REQUEST_TIMEOUT_MS, headerTimeoutMs),
    // How often Node checks headersTimeout and requestTimeout (its default is 30 s).
    connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(headerTimeoutMs / 4))),
  };

  const sockets = new Set<net.Socket>();
  const sessions = new Set<SupervisedSession>();
  const track = (socket: net.Socket) => {
    socket.setKeepAlive(true, options.keepaliveIntervalMs);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  // Slow clients (slowloris): a connection that has not delivered the headers
  // of a complete first request in time is closed. HTTP/2 connections are
  // timed by their session (below); HTTP/1.1 ones by this timer, then by
  // Node's headersTimeout for the requests that follow.
  const firstRequest = new Map<net.Socket, NodeJS.Timeout>();
  const awaitFirstRequest = (socket: net.Socket) => {
    const timer = setTimeout(() => socket.destroy(), headerTimeoutMs);
    timer.unref();
    firstRequest.set(socket, timer);
    socket.once("close", () => requestArrived(socket));
  };
  const requestArrived = (socket: net.Socket) => {
    const timer = firstRequest.get(socket);
    if (timer === undefined) return;
    clearTimeout(timer);
    firstRequest.delete(socket);
  };

  let server: net.Server;
  let h1: http.Server | undefined;
  /** node:http2's server, unless our engine serves every HTTP/2 connection (TLS with --http2-engine ripple). */
  let h2: http2.Http2Server | http2.Http2SecureServer | undefined;
  // Node's HTTP/1.1 server, fed the sockets the listener hands it (h1 without TLS, ALPN http/1.1 on our engine's TLS server).
  const http1Server = () => {
    const h1Server = http.createServer(h1Options, handler);
    // It never listens itself; "listening" starts its connection tracking, which
    // enforces headersTimeout/requestTimeout (slow clients) and closeIdleConnections.
    h1Server.emit("listening");
    h1Server.on("request", (req: http.IncomingMessage) => requestArrived(req.socket));
    h1 = h1Server;
    return h1Server;
  };
  // Our engine serves h2c and, over TLS, the connections that negotiate ALPN h2: the same limits on both.
  const engine = options.ownEngine;
  const ownEngine =
    engine === undefined
      ? undefined
      : (socket: net.Socket) => {
          const connection = new H2Connection(socket, {
            maxConcurrentStreams: h2Options.settings.maxConcurrentStreams,
            maxHeaderListSize: maxHeaderBytes,
            maxConnectionMemory: options.maxConnectionMemory === 0 ? Infinity : options.maxConnectionMemory,
            stallTimeoutMs: options.stallTimeoutMs,
          });
          connection.on("stream", (stream: H2Stream, headers: HeaderMap) => {
            if (options.fastStream?.(stream, headers as http2.IncomingHttpHeaders) === true) return;
            engine(stream, headers);
          });
          supervise(connection);
          socket.resume();
        };
  let stopReloading = () => {};
  if (options.tlsCertFile !== undefined && options.tlsKeyFile !== undefined) {
    const files = { cert: options.tlsCertFile, key: options.tlsKeyFile, ca: options.tlsClientCaFile };
    let loaded: TlsFiles;
    try {
      loaded = readTlsFiles(files);
      tls.createSecureContext(loaded);
    } catch (err) {
      throw new ConfigError(`--tls-cert/--tls-key${files.ca === undefined ? "" : "/--tls-client-ca"}: cannot load: ${(err as Error).message}`);
    }
    const mutual = files.ca !== undefined;
    const tlsOptions: tls.TlsOptions = {
      ...loaded,
      // Mutual TLS: a client without a certificate signed by the CA fails the handshake.
      requestCert: mutual,
      rejectUnauthorized: mutual,
      handshakeTimeout: headerTimeoutMs,
    };
    let secure: tls.Server;
    if (ownEngine !== undefined) {
      // ALPN picks the protocol: h2 goes to our engine, http/1.1 (or no ALPN) to Node's HTTP/1.1 server.
      const h1Server = http1Server();
      secure = tls.createServer({ ...tlsOptions, ALPNProtocols: ["h2", "http/1.1"] }, (socket: tls.TLSSocket) => {
        track(socket);
        if (socket.alpnProtocol === "h2") return ownEngine(socket);
        awaitFirstRequest(socket);
        h1Server.emit("connection", socket);
      });
    } else {
      // --http2-engine node: node:http2's secure server serves both protocols.
      const nodeSecure = http2.createSecureServer({ ...tlsOptions, allowHTTP1: true, ...h2Options }, handler);
      // For the HTTP/1.1 connections the secure server hands to Node's HTTP/1.1 code.
      Object.assign(nodeSecure, { maxHeaderSize: maxHeaderBytes, headersTimeout: h1Options.headersTimeout, requestTimeout: h1Options.requestTimeout, connectionsCheckingInterval: h1Options.connectionsCheckingInterval });
      nodeSecure.on("secureConnection", (socket: tls.TLSSocket) => {
        track(socket);
        if (socket.alpnProtocol !== "h2") awaitFirstRequest(socket);
      });
      nodeSecure.on("request", (req: http.IncomingMessage | http2.Http2ServerRequest) => {
        if (req.httpVersionMajor === 1) requestArrived(req.socket as net.Socket);
      });
      h2 = nodeSecure;
      secure = nodeSecure;
    }
    // With a listener for it, Node leaves the failed socket open (a handshake timeout included): close it here.
    secure.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
      logLine("debug", "tls handshake failed", { error: err.message });
      socket.destroy();
    });
    stopReloading = watchTlsFiles(secure, files, loaded, options.tlsReloadIntervalMs ?? 5000);
    server = secure;
  } else {
    // Node's plaintext HTTP/2 server refuses HTTP/1.1, so one net.Server peeks
    // at the first bytes and hands the socket to the server that speaks them.
    const h1Server = http1Server();
    const h2c = http2.createServer(h2Options, handler);
    h2 = h2c;
    server = net.createServer((socket) => {
      track(socket);
      // Covers a client that connects and sends nothing, then (HTTP/1.1) trickles its first request's headers.
      awaitFirstRequest(socket);
      // Bytes that could still be the preface ("P" might also start "POST") wait for more.
      let seen: Buffer = Buffer.alloc(0);
      const peek = (chunk: Buffer) => {
        seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
        const n = Math.min(seen.length, H2_PREFACE.length);
        const h2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
        if (h2 && n < H2_PREFACE.length) return;
        socket.off("data", peek);
        socket.pause();
        socket.unshift(seen);
        if (h2) {
          requestArrived(socket); // the session's own timer takes over
          if (ownEngine !== undefined) ownEngine(socket);
          else h2c.emit("connection", socket);
        } else {
          h1Server.emit("connection", socket);
          socket.resume();
        }
      };
      socket.on("data", peek);
    });
  }
  const maxConnections = options.maxConnections ?? 0;
  if (maxConnections > 0) {
    // Beyond it, Node closes each new socket as soon as it is accepted.
    server.maxConnections = maxConnections;
    let lastWarning = 0;
    server.on("drop", () => {
      if (Date.now() - lastWarning < 10_000) return;
      lastWarning = Date.now();
      logLine("warn", "connection refused: --max-connections reached", { maxConnections });
    });
  }
  const fastStream = options.fastStream;
  if (fastStream !== undefined && h2 !== undefined) {
    const nodeH2 = h2;
    // The compatibility layer (the request handler) listens for "stream" too:
    // put the fast path in front of it, so a stream is served by one of them.
    const compat = nodeH2.listeners("stream") as ((...args: unknown[]) => void)[];
    nodeH2.removeAllListeners("stream");
    nodeH2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
      if (fastStream(stream, headers)) return;
      for (const listener of compat) listener.call(nodeH2, stream, headers, ...rest);
    });
  }
  // A stream whose response is complete while its client is still sending
  // (a request body over the size limit, a bidi stream the client has not
  // half-closed) discards the rest of the request: otherwise the client stays
  // blocked on flow control and the stream never closes. At shutdown such
  // streams are reset with NO_ERROR so they cannot hold the connection open.
  const streams = new Set<http2.ServerHttp2Stream>();
  h2?.on("stream", (stream: http2.ServerHttp2Stream) => {
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
  const supervise = (session: SupervisedSession) => {
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
    // Idle and slow sessions: the first stream (complete request headers) must
    // come within the header timeout, and a session whose streams have all
    // ended is closed after the idle timeout. A session with an open stream
    // (Watch, Track, Sync may last for days) is never idle: keepalive PINGs
    // find its dead peers instead.
    let open = 0;
    let idle: NodeJS.Timeout | undefined;
    const closeIfIdleAfter = (ms: number) => {
      clearTimeout(idle);
      if (ms <= 0) return;
      idle = setTimeout(() => {
        if (open > 0 || session.destroyed) return;
        session.close(); // GOAWAY; with no stream open the connection ends
        setTimeout(() => session.destroy(), 1000).unref(); // even if the peer does not read
      }, ms);
      idle.unref();
    };
    closeIfIdleAfter(headerTimeoutMs);
    session.on("stream", (stream: { once(event: "close", listener: () => void): unknown }) => {
      open++;
      clearTimeout(idle);
      stream.once("close", () => {
        if (--open === 0 && !session.closed) closeIfIdleAfter(idleTimeoutMs);
      });
    });
    session.once("close", () => {
      clearInterval(keepalive);
      clearTimeout(idle);
      sessions.delete(session);
    });
  };
  h2?.on("session", supervise);

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
    stopReloading();
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
      for (const timer of firstRequest.values()) clearTimeout(timer);
      h1?.close();
    },
  };
}

function readTlsFiles(files: { cert: string; key: string; ca?: string }): TlsFiles {
  return {
    cert: readFileSync(files.cert),
    key: readFileSync(files.key),
    ...(files.ca !== undefined ? { ca: readFileSync(files.ca) } : {}),
  };
}

function sameFiles(a: TlsFiles, b: TlsFiles): boolean {
  return a.cert.equals(b.cert) && a.key.equals(b.key) && (a.ca === undefined ? b.ca === undefined : b.ca !== undefined && a.ca.equals(b.ca));
}

/** SHA-256 fingerprint of the first certificate in a PEM file, for logs. */
function fingerprint(cert: Buffer): string {
  try {
    return new X509Certificate(cert).fingerprint256;
  } catch {
    return "?";
  }
}

/**
 * Reloads the certificate, key and client CA when their content changes.
 * The files are read by path every interval, so a Kubernetes Secret update
 * (a symlink swapped to a new directory) or a file rewritten in place is
 * seen alike. A pair that does not load (a key that does not match its
 * certificate, a file half-written, unreadable) is logged and the previous
 * one stays in use; it is tried again when the files change once more.
 * Connections already open keep the certificate they were made with.
 */
function watchTlsFiles(server: tls.Server, files: { cert: string; key: string; ca?: string }, initial: TlsFiles, intervalMs: number): () => void {
  if (intervalMs <= 0) return () => {};
  let current = initial;
  let rejected: TlsFiles | undefined;
  let unreadable: string | undefined;
  const timer = setInterval(() => {
    let next: TlsFiles;
    try {
      next = readTlsFiles(files);
      unreadable = undefined;
    } catch (err) {
      const message = (err as Error).message;
      if (unreadable !== message) logLine("warn", "tls files unreadable: keeping the loaded certificate", { error: message });
      unreadable = message;
      return;
    }
    if (sameFiles(next, current) || (rejected !== undefined && sameFiles(next, rejected))) return;
    try {
      tls.createSecureContext(next); // throws on a bad certificate, key, CA or a mismatched pair
      server.setSecureContext(next);
      current = next;
      rejected = undefined;
      logLine("info", "tls certificate reloaded", { cert: files.cert, fingerprint: fingerprint(next.cert) });
    } catch (err) {
      rejected = next;
      logLine("warn", "tls certificate not reloaded: keeping the previous one", { cert: files.cert, error: (err as Error).message });
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
