import { EventEmitter } from "node:events";
import type { OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import { DEFAULT_MAX_FRAME, DEFAULT_WINDOW, ErrorCode, Flag, FRAME_HEADER_BYTES, FrameType, FrameWriter, MAX_WINDOW, PREFACE, Setting, u32 } from "./frames.js";
import { encodeHeaders, HpackDecoder, HpackError, type HeaderMap } from "./hpack.js";
import { H2Stream, type StreamHost } from "./stream.js";
import { ClosedStreams } from "./closed-streams.js";
import { checkFrame, checkHeaders, checkOnStream, checkRequest, dependsOnItself, DEPENDS_ON_ITSELF_FLAG, CONNECTION_HEADERS, IGNORE, REQUEST_FIELDS, StreamState, TRAILER_FIELDS, type H2Error } from "./validate.js";
import { SendQueue, StreamTable } from "./stream-table.js";
import { logLine } from "../../log.js";

export interface H2ConnectionOptions {
  /** SETTINGS_MAX_CONCURRENT_STREAMS: a stream beyond it is refused (REFUSED_STREAM). */
  readonly maxConcurrentStreams: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE: a request whose headers are larger is reset (ENHANCE_YOUR_CALM). */
  readonly maxHeaderListSize: number;
  /** The connection's memory budget (`memory`): over it, new streams wait or are refused. DEFAULT_CONNECTION_MEMORY if not given. */
  readonly maxConnectionMemory?: number;
  /** How long a stream's DATA may wait on a window the client keeps shut before the stream is reset. DEFAULT_STALL_TIMEOUT_MS if not given. */
  readonly stallTimeoutMs?: number;
}

/** The default of --max-connection-memory (config.ts says why). */
export const DEFAULT_CONNECTION_MEMORY = 4 * 1024 * 1024;
/** The default of --stall-timeout. */
export const DEFAULT_STALL_TIMEOUT_MS = 30_000;

/** The connection's receive window: what all its streams together may have unread. */
const CONNECTION_WINDOW = 1024 * 1024;
/** Socket bytes not yet taken by the kernel beyond which DATA waits (control frames do not). */
const SOCKET_HIGH_WATER = 256 * 1024;
/** Control frames we must answer (SETTINGS, PING) while the peer reads nothing: beyond this, it is flooding us. */
const CONTROL_FLOOD_BYTES = 1024 * 1024;
/** Client resets of open streams: a burst of this many, then this many per second. */
const RESET_BURST = 1000;
const RESETS_PER_SECOND = 100;
/** CONTINUATION frames in one header block: nghttp2 allows 8; curl and gRPC clients send one or two. */
const MAX_CONTINUATIONS = 64;
/** CONTINUATION frames may not add up to more than this over the header list limit. */
const HEADER_BLOCK_SLACK = 16 * 1024;
/** How long a stream whose answer ended first waits for the rest of its request (see H2Stream.closeIfDone). */
const LINGER_MS = 1000;
/** How many of that rest's bytes it takes (and drops) meanwhile before it resets the stream. */
const LINGER_BYTES = 1024 * 1024;
/** Entries in one SETTINGS frame: more is a flood (nghttp2's limit, and node's), each entry work for us. */
const MAX_SETTINGS_ENTRIES = 32;
/** How long a connection that ended keeps its socket for what it wrote last (GOAWAY) to reach the peer, reading nothing. */
const SOCKET_LINGER_MS = 1000;
/**
 * New streams one socket read may start, beyond one for each stream that
 * closed since the previous read, before parsing stops until the next turn
 * of the event loop: their calls answer meanwhile, so the budget sees what
 * they queued before more are let in (1,000 Gets of 1 MiB in one read would
 * otherwise all start, and all answer, before any is counted). A client that
 * keeps N calls in flight replaces the N that closed: it never waits.
 */
const STREAMS_PER_READ = 4;
/** Input waiting while parsing stops beyond which the socket is paused too (reads are 64 KiB at most). */
const HELD_INPUT_BYTES = 64 * 1024;
/** Refusals over the budget with ENHANCE_YOUR_CALM after which the connection ends (node:http2's maxSessionRejectedStreams is 100). */
const MAX_CALM_REFUSALS = 100;
/** How long a connection may stay over its budget with nothing going out, once it refused a stream, before it is closed. */
const OVER_BUDGET_PATIENCE_MS = 2000;
/** A connection that sent DATA this recently drains: over its budget, its new streams wait (deferred) rather than being refused. */
const DRAINING_MS = 1000;

class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * One server-side HTTP/2 connection (RFC 9113) on a socket, in JavaScript.
 *
 * Why not node:http2: each stream there is a native nghttp2 stream plus a
 * JavaScript Duplex, its headers cross the native boundary as objects, and
 * every frame is written on its own; fixed bytes answered that way top out
 * at ~30 µs of CPU per call on these machines, most of a Get's cost. Here a
 * stream is a small object, every frame produced in one turn of the event
 * loop goes out in one socket write, and a request's headers are decoded by
 * our HPACK decoder straight into the object the fast path reads.
 *
 * What it serves, as node:http2 does: flow control both ways, SETTINGS,
 * PING, GOAWAY (graceful close), RST_STREAM (client cancellation), trailers,
 * the limits on concurrent streams and header size. It never pushes.
 */
export class H2Connection extends EventEmitter implements StreamHost {
  private readonly streams = new StreamTable<H2Stream>();
  private readonly decoder = new HpackDecoder();
  /** A frame (or the preface) that runs past the end of a socket read: its bytes so far, in a buffer of its whole length once its header is in. */
  private partial: Buffer | undefined;
  private partialFill = 0;
  private readonly onSocketData = (chunk: Buffer): void => this.onData(chunk);
  /** Socket reads waiting while parsing stops for a turn (STREAMS_PER_READ), oldest first, and their bytes. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private resumeScheduled = false;
  private socketPaused = false;
  /** New streams the socket read being parsed may still start (STREAMS_PER_READ), and streams closed since the last read began. */
  private allowance = 0;
  private closedSinceRead = 0;
  private prefaceSeen = false;
  private lastStreamId = 0;
  /** Streams no longer open that frames may still name (recently reset, skipped ids): see validate.ts. */
  private readonly closedStreams = new ClosedStreams();
  /** Set once GOAWAY went out: streams above it are ignored. */
  private goawayId: number | undefined;
  private peerGoneAway = false;
  // A header block spread over CONTINUATION frames.
  private continuing: { id: number; flags: number; parts: Buffer[]; bytes: number; frames: number } | undefined;

  // Flow control: our windows for the peer's DATA, and the peer's for ours.
  private recvWindow = DEFAULT_WINDOW;
  private unacked = 0;
  private sendWindow = DEFAULT_WINDOW;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = DEFAULT_MAX_FRAME;

  // Output: frames of this turn, written together.
  private readonly out = new FrameWriter();
  private flushScheduled = false;
  private readonly sending = new SendQueue<H2Stream>();
  /** Our PINGs awaiting their ACK, oldest first, each with the 8 bytes it carries (a count: an ACK names its PING). */
  private pings: { readonly data: Buffer; readonly callback: (err: Error | null) => void }[] = [];
  private pingsSent = 0;
  private isDestroyed = false;
  private isClosing = false;

  // The memory budget (see `memory`) and the stall timeout.
  private readonly budget: number;
  private readonly stallTimeoutMs: number;
  /** Response bytes queued on the streams and not yet framed; request bytes received and not yet read (kept by the streams). */
  queuedBytes = 0;
  unreadBytes = 0;
  /** Response DATA bytes framed so far, and flushes so far: whether the connection drains. */
  private sentBytes = 0;
  private flushes = 0;
  /** sentBytes when an admission over the budget last saw it grow, and Date.now() then (`draining`). */
  private drainMark = 0;
  private drainMarkAt = 0;
  /** Streams admitted over the budget on a draining connection, not yet handed to their handler (`startDeferred`), and their header bytes. */
  private deferred: { readonly stream: H2Stream; readonly headers: HeaderMap; readonly size: number }[] = [];
  private deferredBytes = 0;
  /** Over the budget: the flush count and sentBytes at the first refusal since the connection last drained (-1: none), and the ENHANCE_YOUR_CALM refusals since. */
  private refusingSince = -1;
  private refusingSent = 0;
  private refusingAt = 0;
  private calmRefusals = 0;
  /** The timer of `check`, and when it fires (Date.now() time). */
  private checkTimer: NodeJS.Timeout | undefined;
  private checkAt = 0;

  constructor(
    readonly socket: Socket,
    private readonly options: H2ConnectionOptions,
  ) {
    super();
    this.budget = options.maxConnectionMemory ?? DEFAULT_CONNECTION_MEMORY;
    this.stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    socket.setNoDelay(true);
    this.queueFrame(FrameType.SETTINGS, 0, 0, settingsPayload([
      [Setting.MAX_CONCURRENT_STREAMS, options.maxConcurrentStreams],
      [Setting.MAX_HEADER_LIST_SIZE, options.maxHeaderListSize],
      [Setting.ENABLE_PUSH, 0],
    ]));
    this.queueFrame(FrameType.WINDOW_UPDATE, 0, 0, u32(CONNECTION_WINDOW - DEFAULT_WINDOW));
    this.recvWindow = CONNECTION_WINDOW;
    socket.on("data", this.onSocketData);
    socket.on("drain", () => this.schedule());
    socket.on("error", () => this.destroy());
    socket.on("close", () => this.destroy());
  }

  get closed(): boolean {
    return this.isClosing || this.isDestroyed;
  }

  get destroyed(): boolean {
    return this.isDestroyed;
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /**
   * What the connection holds, as its budget counts it: response bytes its
   * streams have queued and not yet framed (the client's windows shut, or the
   * socket full), frames not yet written and bytes the socket has not handed
   * to the kernel, request bytes received and not yet read, a header block
   * being put together, the header blocks of deferred streams, and input not
   * yet parsed. Over the budget, new streams wait (`defer`) or are refused
   * (`refuseOverBudget`); a stream whose DATA waits on a shut window is reset
   * after the stall timeout (`check`). docs/ARCHITECTURE.md tells the whole.
   */
  get memory(): number {
    return this.outputBytes + this.unreadBytes + this.deferredBytes + (this.continuing?.bytes ?? 0) + (this.partial?.length ?? 0) + this.heldBytes;
  }

  /** The part of `memory` that the client's reading drains: response bytes queued, framed, or in the socket. */
  private get outputBytes(): number {
    return this.queuedBytes + this.out.bytes + this.socket.writableLength;
  }

  /** Graceful close: GOAWAY, then the connection ends when its open streams have. */
  close(): void {
    if (this.isClosing || this.isDestroyed) return;
    this.isClosing = true;
    this.goaway(ErrorCode.NO_ERROR);
    this.endIfIdle();
  }

  destroy(): void {
    // Also after a graceful end or a failure, whose socket.end() a peer that never reads or closes would hold open.
    this.socket.destroy();
    if (this.isDestroyed) return;
    this.isDestroyed = true;
    this.isClosing = true;
    clearTimeout(this.checkTimer);
    for (const stream of this.streams.values()) stream.markClosed(ErrorCode.CANCEL);
    this.streams.clear();
    for (const ping of this.pings) ping.callback(new Error("connection closed"));
    this.pings = [];
    this.socket.destroy();
    this.emit("close");
  }

  /** Sends a PING; `callback` runs when its ACK comes (or with an error when the connection ends first). */
  ping(callback: (err: Error | null) => void): void {
    if (this.isDestroyed) throw new Error("connection closed");
    const data = Buffer.alloc(8);
    data.writeUInt32BE(++this.pingsSent >>> 0, 4);
    this.pings.push({ data, callback });
    this.queueFrame(FrameType.PING, 0, 0, data);
  }

  // --- Input ---

  /**
   * One socket read. Frames whole in it are handled in place (their payloads
   * are views of it); only a frame that runs past its end is copied, into a
   * buffer of the frame's own length, so a peer that trickles its frames costs
   * one copy of each, never a copy of all its unread input per read.
   */
  private onData(chunk: Buffer): void {
    if (this.isDestroyed) return;
    if (this.resumeScheduled) return this.hold(chunk, false);
    this.allowance = STREAMS_PER_READ + this.closedSinceRead;
    this.closedSinceRead = 0;
    let pos = 0;
    try {
      if (this.partial !== undefined) {
        pos = this.fillPartial(chunk);
        if (this.partial !== undefined || this.isDestroyed) return;
      }
      if (!this.prefaceSeen) {
        if (chunk.length - pos < PREFACE.length) return this.startPartial(chunk, pos, PREFACE.length);
        if (!chunk.subarray(pos, pos + PREFACE.length).equals(PREFACE)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad connection preface");
        this.prefaceSeen = true;
        pos += PREFACE.length;
      }
      while (!this.isDestroyed) {
        const left = chunk.length - pos;
        if (left < FRAME_HEADER_BYTES) {
          if (left > 0) this.startPartial(chunk, pos, FRAME_HEADER_BYTES);
          break;
        }
        const length = (chunk[pos] << 16) | (chunk[pos + 1] << 8) | chunk[pos + 2];
        if (length > DEFAULT_MAX_FRAME) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes`);
        if (left < FRAME_HEADER_BYTES + length) {
          this.startPartial(chunk, pos, FRAME_HEADER_BYTES + length);
          break;
        }
        if (chunk[pos + 3] === FrameType.HEADERS && this.allowance <= 0) {
          this.hold(chunk.subarray(pos), true);
          break;
        }
        this.frameAt(chunk, pos, length);
        pos += FRAME_HEADER_BYTES + length;
      }
    } catch (e) {
      if (e instanceof ConnectionError) this.fail(e.code);
      else if (e instanceof HpackError) this.fail(ErrorCode.COMPRESSION_ERROR);
      else {
        // A bug of ours, or a listener that threw: this connection ends, the process serves on.
        logLine("error", "http/2 connection failed", { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
        this.fail(ErrorCode.INTERNAL_ERROR);
      }
      return;
    }
    this.schedule();
  }

  /**
   * Input that waits for the next turn: the rest of the read being parsed
   * (`first`: it goes before reads held since), or a read that came
   * meanwhile. Past HELD_INPUT_BYTES the socket is paused until `resume`.
   */
  private hold(chunk: Buffer, first: boolean): void {
    if (first) this.held.unshift(chunk);
    else this.held.push(chunk);
    this.heldBytes += chunk.length;
    if (!this.resumeScheduled) {
      this.resumeScheduled = true;
      this.schedule(); // the flush of what the streams started so far answer goes first
      setImmediate(this.resume);
    }
    if (this.heldBytes >= HELD_INPUT_BYTES && !this.socketPaused) {
      this.socketPaused = true;
      this.socket.pause();
    }
  }

  private readonly resume = (): void => {
    this.resumeScheduled = false;
    while (this.held.length > 0 && !this.resumeScheduled && !this.isDestroyed) {
      const chunk = this.held.shift()!;
      this.heldBytes -= chunk.length;
      this.onData(chunk);
    }
    if (this.socketPaused && !this.resumeScheduled && !this.isDestroyed) {
      this.socketPaused = false;
      this.socket.resume();
    }
  };

  /** Copies the start of `chunk` into the partial frame and, once that is whole, handles it; returns how many bytes of `chunk` it took. */
  private fillPartial(chunk: Buffer): number {
    let pos = 0;
    for (;;) {
      const partial = this.partial!;
      const n = Math.min(partial.length - this.partialFill, chunk.length - pos);
      chunk.copy(partial, this.partialFill, pos, pos + n);
      this.partialFill += n;
      pos += n;
      if (this.partialFill < partial.length) return pos;
      this.partial = undefined;
      if (!this.prefaceSeen) {
        if (!partial.equals(PREFACE)) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad connection preface");
        this.prefaceSeen = true;
        return pos;
      }
      const length = (partial[0] << 16) | (partial[1] << 8) | partial[2];
      if (partial.length === FRAME_HEADER_BYTES && length > 0) {
        // The header is in: the frame gets a buffer of its whole length.
        if (length > DEFAULT_MAX_FRAME) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes`);
        this.startPartial(partial, 0, FRAME_HEADER_BYTES + length);
        continue;
      }
      this.frameAt(partial, 0, length);
      return pos;
    }
  }

  /** Keeps `chunk` from `pos` on as the start of a frame (or preface) of `length` bytes. */
  private startPartial(chunk: Buffer, pos: number, length: number): void {
    const partial = Buffer.allocUnsafe(length);
    this.partialFill = chunk.copy(partial, 0, pos);
    this.partial = partial;
  }

  /** The frame of `length` payload bytes at `pos`. */
  private frameAt(buf: Buffer, pos: number, length: number): void {
    const id = buf.readUInt32BE(pos + 5) & 0x7fff_ffff;
    this.onFrame(buf[pos + 3], buf[pos + 4], id, buf.subarray(pos + FRAME_HEADER_BYTES, pos + FRAME_HEADER_BYTES + length));
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    // Every frame's shape first, in one place (validate.ts); what depends on a stream's state, in each handler below.
    const broken = checkFrame(type, flags, id, payload, this.continuing?.id ?? 0);
    if (broken !== undefined) return this.onBroken(id, broken);
    switch (type) {
      case FrameType.DATA:
        return this.onDataFrame(flags, id, payload);
      case FrameType.HEADERS:
        return this.onHeaders(flags, id, payload);
      case FrameType.CONTINUATION:
        return this.onContinuation(flags, id, payload);
      case FrameType.PRIORITY:
        return; // valid (checkFrame), and we do not prioritise
      case FrameType.RST_STREAM: {
        const stream = this.streams.get(id);
        const verdict = checkOnStream(type, this.stateOf(id, stream), payload);
        if (verdict !== undefined) return verdict === IGNORE ? undefined : this.onBroken(id, verdict);
        this.limitResets();
        this.forget(stream!, payload.readUInt32BE(0)); // open: checkOnStream
        return;
      }
      case FrameType.SETTINGS:
        return this.onSettings(flags, id, payload);
      case FrameType.PING:
        if (flags & Flag.ACK) {
          // The ACK of one of ours: it and any older ones are answered (the peer is alive); one we never sent is ignored.
          const at = this.pings.findIndex((ping) => ping.data.equals(payload));
          if (at >= 0) for (const ping of this.pings.splice(0, at + 1)) ping.callback(null);
        } else {
          this.control();
          this.queueFrame(FrameType.PING, Flag.ACK, 0, Buffer.from(payload));
        }
        return;
      case FrameType.GOAWAY:
        this.peerGoneAway = true;
        this.endIfIdle();
        return;
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      default:
        return; // unknown frame types are ignored (section 5.5); PUSH_PROMISE failed checkFrame
    }
  }

  private onDataFrame(flags: number, id: number, payload: Buffer): void {
    const stream = this.streams.get(id);
    const verdict = checkOnStream(FrameType.DATA, this.stateOf(id, stream), payload);
    if (verdict !== undefined && verdict !== IGNORE && verdict.connection) return this.onBroken(id, verdict);
    // Flow control counts the whole payload, padding too.
    this.recvWindow -= payload.length;
    if (this.recvWindow < 0) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window exceeded");
    if (verdict !== undefined || stream === undefined) {
      // A stream we reset (its DATA may still be on the way) or ignored after GOAWAY, or whose request had ended: the bytes still count on the connection.
      this.ackConnection(payload.length);
      if (verdict !== undefined && verdict !== IGNORE) this.onBroken(id, verdict);
      return;
    }
    const data = flags & Flag.PADDED ? payload.subarray(1, payload.length - payload[0]) : payload;
    const padding = payload.length - data.length;
    if (padding > 0) this.ackConnection(padding);
    stream.recvWindow -= payload.length;
    if (stream.recvWindow < 0) {
      this.ackConnection(data.length);
      this.resetForClient(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    stream.receivedBytes += data.length;
    // A body longer or shorter than its content-length is malformed (RFC 9113 8.1.1), as nghttp2 finds it.
    const declared = stream.declaredLength;
    if (declared !== undefined && (stream.receivedBytes > declared || (flags & Flag.END_STREAM && stream.receivedBytes !== declared))) {
      this.ackConnection(data.length);
      return this.resetForClient(stream, ErrorCode.PROTOCOL_ERROR);
    }
    if (stream.localEnded) return this.onLingeringData(stream, flags, data.length, payload.length);
    if (padding > 0) this.ackStream(stream, padding);
    // The payload is a view of the socket's chunk: a reader that keeps it keeps the chunk, as node:http2's do.
    if (data.length > 0) stream.receive(data);
    if (flags & Flag.END_STREAM) stream.receiveEnd();
  }

  /**
   * The rest of a request whose answer went out: dropped, its window opened again for up to
   * LINGER_BYTES (a client that reads the answer stops sending and ends the request; one reset
   * while still sending fails, as curl does), and the stream closes when the request ends.
   */
  private onLingeringData(stream: H2Stream, flags: number, dataBytes: number, payloadBytes: number): void {
    this.ackConnection(dataBytes);
    if (flags & Flag.END_STREAM) return stream.receiveEnd();
    this.drainLingering(stream, payloadBytes);
  }

  /** Opens a lingering stream's window for `bytes` it dropped, while it has dropped no more than LINGER_BYTES; else, or if its window stays shut, resets it. */
  private drainLingering(stream: H2Stream, bytes: number): void {
    stream.lingeredBytes += bytes;
    if (stream.lingeredBytes <= LINGER_BYTES) this.ackStream(stream, bytes);
    if (stream.recvWindow === 0) this.reset(stream, ErrorCode.NO_ERROR);
  }

  private onHeaders(flags: number, id: number, payload: Buffer): void {
    let start = 0;
    let end = payload.length;
    if (flags & Flag.PADDED) {
      end -= payload[0];
      start = 1;
    }
    if (flags & Flag.PRIORITY) start += 5;
    // A stream error, known once the block is decoded (the table must stay in step).
    if (dependsOnItself(flags, id, payload)) flags |= DEPENDS_ON_ITSELF_FLAG;
    const fragment = payload.subarray(start, end);
    if (flags & Flag.END_HEADERS) return this.onHeaderBlock(flags, id, fragment);
    this.continuing = { id, flags, parts: [Buffer.from(fragment)], bytes: fragment.length, frames: 0 };
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    const c = this.continuing!; // checkFrame: there is a block, on this stream
    c.bytes += payload.length;
    if (c.bytes > this.options.maxHeaderListSize + HEADER_BLOCK_SLACK) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    // Empty frames add no bytes but would add parts without end (the CONTINUATION flood).
    if (++c.frames > MAX_CONTINUATIONS) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many CONTINUATION frames");
    if (payload.length > 0) c.parts.push(Buffer.from(payload));
    if (flags & Flag.END_HEADERS) {
      this.continuing = undefined;
      this.onHeaderBlock(c.flags, id, Buffer.concat(c.parts));
    }
  }

  private onHeaderBlock(flags: number, id: number, block: Buffer): void {
    const headers: HeaderMap = Object.create(null) as HeaderMap;
    const existing = this.streams.get(id);
    // Always decoded, even for a stream we refuse: the table must stay in step with the client's. Fields are checked as they come (validate.ts).
    this.decoder.fieldState = existing === undefined ? REQUEST_FIELDS : TRAILER_FIELDS;
    // Decoding stops at the header list limit (the rest is only read, for the table's sake).
    const listSize = this.decoder.decode(block, 0, block.length, headers, this.options.maxHeaderListSize);
    const oversized = listSize > this.options.maxHeaderListSize;
    // Trailers, a new request, or a block on a stream that is not open (one we reset recently: ignored; else STREAM_CLOSED, or PROTOCOL_ERROR for an id the client skipped).
    const verdict = checkHeaders(this.stateOf(id, existing), flags, this.decoder.fieldState);
    if (verdict !== undefined) return verdict === IGNORE ? undefined : this.onBroken(id, verdict);
    if (existing !== undefined) {
      // Trailers over the header list limit reset the stream (ENHANCE_YOUR_CALM), as nghttp2 does.
      if (oversized) return this.resetForClient(existing, ErrorCode.ENHANCE_YOUR_CALM);
      // Trailers: they end the stream, which a body shorter than its content-length makes malformed (8.1.1); their fields are not used.
      if (existing.declaredLength !== undefined && existing.receivedBytes !== existing.declaredLength) return this.resetForClient(existing, ErrorCode.PROTOCOL_ERROR);
      existing.receiveEnd();
      return;
    }
    // A client that sends requests but reads none of our answers would grow our output without bound.
    if (this.socket.writableLength > CONTROL_FLOOD_BYTES) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "peer does not read");
    this.closedStreams.opened(id, this.lastStreamId);
    this.lastStreamId = id;
    // After our GOAWAY, new streams are ignored: the client retries them elsewhere.
    if (this.goawayId !== undefined) return;
    if (oversized) {
      // Each cost us a decode up to the limit: counted with the client's resets, so a client that keeps sending them is cut off.
      this.limitResets();
      return this.refuse(id, ErrorCode.ENHANCE_YOUR_CALM);
    }
    if (this.streams.size >= this.options.maxConcurrentStreams) return this.refuse(id, ErrorCode.REFUSED_STREAM);
    // Over the budget: a connection that drains defers the stream (while the deferred streams and request bodies fit in the budget), one that does not refuses it.
    const defer = this.memory > this.budget;
    if (defer && (!this.draining() || this.deferredBytes + this.unreadBytes > this.budget)) return this.refuseOverBudget(id);
    this.refusingSince = -1;
    this.allowance--;
    const malformed = checkRequest(headers, flags, this.decoder.fieldState);
    if (malformed !== undefined) return this.refuse(id, malformed.code);
    const length = headers["content-length"];
    const declared = length === undefined ? undefined : Number(length);
    const stream = new H2Stream(id, this, this.peerInitialWindow);
    stream.declaredLength = declared;
    // Known before the handler runs: one that answers at once ends the stream, with no reset after.
    if (flags & Flag.END_STREAM) stream.remoteEnded = true;
    this.streams.add(stream);
    if (defer) return this.defer(stream, headers, listSize, flags);
    try {
      this.emit("stream", stream, headers);
    } catch (e) {
      // A handler that throws fails its call, not the connection (nor the process).
      logLine("error", "http/2 stream handler failed", { error: e instanceof Error ? e.message : String(e) });
      this.reset(stream, ErrorCode.INTERNAL_ERROR);
      return;
    }
    if (flags & Flag.END_STREAM && !stream.closed) stream.receiveEnd();
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (flags & Flag.ACK) return; // its shape: checkFrame
    if (payload.length > MAX_SETTINGS_ENTRIES * 6) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `SETTINGS of ${payload.length / 6} entries`);
    // INITIAL_WINDOW_SIZE: the last value, and the largest (a stream window over 2^31-1 on the way is an error too), applied once.
    let initialWindow = -1;
    let largestWindow = -1;
    for (let p = 0; p < payload.length; p += 6) {
      const key = payload.readUInt16BE(p);
      const value = payload.readUInt32BE(p + 2);
      if (key === Setting.INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large");
        initialWindow = value;
        largestWindow = Math.max(largestWindow, value);
      } else if (key === Setting.MAX_FRAME_SIZE) {
        if (value < DEFAULT_MAX_FRAME || value > 0xff_ffff) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
        this.peerMaxFrame = value;
      } else if (key === Setting.ENABLE_PUSH && value > 1) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1");
      }
      // HEADER_TABLE_SIZE: our encoder never uses the dynamic table. The rest only bound what we push or send, which is little.
    }
    if (initialWindow >= 0) this.setInitialWindow(initialWindow, largestWindow);
    this.control();
    this.queueFrame(FrameType.SETTINGS, Flag.ACK, 0);
  }

  /**
   * A new SETTINGS_INITIAL_WINDOW_SIZE: every stream's window moves by the
   * difference (6.9.2). Once per SETTINGS frame, however many of its entries
   * name it: each walk visits every open stream. The entries in between
   * count only for the bound: `largest` is how far a window went on the way.
   */
  private setInitialWindow(value: number, largest: number): void {
    const delta = value - this.peerInitialWindow;
    const highest = largest - this.peerInitialWindow;
    this.peerInitialWindow = value;
    if (delta === 0 && highest <= 0) return;
    for (const stream of this.streams.values()) {
      if (stream.sendWindow + highest > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window over 2^31-1");
      stream.sendWindow += delta;
      if (stream.outgoing.length > 0 || stream.ending) this.sending.add(stream);
    }
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    const increment = payload.readUInt32BE(0) & 0x7fff_ffff;
    if (id === 0) {
      this.sendWindow += increment;
      if (this.sendWindow > MAX_WINDOW) throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow");
      for (const stream of this.streams.values()) if (stream.outgoing.length > 0) this.sending.add(stream);
      return;
    }
    const stream = this.streams.get(id);
    const verdict = checkOnStream(FrameType.WINDOW_UPDATE, this.stateOf(id, stream), payload);
    if (verdict !== undefined) return verdict === IGNORE ? undefined : this.onBroken(id, verdict);
    if (stream === undefined) return;
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) return this.resetForClient(stream, ErrorCode.FLOW_CONTROL_ERROR);
    if (stream.outgoing.length > 0) this.sending.add(stream);
  }

  /**
   * A new stream while the connection holds more than its budget is refused:
   * REFUSED_STREAM (the client may retry it, there or elsewhere) while the
   * client cannot have seen a refusal yet (streams of the same burst: no
   * flush since the first) or while the connection drains (DATA went out
   * since the last refusal). Once a flush has passed with nothing going out,
   * the client is opening streams on a connection it does not read:
   * ENHANCE_YOUR_CALM, and past MAX_CALM_REFUSALS of those, GOAWAY. Over
   * the budget with nothing going out for OVER_BUDGET_PATIENCE_MS after the
   * first refusal, GOAWAY too (`check`).
   */
  private refuseOverBudget(id: number): void {
    if (this.refusingSince < 0 || this.sentBytes !== this.refusingSent) {
      this.refusingSince = this.flushes;
      this.refusingSent = this.sentBytes;
      this.refusingAt = Date.now();
      this.calmRefusals = 0;
      this.checkBy(this.refusingAt + OVER_BUDGET_PATIENCE_MS);
    }
    if (this.flushes === this.refusingSince) return this.refuse(id, ErrorCode.REFUSED_STREAM);
    if (++this.calmRefusals > MAX_CALM_REFUSALS) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "over its memory budget, not read, and still opening streams");
    this.refuse(id, ErrorCode.ENHANCE_YOUR_CALM);
  }

  /** Whether DATA went out in the last DRAINING_MS, as far as admissions over the budget saw (no clock read on the way of a call under it). */
  private draining(): boolean {
    const now = Date.now();
    if (this.sentBytes !== this.drainMark) {
      this.drainMark = this.sentBytes;
      this.drainMarkAt = now;
    }
    return this.drainMarkAt > 0 && now - this.drainMarkAt <= DRAINING_MS;
  }

  /** A new stream on a connection over its budget that drains: it starts once what the others queued fits the budget again (`startDeferred`). */
  private defer(stream: H2Stream, headers: HeaderMap, size: number, flags: number): void {
    stream.deferred = true;
    this.deferred.push({ stream, headers, size });
    this.deferredBytes += size;
    if (flags & Flag.END_STREAM) stream.receiveEnd();
  }

  /** Hands deferred streams to their handler, STREAMS_PER_READ a turn, while the output of the others is within the budget. */
  private startDeferred(): void {
    for (let n = STREAMS_PER_READ; n > 0 && this.deferred.length > 0 && this.outputBytes <= this.budget && !this.isDestroyed; ) {
      const { stream, headers, size } = this.deferred.shift()!;
      this.deferredBytes -= size;
      if (stream.closed) continue; // reset by the client meanwhile
      n--;
      try {
        this.emit("stream", stream, headers);
      } catch (e) {
        logLine("error", "http/2 stream handler failed", { error: e instanceof Error ? e.message : String(e) });
        this.reset(stream, ErrorCode.INTERNAL_ERROR);
        continue;
      }
      if (!stream.closed) stream.undefer();
    }
    // More next turn (the flush of what these answer comes first); else the next flush, as the client reads, calls again.
    if (this.deferred.length > 0 && this.outputBytes <= this.budget) this.schedule();
  }

  /** A stream's DATA found the client's window shut: it is reset if the window stays shut for the stall timeout (`check`). */
  private stalled(stream: H2Stream): void {
    stream.stalledAt = Date.now();
    if (this.stallTimeoutMs > 0) this.checkBy(stream.stalledAt + this.stallTimeoutMs);
  }

  /** Runs `check` at `at` (Date.now() time) at the latest. */
  private checkBy(at: number): void {
    if (this.checkTimer !== undefined) {
      if (this.checkAt <= at) return;
      clearTimeout(this.checkTimer);
    }
    this.checkAt = at;
    this.checkTimer = setTimeout(this.check, Math.max(0, at - Date.now())).unref();
  }

  /**
   * The timed limits. Streams whose DATA has waited on a shut window (the
   * stream's or the connection's) for the stall timeout are reset
   * (ENHANCE_YOUR_CALM: gRPC clients see RESOURCE_EXHAUSTED); when every
   * open stream is one (or deferred behind them), the connection is closed
   * (GOAWAY ENHANCE_YOUR_CALM), as it is when it stayed over its budget with
   * nothing going out for OVER_BUDGET_PATIENCE_MS since it refused a stream.
   */
  private readonly check = (): void => {
    this.checkTimer = undefined;
    if (this.isDestroyed) return;
    const now = Date.now();
    let next = Infinity;
    if (this.refusingSince >= 0) {
      if (this.memory <= this.budget) this.refusingSince = -1;
      else if (this.sentBytes === this.refusingSent) {
        if (now - this.refusingAt >= OVER_BUDGET_PATIENCE_MS) return this.fail(ErrorCode.ENHANCE_YOUR_CALM);
        next = this.refusingAt + OVER_BUDGET_PATIENCE_MS;
      }
    }
    const expired: H2Stream[] = [];
    let waiting = 0; // deferred streams: they wait for the stalled ones
    for (const stream of this.streams.values()) {
      if (stream.deferred) waiting++;
      if (stream.stalledAt === 0) continue;
      if (stream.outgoing.length === 0 || Math.min(stream.sendWindow, this.sendWindow) > 0) {
        stream.stalledAt = 0; // a window opened since (what it has queued waits for the socket, if anything)
        continue;
      }
      if (this.stallTimeoutMs === 0) continue;
      if (now - stream.stalledAt >= this.stallTimeoutMs) expired.push(stream);
      else next = Math.min(next, stream.stalledAt + this.stallTimeoutMs);
    }
    if (expired.length > 0 && expired.length + waiting === this.streams.size) return this.fail(ErrorCode.ENHANCE_YOUR_CALM);
    for (const stream of expired) this.reset(stream, ErrorCode.ENHANCE_YOUR_CALM);
    if (next < Infinity) this.checkBy(next);
  };

  /**
   * Opening streams and resetting them at once makes us start calls the client
   * never waits for ("rapid reset", CVE-2023-44487): a token bucket, as
   * nghttp2's stream reset rate limit, ends a connection that does it too often.
   */
  private resetTokens = RESET_BURST;
  private resetRefilledAt = Date.now();
  private limitResets(): void {
    const now = Date.now();
    this.resetTokens = Math.min(RESET_BURST, this.resetTokens + ((now - this.resetRefilledAt) / 1000) * RESETS_PER_SECOND);
    this.resetRefilledAt = now;
    if (--this.resetTokens < 0) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "too many stream resets");
  }

  /** A reset the client's error caused: it counts as the client's own ("MadeYouReset", CVE-2025-8671). */
  private resetForClient(stream: H2Stream, code: number): void {
    this.limitResets();
    this.reset(stream, code);
  }

  // --- StreamHost ---

  sendHeaders(stream: H2Stream, status: number | undefined, headers: OutgoingHttpHeaders, endStream: boolean): void {
    const fields: [string, string][] = [];
    // RFC 9110 6.6.1: an origin server with a clock sends Date (node:http2 does too).
    if (status !== undefined && headers.date === undefined) fields.push(["date", httpDate()]);
    for (const name in headers) {
      const value = headers[name];
      if (value === undefined) continue;
      const key = name.toLowerCase();
      if (CONNECTION_HEADERS.includes(key)) continue; // not HTTP/2 (RFC 9113 8.2.2): clients reject them
      if (Array.isArray(value)) for (const v of value) fields.push([key, v]);
      else fields.push([key, String(value)]);
    }
    this.queueHeaderBlock(stream.id, encodeHeaders(status, fields), endStream);
  }

  wantsToSend(stream: H2Stream): void {
    this.sending.add(stream);
    this.schedule();
  }

  consumed(stream: H2Stream, bytes: number): void {
    this.ackConnection(bytes);
    this.ackStream(stream, bytes);
  }

  reset(stream: H2Stream, code: number): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.queueFrame(FrameType.RST_STREAM, 0, stream.id, u32(code));
    this.closedStreams.reset(stream.id);
    this.forget(stream, code);
  }

  linger(stream: H2Stream): void {
    if (this.streams.get(stream.id) !== stream) return;
    const unread = stream.dropUnread();
    if (unread > 0) this.ackConnection(unread);
    this.drainLingering(stream, unread);
    if (!stream.closed) stream.lingerTimer = setTimeout(() => this.reset(stream, ErrorCode.NO_ERROR), LINGER_MS).unref();
  }

  discarded(bytes: number): void {
    this.ackConnection(bytes);
  }

  ended(stream: H2Stream): void {
    if (this.streams.get(stream.id) === stream) this.forget(stream, undefined);
    else stream.markClosed(undefined);
  }

  // --- Flow control ---

  /** Opens the connection window again once half of it is used. */
  private ackConnection(bytes: number): void {
    this.unacked += bytes;
    if (this.unacked >= CONNECTION_WINDOW / 2) {
      this.queueFrame(FrameType.WINDOW_UPDATE, 0, 0, u32(this.unacked));
      this.recvWindow += this.unacked;
      this.unacked = 0;
      this.schedule();
    }
  }

  private ackStream(stream: H2Stream, bytes: number): void {
    if (stream.remoteEnded) return;
    stream.unacked += bytes;
    if (stream.unacked >= DEFAULT_WINDOW / 2) {
      this.queueFrame(FrameType.WINDOW_UPDATE, 0, stream.id, u32(stream.unacked));
      stream.recvWindow += stream.unacked;
      stream.unacked = 0;
      this.schedule();
    }
  }

  // --- Output ---

  private queueFrame(type: FrameType, flags: number, id: number, payload?: Buffer): void {
    this.out.frame(type, flags, id, payload);
    this.schedule();
  }

  private queueHeaderBlock(id: number, block: Buffer, endStream: boolean): void {
    const max = this.peerMaxFrame;
    const end = endStream ? Flag.END_STREAM : 0;
    if (block.length <= max) return this.queueFrame(FrameType.HEADERS, Flag.END_HEADERS | end, id, block);
    this.queueFrame(FrameType.HEADERS, end, id, block.subarray(0, max));
    for (let p = max; p < block.length; p += max) {
      const last = p + max >= block.length;
      this.queueFrame(FrameType.CONTINUATION, last ? Flag.END_HEADERS : 0, id, block.subarray(p, Math.min(p + max, block.length)));
    }
  }

  /** A control frame we owe the peer: one that never reads our answers is cut off. */
  private control(): void {
    if (this.socket.writableLength + this.out.bytes > CONTROL_FLOOD_BYTES) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "peer does not read");
  }

  private schedule(): void {
    if (this.flushScheduled || this.isDestroyed) return;
    this.flushScheduled = true;
    // After this turn's I/O and the promises it settled: every answer made now goes out in one write.
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.isDestroyed) return;
    this.flushes++;
    try {
      const callbacks: ((err?: Error | null) => void)[] = [];
      this.frameData(callbacks);
      // Write callbacks run once the socket has taken the bytes (a large payload is written by reference, not copied).
      const done = callbacks.length === 0 ? undefined : (err?: Error | null) => callbacks.forEach((cb) => cb(err ?? null));
      if (this.out.bytes > 0) {
        const chunks = this.out.take();
        if (chunks.length === 1) {
          this.socket.write(chunks[0], done);
        } else {
          this.socket.cork();
          chunks.forEach((chunk, i) => this.socket.write(chunk, i === chunks.length - 1 ? done : undefined));
          this.socket.uncork();
        }
      } else {
        done?.(null);
      }
      if (this.deferred.length > 0) this.startDeferred();
      this.endIfIdle();
    } catch (e) {
      // A stream's listener (drain, wantTrailers, finish) that threw: this connection ends, the process serves on.
      logLine("error", "http/2 connection failed", { error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      this.destroy();
    }
  }

  /** Moves queued response DATA into frames, as far as the windows and the socket allow. */
  private frameData(callbacks: ((err?: Error | null) => void)[]): void {
    this.sending.forEach((stream) => {
      if (stream.closed) {
        this.sending.delete(stream);
        return true;
      }
      while (stream.outgoing.length > 0) {
        if (this.socket.writableLength + this.out.bytes > SOCKET_HIGH_WATER) return false; // socket "drain" schedules the rest
        const chunk = stream.outgoing[0];
        const room = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrame);
        if (chunk.data.length > 0 && room <= 0) {
          if (stream.stalledAt === 0) this.stalled(stream);
          break;
        }
        const n = Math.max(0, Math.min(room, chunk.data.length)); // a window can be negative (SETTINGS lowered it)
        const last = n === chunk.data.length;
        const endNow = last && stream.outgoing.length === 1 && stream.ending && !stream.endsWithTrailers;
        if (n > 0 || endNow) {
          this.queueFrame(FrameType.DATA, endNow ? Flag.END_STREAM : 0, stream.id, chunk.data.subarray(0, n));
          stream.sendWindow -= n;
          this.sendWindow -= n;
          stream.outgoingBytes -= n;
          this.queuedBytes -= n;
          this.sentBytes += n;
          stream.stalledAt = 0;
        }
        if (!last) {
          chunk.data = chunk.data.subarray(n);
          continue;
        }
        stream.outgoing.shift();
        if (chunk.callback !== undefined) callbacks.push(chunk.callback);
        if (endNow) {
          stream.ending = false;
          stream.finishLocal();
        }
      }
      stream.drained();
      if (stream.outgoing.length > 0) return true;
      this.sending.delete(stream);
      if (stream.ending && !stream.closed) {
        // Everything is out: the end of the stream (an empty DATA with END_STREAM, or the trailers).
        stream.ending = false;
        const { trailers } = stream.takeEnd();
        if (stream.closed) return true;
        if (trailers !== undefined) this.sendHeaders(stream, undefined, trailers, true);
        else this.queueFrame(FrameType.DATA, Flag.END_STREAM, stream.id);
        stream.finishLocal();
      }
      return true;
    });
  }

  // --- Ending ---

  private refuse(id: number, code: number): void {
    this.queueFrame(FrameType.RST_STREAM, 0, id, u32(code));
    this.closedStreams.reset(id);
  }

  /** The state of stream `id` (RFC 9113 5.1); `stream` is its entry in the table, if any. */
  private stateOf(id: number, stream: H2Stream | undefined): StreamState {
    if (stream !== undefined) return stream.remoteEnded ? StreamState.HALF_CLOSED_REMOTE : StreamState.OPEN;
    if ((id & 1) === 0 || id > this.lastStreamId) return StreamState.IDLE; // we open no streams (no push)
    // After our GOAWAY, streams above its id were ignored: their frames are too.
    if ((this.goawayId !== undefined && id > this.goawayId) || this.closedStreams.resetRecently(id)) return StreamState.RESET_RECENTLY;
    return this.closedStreams.wasSkipped(id) ? StreamState.SKIPPED : StreamState.CLOSED;
  }

  /**
   * A rule broken (validate.ts): a connection error ends the connection; a
   * stream error resets the stream (counted as a reset the client caused),
   * but an idle stream cannot be reset (5.1): there it ends the connection.
   */
  private onBroken(id: number, broken: H2Error): void {
    if (broken.connection) throw new ConnectionError(broken.code, broken.reason);
    const stream = this.streams.get(id);
    if (stream !== undefined) return this.resetForClient(stream, broken.code);
    if (this.stateOf(id, undefined) === StreamState.IDLE) throw new ConnectionError(broken.code, broken.reason);
    this.limitResets();
    this.refuse(id, broken.code);
  }

  private forget(stream: H2Stream, code: number | undefined): void {
    this.closedSinceRead++;
    this.streams.delete(stream.id);
    this.sending.delete(stream);
    stream.markClosed(code);
    this.endIfIdle();
  }

  private goaway(code: number): void {
    this.goawayId ??= this.lastStreamId;
    this.queueFrame(FrameType.GOAWAY, 0, 0, Buffer.concat([u32(this.goawayId), u32(code)]));
  }

  private endIfIdle(): void {
    if (!(this.isClosing || this.peerGoneAway) || this.streams.size > 0 || this.isDestroyed) return;
    if (this.flushScheduled || this.out.bytes > 0) return; // flush() calls again
    this.isDestroyed = true;
    clearTimeout(this.checkTimer);
    for (const ping of this.pings) ping.callback(new Error("connection closed"));
    this.pings = [];
    this.endSocket();
    this.emit("close");
  }

  /** Ends the socket after what is queued, and destroys it if the peer has not closed it SOCKET_LINGER_MS later. */
  private endSocket(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), SOCKET_LINGER_MS).unref();
  }

  /**
   * A connection error (section 5.4.1): GOAWAY with the code, then close.
   * Nothing more is read, as nghttp2 does: the data handler goes, the socket
   * is paused (what the peer sends waits in the kernel, bounded by its
   * buffer, until the socket is destroyed, SOCKET_LINGER_MS at most after
   * the GOAWAY), and a partial frame is dropped.
   */
  private fail(code: number): void {
    if (this.isDestroyed) return;
    this.socket.off("data", this.onSocketData);
    this.socket.pause();
    this.partial = undefined;
    this.held = [];
    this.heldBytes = 0;
    this.deferred = [];
    this.deferredBytes = 0;
    clearTimeout(this.checkTimer);
    this.goawayId = this.lastStreamId;
    this.queueFrame(FrameType.GOAWAY, 0, 0, Buffer.concat([u32(this.lastStreamId), u32(code)]));
    for (const chunk of this.out.take()) this.socket.write(chunk);
    this.endSocket();
    for (const stream of this.streams.values()) stream.markClosed(code);
    this.streams.clear();
    this.isDestroyed = true;
    this.isClosing = true;
    this.emit("close");
  }
}

let dateSecond = -1;
let dateText = "";
/** The current time as an HTTP date, made once a second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

function settingsPayload(settings: readonly (readonly [number, number])[]): Buffer {
  const b = Buffer.allocUnsafe(settings.length * 6);
  settings.forEach(([key, value], i) => {
    b.writeUInt16BE(key, i * 6);
    b.writeUInt32BE(value, i * 6 + 2);
  });
  return b;
}
