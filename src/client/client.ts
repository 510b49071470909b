import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  type Http2SessionManager,
} from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "./http2-sessions.js";
import { CacheService, type InfoResponse } from "../gen/ripplecache/v1/cache_pb.js";
import { AdminService } from "../gen/ripplecache/v1/replication_pb.js";
import { PRIMARY_HEADER } from "../headers.js";
import { http2TlsOptions, readTlsClientFiles, type TlsClientFiles } from "./tls.js";

export { PRIMARY_HEADER };

export type Protocol = "connect" | "grpc" | "grpc-web";

export interface ClientOptions {
  /** `host:port`, or a URL (`http://host:port`, `https://host:port`). */
  readonly addr: string;
  /** Wire protocol; default "connect". gRPC always uses HTTP/2. */
  readonly protocol?: Protocol;
  /** HTTP version for Connect and gRPC-Web; default "2". */
  readonly httpVersion?: "1.1" | "2";
  /** Bearer token sent as `authorization: Bearer <token>`. */
  readonly token?: string;
  /** Default deadline for each call, in ms. */
  readonly timeoutMs?: number;
  /** Binary protobuf (default) or JSON, for Connect and gRPC-Web. */
  readonly useJson?: boolean;
  /**
   * When a replica refuses a write (FAILED_PRECONDITION with the
   * `ripplecache-primary` header), send it to the primary it names. Default true.
   */
  readonly followPrimary?: boolean;
  /** TLS (https) with these PEM files: the CA that verifies the server, a client certificate for mutual TLS. */
  readonly tls?: TlsClientFiles;
}

export interface ValueResult {
  readonly value: Uint8Array;
  readonly revision: number;
  /** Remaining time to live in ms; 0 = none. */
  readonly ttlMs: number;
  readonly flags: number;
}

export interface SetParams {
  readonly ttlMs?: number;
  readonly flags?: number;
  readonly ifAbsent?: boolean;
  readonly ifPresent?: boolean;
  readonly ifRevision?: number;
}

export interface ScanEntry extends ValueResult {
  readonly key: string;
}

/** Sends `authorization: Bearer <token>` with every call. */
export function sendBearerToken(token: string): Interceptor {
  const header = `Bearer ${token}`;
  return (next) => (req) => {
    req.header.set("authorization", header);
    return next(req);
  };
}

/** The base URL for an address given as host:port or as a URL. */
export function baseUrl(addr: string): string {
  return /^https?:\/\//.test(addr) ? addr.replace(/\/+$/, "") : `http://${addr}`;
}

/**
 * A typed RippleCache client. `rpc` is the generated Connect client for the
 * full API; the methods below are conveniences with plain numbers and strings.
 */
export class CacheClient {
  readonly rpc: Client<typeof CacheService>;
  private readonly transport: Transport;
  /** Admin RPCs (promote, replica-of, digest); they need the admin token when one is configured. */
  readonly admin: Client<typeof AdminService>;
  private readonly sessions: Http2SessionManager | undefined;

  constructor(options: ClientOptions) {
    const url = options.tls === undefined ? baseUrl(options.addr) : baseUrl(options.addr).replace(/^http:/, "https:");
    const protocol = options.protocol ?? "connect";
    const httpVersion = protocol === "grpc" ? "2" : (options.httpVersion ?? "2");
    // PINGs detect a dead server on idle connections (a Track or Watch stream can be idle for hours).
    this.sessions = httpVersion === "2" ? new GuardedHttp2Sessions(url, { pingIntervalMs: 15_000, pingTimeoutMs: 5_000 }, options.tls && http2TlsOptions(options.tls)) : undefined;
    const interceptors: Interceptor[] = options.token === undefined ? [] : [sendBearerToken(options.token)];
    if (options.followPrimary !== false) interceptors.push(this.redirectWritesToPrimary(options));
    const common = {
      baseUrl: url,
      interceptors,
      defaultTimeoutMs: options.timeoutMs,
      useBinaryFormat: options.useJson !== true,
    };
    let transport: Transport;
    if (protocol === "grpc") {
      transport = createGrpcTransport({ ...common, sessionManager: this.sessions });
    } else if (httpVersion === "2") {
      const factory = protocol === "connect" ? createConnectTransport : createGrpcWebTransport;
      transport = factory({ ...common, httpVersion: "2", sessionManager: this.sessions });
    } else {
      const factory = protocol === "connect" ? createConnectTransport : createGrpcWebTransport;
      transport = factory({ ...common, httpVersion: "1.1", ...(options.tls !== undefined ? { nodeOptions: readTlsClientFiles(options.tls) } : {}) });
    }
    this.transport = transport;
    this.rpc = createClient(CacheService, transport);
    this.admin = createClient(AdminService, transport);
  }

