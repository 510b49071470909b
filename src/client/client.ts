import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "./http2-sessions.js";
import { CacheService, type InfoResponse } from "../gen/ripplecache/v1/cache_pb.js";
import { AdminService } from "../gen/ripplecache/v1/replication_pb.js";
import { PRIMARY_HEADER } from "../headers.js";
import { RoutingTransport } from "./routing-transport.js";
import { http2TlsOptions, readTlsClientFiles, type TlsClientFiles } from "./tls.js";

export { PRIMARY_HEADER };

export type Protocol = "connect" | "grpc" | "grpc-web";

export interface ClientOptions {
  /**
   * `host:port`, or a URL (`http://host:port`, `https://host:port`); several, comma-separated,
   * to reach the group through whichever of them accepts connections.
   */
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
   * `ripplecache-primary` header), send it to the primary it names, and
   * send later writes there; when the primary moves (a failover), find it
   * again and retry within the call's deadline. Default true.
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
  private readonly transport: RoutingTransport;
  /** Admin RPCs (promote, replica-of, digest); they need the admin token when one is configured. */
  readonly admin: Client<typeof AdminService>;

  constructor(options: ClientOptions) {
    const seeds = options.addr
      .split(",")
      .map((a) => a.trim())
      .filter((a) => a !== "");
    if (seeds.length === 0) throw new Error("no address given: give HOST:PORT (or several, comma-separated)");
    this.transport = new RoutingTransport({
      seeds,
      transportTo: (addr) => this.transportTo(addr, options),
      followPrimary: options.followPrimary !== false,
      defaultTimeoutMs: options.timeoutMs,
    });
    this.rpc = createClient(CacheService, this.transport);
    this.admin = createClient(AdminService, this.transport);
  }

  /** The primary's address once a replica has named it (writes go there), else undefined. */
  get primaryAddress(): string | undefined {
    return this.transport.primary;
  }

  /** A transport to one address; RoutingTransport picks the address per call. */
  private transportTo(addr: string, options: ClientOptions): { transport: Transport; close(): void } {
    const url = options.tls === undefined ? baseUrl(addr) : baseUrl(addr).replace(/^http:/, "https:");
    const protocol = options.protocol ?? "connect";
    const httpVersion = protocol === "grpc" ? "2" : (options.httpVersion ?? "2");
    // PINGs detect a dead server on idle connections (a Track or Watch stream can be idle for hours).
    const sessions = httpVersion === "2" ? new GuardedHttp2Sessions(url, { pingIntervalMs: 15_000, pingTimeoutMs: 5_000 }, options.tls && http2TlsOptions(options.tls)) : undefined;
    const close = () => sessions?.abort();
    const interceptors: Interceptor[] = options.token === undefined ? [] : [sendBearerToken(options.token)];
    const common = {
      baseUrl: url,
      interceptors,
      defaultTimeoutMs: options.timeoutMs,
      useBinaryFormat: options.useJson !== true,
    };
    if (protocol === "grpc") return { transport: createGrpcTransport({ ...common, sessionManager: sessions }), close };
    const factory = protocol === "connect" ? createConnectTransport : createGrpcWebTransport;
    if (httpVersion === "2") return { transport: factory({ ...common, httpVersion: "2", sessionManager: sessions }), close };
    return { transport: factory({ ...common, httpVersion: "1.1", ...(options.tls !== undefined ? { nodeOptions: readTlsClientFiles(options.tls) } : {}) }), close };
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

  /** Closes the HTTP/2 connections, if any are open. */
  close(): void {
    this.transport.close();
  }
}
