import { performance } from "node:perf_hooks";
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextKey,
  type ContextValues,
  type Interceptor,
  type StreamRequest,
  type UnaryRequest,
} from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";

/** The Node.js request (http or http2) of a call. */
type NodeServerRequest = Parameters<NonNullable<ConnectNodeAdapterOptions["contextValues"]>>[0];
import { context, SpanStatusCode, type Attributes, type Context, type Span } from "@opentelemetry/api";
import { pullIterator, type PullIterator } from "../pull-iterator.js";
import { debugEnabled, logLine } from "../log.js";
import { CallValues } from "../context-values.js";
import type { CallDurations, DurationSeries } from "./call-durations.js";
import type { ServerSpans } from "./server-spans.js";

/**
 * Telemetry of every RPC, as a Connect interceptor (first in the list, so it
 * sees the codes that auth and the store's errors produce):
 *
 * - always: rpc.server.call.duration, by rpc.system, rpc.service, rpc.method
 *   and the status code attribute of the protocol;
 * - with a tracer (tracing configured): a SERVER span per call that continues
 *   the caller's W3C traceparent, with the attributes of the OpenTelemetry RPC
 *   semantic conventions. It is the active span while the handler runs
 *   synchronously (sync-context.ts: no AsyncLocalStorage), and its context
 *   travels in the call's context values (TRACE_CONTEXT) to spans started
 *   after an await. A stream gets one span for its whole life, with the count
 *   of messages each way and the reason it ended.
 */
export interface RpcTelemetryOptions {
  readonly callDuration: CallDurations;
  /** Set when tracing is configured. */
  readonly spans?: ServerSpans;
  /** True once the server is shutting down (streams then end "server_shutdown"). */
  readonly shuttingDown?: () => boolean;
}

/** Semantic-convention attribute names (RPC conventions, https://opentelemetry.io/docs/specs/semconv/rpc/). */
const RPC_SYSTEM = "rpc.system";
const RPC_SERVICE = "rpc.service";
const RPC_METHOD = "rpc.method";
const GRPC_STATUS = "rpc.grpc.status_code";
const CONNECT_ERROR = "rpc.connect_rpc.error_code";

/** Our stream attributes. */
export const ATTR_MESSAGES_SENT = "ripplecache.stream.messages_sent";
export const ATTR_MESSAGES_RECEIVED = "ripplecache.stream.messages_received";
export const ATTR_END_REASON = "ripplecache.stream.end_reason";

/** Codes for which a server span's status is ERROR (the others are the caller's doing). */
const SERVER_ERRORS = new Set([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal, Code.Unavailable, Code.DataLoss]);

/** What a call knows of its connection: the span's network attributes. */
export interface CallNetwork {
  readonly httpVersion: string;
  readonly authority: string | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
}

const CALL_NETWORK = createContextKey<CallNetwork | undefined>(undefined, { description: "the connection of the call" });

/**
 * The call's trace context (its server span), for spans the handler starts
 * after an await: the active context lasts only for the synchronous part of a
 * call (sync-context.ts). Unset when tracing is off.
 */
export const TRACE_CONTEXT = createContextKey<Context | undefined>(undefined, { description: "the trace context of the call" });

/** Context values carrying a call's connection, where the tracing interceptor reads it. Installed only when tracing is on. */
export function networkContextValues(network: CallNetwork): ContextValues {
  return new CallValues().set(CALL_NETWORK, network);
}

/** For connectNodeAdapter's `contextValues`: the connection of a Node request. */
export function nodeRequestContextValues(req: NodeServerRequest): ContextValues {
  return networkContextValues(callNetwork(req.httpVersion, (req.headers[":authority"] as string | undefined) ?? req.headers.host, req.socket));
}

type NetworkSocket = { readonly localAddress?: string; readonly localPort?: number; readonly remoteAddress?: string; readonly remotePort?: number };

/** A call's connection, its addresses read when a sampled span asks (each read is a system call). */
export function callNetwork(httpVersion: string, authority: string | undefined, socket: NetworkSocket | undefined): CallNetwork {
  return new LazyCallNetwork(httpVersion, authority, socket);
}

