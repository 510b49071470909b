import { ErrorCode, Flag, FrameType } from "./frames.js";
import type { HeaderMap } from "./hpack.js";

/*
 * What a client may send (RFC 9113), in one place, as nghttp2 keeps it in
 * its session code: the shape of each frame, what each frame may do on a
 * stream in each state (5.1), and what makes a request malformed (8.2, 8.3).
 * Pure functions; connection.ts calls them and acts on the answer: nothing
 * (valid), IGNORE, or a named H2Error, a connection error (GOAWAY) or a
 * stream error (RST_STREAM; on an idle stream, which cannot be reset, the
 * connection makes it a connection error). Returning shared constants keeps
 * the checks free of allocation on every frame and every header field.
 */

/** A broken rule: what the connection sends, and why (for the log and for tests). */
export interface H2Error {
  /** A connection error (5.4.1) rather than a stream error (5.4.2). */
  readonly connection: boolean;
  readonly code: number;
  readonly reason: string;
}

const connectionError = (code: number, reason: string): H2Error => Object.freeze({ connection: true, code, reason });
const streamError = (code: number, reason: string): H2Error => Object.freeze({ connection: false, code, reason });

/** Every rule, by name. */
export const Broken = {
  DATA_ON_STREAM_0: connectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0"),
  HEADERS_STREAM_ID: connectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0 or on a stream id a server would use"),
  BAD_PADDING: connectionError(ErrorCode.PROTOCOL_ERROR, "padding (or priority) longer than the frame"),
  PRIORITY_ON_STREAM_0: connectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0"),
  PRIORITY_LENGTH: streamError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY of a length other than 5"), // 6.3
  DEPENDS_ON_ITSELF: streamError(ErrorCode.PROTOCOL_ERROR, "a stream that depends on itself"), // 5.3.1
  RST_STREAM_LENGTH: connectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of a length other than 4"), // 6.4
  RST_STREAM_ON_STREAM_0: connectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0"),
  SETTINGS_ON_STREAM: connectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream"),
  SETTINGS_ACK_LENGTH: connectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload"),
  SETTINGS_LENGTH: connectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6"),
  PUSH_PROMISE: connectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
  PING_LENGTH: connectionError(ErrorCode.FRAME_SIZE_ERROR, "PING of a length other than 8"), // 6.7
  PING_ON_STREAM: connectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream"),
  GOAWAY_LENGTH: connectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes"), // 4.2
  GOAWAY_ON_STREAM: connectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream"),
  WINDOW_UPDATE_LENGTH: connectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a length other than 4"),
  CONNECTION_WINDOW_UPDATE_0: connectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection"),
  STREAM_WINDOW_UPDATE_0: streamError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on a stream"),
  EXPECTED_CONTINUATION: connectionError(ErrorCode.PROTOCOL_ERROR, "another frame inside a header block"),
  UNEXPECTED_CONTINUATION: connectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION outside a header block"),
  ON_IDLE_STREAM: connectionError(ErrorCode.PROTOCOL_ERROR, "a frame on an idle stream"), // 5.1
  ON_CLOSED_STREAM: connectionError(ErrorCode.STREAM_CLOSED, "DATA or HEADERS on a closed stream"), // 5.1
  ON_HALF_CLOSED_STREAM: streamError(ErrorCode.STREAM_CLOSED, "DATA after the request ended"), // 5.1 (nghttp2: a connection error)
  HEADERS_ON_HALF_CLOSED_STREAM: connectionError(ErrorCode.STREAM_CLOSED, "HEADERS after the request ended"), // 5.1, as nghttp2
  STREAM_ID_NOT_NEW: connectionError(ErrorCode.PROTOCOL_ERROR, "a new stream with an id lower than one already used"), // 5.1.1
  TRAILERS_WITHOUT_END_STREAM: streamError(ErrorCode.PROTOCOL_ERROR, "a second HEADERS without END_STREAM"), // 8.1: malformed, as nghttp2
  MALFORMED: streamError(ErrorCode.PROTOCOL_ERROR, "a malformed request"), // 8.1.1
} as const;

/** A frame on a stream we reset recently: the client sent it before it saw our RST_STREAM (5.4.2, 6.4). */
export const IGNORE = "ignore";

export type Verdict = H2Error | typeof IGNORE | undefined;

