import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import * as http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { create, type DescMessage, type DescMethodUnary, type Message } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type ServiceImplSpec,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import {
  compressionNegotiate,
  createAsyncIterable,
  createMethodSerializationLookup,
  pipe,
  readAllBytes,
  transformDecompressEnvelope,
  transformParseEnvelope,
  transformSplitEnvelope,
  type Compression,
} from "@connectrpc/connect/protocol";
import * as grpc from "@connectrpc/connect/protocol-grpc";
import * as connect from "@connectrpc/connect/protocol-connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { CallNetwork } from "../telemetry/rpc.js";
import { specEncodeGrpcMessage } from "./grpc-message.js";
import { incompleteMessage, requestFaultError } from "./client-faults.js";

/**
 * A fast path for unary calls in binary encodings over HTTP/2: gRPC
 * (`application/grpc`, `application/grpc+proto`) and Connect unary
 * (`application/proto`). Everything else (HTTP/1.1, JSON, gRPC-Web, GET,
 * compressed requests, streams) goes to connect-node unchanged.
 *
 * Why: a profile of `Get` through connect-node put ~10% of the server's CPU
 * into building a DOMException (every call's linked AbortController is
 * aborted when it ends), ~9% into garbage collection and most of the rest into
 * async-iterable plumbing around one message. Here a call is a function: read
 * the body, decode, run the same interceptors and the same implementation,
 * encode, respond.
 *
 * Why it behaves identically: the interceptors (telemetry, auth, replica
 * guard, store errors) and the service implementation are the ones
 * connect-node runs; content types, timeouts, compression negotiation,
 * (de)serialization, error JSON, trailer status and HTTP status come from
 * connect's own protocol helpers; a body that is not one well-formed
 * envelope goes through connect's own envelope functions, so its error is
 * connect's error. test/fast-unary.test.ts sends the same requests to a server
 * with and without this path and compares the answers.
 */
export interface FastUnaryOptions {
  readonly services: readonly ServiceImplSpec[];
  readonly interceptors: readonly Interceptor[];
  readonly readMaxBytes: number;
  readonly shutdownSignal: AbortSignal;
  /** Counts the calls this path serves (a metric). */
  readonly stats?: { calls: number };
  /** Per-call context values (telemetry's view of the connection), if any. */
  readonly contextValues?: (network: CallNetwork) => ContextValues;
}

/** Handles the stream and returns true, or returns false to leave it to connect-node. */
export type FastStreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** connect-node's defaults (connectNodeAdapter, validateReadWriteMaxBytes), which the slow path uses too. */
const ACCEPT_COMPRESSION: Compression[] = [compressionGzip, compressionBrotli];
const COMPRESS_MIN_BYTES = 1024;
const MAX_TIMEOUT_MS = Number.MAX_SAFE_INTEGER;

type Protocol = "grpc" | "connect";

interface Method {
  readonly spec: Extract<ServiceImplSpec["methods"][string], { kind: "unary" }>;
  readonly method: DescMethodUnary;
  readonly parse: (bytes: Uint8Array) => Message;
  readonly serialize: (message: Message) => Uint8Array;
  readonly parseEnvelope: ReturnType<typeof transformParseEnvelope<Message>>;
}

export function createFastUnary(options: FastUnaryOptions): FastStreamHandler {
  const methods = new Map<string, Method>();
  for (const service of options.services) {
    for (const spec of Object.values(service.methods)) {
      if (spec.kind !== "unary") continue;
      const lookup = createMethodSerializationLookup(spec.method, undefined, undefined, {
        readMaxBytes: options.readMaxBytes,
        writeMaxBytes: 0xffffffff,
      });
      const input = lookup.getI(true);
      const output = lookup.getO(true);
      methods.set(`/${spec.method.parent.typeName}/${spec.method.name}`, {
        spec,
        method: spec.method,
        parse: (bytes) => input.parse(bytes),
        serialize: (message) => output.serialize(message),
        parseEnvelope: transformParseEnvelope<Message>(input),
      });
    }
  }
  // Interceptors wrap the implementation outermost-first, as connect's applyInterceptors does.
  const chain = (method: Method): ((req: UnaryRequest) => Promise<UnaryResponse>) =>
    options.interceptors.reduceRight<(req: UnaryRequest) => Promise<UnaryResponse>>(
      (next, interceptor) => interceptor(next as never) as (req: UnaryRequest) => Promise<UnaryResponse>,
      async (req) => invokeImplementation(method, req),
    );
  const chains = new Map<Method, (req: UnaryRequest) => Promise<UnaryResponse>>();
  for (const method of methods.values()) chains.set(method, chain(method));

  // Calls whose signal exists, so that a shutdown aborts them as connect-node's linked signals do.
  const inFlight = new Set<CallSignal>();
  options.shutdownSignal.addEventListener(
    "abort",
    () => {
      for (const signal of inFlight) signal.abort(options.shutdownSignal.reason);
    },
    { once: true },
  );

  return (stream, headers) => {
    if (headers[":method"] !== "POST") return false;
    const method = methods.get(headers[":path"] ?? "");
    if (method === undefined) return false;
    const protocol = protocolOf(headers);
    if (protocol === undefined) return false;
    if (options.stats !== undefined) options.stats.calls++;
    const call = new FastCall(options, method, chains.get(method)!, stream, headers, protocol, inFlight);
    call.start();
    return true;
  };
}