/** A class, not an object literal with getters: that made a dictionary-mode object per traced call (2% of a Get). */
class LazyCallNetwork implements CallNetwork {
  constructor(
    readonly httpVersion: string,
    readonly authority: string | undefined,
    private readonly socket: NetworkSocket | undefined,
  ) {}

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
}

type System = "grpc" | "connect_rpc";

/** gRPC and gRPC-Web report gRPC status codes; everything else here is the Connect protocol. */
function systemOf(req: UnaryRequest | StreamRequest): System {
  const type = req.header.get("content-type");
  return type !== null && type.startsWith("application/grpc") ? "grpc" : "connect_rpc";
}

/** Codes 0 (OK, for no error) to 16, per system: the index of a call's series among its method's. */
const CODES = 17;

/**
 * The duration series of a (system, method, code), found by the method's
 * descriptor and two small integers: no string is built per call.
 */
function durationSeries(durations: CallDurations, desc: DescMethod, system: System, service: string, method: string, code: Code | undefined): DurationSeries {
  const all = durations.slotsOf(desc);
  const i = (system === "grpc" ? 0 : CODES) + (code ?? 0);
  return (all[i] ??= durations.seriesOf(`${system}/${service}/${method}/${code ?? ""}`, () => ({
    [RPC_SYSTEM]: system,
    [RPC_SERVICE]: service,
    [RPC_METHOD]: method,
    ...codeAttribute(system, code),
  })));
}

/** rpc.grpc.status_code (always, 0 = OK) for gRPC; rpc.connect_rpc.error_code (on errors only) for Connect. */
function codeAttribute(system: System, code: Code | undefined): Attributes {
  if (system === "grpc") return { [GRPC_STATUS]: code ?? 0 };
  return code === undefined ? {} : { [CONNECT_ERROR]: codeToString(code) };
}

type EndReason = "completed" | "cancelled" | "deadline_exceeded" | "server_shutdown" | "error";

/** One call's telemetry, ended exactly once. */
class Call {
  private readonly started = performance.now();
  private ended = false;
  sent = 0;
  received = 0;

  constructor(
    private readonly options: RpcTelemetryOptions,
    private readonly system: System,
    private readonly desc: DescMethod,
    private readonly service: string,
    private readonly method: string,
    readonly span: Span | undefined,
    /** The call's trace context (tracing on), for its log line's trace ids. */
    private readonly ctx: Context | undefined,
    private readonly stream: boolean,
  ) {}

  end(error: unknown, reason?: EndReason): void {
    if (this.ended) return;
    this.ended = true;
    const code = error === undefined ? undefined : ConnectError.from(error).code;
    const now = performance.now();
    durationSeries(this.options.callDuration, this.desc, this.system, this.service, this.method, code).record((now - this.started) / 1000);
    const span = this.span;
    if (debugEnabled()) this.log(code, reason);
    if (span === undefined) return;
    // Attribute by attribute: an object per call to carry them would be garbage at once.
    if (this.system === "grpc") span.setAttribute(GRPC_STATUS, code ?? 0);
    else if (code !== undefined) span.setAttribute(CONNECT_ERROR, codeToString(code));
    if (this.stream) {
      span.setAttribute(ATTR_MESSAGES_SENT, this.sent);
      span.setAttribute(ATTR_MESSAGES_RECEIVED, this.received);
      span.setAttribute(ATTR_END_REASON, reason ?? this.reasonOf(code));
    }
    if (code !== undefined) {
      const message = ConnectError.from(error).rawMessage;
      if (SERVER_ERRORS.has(code)) span.setStatus({ code: SpanStatusCode.ERROR, message });
      span.setAttribute("error.type", codeToString(code));
    }
    this.options.spans?.end(span, now);
  }

  /** The debug line of the call (no keys, no values), inside its span so that it carries the trace ids. */
  private log(code: Code | undefined, reason: EndReason | undefined): void {
    const fields: Record<string, unknown> = {
      service: this.service,
      method: this.method,
      code: code === undefined ? "ok" : codeToString(code),
      duration_ms: Math.round((performance.now() - this.started) * 1000) / 1000,
    };
    if (this.stream) Object.assign(fields, { messages_sent: this.sent, messages_received: this.received, end_reason: reason ?? this.reasonOf(code) });
    if (this.ctx === undefined) logLine("debug", "rpc", fields);
    else context.with(this.ctx, () => logLine("debug", "rpc", fields));
  }