/**
 * A stream's state as the connection knows it (5.1). Streams that are no
 * longer open are told apart as far as the connection remembers them (see
 * closed-streams.ts): one we reset recently, an id the client skipped (never
 * opened), or one that closed otherwise (both sides ended, the client reset
 * it, or we reset it long ago).
 */
export const enum StreamState {
  IDLE,
  OPEN,
  /** The client ended its request; our answer is still going. */
  HALF_CLOSED_REMOTE,
  RESET_RECENTLY,
  SKIPPED,
  CLOSED,
}

/** Not a wire flag: HEADERS that depend on their own stream, carried with the header block until it is decoded. */
export const DEPENDS_ON_ITSELF_FLAG = 0x100;

/**
 * The frame's shape: its stream id, length, padding and flags, for the
 * checks that need nothing but the frame (and whether a header block is
 * open: `blockStream`, its stream, or 0). Unknown types pass (5.5).
 */
export function checkFrame(type: number, flags: number, id: number, payload: Buffer, blockStream: number): H2Error | undefined {
  const length = payload.length;
  if (blockStream !== 0) return type === FrameType.CONTINUATION && id === blockStream ? undefined : Broken.EXPECTED_CONTINUATION;
  switch (type) {
    case FrameType.DATA:
      if (id === 0) return Broken.DATA_ON_STREAM_0;
      if (flags & Flag.PADDED && (length < 1 || payload[0] >= length)) return Broken.BAD_PADDING;
      return undefined;
    case FrameType.HEADERS: {
      if (id === 0 || (id & 1) === 0) return Broken.HEADERS_STREAM_ID;
      const padded = flags & Flag.PADDED ? 1 : 0;
      if (padded === 1 && length < 1) return Broken.BAD_PADDING;
      const overhead = padded + (padded === 1 ? payload[0] : 0) + (flags & Flag.PRIORITY ? 5 : 0);
      return overhead > length ? Broken.BAD_PADDING : undefined;
    }
    case FrameType.PRIORITY:
      if (id === 0) return Broken.PRIORITY_ON_STREAM_0;
      if (length !== 5) return Broken.PRIORITY_LENGTH;
      return (payload.readUInt32BE(0) & 0x7fff_ffff) === id ? Broken.DEPENDS_ON_ITSELF : undefined;
    case FrameType.RST_STREAM:
      // The length first, as nghttp2 (it reads the frame before it looks at the stream).
      if (length !== 4) return Broken.RST_STREAM_LENGTH;
      return id === 0 ? Broken.RST_STREAM_ON_STREAM_0 : undefined;
    case FrameType.SETTINGS:
      if (id !== 0) return Broken.SETTINGS_ON_STREAM;
      if (flags & Flag.ACK) return length === 0 ? undefined : Broken.SETTINGS_ACK_LENGTH;
      return length % 6 === 0 ? undefined : Broken.SETTINGS_LENGTH;
    case FrameType.PUSH_PROMISE:
      return Broken.PUSH_PROMISE;
    case FrameType.PING:
      if (length !== 8) return Broken.PING_LENGTH;
      return id === 0 ? undefined : Broken.PING_ON_STREAM;
    case FrameType.GOAWAY:
      if (id !== 0) return Broken.GOAWAY_ON_STREAM;
      return length < 8 ? Broken.GOAWAY_LENGTH : undefined;
    case FrameType.WINDOW_UPDATE:
      if (length !== 4) return Broken.WINDOW_UPDATE_LENGTH;
      return id === 0 && (payload.readUInt32BE(0) & 0x7fff_ffff) === 0 ? Broken.CONNECTION_WINDOW_UPDATE_0 : undefined;
    case FrameType.CONTINUATION:
      return Broken.UNEXPECTED_CONTINUATION; // no header block is open
    default:
      return undefined;
  }
}

/** Whether HEADERS (with the PRIORITY flag) depend on their own stream (5.3.1): checked once the block is decoded. */
export function dependsOnItself(flags: number, id: number, payload: Buffer): boolean {
  if (!(flags & Flag.PRIORITY)) return false;
  const at = flags & Flag.PADDED ? 1 : 0;
  return (payload.readUInt32BE(at) & 0x7fff_ffff) === id;
}

/**
 * What DATA, WINDOW_UPDATE or RST_STREAM may do on a stream in `state`
 * (5.1, 6.9). Frames that cross our RST_STREAM are ignored; DATA on a stream
 * that closed otherwise is STREAM_CLOSED. WINDOW_UPDATE and RST_STREAM may
 * come on any stream that is not idle (the client may send them after our
 * END_STREAM).
 */
