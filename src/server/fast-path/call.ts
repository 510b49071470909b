import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import type { DescMethod, DescService, Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, type HandlerContext, type Interceptor, type ServiceImplSpec, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import {
  compressionNegotiate,
  createAsyncIterable,
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
import type { CallNetwork } from "../../telemetry/rpc.js";
import { incompleteMessage } from "../client-faults.js";
import { CallHeaders } from "./call-headers.js";
import { CallValues } from "../../context-values.js";
import { envelopeInPlace } from "../../protobuf-wire.js";

/** What the fast path needs of the server: the same implementations and interceptors connect-node runs. */
export interface FastPathOptions {
  readonly services: readonly ServiceImplSpec[];
  readonly interceptors: readonly Interceptor[];
  readonly readMaxBytes: number;
  readonly shutdownSignal: AbortSignal;
  /** Counts the calls this path serves (a metric). */
  readonly stats?: { calls: number };
  /** Per-call context values (telemetry's view of the connection), if any. */
  readonly contextValues?: (network: CallNetwork) => ContextValues;
}

/**
 * What a fast call uses of its HTTP/2 stream: node:http2's ServerHttp2Stream
 * has it, and so does our own engine's H2Stream (src/server/h2).
 */
export interface CallStream {
  readonly destroyed: boolean;
  readonly closed: boolean;
  readonly session?: { readonly socket?: { readonly localAddress?: string; readonly localPort?: number; readonly remoteAddress?: string; readonly remotePort?: number } } | undefined;
  respond(headers: OutgoingHttpHeaders, options?: { waitForTrailers?: boolean }): void;
  write(data: Uint8Array): boolean;
  end(data?: Uint8Array): unknown;
  sendTrailers(headers: OutgoingHttpHeaders): void;
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  once(event: "close" | "end" | "drain" | "wantTrailers", listener: () => void): unknown;
  off(event: "data", listener: (chunk: Buffer) => void): unknown;
  off(event: "drain", listener: () => void): unknown;
}

/**
 * The wire formats served here: gRPC (unary and server streaming), Connect
 * unary and Connect streaming, all in binary protobuf.
 */
export type Protocol = "grpc" | "connect" | "connect-stream";

/** connect-node's defaults (connectNodeAdapter, validateReadWriteMaxBytes), which the slow path uses too. */
export const ACCEPT_COMPRESSION: Compression[] = [compressionGzip, compressionBrotli];
export const COMPRESS_MIN_BYTES = 1024;
const MAX_TIMEOUT_MS = Number.MAX_SAFE_INTEGER;

/** A method this path serves, with connect's own serialization for it. */
export interface FastMethod {
  readonly desc: DescMethod;
  readonly parse: (bytes: Uint8Array) => Message;
  readonly serialize: (message: Message) => Uint8Array;
  readonly parseEnvelope: ReturnType<typeof transformParseEnvelope<Message>>;
}

/**
 * A call's AbortSignal, made when first asked for: most unary calls (a Get
 * without min_revision) never look at it, and an AbortController per call,
 * aborted at its end, was a tenth of connect-node's time per call.
 */
export class CallSignal {
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

/** The handler context travels to the innermost function through the request's context values. */
export const CALL_CONTEXT = Symbol("fast-path call context");
export type CallContextValues = ContextValues & { [CALL_CONTEXT]: HandlerContext };

/**
 * A HandlerContext as a class: an object literal with a getter and eleven
 * fields became a dictionary-mode object, and a Watch keeps two of them for
 * its whole life.
 */
class FastHandlerContext implements HandlerContext {
  constructor(
    readonly method: DescMethod,
    readonly service: DescService,
    /** Whatever holds the call's signal (a CallSignal, or the intercepted request): read when asked. */
    private readonly signalSource: { readonly signal: AbortSignal },
    readonly timeoutMs: () => number | undefined,
    readonly requestMethod: string,
    readonly requestHeader: Headers,
    readonly responseHeader: Headers,
    readonly responseTrailer: Headers,
    readonly protocolName: string,
    readonly values: ContextValues,
    readonly url: string,
  ) {}

  get signal(): AbortSignal {
    return this.signalSource.signal;
  }
}

/**
 * The context a handler gets, as connect's mergeRequest makes it from the
 * (possibly intercepted) request. `eagerSignal`: take the signal now rather
 * than keep the request to ask it later; a stream's context lives as long as
 * the stream, and the request would keep its message iterables (generators
 * of the interceptors) alive with it, ~500 bytes per Watch.
 */
export function handlerContext(req: { service: HandlerContext["service"]; header: Headers; signal: AbortSignal; contextValues: ContextValues }, eagerSignal = false): HandlerContext {
  const ctx = (req.contextValues as CallContextValues)[CALL_CONTEXT];
  return new FastHandlerContext(
    ctx.method,
    req.service,
    eagerSignal ? { signal: req.signal } : req,
    ctx.timeoutMs,
    ctx.requestMethod,
    req.header,
    ctx.responseHeader,
    ctx.responseTrailer,
    ctx.protocolName,
    req.contextValues,
    ctx.url,
  );
}

/**
 * What every fast call does before its method's own work: read the request
 * body (bounded), decode it as connect would, and build the handler context.
 */
export abstract class FastCall implements CallNetwork {
  protected readonly signal: CallSignal;
  /** The request's :authority (or host), kept for telemetry's view of the call's connection. */
  private requestAuthority: string | undefined;
  private readonly chunks: Buffer[] = [];
  private received = 0;
  /** Set once the answer is complete: a close before it is the client's cancellation. */
  protected done = false;

  constructor(
    protected readonly options: FastPathOptions,
    protected readonly method: FastMethod,
    protected readonly stream: CallStream,
    protected headers: IncomingHttpHeaders,
    protected readonly protocol: Protocol,
    inFlight: Set<CallSignal>,
  ) {
    this.signal = new CallSignal(options.shutdownSignal, inFlight);
  }

  start(): void {
    const { stream } = this;
    stream.once("close", () => {
      if (!this.done) this.signal.abort(new ConnectError("the client closed the stream", Code.Canceled));
      this.signal.release();
      this.closed();
    });
    stream.on("error", () => {});
    const limit = this.protocol === "connect" ? this.options.readMaxBytes : this.options.readMaxBytes + 5;
    const onData = (chunk: Buffer) => {
      if (this.received > limit) return;
      this.received += chunk.length;
      this.chunks.push(chunk);
      // Over the limit: stop keeping bytes and answer now (the listener discards the rest).
      if (this.received > limit) void this.run();
    };
    stream.on("data", onData);
    stream.once("end", () => {
      // Nothing more comes; a Watch would otherwise keep the listener for its life.
      stream.off("data", onData);
      if (this.received <= limit) void this.run();
    });
  }

  /**
   * Forgets the request's headers and body once they are parsed and the
   * handler context is made: a Watch would otherwise keep them (a
   * dictionary-mode object from Node's parser) for its whole life.
   */
  protected releaseRequest(): void {
    this.headers = RELEASED_HEADERS;
    this.chunks.length = 0;
  }

  // --- CallNetwork: the addresses are read when a sampled span asks (each read is a system call) ---

  get httpVersion(): string {
    return "2.0";
  }

  get authority(): string | undefined {
    return this.requestAuthority;
  }

  private get socket(): NonNullable<CallStream["session"]>["socket"] {
    return this.stream.session?.socket;
  }

  get localAddress(): string | undefined {
    return this.socket?.localAddress;
  }

  get localPort(): number | undefined {
    return this.socket?.localPort;
  }

  get remoteAddress(): string | undefined {
    return this.socket?.remoteAddress;
  }

  get remotePort(): number | undefined {
    return this.socket?.remotePort;
  }

  /** Serves the call once the request body is in (or over the limit). */
  protected abstract run(): Promise<void>;

  /** The stream closed (answered, reset or gone). */
  protected closed(): void {}

  /** True when nothing more can be written. */
  protected get gone(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  /**
   * The request's messages: from a well-formed body directly, else through
   * connect's own envelope functions, so that a malformed body gets connect's
   * error (and client-faults.ts's, for what connect misses).
   */
  protected async messages(): Promise<Message[]> {
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const max = this.options.readMaxBytes;
    if (this.protocol === "connect") {
      const declared = this.headers["content-length"];
      if (body.length > max || (declared !== undefined && Number(declared) > max)) {
        await readAllBytes(createAsyncIterable([body]), max, declared ?? null);
      }
      return [this.method.parse(body)];
    }
    if (body.length >= 5 && body[0] === 0 && body.readUInt32BE(1) === body.length - 5 && body.length - 5 <= max) {
      return [this.method.parse(body.subarray(5))];
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
    return messages;
  }

  /**
   * The request the interceptors see. Its signal is a getter, made on first
   * use (so nothing may spread this object before the chain runs).
   */
  protected request<R extends UnaryRequest | StreamRequest>(context: HandlerContext, stream: R["stream"], message: R["message"]): R {
    const signal = this.signal;
    return {
      stream,
      service: this.method.desc.parent,
      method: this.method.desc,
      requestMethod: "POST",
      url: context.url,
      get signal() {
        return signal.signal;
      },
      header: context.requestHeader,
      contextValues: context.values,
      message,
    } as R;
  }

  /** Request and response compression, negotiated by connect's own function with the protocol's headers. */
  protected compression(): ReturnType<typeof compressionNegotiate> {
    const [encoding, accept] = ENCODING_HEADERS[this.protocol];
    return compressionNegotiate(ACCEPT_COMPRESSION, header(this.headers, encoding), header(this.headers, accept), accept);
  }

  protected context(responseContentType: string, responseTrailer: HeadersInit | undefined): { context: HandlerContext; timeoutError: ConnectError | undefined } {
    const { headers, protocol } = this;
    const timeout =
      protocol === "grpc"
        ? grpc.parseTimeout(header(headers, "grpc-timeout"), MAX_TIMEOUT_MS)
        : connect.parseTimeout(header(headers, "connect-timeout-ms"), MAX_TIMEOUT_MS);
    let timeoutMs = NO_DEADLINE;
    if (timeout.timeoutMs !== undefined) {
      const at = Date.now() + timeout.timeoutMs;
      timeoutMs = () => at - Date.now();
      this.signal.setDeadline(at);
    }
    this.requestAuthority = header(headers, ":authority") ?? header(headers, "host") ?? undefined;
    // The call is its own CallNetwork (no object per call): only tracing reads it, for sampled calls.
    const values = (this.options.contextValues === undefined ? new CallValues() : this.options.contextValues(this)) as CallContextValues;
    const context = new FastHandlerContext(
      this.method.desc,
      this.method.desc.parent,
      this.signal,
      timeoutMs,
      "POST",
      CallHeaders.fromNode(headers),
      new CallHeaders({ "content-type": responseContentType }),
      new CallHeaders(responseTrailer),
      protocol === "grpc" ? "grpc" : "connect",
      values,
      // HTTP/2 names the scheme in the request (connect-node asks the socket; they agree).
      `${header(headers, ":scheme") ?? "http"}://${this.requestAuthority ?? ""}${headers[":path"] ?? ""}`,
    );
    values[CALL_CONTEXT] = context;
    return { context, timeoutError: timeout.error };
  }
}

const RELEASED_HEADERS: IncomingHttpHeaders = Object.freeze({});
const NO_DEADLINE = (): number | undefined => undefined;

/** The request encoding header and the accept-encoding header of each protocol. */
const ENCODING_HEADERS: Record<Protocol, readonly [string, string]> = {
  grpc: ["grpc-encoding", "grpc-accept-encoding"],
  connect: ["content-encoding", "accept-encoding"],
  "connect-stream": ["connect-content-encoding", "connect-accept-encoding"],
};

/** An envelope: flags, length, message (compressed when negotiated and large enough, as connect does). */
export async function envelope(flags: number, data: Uint8Array, compression: Compression | null): Promise<Buffer> {
  if (compression !== null && data.byteLength >= COMPRESS_MIN_BYTES) return envelopeSync(flags | 0b01, await compression.compress(data));
  return envelopeSync(flags, data);
}

/** An envelope of `data` as it is: in place when its encoder left room (entries.ts), else a copy. */
export function envelopeSync(flags: number, data: Uint8Array): Buffer {
  const inPlace = envelopeInPlace(flags, data);
  if (inPlace !== undefined) return inPlace;
  const frame = Buffer.allocUnsafe(5 + data.byteLength);
  frame[0] = flags;
  frame.writeUInt32BE(data.byteLength, 1);
  frame.set(data, 5);
  return frame;
}

/** A ConnectError as connect's handlers make one of anything thrown. */
export function asConnectError(e: unknown): ConnectError {
  return e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}

export function header(headers: IncomingHttpHeaders, name: string): string | null {
  const v = headers[name];
  return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
}

/** Response headers for node:http2 (connect-node's webHeaderToNodeHeaders keeps repeated values as arrays). */
export function nodeHeaders(headers: Headers): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  headers.forEach((value, key) => {
    const prev = out[key];
    if (prev === undefined) out[key] = value;
    else out[key] = Array.isArray(prev) ? [...prev, value] : [String(prev), value];
  });
  return out;
}

export function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  to.forEach((_, key) => to.delete(key));
  from.forEach((value, key) => to.set(key, value));
}
