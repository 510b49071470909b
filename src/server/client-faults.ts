import type { DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError, createConnectRouter, createContextKey, createContextValues, type Interceptor } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, connectNodeAdapter, type ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import {
  createAsyncIterable,
  encodeEnvelope,
  type Compression,
  type UniversalHandler,
  type UniversalServerRequest,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { codeFromString, codeToHttpStatus, codeToString } from "@connectrpc/connect/protocol-connect";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";

/*
 * Malformed requests are the client's fault, and the answer says so.
 *
 * connect-es blames the server for some bad input: a request message that is
 * not valid protobuf (invalid UTF-8 in a string, a field cut short, a bad wire
 * type) becomes INTERNAL "parse binary: ..." before any interceptor runs;
 * most corrupt gzip or brotli bodies become INTERNAL "decompression failed";
 * a body cut right after a 5-byte message prefix is taken for a body with no
 * message (UNIMPLEMENTED, or a client stream that ended cleanly: Load then
 * answered OK); and JSON that is not UTF-8 is decoded with U+FFFD in place of
 * the bad bytes, so a key the client never sent is written. Here each becomes
 * INVALID_ARGUMENT with a message that says what was wrong, as connect-go does
 * ("unmarshal into ...", "decompress: ...", protojson rejects invalid UTF-8).
 * gRPC's status table (doc/statuscodes.md) lists INTERNAL for "error parsing
 * request proto" and "could not decompress": we deviate on purpose, so that
 * INTERNAL keeps meaning a server fault (it pages) and every protocol on this
 * port gives the same code for the same bytes.
 *
 * Not changed, because the specs name these codes: a compressed message
 * without grpc-encoding is INTERNAL (doc/compression.md, test case 6: "MUST
 * fail with INTERNAL"), an encoding the server lacks is UNIMPLEMENTED
 * (compression.md), and a unary call with no message or two is UNIMPLEMENTED
 * (statuscodes.md, "request cardinality violation").
 *
 * Nothing here knows the store. A rejected call never reaches a handler.
 */

/** A code and message for the client. */
export interface Fault {
  readonly code: Code;
  readonly message: string;
}

/**
 * What the client should hear for an error connect raised while decoding a
 * request message of type `input`, or undefined to keep the error as it is.
 */
export function requestFault(code: number, message: string, input: DescMessage): Fault | undefined {
  // connect names the limit by its own option; the operator knows it as --max-request-bytes.
  if (code === Code.ResourceExhausted && message.includes(READ_MAX_BYTES)) {
    return { code, message: message.replace(/configured readMaxBytes (\d+)/, "the server's --max-request-bytes ($1 bytes)") };
  }
  if (code !== Code.Internal || !message.startsWith(PARSE_BINARY)) return undefined;
  const why = message.slice(PARSE_BINARY.length);
  return { code: Code.InvalidArgument, message: `invalid protobuf for ${input.typeName}: ${EXPLAINED[why] ?? why}` };
}

/** `error`, or the INVALID_ARGUMENT a client should get instead (for paths that call connect's serialization themselves). */
export function requestFaultError(error: ConnectError, input: DescMessage): ConnectError {
  const fault = requestFault(error.code, error.rawMessage, input);
  return fault === undefined ? error : new ConnectError(fault.message, fault.code, error.metadata, undefined, error);
}

const PARSE_BINARY = "parse binary: ";
const READ_MAX_BYTES = "configured readMaxBytes ";
/** @bufbuild/protobuf's terse reasons, said plainly. */
const EXPLAINED: Record<string, string> = {
  "The encoded data was not valid for encoding utf-8": "a string field is not valid UTF-8",
  "premature EOF": "a field runs past the end of the message (premature EOF)",
};

/**
 * Follows gRPC/Connect length-prefixed messages through a request body, for
 * the one way to end it that connect's decoder misses: a message's 5-byte
 * prefix arrives, none of its bytes do, and the body ends. (A body that ends
 * inside a prefix, or after some of a message's bytes, connect rejects itself
 * with INVALID_ARGUMENT "protocol error: incomplete envelope".)
 */
export class EnvelopeTracker {
  /** Bytes of the current prefix seen: 0 between messages. */
  private prefix = 0;
  private promised = 0;
  private remaining = 0;

  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - i);
        this.remaining -= n;
        i += n;
        continue;
      }
      this.promised = this.prefix === 0 ? 0 : this.promised * 256 + chunk[i];
      i++;
      if (++this.prefix === 5) {
        this.prefix = 0;
        this.remaining = this.promised;
      }
    }
  }

  /** The error for a body that ended now, if connect would take it for a body that ended between messages. */
  end(): ConnectError | undefined {
    if (this.prefix > 0 || this.remaining === 0 || this.remaining < this.promised) return undefined;
    return new ConnectError(
      `protocol error: incomplete envelope: the request ended after a message's 5-byte prefix, which promised ${this.promised} bytes`,
      Code.InvalidArgument,
    );
  }
}