export function checkOnStream(type: number, state: StreamState, payload: Buffer): Verdict {
  if (state === StreamState.IDLE) return Broken.ON_IDLE_STREAM;
  switch (type) {
    case FrameType.DATA:
      if (state === StreamState.OPEN) return undefined;
      if (state === StreamState.HALF_CLOSED_REMOTE) return Broken.ON_HALF_CLOSED_STREAM;
      return state === StreamState.RESET_RECENTLY ? IGNORE : Broken.ON_CLOSED_STREAM;
    case FrameType.WINDOW_UPDATE:
      if (state !== StreamState.OPEN && state !== StreamState.HALF_CLOSED_REMOTE) return IGNORE;
      return (payload.readUInt32BE(0) & 0x7fff_ffff) === 0 ? Broken.STREAM_WINDOW_UPDATE_0 : undefined;
    default: // RST_STREAM
      return state === StreamState.OPEN || state === StreamState.HALF_CLOSED_REMOTE ? undefined : IGNORE;
  }
}

/**
 * A whole header block on a stream in `state`, its fields checked as they
 * were decoded (`fields`, from checkField). On an idle stream it is a new
 * request: undefined here, then checkRequest once the stream limits passed.
 * On an open one it is trailers, which must end the stream. A header block
 * on an id the client skipped is a new stream with a lower id than one
 * already used (5.1.1); on a stream that closed, STREAM_CLOSED (5.1).
 */
export function checkHeaders(state: StreamState, flags: number, fields: number): Verdict {
  switch (state) {
    case StreamState.IDLE:
      return undefined;
    case StreamState.OPEN:
      if (!(flags & Flag.END_STREAM)) return Broken.TRAILERS_WITHOUT_END_STREAM;
      return fields < 0 || flags & DEPENDS_ON_ITSELF_FLAG ? Broken.MALFORMED : undefined;
    case StreamState.HALF_CLOSED_REMOTE:
      return Broken.HEADERS_ON_HALF_CLOSED_STREAM;
    case StreamState.RESET_RECENTLY:
      return IGNORE;
    case StreamState.SKIPPED:
      return Broken.STREAM_ID_NOT_NEW;
    default:
      return Broken.ON_CLOSED_STREAM;
  }
}

// --- Header fields, in the order they come (8.2.1, 8.3) ---
//
// The HPACK decoder (hpack.ts) calls checkField for each field as it decodes
// it, so the order is there to see (a header map keeps one :method of two).
// The state is a number: bits of what came so far; a negative number is the
// first rule a field broke (a FieldFault), and stays.

/** Start states: a request's header block, or trailers. */
export const REQUEST_FIELDS = 0;
export const TRAILER_FIELDS = 1;
const REGULAR_SEEN = 2;
const METHOD_SEEN = 4;
const SCHEME_SEEN = 8;
const AUTHORITY_SEEN = 16;
const PATH_SEEN = 32;

/** Why a field is malformed: negative, so that one comparison tells a fault from a state. */
export const FieldFault = {
  NAME_NOT_TOKEN: -1, // a character outside RFC 9110's token, or an empty name
  NAME_UPPER_CASE: -2,
  VALUE_NUL_CR_LF: -3,
  PSEUDO_AFTER_REGULAR: -4,
  UNKNOWN_PSEUDO: -5, // :status, :protocol (we send no SETTINGS_ENABLE_CONNECT_PROTOCOL) or any other
  DUPLICATE_PSEUDO: -6,
  PSEUDO_IN_TRAILERS: -7,
} as const;

const COLON = 0x3a;
/** RFC 9110 5.6.2 tchar, lower-case letters only (8.2.1: no upper case in HTTP/2): 1 if allowed. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") TOKEN[c.charCodeAt(0)] = 1;

/** The fault of a field name (0 if none): token characters, lower case, a leading ':' for pseudo-headers. */
export function nameFault(name: string): number {
  if (name.length === 0) return FieldFault.NAME_NOT_TOKEN;
  for (let i = name.charCodeAt(0) === COLON ? 1 : 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c > 0xff || TOKEN[c] === 0) return c >= 0x41 && c <= 0x5a ? FieldFault.NAME_UPPER_CASE : FieldFault.NAME_NOT_TOKEN;
  }
  return 0;
}