/** The binary protocols this path serves, from the request's headers; undefined: connect-node's. */
function protocolOf(headers: IncomingHttpHeaders): Protocol | undefined {
  const type = headers["content-type"];
  if (type === "application/grpc" || type === "application/grpc+proto") {
    const encoding = headers["grpc-encoding"];
    return encoding === undefined || encoding === "identity" ? "grpc" : undefined;
  }
  if (type === "application/proto") {
    const encoding = headers["content-encoding"];
    if (encoding !== undefined && encoding !== "identity") return undefined;
    const version = headers["connect-protocol-version"];
    return version === undefined || version === "1" ? "connect" : undefined;
  }
  return undefined;
}

/** Runs the implementation as connect's invokeUnaryImplementation does (normalize the answer, merge the request into the context). */
async function invokeImplementation(method: Method, req: UnaryRequest): Promise<UnaryResponse> {
  const ctx = (req.contextValues as CallContextValues)[CALL_CONTEXT];
  const handlerContext: HandlerContext = {
    method: ctx.method,
    service: req.service,
    get signal() {
      return req.signal;
    },
    timeoutMs: ctx.timeoutMs,
    requestMethod: ctx.requestMethod,
    requestHeader: req.header,
    responseHeader: ctx.responseHeader,
    responseTrailer: ctx.responseTrailer,
    protocolName: ctx.protocolName,
    values: req.contextValues,
    url: ctx.url,
  };
  const answer = await method.spec.impl(req.message as never, handlerContext);
  return {
    stream: false,
    service: method.method.parent,
    method: method.method,
    message: create(method.method.output as DescMessage, answer as never),
    header: ctx.responseHeader,
    trailer: ctx.responseTrailer,
  } as UnaryResponse;
}

/** The handler context travels to the innermost function through the request's context values. */
const CALL_CONTEXT = Symbol("fast-unary call context");
type CallContextValues = ContextValues & { [CALL_CONTEXT]: HandlerContext };

/**
 * A call's AbortSignal, made when first asked for: most calls (a Get without
 * min_revision) never look at it, and an AbortController per call, aborted
 * at its end, was a tenth of connect-node's time per call.
 */
class CallSignal {
  private controller: AbortController | undefined;
  private reason: unknown;
  private deadlineAt: number | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private released = false;

  constructor(
    private readonly shutdownSignal: AbortSignal,
    private readonly inFlight: Set<CallSignal>,
  ) {}

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = (this.controller = new AbortController());
      if (this.shutdownSignal.aborted) this.reason ??= this.shutdownSignal.reason;
      if (this.reason !== undefined) {
        controller.abort(this.reason);
      } else if (!this.released) {
        this.inFlight.add(this);
        if (this.deadlineAt !== undefined) {
          this.deadline = setTimeout(() => this.abort(deadlineExceeded()), Math.max(0, this.deadlineAt - Date.now()));
        }
      }
    }
    return this.controller.signal;
  }

  /** The deadline aborts the signal, if anything is listening by then. */
  setDeadline(at: number): void {
    this.deadlineAt = at;
  }

  abort(reason: unknown): void {
    this.reason ??= reason;
    this.release();
    this.controller?.abort(this.reason);
  }

  /** The call is over: nothing aborts this signal any more. */
  release(): void {
    this.released = true;
    clearTimeout(this.deadline);
    this.inFlight.delete(this);
  }
}

function deadlineExceeded(): ConnectError {
  return new ConnectError("the operation timed out", Code.DeadlineExceeded);
}

class FastCall {
  private readonly signal: CallSignal;
  private readonly chunks: Buffer[] = [];
  private received = 0;
  private responded = false;

  constructor(
    private readonly options: FastUnaryOptions,
    private readonly method: Method,
    private readonly chain: (req: UnaryRequest) => Promise<UnaryResponse>,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    private readonly protocol: Protocol,
    private readonly inFlight: Set<CallSignal>,
  ) {
    this.signal = new CallSignal(options.shutdownSignal, inFlight);
  }

