import { EventEmitter } from "node:events";
import type { OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import { DEFAULT_WINDOW, ErrorCode } from "./frames.js";

/** What a stream asks of its connection. */
export interface StreamHost {
  readonly socket: Socket;
  /** Response bytes its streams have queued and not yet framed, and request bytes received and not yet read: the connection's memory budget counts both. */
  queuedBytes: number;
  unreadBytes: number;
  /** Frames a HEADERS block for the stream (after anything it has queued). */
  sendHeaders(stream: H2Stream, status: number | undefined, headers: OutgoingHttpHeaders, endStream: boolean): void;
  /** The stream has DATA (or its end) queued: frame it as windows allow. */
  wantsToSend(stream: H2Stream): void;
  /** The stream's reader took `bytes`: open the windows again. */
  consumed(stream: H2Stream, bytes: number): void;
  /** Resets the stream (RST_STREAM) and forgets it. */
  reset(stream: H2Stream, code: number): void;
  /** Both sides ended the stream: forget it. */
  ended(stream: H2Stream): void;
  /** Our side ended before the client's: wait a moment for its END_STREAM, then reset the rest (NO_ERROR). */
  linger(stream: H2Stream): void;
  /** A closed stream dropped this many unread request bytes. */
  discarded(bytes: number): void;
}

/** A chunk of response DATA waiting for flow-control window. */
export interface OutgoingChunk {
  data: Buffer;
  readonly callback: ((err?: Error | null) => void) | undefined;
}

/** Response bytes queued on a stream beyond which write() says to wait for "drain" (node's default high-water mark). */
const WRITE_HIGH_WATER = 16 * 1024;

/**
 * One HTTP/2 stream on our own engine, with the part of node:http2's
 * ServerHttp2Stream the fast path and the Connect bridge use: `data`,
 * `end`, `close`, `drain` and `wantTrailers` events, `respond`, `write`,
 * `end`, `sendTrailers`, `close(code)`. Request bytes go to `data`
 * listeners as they arrive, or wait for `read()` (the bridge's body), which
 * is what opens the flow-control window again.
 */
export class H2Stream extends EventEmitter {
  /** The peer's window for our DATA on this stream. */
  sendWindow: number;
  /** Our window for the client's DATA, and what its reader took since we last opened it. */
  recvWindow = DEFAULT_WINDOW;
  unacked = 0;
  /** The request's content-length, if it gave one, and the body bytes so far. */
  declaredLength: number | undefined;
  receivedBytes = 0;
  /** Response DATA not yet framed (flow control or socket backpressure). */
  readonly outgoing: OutgoingChunk[] = [];
  outgoingBytes = 0;
  /** In its connection's SendQueue. */
  sendQueued = false;
  /** Date.now() when its queued DATA found the peer's window (the stream's or the connection's) shut; 0 while it is not waiting for one. */
  stalledAt = 0;
  /** Not yet handed to its handler (its connection was over its memory budget): what arrives waits for `undefer`. */
  deferred = false;
  /** Set by end(): frame END_STREAM (or the trailers) once `outgoing` is empty. */
  ending = false;
  private waitForTrailers = false;
  private trailers: OutgoingHttpHeaders | undefined;
  headersSent = false;
  /** Our END_STREAM went out. */
  localEnded = false;
  /** The client's END_STREAM arrived. */
  remoteEnded = false;
  rstCode: number | undefined;
  private isClosed = false;
  private needDrain = false;
  /** While lingering (see `closeIfDone`): the reset that ends the wait, and the request bytes dropped. */
  lingerTimer: NodeJS.Timeout | undefined;
  lingeredBytes = 0;
  /** Request bytes not yet read (no `data` listener), and whether `end` is pending behind them. */
  private readonly inbox: Buffer[] = [];
  private endPending = false;
  private reader: (() => void) | undefined;
  readonly session: { readonly socket: Socket };

  constructor(
    readonly id: number,
    private readonly host: StreamHost,
    sendWindow: number,
  ) {
    super();
    this.sendWindow = sendWindow;
    this.session = host;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get destroyed(): boolean {
    return this.isClosed;
  }

  // --- Request side (called by the connection) ---

  /** DATA from the client. */
  receive(chunk: Buffer): void {
    if (!this.deferred && this.listenerCount("data") > 0 && this.inbox.length === 0) {
      this.host.consumed(this, chunk.length);
      this.emit("data", chunk);
      return;
    }
    this.inbox.push(chunk);
    this.host.unreadBytes += chunk.length;
    this.reader?.();
  }

  /** The client's END_STREAM. */
  receiveEnd(): void {
    this.remoteEnded = true;
    if (this.deferred || this.inbox.length > 0 || this.reader !== undefined) {
      this.endPending = true;
      this.reader?.();
      return;
    }
    this.emit("end");
    this.closeIfDone();
  }

  /** The request body, chunk by chunk; each chunk taken opens the window for more. Ends early if the stream closes. */
  async *read(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const chunk = this.inbox.shift();
      if (chunk !== undefined) {
        this.host.unreadBytes -= chunk.length;
        this.host.consumed(this, chunk.length);
        yield chunk;
        continue;
      }
      if (this.endPending || (this.remoteEnded && this.inbox.length === 0)) {
        if (this.endPending) {
          this.endPending = false;
          this.emit("end");
          this.closeIfDone();
        }
        return;
      }
      // Reset before the client ended its request: the body is incomplete, and its reader must not take it for whole.
      if (this.isClosed) throw new Error(`the request stream was reset (code ${this.rstCode ?? 0}) before it ended`);
      await new Promise<void>((resolve) => (this.reader = resolve));
      this.reader = undefined;
    }
  }

  /** A deferred stream was handed to its handler: what arrived meanwhile goes to its `data` listeners (or waits for read()), then its end. */
  undefer(): void {
    this.deferred = false;
    if (this.listenerCount("data") > 0) {
      while (this.inbox.length > 0 && !this.isClosed) {
        const chunk = this.inbox.shift()!;
        this.host.unreadBytes -= chunk.length;
        this.host.consumed(this, chunk.length);
        this.emit("data", chunk);
      }
    }
    if (this.endPending && this.inbox.length === 0 && this.reader === undefined && !this.isClosed) {
      this.endPending = false;
      this.emit("end");
      this.closeIfDone();
    }
  }

  // --- Response side ---

  respond(headers: OutgoingHttpHeaders, options?: { waitForTrailers?: boolean; endStream?: boolean }): void {
    if (this.isClosed) throw new Error("stream closed");
    if (this.headersSent) throw new Error("headers already sent");
    this.headersSent = true;
    this.waitForTrailers = options?.waitForTrailers === true;
    const { ":status": status, ...rest } = headers;
    const end = options?.endStream === true;
    this.host.sendHeaders(this, status === undefined ? 200 : Number(status), rest, end);
    if (end) this.finishLocal();
  }

  write(data: Uint8Array | string, callback?: (err?: Error | null) => void): boolean {
    if (this.isClosed || this.ending) {
      callback?.(new Error("write after end"));
      return false;
    }
    if (!this.headersSent) this.respond({ ":status": 200 });
    const buf = typeof data === "string" ? Buffer.from(data) : Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (buf.length > 0 || callback !== undefined) {
      this.outgoing.push({ data: buf, callback });
      this.outgoingBytes += buf.length;
      this.host.queuedBytes += buf.length;
      this.host.wantsToSend(this);
    }
    const ok = this.outgoingBytes < WRITE_HIGH_WATER;
    if (!ok) this.needDrain = true;
    return ok;
  }

  end(data?: Uint8Array | string | (() => void), callback?: () => void): this {
    if (typeof data === "function") {
      callback = data;
      data = undefined;
    }
    if (this.isClosed || this.ending) return this;
    if (data !== undefined) this.write(data);
    if (!this.headersSent) this.respond({ ":status": 200 });
    this.ending = true;
    if (callback !== undefined) this.once("finish", callback);
    this.host.wantsToSend(this);
    return this;
  }

  sendTrailers(headers: OutgoingHttpHeaders): void {
    this.trailers = headers;
  }

  /** Resets the stream (RST_STREAM with `code`). */
  close(code: number = ErrorCode.NO_ERROR): void {
    if (this.isClosed) return;
    this.host.reset(this, code);
  }

  // --- Called by the connection as it frames our output ---

  /** Whether the stream ends with trailers rather than END_STREAM on its last DATA. */
  get endsWithTrailers(): boolean {
    return this.waitForTrailers || this.trailers !== undefined;
  }

  /** `outgoing` is empty and end() was called: what ends the stream. */
  takeEnd(): { readonly trailers: OutgoingHttpHeaders | undefined } {
    if (this.waitForTrailers) {
      this.waitForTrailers = false;
      this.emit("wantTrailers");
    }
    return { trailers: this.trailers };
  }

  /** Queued bytes went out: wake a writer that was told to wait. */
  drained(): void {
    if (this.needDrain && this.outgoingBytes < WRITE_HIGH_WATER && !this.isClosed) {
      this.needDrain = false;
      this.emit("drain");
    }
  }

  /** Our END_STREAM went out. */
  finishLocal(): void {
    this.localEnded = true;
    this.emit("finish");
    this.closeIfDone();
  }

  /**
   * Both sides ended: the stream is closed. A response that ended before the
   * request did lingers. RFC 9113 8.1 lets us reset the rest with NO_ERROR at
   * once, but curl 7.88 (Debian 12) fails a transfer whose answer arrives with
   * that reset while its body is unsent ("(92) Stream error in the HTTP/2
   * framing layer": 1 in 8 of its POSTs to an unknown method). So the request
   * may still end: its bytes are dropped, and its window opened again for up
   * to 1 MiB of them, so a client sending a large body can read the answer
   * and stop. curl, on an error status, ends the request with an empty DATA,
   * which breaks its content-length and is reset as malformed, as nghttp2
   * does. A request that does not end, or sends past that, is reset (the
   * connection's `linger`).
   */
  private closeIfDone(): void {
    if (!this.localEnded) return;
    if (!this.remoteEnded) {
      this.host.linger(this);
      return;
    }
    this.host.ended(this);
  }

  /** Drops request bytes nobody will read; returns how many, for the connection's window. */
  dropUnread(): number {
    let unread = 0;
    for (const chunk of this.inbox) unread += chunk.length;
    this.inbox.length = 0;
    this.host.unreadBytes -= unread;
    return unread;
  }

  /** Closed by either side; `code` when by a reset. */
  markClosed(code: number | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.rstCode = code ?? ErrorCode.NO_ERROR;
    for (const chunk of this.outgoing) chunk.callback?.(new Error("stream closed"));
    this.outgoing.length = 0;
    this.host.queuedBytes -= this.outgoingBytes;
    this.outgoingBytes = 0;
    clearTimeout(this.lingerTimer);
    // Request bytes nobody will read: the connection's window must not lose them.
    const unread = this.dropUnread();
    if (unread > 0) this.host.discarded(unread);
    this.reader?.();
    this.emit("close");
  }
}
