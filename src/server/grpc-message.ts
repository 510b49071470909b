import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";

/**
 * connect-node percent-encodes `grpc-message` with encodeURIComponent, which
 * escapes ":" "/" "," and more; gRPC's spec escapes only bytes outside
 * 0x20-0x7E and "%", and clients that decode only those (grpc-js uses
 * decodeURI) show "key is empty%3A give a key". Re-encoding the header the
 * spec's way gives every client the message as written.
 */
export function specEncodeGrpcMessage(value: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    return value;
  }
  let out = "";
  for (const byte of Buffer.from(decoded, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

type Headers = OutgoingHttpHeaders | IncomingHttpHeaders;

/** Spec-encodes the `grpc-message` in a Node headers object, if there is one. */
export function specEncodeGrpcMessageHeader(headers: Headers | undefined): void {
  const m = headers?.["grpc-message"];
  if (headers !== undefined && typeof m === "string") headers["grpc-message"] = specEncodeGrpcMessage(m);
}

/** Wraps a response so `grpc-message` in headers (trailers-only) and trailers is spec-encoded. */
export function fixGrpcMessageEncoding(res: ResponseHeaders): void {
  const writeHead = res.writeHead.bind(res);
  res.writeHead = (status: number, ...rest: unknown[]) => {
    const last = rest[rest.length - 1];
    if (last !== null && typeof last === "object" && !Array.isArray(last)) specEncodeGrpcMessageHeader(last as Headers);
    return writeHead(status, ...rest);
  };
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (headers: Headers) => {
    specEncodeGrpcMessageHeader(headers);
    addTrailers(headers);
  };
}

/** The two ways a Node response (HTTP/1.1 or HTTP/2) sends headers and trailers. */
interface ResponseHeaders {
  writeHead(status: number, ...rest: unknown[]): unknown;
  addTrailers(headers: Headers): void;
}
