import { cors as connectCors } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";

/**
 * CORS for browser clients (connect-web's Connect and gRPC-Web transports) on
 * the main port. Off unless origins are configured. The methods and headers
 * are connect's own lists (what its protocols send and what clients must read),
 * plus Authorization when the server checks bearer tokens.
 */
export interface CorsPolicy {
  /** Exact origins (scheme://host[:port]) allowed to call, or ["*"] for any (only without credentials). */
  readonly allowedOrigins: readonly string[];
  /** Whether the browser may send cookies and TLS client certificates (Access-Control-Allow-Credentials). */
  readonly allowCredentials: boolean;
  /** How long a browser may cache a preflight's answer. */
  readonly maxAgeSeconds: number;
  /** Allow the Authorization header (the server checks bearer tokens). */
  readonly allowAuthorization: boolean;
}

/** Origins as `--cors-allowed-origins` gives them: a comma-separated list, each scheme://host[:port], or `*`. */
export function parseAllowedOrigins(text: string, allowCredentials: boolean, what: string): string[] {
  const origins = text
    .split(",")
    .map((o) => o.trim())
    .filter((o) => o !== "");
  for (const origin of origins) {
    if (origin === "*") continue;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      throw new Error(`${what}: "${origin}" is not an origin (give scheme://host[:port], e.g. https://app.example.com, or *)`);
    }
    if (url.origin !== origin) throw new Error(`${what}: "${origin}" is not an origin: give exactly ${url.origin} (no path, no trailing slash)`);
  }
  if (origins.includes("*") && origins.length > 1) throw new Error(`${what}: * allows every origin; give it alone`);
  if (origins.includes("*") && allowCredentials) {
    throw new Error(`${what}: * cannot go with --cors-allow-credentials on (browsers refuse it, and it would let any site call with a user's credentials); list the origins`);
  }
  return origins;
}

/** Wraps a connect handler so that allowed origins get CORS headers and preflights are answered. */
export function withCors(policy: CorsPolicy, handler: UniversalHandler): UniversalHandler {
  const any = policy.allowedOrigins.includes("*");
  const allowed = new Set(policy.allowedOrigins);
  const allowHeaders = [...connectCors.allowedHeaders, ...(policy.allowAuthorization ? ["Authorization"] : [])].join(", ");
  const allowMethods = connectCors.allowedMethods.join(", ");
  const exposeHeaders = connectCors.exposedHeaders.join(", ");

  /** The headers every answer to an allowed origin carries; undefined for an origin that is not allowed. */
  const originHeaders = (origin: string | null): [string, string][] | undefined => {
    if (origin === null || !(any || allowed.has(origin))) return undefined;
    // The answer depends on Origin unless it is "*": caches must key on it.
    const headers: [string, string][] = any ? [["access-control-allow-origin", "*"]] : [["access-control-allow-origin", origin], ["vary", "Origin"]];
    if (policy.allowCredentials) headers.push(["access-control-allow-credentials", "true"]);
    return headers;
  };

  const wrapped = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const origin = req.header.get("origin");
    const headers = originHeaders(origin);
    if (req.method === "OPTIONS" && req.header.has("access-control-request-method")) {
      // A refused origin's preflight gets no CORS headers: the browser then refuses the call.
      if (headers === undefined) return { status: 204, header: new Headers({ vary: "Origin" }) };
      return {
        status: 204,
        header: new Headers([
          ...headers,
          ["access-control-allow-methods", allowMethods],
          ["access-control-allow-headers", allowHeaders],
          ["access-control-max-age", String(policy.maxAgeSeconds)],
        ]),
      };
    }
    const res = await handler(req);
    if (headers === undefined) return res;
    const header = new Headers(res.header);
    for (const [name, value] of headers) header.set(name, value);
    header.set("access-control-expose-headers", exposeHeaders);
    return { ...res, header };
  };
  return Object.assign(wrapped, {
    protocolNames: handler.protocolNames,
    service: handler.service,
    method: handler.method,
    requestPath: handler.requestPath,
    allowedMethods: [...handler.allowedMethods, "OPTIONS"],
    supportedContentType: handler.supportedContentType,
  });
}
