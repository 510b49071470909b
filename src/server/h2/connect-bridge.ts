import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { logLine } from "../../log.js";
import { callNetwork, type CallNetwork } from "../../telemetry/rpc.js";
import { CallHeaders } from "../fast-path/call-headers.js";
import { grpcTrailers } from "../fast-path/unary.js";
import { ErrorCode } from "./frames.js";
import type { HeaderMap } from "./hpack.js";
import type { H2Stream } from "./stream.js";

/**
 * Serves a stream on our HTTP/2 engine with connect's own handlers (the
 * `UniversalHandler`s connect-node wraps), for every call the fast path does
 * not take: JSON, gRPC-Web, compressed requests, client and bidi streams.
 * It does for our streams what connect-node's universalRequestFromNodeRequest
 * and universalResponseToNodeResponse do for node:http2's, and spec-encodes
 * grpc-message as listener.ts does for node's responses.
 */
export function connectBridge(
  handlers: ReadonlyMap<string, UniversalHandler>,
  contextValues: ((network: CallNetwork) => ContextValues) | undefined,
): (stream: H2Stream, headers: HeaderMap) => void {
  return (stream, headers) => {
    const path = str(headers[":path"]).split("?", 1)[0];
    const handler = handlers.get(path);
    stream.on("error", () => {});
    if (handler === undefined) {
      // As connect-node's fallback: 404, no body.
      stream.respond({ ":status": 404 }, { endStream: true });
      return;
    }
    const abort = new AbortController();
    stream.once("close", () => abort.abort(resetError(stream.rstCode)));
    const authority = headers[":authority"] ?? headers.host;
    const request = {
      httpVersion: "2.0",
      method: str(headers[":method"]),
      url: `${str(headers[":scheme"]) || "http"}://${str(authority)}${str(headers[":path"])}`,
      header: CallHeaders.fromNode(headers),
      body: stream.read(),
      signal: abort.signal,
      contextValues: contextValues?.(callNetwork("2.0", typeof authority === "string" ? authority : undefined, stream.session.socket)),
    };
    handler(request)
      .then((response) => writeResponse(stream, response))
      .catch((reason: unknown) => {
        // A write to a stream the client reset: nothing to tell anyone. Anything else is logged (connect-node prints it).
        if (ConnectError.from(reason).code === Code.Aborted || stream.closed) return;
        logLine("error", "rpc handler failed", { rpc: `${handler.service.typeName}/${handler.method.name}`, error: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) });
        stream.close(ErrorCode.INTERNAL_ERROR);
      });
  };
}

async function writeResponse(stream: H2Stream, response: UniversalServerResponse): Promise<void> {
  const it = response.body?.[Symbol.asyncIterator]();
  const head = () => {
    return { ":status": response.status, ...grpcTrailers(response.header ?? new Headers()) };
  };
  try {
    if (it !== undefined) {
      for (let chunk = await it.next(); chunk.done !== true; chunk = await it.next()) {
        if (stream.closed) throw new ConnectError("the client closed the stream", Code.Aborted);
        if (!stream.headersSent) stream.respond(head());
        if (!stream.write(chunk.value)) await drained(stream);
      }
    }
    if (stream.closed) return;
    const trailer = response.trailer === undefined ? {} : grpcTrailers(response.trailer);
    const hasTrailer = Object.keys(trailer).length > 0;
    if (!stream.headersSent) {
      // Nothing but headers: one HEADERS frame ends the stream (gRPC's trailers-only answer).
      if (!hasTrailer) {
        stream.respond(head(), { endStream: true });
        return;
      }
      stream.respond(head());
    }
    if (hasTrailer) stream.sendTrailers(trailer);
    stream.end();
  } finally {
    await it?.return?.().catch(() => undefined);
  }
}

function drained(stream: H2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.once("drain", done);
    stream.once("close", done);
  });
}

/** What a reset means to the handler, as connect-node's connectErrorFromH2ResetCode. */
function resetError(code: number | undefined): ConnectError | undefined {
  switch (code) {
    case undefined:
    case ErrorCode.NO_ERROR:
    case ErrorCode.STREAM_CLOSED:
      return undefined;
    case ErrorCode.REFUSED_STREAM:
      return new ConnectError("http/2 stream closed with error code REFUSED_STREAM (0x7)", Code.Unavailable);
    case ErrorCode.CANCEL:
      return new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled);
    case ErrorCode.ENHANCE_YOUR_CALM:
      return new ConnectError("http/2 stream closed with error code ENHANCE_YOUR_CALM (0xb)", Code.ResourceExhausted);
    case ErrorCode.INADEQUATE_SECURITY:
      return new ConnectError("http/2 stream closed with error code INADEQUATE_SECURITY (0xc)", Code.PermissionDenied);
    case ErrorCode.HTTP_1_1_REQUIRED:
      return new ConnectError("http/2 stream closed with error code HTTP_1_1_REQUIRED (0xd)", Code.PermissionDenied);
    default:
      return new ConnectError(`http/2 stream closed with error code ${code}`, Code.Internal);
  }
}

function str(v: string | string[] | undefined): string {
  return v === undefined ? "" : Array.isArray(v) ? v.join(", ") : v;
}