  private reasonOf(code: Code | undefined): EndReason {
    switch (code) {
      case undefined:
        return "completed";
      case Code.Canceled:
        return "cancelled";
      case Code.DeadlineExceeded:
        return "deadline_exceeded";
      case Code.Unavailable:
        return this.options.shuttingDown?.() ? "server_shutdown" : "error";
      default:
        return "error";
    }
  }
}

export function rpcTelemetry(options: RpcTelemetryOptions): Interceptor {
  const spans = options.spans;
  return (next) => async (req) => {
    const system = systemOf(req);
    const service = req.service.typeName;
    const method = req.method.name;
    const streaming = req.stream;
    let span: Span | undefined;
    let ctx: Context | undefined;
    if (spans !== undefined) {
      ctx = spans.start(spanName(req.method), req.header);
      span = spans.recording(ctx);
      // Unsampled calls have no span to fill in.
      if (span !== undefined) setSpanAttributes(span, req, system, service, method);
      req.contextValues.set(TRACE_CONTEXT, ctx);
    }
    const call = new Call(options, system, req.method, service, method, span, ctx, streaming);
    if (req.stream) req = { ...req, message: counted(req.message, () => call.received++) };
    if (streaming) {
      // A backstop: connect-node aborts the signal when the call is over, so a
      // stream whose iterator was dropped without return() still ends.
      endOnAbort(req.signal, call);
    }
    try {
      const res = await (ctx === undefined || spans === undefined ? next(req) : spans.run(ctx, next, req));
      if (!res.stream) {
        if (!req.stream) call.received = 1;
        call.sent = 1;
        call.end(undefined);
        return res;
      }
      return { ...res, message: outgoing(res.message, call, ctx) };
    } catch (err) {
      call.end(err);
      throw err;
    }
  };
}

const spanNames = new WeakMap<DescMethod, string>();
/** The method of the last call, and its span name: calls in a row are mostly of one method. */
let lastMethod: DescMethod | undefined;
let lastSpanName = "";

/** "package.Service/Method", the RPC conventions' span name, made once per method. */
function spanName(desc: DescMethod): string {
  if (desc === lastMethod) return lastSpanName;
  let name = spanNames.get(desc);
  if (name === undefined) spanNames.set(desc, (name = `${desc.parent.typeName}/${desc.name}`));
  lastMethod = desc;
  lastSpanName = name;
  return name;
}

/**
 * Ends `call` once `signal` aborts. A function of its own: a closure made in
 * the interceptor would share its scope, which holds the request, and keep
 * the request's message iterables alive for the stream's whole life.
 */
function endOnAbort(signal: AbortSignal, call: Call): void {
  signal.addEventListener("abort", () => setImmediate(() => call.end(signal.reason ?? new ConnectError("the call ended", Code.Canceled))), { once: true });
}

/** The attributes a server span starts with. */
function setSpanAttributes(span: Span, req: UnaryRequest | StreamRequest, system: System, service: string, method: string): void {
  span.setAttribute(RPC_SYSTEM, system);
  span.setAttribute(RPC_SERVICE, service);
  span.setAttribute(RPC_METHOD, method);
  span.setAttribute("network.protocol.name", "http");
  span.setAttribute("network.transport", "tcp");
  const network = req.contextValues.get(CALL_NETWORK);
  if (network === undefined) return;
  span.setAttribute("network.protocol.version", network.httpVersion === "2.0" ? "2" : network.httpVersion);
  const server = network.authority === undefined ? undefined : serverOf(network.authority);
  setIfDefined(span, "server.address", server?.host ?? network.localAddress);
  setIfDefined(span, "server.port", server?.port ?? network.localPort);
  if (network.remoteAddress !== undefined) {
    span.setAttribute("client.address", network.remoteAddress);
    setIfDefined(span, "client.port", network.remotePort);
  }
}