  start(): void {
    const { stream } = this;
    stream.once("close", () => {
      if (!this.responded) this.signal.abort(new ConnectError("the client closed the stream before the answer", Code.Canceled));
      this.signal.release();
    });
    stream.on("error", () => {});
    // connect-node checks a declared content-length against the limit before reading.
    const limit = this.protocol === "grpc" ? this.options.readMaxBytes + 5 : this.options.readMaxBytes;
    stream.on("data", (chunk: Buffer) => {
      if (this.received > limit) return;
      this.received += chunk.length;
      this.chunks.push(chunk);
      // Over the limit: stop keeping bytes and answer now (the listener discards the rest).
      if (this.received > limit) void this.run();
    });
    stream.once("end", () => {
      if (this.received <= limit) void this.run();
    });
  }

  private async run(): Promise<void> {
    const ctx = this.context();
    let message: Message | undefined;
    let error: ConnectError | undefined;
    const compression = this.compression();
    try {
      if (compression.error) throw compression.error;
      if (ctx.timeoutError !== undefined) throw ctx.timeoutError;
      const input = await this.input().catch((e: unknown) => Promise.reject(e instanceof ConnectError ? requestFaultError(e, this.method.method.input) : e));
      const signal = this.signal;
      const req: UnaryRequest = {
        stream: false,
        service: this.method.method.parent,
        method: this.method.method,
        requestMethod: "POST",
        url: ctx.context.url,
        get signal() {
          return signal.signal;
        },
        header: ctx.context.requestHeader,
        contextValues: ctx.context.values,
        message: input as never,
      };
      const res = await this.chain(req);
      copyHeaders(res.header, ctx.context.responseHeader);
      copyHeaders(res.trailer, ctx.context.responseTrailer);
      message = res.message;
    } catch (e) {
      error = e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
    }
    this.responded = true;
    this.signal.release();
    if (this.stream.destroyed || this.stream.closed) return;
    const body = message !== undefined && error === undefined ? this.method.serialize(message) : undefined;
    if (this.protocol === "grpc") await this.respondGrpc(ctx.context, compression.response, body, error);
    else await this.respondConnect(ctx.context, compression.response, body, error);
  }

  /** The request message, from a well-formed body directly, else through connect's own functions (for connect's errors). */
  private async input(): Promise<Message> {
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const max = this.options.readMaxBytes;
    if (this.protocol === "connect") {
      const declared = this.headers["content-length"];
      if (body.length > max || (declared !== undefined && Number(declared) > max)) {
        await readAllBytes(createAsyncIterable([body]), max, declared ?? null);
      }
      return this.method.parse(body);
    }
    if (body.length >= 5 && body[0] === 0 && body.readUInt32BE(1) === body.length - 5 && body.length - 5 <= max) {
      return this.method.parse(body.subarray(5));
    }
    const messages: Message[] = [];
    const it = pipe(
      createAsyncIterable([new Uint8Array(body.buffer, body.byteOffset, body.byteLength)]),
      transformSplitEnvelope(max),
      transformDecompressEnvelope(null, max),
      this.method.parseEnvelope,
    );
    for await (const m of it) messages.push(m);
    // connect's decoder forgets a message whose prefix came but none of its bytes.
    const incomplete = incompleteMessage(body);
    if (incomplete !== undefined) throw incomplete;
    // The messages of connect's ensureSingle, for the same cases.
    if (messages.length === 0) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
    if (messages.length > 1) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
    return messages[0];
  }

  private compression() {
    return this.protocol === "grpc"
      ? compressionNegotiate(ACCEPT_COMPRESSION, header(this.headers, "grpc-encoding"), header(this.headers, "grpc-accept-encoding"), "grpc-accept-encoding")
      : compressionNegotiate(ACCEPT_COMPRESSION, header(this.headers, "content-encoding"), header(this.headers, "accept-encoding"), "accept-encoding");
  }