/**
 * The fault of a field value (0 if none): NUL, CR or LF (8.2.1). Leading or
 * trailing white space, which 8.2.1 also forbids, is let through, as nghttp2
 * lets it (it drops such a regular field and serves the request).
 */
export function valueFault(value: string): number {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) return FieldFault.VALUE_NUL_CR_LF;
  }
  return 0;
}

/** The state after one more field `name`, whose own fault (nameFault or valueFault, known for table entries) is `fault`. */
export function checkField(state: number, name: string, fault: number): number {
  if (state < 0) return state;
  if (fault !== 0) return fault;
  if (name.charCodeAt(0) !== COLON) return state | REGULAR_SEEN;
  if (state & TRAILER_FIELDS) return FieldFault.PSEUDO_IN_TRAILERS;
  if (state & REGULAR_SEEN) return FieldFault.PSEUDO_AFTER_REGULAR;
  const bit = pseudoBit(name);
  if (bit === 0) return FieldFault.UNKNOWN_PSEUDO;
  return state & bit ? FieldFault.DUPLICATE_PSEUDO : state | bit;
}

function pseudoBit(name: string): number {
  switch (name) {
    case ":method":
      return METHOD_SEEN;
    case ":scheme":
      return SCHEME_SEEN;
    case ":authority":
      return AUTHORITY_SEEN;
    case ":path":
      return PATH_SEEN;
    default:
      return 0;
  }
}

// --- A request as a whole (8.1, 8.2.2, 8.3.1) ---

/** Headers that do not belong in HTTP/2 (8.2.2). */
export const CONNECTION_HEADERS = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];
const CONTENT_LENGTH = /^[0-9]{1,15}$/;
const SLASH = 0x2f;

/** A method: one or more token characters (RFC 9110 9.1; upper case allowed here). */
function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || (TOKEN[c] === 0 && !(c >= 0x41 && c <= 0x5a))) return false;
  }
  return true;
}

/** A URI scheme (RFC 3986 3.1): a letter, then letters, digits, "+", "-" or ".". */
function isScheme(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) | 0x20;
    const letter = c >= 0x61 && c <= 0x7a;
    if (!letter && (i === 0 || !((c >= 0x30 && c <= 0x39) || s[i] === "+" || s[i] === "-" || s[i] === "."))) return false;
  }
  return true;
}

/**
 * A new request: its fields (`fields`, from checkField), its pseudo-headers,
 * no connection-specific header, te only "trailers", a content-length that
 * is a number and 0 if the HEADERS end the stream. Any fault: MALFORMED, a
 * stream error PROTOCOL_ERROR, as nghttp2 answers.
 */
export function checkRequest(headers: HeaderMap, flags: number, fields: number): H2Error | undefined {
  if (fields < 0 || flags & DEPENDS_ON_ITSELF_FLAG) return Broken.MALFORMED;
  const method = headers[":method"] as string | undefined;
  if (method === undefined || !(method === "POST" || method === "GET" || isToken(method))) return Broken.MALFORMED;
  if (method === "CONNECT") {
    // 8.5: an authority, and neither :scheme nor :path (we send no SETTINGS_ENABLE_CONNECT_PROTOCOL).
    if (headers[":authority"] === undefined || headers[":scheme"] !== undefined || headers[":path"] !== undefined) return Broken.MALFORMED;
  } else {
    // As nghttp2: a scheme and a path that is "/..." (or "*" for OPTIONS). Not nghttp2's demand for :authority or host:
    // RFC 9113 8.3.1 lets a request without authority information omit it.
    const path = headers[":path"] as string | undefined;
    const scheme = headers[":scheme"] as string | undefined;
    if (path === undefined || scheme === undefined || !(scheme === "http" || scheme === "https" || isScheme(scheme))) return Broken.MALFORMED;
    if (path.charCodeAt(0) !== SLASH && !(path === "*" && method === "OPTIONS")) return Broken.MALFORMED;
  }
  for (const name of CONNECTION_HEADERS) if (headers[name] !== undefined) return Broken.MALFORMED;
  const te = headers.te;
  if (te !== undefined && te !== "trailers") return Broken.MALFORMED;
  const length = headers["content-length"];
  if (length === undefined) return undefined;
  if (!CONTENT_LENGTH.test(length as string)) return Broken.MALFORMED;
  return flags & Flag.END_STREAM && Number(length) > 0 ? Broken.MALFORMED : undefined;
}