function setIfDefined(span: Span, key: string, value: string | number | undefined): void {
  if (value !== undefined) span.setAttribute(key, value);
}

/** The last authority parsed: a server's calls nearly all name the same one. */
let lastAuthority = "";
let lastServer: { host: string; port: number | undefined } = { host: "", port: undefined };

function serverOf(authority: string): { host: string; port: number | undefined } {
  if (authority !== lastAuthority) {
    lastServer = parseAuthority(authority);
    lastAuthority = authority;
  }
  return lastServer;
}

/** host and port of an HTTP authority ("example:7420", "[::1]:7420", "example"). */
export function parseAuthority(authority: string): { host: string; port: number | undefined } {
  const m = /^(\[[^\]]*\]|[^:]*)(?::([0-9]+))?$/.exec(authority.trim());
  if (m === null) return { host: authority, port: undefined };
  const host = m[1].startsWith("[") ? m[1].slice(1, -1) : m[1];
  return { host, port: m[2] === undefined ? undefined : Number(m[2]) };
}

function counted<T>(source: AsyncIterable<T>, onMessage: () => void): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = source[Symbol.asyncIterator]();
      return {
        async next() {
          const r = await it.next();
          if (!r.done) onMessage();
          return r;
        },
        return: it.return === undefined ? undefined : (value?: unknown) => it.return!(value as never),
      };
    },
  };
}

/**
 * The response messages of a stream: counts them, runs the handler inside the
 * call's context (an async generator's body runs within its caller's next()),
 * and ends the call when the handler finishes, fails, or is stopped.
 */
function outgoing<T>(source: AsyncIterable<T>, call: Call, ctx: Context | undefined): AsyncIterable<T> {
  return new OutgoingMessages(source, call, ctx);
}

/**
 * One object with its methods on a prototype: a Watch keeps it for its whole
 * life. Pullable when what it wraps is (src/pull-iterator.ts): the fast
 * path's Watch writer then takes messages with no promise each.
 */
class OutgoingMessages<T> implements AsyncIterable<T>, PullIterator<T> {
  private it: AsyncIterator<T> | undefined;

  constructor(
    private readonly source: AsyncIterable<T>,
    private readonly call: Call,
    private readonly ctx: Context | undefined,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<T> {
    this.inner();
    return this;
  }

  get pullable(): boolean {
    return pullIterator(this.inner()) !== undefined;
  }

  pull(): IteratorResult<T> | undefined {
    const it = this.inner() as PullIterator<T>;
    const ctx = this.ctx;
    let r: IteratorResult<T> | undefined;
    try {
      r = ctx === undefined ? it.pull() : context.with(ctx, () => it.pull());
    } catch (err) {
      this.failed(err);
    }
    return r === undefined ? undefined : this.counted(r);
  }

  onReady(ready: () => void): void {
    (this.inner() as PullIterator<T>).onReady(ready);
  }

  async next(): Promise<IteratorResult<T>> {
    const it = this.inner();
    const ctx = this.ctx;
    let r: IteratorResult<T>;
    try {
      r = ctx === undefined ? await it.next() : await context.with(ctx, () => it.next());
    } catch (err) {
      this.failed(err);
    }
    return this.counted(r);
  }

  /** A message sent, or the stream's end. */
  private counted(r: IteratorResult<T>): IteratorResult<T> {
    if (r.done === true) this.call.end(undefined, "completed");
    else this.call.sent++;
    return r;
  }

  /** The handler failed: the call ends with its error, which goes on to the caller. */
  private failed(err: unknown): never {
    this.call.end(err);
    throw err;
  }

  async return(value?: unknown): Promise<IteratorResult<T>> {
    this.call.end(new ConnectError("the stream was stopped", Code.Canceled), "cancelled");
    const it = this.inner();
    return it.return === undefined ? { done: true, value: value as T } : it.return(value as never);
  }

  async throw(err?: unknown): Promise<IteratorResult<T>> {
    this.call.end(err);
    const it = this.inner();
    if (it.throw === undefined) throw err;
    return it.throw(err);
  }

  private inner(): AsyncIterator<T> {
    return (this.it ??= this.source[Symbol.asyncIterator]());
  }
}