/**
 * The error for a whole request body that ends right after a message's
 * prefix, if it does. Call it after connect's envelope functions have taken
 * the body, so that their errors (a prefix over readMaxBytes) come first.
 */
export function incompleteMessage(body: Uint8Array): ConnectError | undefined {
  const tracker = new EnvelopeTracker();
  tracker.push(body);
  return tracker.end();
}

/**
 * connect's handlers with the fixes above: decompression and JSON options,
 * an interceptor for streamed request messages, and a wrapper around each
 * handler for what happens before interceptors run (unary request messages,
 * request framing). Given two ways, serving the same handler objects: by
 * request path (for our HTTP/2 engine, src/server/h2) and as connect-node's
 * request handler (for node:http and node:http2).
 */
export function connectHandlersWithClientFaults(
  options: ConnectNodeAdapterOptions,
  /** Applied to each handler last (outermost), for both engines: CORS (src/server/cors.ts). */
  wrap: (handler: UniversalHandler) => UniversalHandler = (h) => h,
): {
  readonly nodeHandler: ReturnType<typeof connectNodeAdapter>;
  readonly handlers: ReadonlyMap<string, UniversalHandler>;
} {
  const router = createConnectRouter({
    ...options,
    acceptCompression: (options.acceptCompression ?? [compressionGzip, compressionBrotli]).map(decompressionFaults),
    jsonOptions: { ...options.jsonOptions, ...STRICT_UTF8 },
    interceptors: [streamedMessageFaults, ...(options.interceptors ?? [])],
  });
  options.routes(router);
  const wrapped = router.handlers.map((h) => wrap(withClientFaults(h)));
  return {
    // connect-node reads the router's handlers once routes() returns.
    nodeHandler: connectNodeAdapter({ ...options, routes: (r) => r.handlers.push(...wrapped) }),
    handlers: new Map(wrapped.map((h) => [(options.requestPathPrefix ?? "") + h.requestPath, h])),
  };
}

/** Decompression errors other than the size limit are the client's corrupt data. */
function decompressionFaults(compression: Compression): Compression {
  return {
    name: compression.name,
    compress: (bytes) => compression.compress(bytes),
    async decompress(bytes, readMaxBytes) {
      try {
        return await compression.decompress(bytes, readMaxBytes);
      } catch (e) {
        const err = ConnectError.from(e);
        if (err.code === Code.ResourceExhausted) throw err;
        const why = err.cause instanceof Error ? err.cause.message : err.rawMessage;
        throw new ConnectError(`the request's ${compression.name} data is corrupt: ${why}`, Code.InvalidArgument);
      }
    },
  };
}

/**
 * connect's JSON serialization decodes request bytes with this `textDecoder`
 * (the option its clients take too; the server passes jsonOptions through).
 * Fatal: bytes that are not UTF-8 fail the call instead of becoming U+FFFD.
 */
const UTF8 = new TextDecoder("utf-8", { fatal: true });
const STRICT_UTF8: { textDecoder: { decode(input?: Uint8Array): string } } = {
  textDecoder: {
    decode(input) {
      try {
        return UTF8.decode(input);
      } catch {
        throw new Error("invalid JSON: the request is not valid UTF-8");
      }
    },
  },
};

/** Set once a call reaches the interceptors, that is, once connect has decoded its (unary) request message. */
const REACHED = createContextKey(false, { description: "the call reached the interceptors" });

/**
 * Marks the call, and maps decoding errors of streamed request messages where
 * they are raised. Not async: a call costs no promise or async frame here.
 */
export const streamedMessageFaults: Interceptor = (next) => (req) => {
  req.contextValues.set(REACHED, true);
  if (!req.stream) return next(req);
  return next({ ...req, message: mapErrors(req.message, req.method.input) });
};

async function* mapErrors<T>(messages: AsyncIterable<T>, input: DescMessage): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (e) {
    throw e instanceof ConnectError ? requestFaultError(e, input) : e;
  }
}

