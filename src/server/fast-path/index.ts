import type { IncomingHttpHeaders } from "node:http2";
import type { Message } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import { createMethodSerializationLookup, transformParseEnvelope } from "@connectrpc/connect/protocol";
import { fastDecoder } from "./decode.js";
import { fastEncoder } from "./encode.js";
import { CallSignal, header, type CallStream, type FastMethod, type FastPathOptions, type Protocol } from "./call.js";
import { serverStreamInvoker, ServerStreamCall, type ServerStreamingImplementation, type StreamChain } from "./server-stream.js";
import { unaryInvoker, UnaryCall, type UnaryChain, type UnaryImplementation } from "./unary.js";

export type { FastPathOptions } from "./call.js";

/**
 * The fast path: unary and server-streaming calls in binary protobuf over
 * HTTP/2 (gRPC, Connect unary, Connect streaming) served on the HTTP/2 stream
 * itself. Everything else (HTTP/1.1, JSON, gRPC-Web, GET, compressed
 * requests, client and bidi streams) goes to connect-node unchanged.
 *
 * Why: a profile of `Get` through connect-node put ~10% of the server's CPU
 * into building a DOMException (every call's linked AbortController is
 * aborted when it ends), ~9% into garbage collection and most of the rest
 * into async-iterable plumbing around one message; a Watch stream carried
 * that plumbing (and Node's HTTP/2 compatibility objects) for its whole life.
 * Here a call is a function: read the body, decode, run the same
 * interceptors and the same implementation, encode, write.
 *
 * Why it answers identically: the interceptors (telemetry, auth, replica
 * guard, store errors, client faults) and the implementations are the ones
 * connect-node runs; content types, timeouts, compression negotiation,
 * (de)serialization, error JSON, end-of-stream JSON, trailer status and HTTP
 * status come from connect's own protocol helpers; a body that is not one
 * well-formed envelope goes through connect's own envelope functions.
 * test/fast-path.test.ts sends the same requests to a server with and without
 * this path and compares the answers byte for byte.
 */
export type FastStreamHandler = (stream: CallStream, headers: IncomingHttpHeaders) => boolean;

type Route = { readonly kind: "unary"; readonly method: FastMethod; readonly chain: UnaryChain } | { readonly kind: "server_streaming"; readonly method: FastMethod; readonly chain: StreamChain };

export function createFastPath(options: FastPathOptions): FastStreamHandler {
  const routes = new Map<string, Route>();
  // Interceptors wrap the implementation outermost-first, as connect's applyInterceptors does.
  const wrap = <F>(inner: F): F => options.interceptors.reduceRight<F>((next, interceptor: Interceptor) => interceptor(next as never) as F, inner);
  for (const service of options.services) {
    for (const spec of Object.values(service.methods)) {
      if (spec.kind !== "unary" && spec.kind !== "server_streaming") continue;
      const lookup = createMethodSerializationLookup(spec.method, undefined, undefined, { readMaxBytes: options.readMaxBytes, writeMaxBytes: 0xffffffff });
      const input = lookup.getI(true);
      const output = lookup.getO(true);
      const encode = fastEncoder(spec.method.output);
      const decode = fastDecoder(spec.method.input);
      const readMaxBytes = options.readMaxBytes;
      const method: FastMethod = {
        desc: spec.method,
        // Over the limit, or anything the hand decoder leaves to it: connect's parse, for its exact message or error.
        parse: decode === undefined ? (bytes) => input.parse(bytes) : (bytes) => (bytes.byteLength <= readMaxBytes ? decode(bytes) : undefined) ?? input.parse(bytes),
        serialize: encode === undefined ? (message) => output.serialize(message) : (message) => encode(message) ?? output.serialize(message),
        parseEnvelope: transformParseEnvelope<Message>(input),
      };
      const path = `/${spec.method.parent.typeName}/${spec.method.name}`;
      routes.set(
        path,
        spec.kind === "unary"
          ? { kind: "unary", method, chain: wrap(unaryInvoker(method, spec.impl as UnaryImplementation)) }
          : { kind: "server_streaming", method, chain: wrap(serverStreamInvoker(method, spec.impl as ServerStreamingImplementation)) },
      );
    }
  }

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
    const route = routes.get(headers[":path"] ?? "");
    if (route === undefined) return false;
    const protocol = protocolOf(headers, route.kind);
    if (protocol === undefined) return false;
    if (options.stats !== undefined) options.stats.calls++;
    if (route.kind === "unary") new UnaryCall(options, route.method, stream, headers, protocol, inFlight).withChain(route.chain).start();
    else new ServerStreamCall(options, route.method, stream, headers, protocol, inFlight).withChain(route.chain).start();
    return true;
  };
}

/** The binary protocol of a request this path serves; undefined: connect-node's. */
function protocolOf(headers: IncomingHttpHeaders, kind: Route["kind"]): Protocol | undefined {
  const type = headers["content-type"];
  const identity = (name: string) => {
    const v = header(headers, name);
    return v === null || v === "identity";
  };
  if (type === "application/grpc" || type === "application/grpc+proto") return identity("grpc-encoding") ? "grpc" : undefined;
  const version = headers["connect-protocol-version"];
  if (version !== undefined && version !== "1") return undefined;
  if (kind === "unary" && type === "application/proto") return identity("content-encoding") ? "connect" : undefined;
  if (kind === "server_streaming" && type === "application/connect+proto") return identity("connect-content-encoding") ? "connect-stream" : undefined;
  return undefined;
}