  private primary: CacheClient | undefined;
  private primaryAddress = "";

  /**
   * An interceptor that retries a unary call refused by a replica on the
   * primary it names. Only refusals are retried: the replica applied nothing.
   */
  private redirectWritesToPrimary(options: ClientOptions): Interceptor {
    return (next) => async (req) => {
      try {
        return await next(req);
      } catch (err) {
        const primary = err instanceof ConnectError && err.code === Code.FailedPrecondition ? err.metadata.get(PRIMARY_HEADER) : null;
        if (primary === null || primary === "" || req.stream) throw err;
        if (this.primary === undefined || this.primaryAddress !== primary) {
          this.primary?.close();
          this.primary = new CacheClient({ ...options, addr: primary, followPrimary: false });
          this.primaryAddress = primary;
        }
        const method = req.method;
        const transport = this.primary.transport;
        return transport.unary(method, req.signal, undefined, req.header, req.message, req.contextValues);
      }
    };
  }

  /** The value of `key`, or undefined on a miss. */
  async get(key: string): Promise<ValueResult | undefined> {
    const r = await this.rpc.get({ key });
    return r.found ? { value: r.value, revision: Number(r.revision), ttlMs: Number(r.ttlMs), flags: r.flags } : undefined;
  }

  async set(key: string, value: Uint8Array | string, params: SetParams = {}): Promise<{ applied: boolean; revision: number }> {
    const condition =
      params.ifRevision !== undefined
        ? { case: "ifRevision" as const, value: BigInt(params.ifRevision) }
        : params.ifAbsent
          ? { case: "ifAbsent" as const, value: true }
          : params.ifPresent
            ? { case: "ifPresent" as const, value: true }
            : { case: undefined };
    const r = await this.rpc.set({
      key,
      value: typeof value === "string" ? new TextEncoder().encode(value) : value,
      ttlMs: BigInt(params.ttlMs ?? 0),
      flags: params.flags ?? 0,
      condition,
    });
    return { applied: r.applied, revision: Number(r.revision) };
  }

  async delete(key: string, ifRevision?: number): Promise<{ deleted: boolean; revision: number }> {
    const r = await this.rpc.delete({ key, ifRevision: ifRevision === undefined ? undefined : BigInt(ifRevision) });
    return { deleted: r.deleted, revision: Number(r.revision) };
  }

  async increment(key: string, delta: bigint | number = 1n, ttlMs = 0): Promise<{ value: bigint; revision: number }> {
    const r = await this.rpc.increment({ key, delta: BigInt(delta), ttlMs: BigInt(ttlMs) });
    return { value: r.value, revision: Number(r.revision) };
  }

  /** Every key with `prefix`, page by page. */
  async *scan(prefix = "", options: { keysOnly?: boolean; pageSize?: number } = {}): AsyncGenerator<ScanEntry> {
    let cursor = "";
    do {
      const page = await this.rpc.scan({ prefix, cursor, limit: options.pageSize ?? 0, keysOnly: options.keysOnly ?? false });
      for (const e of page.entries) {
        yield { key: e.key, value: e.value, revision: Number(e.revision), ttlMs: Number(e.ttlMs), flags: e.flags };
      }
      cursor = page.nextCursor;
    } while (cursor !== "");
  }

  info(): Promise<InfoResponse> {
    return this.rpc.info({});
  }

  /** Closes the HTTP/2 connection, if one is open. */
  close(): void {
    this.sessions?.abort();
    this.primary?.close();
  }
}