function withClientFaults(handler: UniversalHandler): UniversalHandler {
  const input = handler.method.input;
  const guarded = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    // Context values are made per request (connect-node calls contextValues(req) for each).
    const values = req.contextValues ?? createContextValues();
    const enveloped = /^application\/(grpc|connect\+)/i.test(req.header.get("content-type") ?? "");
    const body = enveloped && isByteStream(req.body) ? wholeMessages(req.body) : req.body;
    const res = await handler({ ...req, body, contextValues: values });
    // The unary request message is decoded before interceptors run, and before anything is answered.
    return handler.method.methodKind === "unary" && !values.get(REACHED) ? unaryRequestFault(res, input) : res;
  };
  return Object.assign(guarded, {
    protocolNames: handler.protocolNames,
    service: handler.service,
    method: handler.method,
    requestPath: handler.requestPath,
    allowedMethods: handler.allowedMethods,
    supportedContentType: handler.supportedContentType,
  });
}

function isByteStream(body: UniversalServerRequest["body"]): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

async function* wholeMessages(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const tracker = new EnvelopeTracker();
  for await (const chunk of body) {
    tracker.push(chunk);
    yield chunk;
  }
  const fault = tracker.end();
  if (fault !== undefined) throw fault;
}

/**
 * Rewrites the error connect already serialized for a unary call whose
 * request did not decode. (Connect compresses error bodies of 1 KiB or more
 * when asked to; its parse errors are far shorter, and a compressed body is
 * left as it is.)
 */
async function unaryRequestFault(res: UniversalServerResponse, input: DescMessage): Promise<UniversalServerResponse> {
  const type = res.header?.get("content-type") ?? "";
  if (res.body === undefined || res.header?.has("content-encoding") === true) return res;
  if (res.trailer !== undefined) {
    // gRPC: the status is in the trailers, complete by now.
    fixGrpcStatus(res.trailer, input);
    return res;
  }
  if (type.startsWith("application/grpc-web")) {
    return { ...res, body: mapEnvelopes(res.body, trailerFlag, (data) => fixGrpcWebTrailer(data, input)) };
  }
  if ((res.status !== 500 && res.status !== 429) || !type.startsWith("application/json")) return res;
  // Connect unary: the error is the JSON body, and its code sets the HTTP status.
  const chunks: Uint8Array[] = [];
  for await (const chunk of res.body) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const fixed = fixErrorJson(parseJson(body), input);
  if (fixed === undefined) return { ...res, body: createAsyncIterable([body]) };
  const bytes = Buffer.from(JSON.stringify(fixed.json));
  const header = new Headers(res.header);
  header.set("content-length", String(bytes.byteLength));
  return { ...res, status: codeToHttpStatus(fixed.code), header, body: createAsyncIterable([bytes]) };
}

function fixGrpcStatus(headers: Headers, input: DescMessage): void {
  const status = headers.get("grpc-status");
  const message = headers.get("grpc-message");
  if (status === null || message === null) return;
  let decoded: string;
  try {
    decoded = decodeURIComponent(message);
  } catch {
    return;
  }
  const fault = requestFault(Number(status), decoded, input);
  if (fault === undefined) return;
  headers.set("grpc-status", String(fault.code));
  headers.set("grpc-message", encodeURIComponent(fault.message));
}

function fixGrpcWebTrailer(data: Uint8Array, input: DescMessage): Uint8Array {
  const trailer = trailerParse(data);
  fixGrpcStatus(trailer, input);
  return trailerSerialize(trailer);
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"));
  } catch {
    return undefined;
  }
}

/** Connect's error JSON ({code, message, details}) with the client's fault, if it is one. */
function fixErrorJson(json: unknown, input: DescMessage): { json: Record<string, unknown>; code: Code } | undefined {
  if (typeof json !== "object" || json === null || !("code" in json) || !("message" in json)) return undefined;
  if (typeof json.code !== "string" || typeof json.message !== "string") return undefined;
  const code = codeFromString(json.code);
  const fault = code === undefined ? undefined : requestFault(code, json.message, input);
  if (fault === undefined) return undefined;
  return { json: { ...json, code: codeToString(fault.code), message: fault.message }, code: fault.code };
}

/** Replaces the data of each uncompressed envelope with `flags` (connect writes one envelope per chunk). */
async function* mapEnvelopes(body: AsyncIterable<Uint8Array>, flags: number, map: (data: Uint8Array) => Uint8Array): AsyncGenerator<Uint8Array> {
  for await (const chunk of body) {
    const whole = chunk.byteLength >= 5 && chunk[0] === flags && new DataView(chunk.buffer, chunk.byteOffset + 1, 4).getUint32(0) === chunk.byteLength - 5;
    yield whole ? encodeEnvelope(flags, map(chunk.subarray(5))) : chunk;
  }
}