  private context(): { context: HandlerContext; timeoutError: ConnectError | undefined } {
    const { headers, protocol } = this;
    const timeout =
      protocol === "grpc"
        ? grpc.parseTimeout(header(headers, "grpc-timeout"), MAX_TIMEOUT_MS)
        : connect.parseTimeout(header(headers, "connect-timeout-ms"), MAX_TIMEOUT_MS);
    let timeoutMs: () => number | undefined = () => undefined;
    if (timeout.timeoutMs !== undefined) {
      const at = Date.now() + timeout.timeoutMs;
      timeoutMs = () => at - Date.now();
      this.signal.setDeadline(at);
    }
    const socket = this.stream.session?.socket;
    const authority = header(headers, ":authority") ?? header(headers, "host") ?? undefined;
    const encrypted = socket !== undefined && (socket as TLSSocket).encrypted === true;
    const network: CallNetwork = {
      httpVersion: "2.0",
      authority,
      localAddress: socket?.localAddress,
      localPort: socket?.localPort,
      remoteAddress: socket?.remoteAddress,
      remotePort: socket?.remotePort,
    };
    const values = (this.options.contextValues?.(network) ?? createContextValues()) as CallContextValues;
    const signal = this.signal;
    const context: HandlerContext = {
      method: this.method.method,
      service: this.method.method.parent,
      get signal() {
        return signal.signal;
      },
      timeoutMs,
      requestMethod: "POST",
      requestHeader: webHeaders(headers),
      responseHeader: new Headers({ "content-type": protocol === "grpc" ? grpc.contentTypeProto : connect.contentTypeUnaryProto }),
      responseTrailer: protocol === "grpc" ? new Headers({ "grpc-status": grpc.grpcStatusOk }) : new Headers(),
      protocolName: protocol,
      values,
      url: `${encrypted ? "https" : "http"}://${authority ?? ""}${headers[":path"] ?? ""}`,
    };
    values[CALL_CONTEXT] = context;
    return { context, timeoutError: timeout.error };
  }

  /** As connect's gRPC handler: headers, then the message (if any) in one envelope, then the status in trailers. */
  private async respondGrpc(ctx: HandlerContext, compression: Compression | null, body: Uint8Array | undefined, error: ConnectError | undefined): Promise<void> {
    if (compression !== null) ctx.responseHeader.set("grpc-encoding", compression.name);
    let frame: Buffer | undefined;
    if (body !== undefined) {
      let flags = 0;
      if (compression !== null && body.byteLength >= COMPRESS_MIN_BYTES) {
        body = await compression.compress(body);
        flags = 1;
      }
      frame = Buffer.allocUnsafe(5 + body.byteLength);
      frame[0] = flags;
      frame.writeUInt32BE(body.byteLength, 1);
      frame.set(body, 5);
    }
    if (error !== undefined) grpc.setTrailerStatus(ctx.responseTrailer, error);
    const trailers = nodeHeaders(ctx.responseTrailer);
    const message = trailers["grpc-message"];
    if (typeof message === "string") trailers["grpc-message"] = specEncodeGrpcMessage(message);
    if (this.stream.destroyed || this.stream.closed) return;
    try {
      this.stream.respond({ ":status": 200, ...nodeHeaders(ctx.responseHeader) }, { waitForTrailers: true });
      this.stream.once("wantTrailers", () => this.stream.sendTrailers(trailers));
      this.stream.end(frame);
    } catch {
      // The stream was reset while we answered: nothing to tell anyone.
    }
  }

  /** As connect's unary handler: the message or the error as JSON, trailers as `trailer-` headers, a content-length. */
  private async respondConnect(ctx: HandlerContext, compression: Compression | null, body: Uint8Array | undefined, error: ConnectError | undefined): Promise<void> {
    let status = 200;
    if (error !== undefined) {
      status = connect.codeToHttpStatus(error.code);
      ctx.responseHeader.set("content-type", connect.contentTypeUnaryJson);
      error.metadata.forEach((value, key) => ctx.responseHeader.set(key, value));
      body = connect.errorToJsonBytes(error, {});
    }
    let out = body!;
    if (compression !== null && out.byteLength >= COMPRESS_MIN_BYTES) {
      out = await compression.compress(out);
      ctx.responseHeader.set("content-encoding", compression.name);
    }
    const header = connect.trailerMux(ctx.responseHeader, ctx.responseTrailer);
    header.set("content-length", out.byteLength.toString(10));
    if (this.stream.destroyed || this.stream.closed) return;
    try {
      this.stream.respond({ ":status": status, ...nodeHeaders(header) });
      this.stream.end(out);
    } catch {
      // The stream was reset while we answered.
    }
  }
}

function header(headers: IncomingHttpHeaders, name: string): string | null {
  const v = headers[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
}

/** Request headers as connect-node presents them (nodeHeaderToWebHeader): no pseudo-headers. */
function webHeaders(headers: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const key in headers) {
    if (key.charCodeAt(0) === 58 /* ":" */) continue;
    const v = headers[key];
    if (v === undefined) continue;
    if (typeof v === "string") out.append(key, v);
    else for (const e of v) out.append(key, e);
  }
  return out;
}

/** Response headers for node:http2 (connect-node's webHeaderToNodeHeaders keeps repeated values as arrays). */
function nodeHeaders(headers: Headers): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  headers.forEach((value, key) => {
    const prev = out[key];
    if (prev === undefined) out[key] = value;
    else out[key] = Array.isArray(prev) ? [...prev, value] : [String(prev), value];
  });
  return out;
}

function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  to.forEach((_, key) => to.delete(key));
  from.forEach((value, key) => to.set(key, value));
}
