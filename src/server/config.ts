import { accessSync, constants, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { LOG_LEVELS, type LogLevel } from "../log.js";
import { parseAllowedOrigins } from "./cors.js";

/**
 * Server settings. Each comes from a flag (`--max-memory 512MiB`), else from
 * the environment (`RIPPLECACHE_MAX_MEMORY=512MiB`), else its default. The
 * table below is the one source of the names, defaults and help text; the
 * README's config table mirrors it (`ripplecache serve --help` prints it).
 */
export interface ServerConfig {
  readonly host: string;
  readonly port: number;
  readonly maxMemoryBytes: number;
  readonly maxKeyBytes: number;
  readonly maxValueBytes: number;
  readonly maxRequestBytes: number;
  readonly maxBatch: number;
  readonly authToken: string | undefined;
  readonly tlsCertFile: string | undefined;
  readonly tlsKeyFile: string | undefined;
  /** With it, the server requires client certificates signed by this CA (mutual TLS). */
  readonly tlsClientCaFile: string | undefined;
  /** How often the TLS files are checked for changes (0 = never). */
  readonly tlsReloadIntervalMs: number;
  /** CA bundle that verifies the primary's certificate; set, replicas reach their primary over TLS. */
  readonly replicationTlsCaFile: string | undefined;
  /** Client certificate and key a replica presents to its primary (mutual TLS). */
  readonly replicationTlsCertFile: string | undefined;
  readonly replicationTlsKeyFile: string | undefined;
  readonly maxConnections: number;
  readonly maxConcurrentStreams: number;
  readonly maxHeaderBytes: number;
  /** Our HTTP/2 engine: what one connection may hold before it refuses new streams (0 = no limit). */
  readonly maxConnectionMemory: number;
  /** Our HTTP/2 engine: how long a stream's answer may wait on a window the client keeps shut (0 = forever). */
  readonly stallTimeoutMs: number;
  readonly requestHeaderTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly shutdownTimeoutMs: number;
  readonly changeLogEvents: number;
  readonly changeLogBytes: number;
  readonly maxStreams: number;
  readonly streamBufferBytes: number;
  readonly maxTrackKeys: number;
  readonly keepaliveIntervalMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly replicaOf: string | undefined;
  readonly advertiseAddress: string | undefined;
  readonly replicationToken: string | undefined;
  readonly adminToken: string | undefined;
  readonly replicationBufferBytes: number;
  readonly replicationHeartbeatMs: number;
  readonly replicaUnreadyAfterMs: number;
  readonly adminPort: number | undefined;
  readonly drainPeriodMs: number;
  readonly wedgedAfterMs: number;
  readonly logLevel: LogLevel;
  readonly fastPath: boolean;
  readonly http2Engine: "ripple" | "node";
  /** What elects the primary: static (--replica-of), etcd or kubernetes (docs/FAILOVER.md). */
  readonly coordinator: "static" | "etcd" | "kubernetes";
  /** With --coordinator kubernetes: the namespace of the Leases and of this pod; the pod to label. */
  readonly kubernetesNamespace: string;
  readonly podName: string;
  readonly etcdEndpoints: readonly string[];
  /** The replication group: one lease, one primary. */
  readonly group: string;
  readonly nodeId: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  /** Origins browsers may call from (CORS); empty = CORS off. */
  readonly corsAllowedOrigins: readonly string[];
  readonly corsAllowCredentials: boolean;
  readonly corsMaxAgeSeconds: number;
}

type Kind = "string" | "int" | "bytes" | "file";

interface Setting {
  readonly flag: string;
  readonly kind: Kind;
  readonly defaultValue: string;
  readonly help: string;
}

export const SETTINGS: readonly Setting[] = [
  { flag: "host", kind: "string", defaultValue: "127.0.0.1", help: "Address to listen on (0.0.0.0 for every interface)." },
  { flag: "port", kind: "int", defaultValue: "7420", help: "Port for Connect, gRPC and gRPC-Web over HTTP/1.1 and h2c (0 = any free port)." },
  { flag: "max-memory", kind: "bytes", defaultValue: "256MiB", help: "Bound on keys, values and per-entry overhead; least recently used keys are evicted beyond it." },
  { flag: "max-key-bytes", kind: "bytes", defaultValue: "4KiB", help: "Longest key, in UTF-8 bytes." },
  { flag: "max-value-bytes", kind: "bytes", defaultValue: "1MiB", help: "Longest value." },
  { flag: "max-request-bytes", kind: "bytes", defaultValue: "8MiB", help: "Largest request message (after decompression)." },
  { flag: "max-batch", kind: "int", defaultValue: "1000", help: "Most keys in one GetMany or entries in one SetMany." },
  { flag: "auth-token-file", kind: "file", defaultValue: "", help: "File holding the bearer token clients must send; unset = no auth. RIPPLECACHE_AUTH_TOKEN gives the token itself." },
  { flag: "tls-cert", kind: "string", defaultValue: "", help: "PEM certificate file; with --tls-key, serves TLS (ALPN h2 and http/1.1)." },
  { flag: "tls-key", kind: "string", defaultValue: "", help: "PEM private key file for --tls-cert." },
  { flag: "tls-client-ca", kind: "string", defaultValue: "", help: "PEM CA bundle: with --tls-cert, every client must present a certificate signed by it (mutual TLS)." },
  { flag: "tls-reload-interval", kind: "int", defaultValue: "5000", help: "Milliseconds between checks of --tls-cert, --tls-key and --tls-client-ca for changes; changed files are loaded without a restart, a bad pair is logged and the old one kept (0 = never)." },
  { flag: "replication-tls-ca", kind: "string", defaultValue: "", help: "PEM CA bundle that verifies the primary's certificate; when set, a replica connects to its primary with TLS." },
  { flag: "replication-tls-cert", kind: "string", defaultValue: "", help: "PEM client certificate a replica presents to its primary (for a primary with --tls-client-ca); implies TLS." },
  { flag: "replication-tls-key", kind: "string", defaultValue: "", help: "PEM private key file for --replication-tls-cert." },
  { flag: "max-connections", kind: "int", defaultValue: "10000", help: "Most client connections open at once on the main port; further connections are closed at once (0 = no limit)." },
  { flag: "max-concurrent-streams", kind: "int", defaultValue: "1000", help: "Most calls in flight on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS); a stream beyond it is refused (REFUSED_STREAM, UNAVAILABLE)." },
  { flag: "max-header-bytes", kind: "bytes", defaultValue: "16KiB", help: "Largest request header block: HTTP/1.1 answers 431 beyond it, HTTP/2 resets the stream (ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED)." },
  { flag: "max-connection-memory", kind: "bytes", defaultValue: "4MiB", help: "Most bytes one HTTP/2 connection on our engine may hold: answers queued and not yet sent (the client's window shut, or its socket full), request bodies and header blocks not yet read, input not yet parsed. Over it, a new stream waits while the client reads its answers, else is refused (REFUSED_STREAM; ENHANCE_YOUR_CALM, then GOAWAY, if the client keeps opening streams on a connection it does not read, or stays over it 2 s with nothing sent). 4MiB: Gets of 100-byte values hold 17 KiB at 100 calls in flight, of 64 KiB values 1 MiB at 16; a client that shuts its window and asks for 1,000 answers of 1 MiB grows the server ~10 MiB instead of 1.5 GiB. At least --stream-buffer-bytes + 64KiB (one Watch's batch fits); 0 = no limit." },
  { flag: "stall-timeout", kind: "int", defaultValue: "30000", help: "Milliseconds an answer on our HTTP/2 engine may wait on a flow-control window the client keeps at zero before its stream is reset (ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED); a connection whose every stream waits so is closed with GOAWAY (0 = never)." },
  { flag: "request-header-timeout", kind: "int", defaultValue: "10000", help: "Milliseconds a new connection has to complete its TLS handshake and the headers of its first request (HTTP/1.1: of every request); slower connections are closed." },
  { flag: "idle-timeout", kind: "int", defaultValue: "300000", help: "Milliseconds an HTTP/2 connection may stay without an open stream before it is closed with GOAWAY (0 = never); streams such as Watch keep it open." },
  { flag: "shutdown-timeout", kind: "int", defaultValue: "10000", help: "Milliseconds to finish in-flight calls after the drain period before closing connections." },
  { flag: "drain-period", kind: "int", defaultValue: "0", help: "Milliseconds to keep serving after SIGTERM while reporting not ready (let load balancers move traffic away); 5000 in the Kubernetes manifests." },
  { flag: "admin-port", kind: "string", defaultValue: "9090", help: "Port of the admin HTTP server: /livez, /readyz, /metrics (0 = any free port, \"off\" = none)." },
  { flag: "wedged-after", kind: "int", defaultValue: "5000", help: "Liveness (/livez) fails when the event loop was blocked longer than this many ms." },
  { flag: "log-level", kind: "string", defaultValue: "info", help: "Least severe log lines written (JSON on stdout): trace, debug, info, warn, error, fatal or silent." },
  { flag: "change-log-events", kind: "int", defaultValue: "100000", help: "Most changes the change log keeps for watch replay (and replication backlog)." },
  { flag: "change-log-bytes", kind: "bytes", defaultValue: "64MiB", help: "Most bytes of keys and values the change log keeps." },
  { flag: "max-streams", kind: "int", defaultValue: "16384", help: "Most Watch and Track streams open at once; more get RESOURCE_EXHAUSTED." },
  { flag: "stream-buffer-bytes", kind: "bytes", defaultValue: "1MiB", help: "Undelivered event bytes one stream may hold; a slower consumer gets a RESYNC (OVERFLOW)." },
  { flag: "max-track-keys", kind: "int", defaultValue: "100000", help: "Most keys one Track stream may track." },
  { flag: "keepalive-interval", kind: "int", defaultValue: "30000", help: "Milliseconds between HTTP/2 PINGs (and TCP keepalive probes) to detect dead peers." },
  { flag: "replica-of", kind: "string", defaultValue: "", help: "Start as a replica of the primary at HOST:PORT (not ready until its first sync completes)." },
  { flag: "advertise-address", kind: "string", defaultValue: "", help: "HOST:PORT this node tells its primary and clients (default: --host:--port)." },
  { flag: "replication-token-file", kind: "file", defaultValue: "", help: "File with the token replicas send to their primary (default: the auth token). RIPPLECACHE_REPLICATION_TOKEN gives the token itself." },
  { flag: "admin-token-file", kind: "file", defaultValue: "", help: "File with the token for admin RPCs: promote, replica-of, digest and Flush (default: the auth token). RIPPLECACHE_ADMIN_TOKEN gives the token itself." },
  { flag: "replication-buffer-bytes", kind: "bytes", defaultValue: "64MiB", help: "Bytes of changes a replica may fall behind on its stream before it is dropped and resyncs." },
  { flag: "replication-heartbeat", kind: "int", defaultValue: "1000", help: "Milliseconds between heartbeats to idle replicas; a replica drops a link silent for 3 heartbeats." },
  { flag: "replica-unready-after", kind: "int", defaultValue: "30000", help: "A replica whose link to its primary is down this many ms reports NOT_SERVING (0 = never)." },
  { flag: "fast-path", kind: "string", defaultValue: "on", help: "Serve unary and server-streaming calls in binary over HTTP/2 (gRPC, Connect) on the fast path (off = connect-node serves every call; answers are the same)." },
  { flag: "http2-engine", kind: "string", defaultValue: "ripple", help: "What serves HTTP/2, h2c and TLS (ALPN h2) alike: ripple (our own engine, several times faster per call) or node (node:http2)." },
  { flag: "keepalive-timeout", kind: "int", defaultValue: "10000", help: "Milliseconds to wait for a PING answer before the connection and its streams are dropped." },
  { flag: "coordinator", kind: "string", defaultValue: "static", help: "What elects the primary: static (no election: a primary, or a replica with --replica-of), etcd or kubernetes (the holder of the group's lease in etcd, or of its coordination.k8s.io Lease, is primary; docs/FAILOVER.md)." },
  { flag: "etcd-endpoints", kind: "string", defaultValue: "http://127.0.0.1:2379", help: "With --coordinator etcd: the etcd members, comma-separated URLs." },
  { flag: "kubernetes-namespace", kind: "string", defaultValue: "", help: "With --coordinator kubernetes: the namespace of the group's Leases (default: the pod's own, from its service account)." },
  { flag: "pod-name", kind: "string", defaultValue: "", help: "With --coordinator kubernetes: this pod, labelled ripplecache.io/role=primary or replica (default: the host name, the pod's name in a StatefulSet)." },
  { flag: "group", kind: "string", defaultValue: "default", help: "With a coordinator: the replication group (one lease, one primary) this node is a candidate in." },
  { flag: "node-id", kind: "string", defaultValue: "", help: "With a coordinator: this node's id in its group, unique and stable across restarts (default: the host name)." },
  { flag: "lease-duration", kind: "int", defaultValue: "1500", help: "With a coordinator: ms after a lease last changed before other candidates may take it over." },
  { flag: "renew-deadline", kind: "int", defaultValue: "1000", help: "With a coordinator: the primary stops acknowledging writes this many ms after it sent its last successful renewal; below --lease-duration (the rest is the margin for clock rates)." },
  { flag: "retry-period", kind: "int", defaultValue: "250", help: "With a coordinator: ms between renewals, and between a candidate's looks at the lease." },
  { flag: "cors-allowed-origins", kind: "string", defaultValue: "", help: "Origins whose web pages may call the main port (CORS), comma-separated, e.g. https://app.example.com; * for any (not with credentials); empty = CORS off." },
  { flag: "cors-allow-credentials", kind: "string", defaultValue: "off", help: "on: allowed origins may send cookies and client certificates (Access-Control-Allow-Credentials); needs a list of origins, not *." },
  { flag: "cors-max-age", kind: "int", defaultValue: "7200", help: "Seconds a browser may cache a preflight's answer (Access-Control-Max-Age)." },
];

export function envName(flag: string): string {
  return `RIPPLECACHE_${flag.toUpperCase().replaceAll("-", "_")}`;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses sizes such as `1048576`, `512KiB`, `256MiB`, `1GiB` (also KB/MB/GB, meaning the same powers of two). */
export function parseBytes(text: string, what: string): number {
  const m = /^\s*([0-9]+)\s*([kmgt]i?b?)?\s*$/i.exec(text);
  if (m === null) throw new ConfigError(`${what}: "${text}" is not a size (examples: 1048576, 512KiB, 256MiB)`);
  const unit = (m[2] ?? "").toLowerCase().charAt(0);
  const shift = { "": 0, k: 10, m: 20, g: 30, t: 40 }[unit] ?? 0;
  const value = Number(m[1]) * 2 ** shift;
  if (!Number.isSafeInteger(value)) throw new ConfigError(`${what}: "${text}" is too large`);
  return value;
}

function parseInt10(text: string, what: string): number {
  if (!/^[0-9]+$/.test(text.trim())) throw new ConfigError(`${what}: "${text}" is not a non-negative integer`);
  return Number(text);
}

/**
 * Resolves every setting from parsed flags and the environment.
 * `flags` maps flag names (without dashes) to their string values.
 */
export function resolveConfig(flags: Readonly<Record<string, string | undefined>>, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const raw = (flag: string): string => {
    const setting = SETTINGS.find((s) => s.flag === flag);
    if (setting === undefined) throw new Error(`unknown setting ${flag}`);
    return flags[flag] ?? env[envName(flag)] ?? setting.defaultValue;
  };
  const what = (flag: string) => `--${flag} (${envName(flag)})`;
  const bytes = (flag: string) => parseBytes(raw(flag), what(flag));
  const int = (flag: string) => parseInt10(raw(flag), what(flag));
  const optional = (flag: string) => (raw(flag) === "" ? undefined : raw(flag));

  const port = int("port");
  if (port > 65535) throw new ConfigError(`${what("port")}: ${port} is not a port number`);
  const maxMemoryBytes = bytes("max-memory");
  if (maxMemoryBytes < 1024 * 1024) throw new ConfigError(`${what("max-memory")}: give at least 1MiB`);
  const maxKeyBytes = bytes("max-key-bytes");
  const maxValueBytes = bytes("max-value-bytes");
  const maxRequestBytes = bytes("max-request-bytes");
  if (maxKeyBytes < 1) throw new ConfigError(`${what("max-key-bytes")}: give at least 1`);
  if (maxRequestBytes < maxValueBytes + maxKeyBytes) {
    throw new ConfigError(`${what("max-request-bytes")}: must be at least max-value-bytes + max-key-bytes`);
  }
  const tlsCertFile = optional("tls-cert");
  const tlsKeyFile = optional("tls-key");
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) {
    throw new ConfigError("--tls-cert and --tls-key go together: give both or neither");
  }
  const tlsClientCaFile = optional("tls-client-ca");
  if (tlsClientCaFile !== undefined && tlsCertFile === undefined) {
    throw new ConfigError("--tls-client-ca needs --tls-cert and --tls-key: client certificates are only asked for over TLS");
  }
  const replicationTlsCertFile = optional("replication-tls-cert");
  const replicationTlsKeyFile = optional("replication-tls-key");
  if ((replicationTlsCertFile === undefined) !== (replicationTlsKeyFile === undefined)) {
    throw new ConfigError("--replication-tls-cert and --replication-tls-key go together: give both or neither");
  }
  const replicationTlsCaFile = optional("replication-tls-ca");
  for (const flag of ["tls-cert", "tls-key", "tls-client-ca", "replication-tls-ca", "replication-tls-cert", "replication-tls-key"]) {
    const file = optional(flag);
    if (file !== undefined) mustBeReadable(file, what(flag));
  }
  const corsAllowCredentials = onOff(raw("cors-allow-credentials"), what("cors-allow-credentials"));
  let corsAllowedOrigins: string[];
  try {
    corsAllowedOrigins = parseAllowedOrigins(raw("cors-allowed-origins"), corsAllowCredentials, what("cors-allowed-origins"));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const maxHeaderBytes = bytes("max-header-bytes");
  if (maxHeaderBytes < 1024) throw new ConfigError(`${what("max-header-bytes")}: give at least 1KiB`);
  // A Watch holds at most a batch of --stream-buffer-bytes and 16 KiB more on its connection: one alone must not fill the budget.
  const maxConnectionMemory = bytes("max-connection-memory");
  const streamBufferBytes = Math.max(1024, bytes("stream-buffer-bytes"));
  if (maxConnectionMemory !== 0 && maxConnectionMemory < streamBufferBytes + 64 * 1024) {
    throw new ConfigError(`${what("max-connection-memory")}: give at least --stream-buffer-bytes + 64KiB (${streamBufferBytes + 64 * 1024} bytes), or 0 for no limit: one Watch's buffer must fit in it`);
  }
  const coordinator = oneOf(raw("coordinator"), ["static", "etcd", "kubernetes"] as const, what("coordinator"));
  const group = raw("group");
  if (!/^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$/.test(group)) {
    throw new ConfigError(`${what("group")}: "${group}" must be lower-case letters, digits and '-' (at most 42), as it names Kubernetes Leases and etcd keys`);
  }
  if (coordinator !== "static" && optional("replica-of") !== undefined) {
    throw new ConfigError(`--replica-of and --coordinator ${coordinator} exclude each other: the coordinator's lease decides whom each node follows`);
  }
  const [leaseDurationMs, renewDeadlineMs, retryPeriodMs] = [int("lease-duration"), int("renew-deadline"), int("retry-period")];
  if (!(retryPeriodMs >= 10 && retryPeriodMs < renewDeadlineMs && renewDeadlineMs < leaseDurationMs)) {
    throw new ConfigError(`--retry-period (${retryPeriodMs}) < --renew-deadline (${renewDeadlineMs}) < --lease-duration (${leaseDurationMs}) must hold (and the retry period be at least 10 ms)`);
  }
  return {
    host: raw("host"),
    port,
    maxMemoryBytes,
    maxKeyBytes,
    maxValueBytes,
    maxRequestBytes,
    maxBatch: Math.max(1, int("max-batch")),
    authToken: readToken("auth-token-file", optional("auth-token-file"), env.RIPPLECACHE_AUTH_TOKEN),
    tlsCertFile,
    tlsKeyFile,
    tlsClientCaFile,
    tlsReloadIntervalMs: int("tls-reload-interval"),
    replicationTlsCaFile,
    replicationTlsCertFile,
    replicationTlsKeyFile,
    maxConnections: int("max-connections"),
    maxConcurrentStreams: Math.max(1, int("max-concurrent-streams")),
    maxHeaderBytes,
    maxConnectionMemory,
    stallTimeoutMs: int("stall-timeout"),
    requestHeaderTimeoutMs: Math.max(100, int("request-header-timeout")),
    idleTimeoutMs: int("idle-timeout"),
    shutdownTimeoutMs: int("shutdown-timeout"),
    changeLogEvents: Math.max(1, int("change-log-events")),
    changeLogBytes: bytes("change-log-bytes"),
    maxStreams: int("max-streams"),
    streamBufferBytes,
    maxTrackKeys: Math.max(1, int("max-track-keys")),
    keepaliveIntervalMs: Math.max(100, int("keepalive-interval")),
    keepaliveTimeoutMs: Math.max(100, int("keepalive-timeout")),
    replicaOf: optional("replica-of"),
    advertiseAddress: optional("advertise-address"),
    replicationToken: readToken("replication-token-file", optional("replication-token-file"), env.RIPPLECACHE_REPLICATION_TOKEN),
    adminToken: readToken("admin-token-file", optional("admin-token-file"), env.RIPPLECACHE_ADMIN_TOKEN),
    replicationBufferBytes: Math.max(1024 * 1024, bytes("replication-buffer-bytes")),
    replicationHeartbeatMs: Math.max(50, int("replication-heartbeat")),
    replicaUnreadyAfterMs: int("replica-unready-after"),
    adminPort: raw("admin-port") === "off" ? undefined : int("admin-port"),
    drainPeriodMs: int("drain-period"),
    wedgedAfterMs: Math.max(100, int("wedged-after")),
    logLevel: logLevel(raw("log-level"), what("log-level")),
    fastPath: onOff(raw("fast-path"), what("fast-path")),
    http2Engine: oneOf(raw("http2-engine"), ["ripple", "node"] as const, what("http2-engine")),
    coordinator,
    etcdEndpoints: raw("etcd-endpoints").split(",").map((e) => e.trim()).filter((e) => e !== ""),
    group,
    nodeId: optional("node-id") ?? hostname(),
    kubernetesNamespace: optional("kubernetes-namespace") ?? podNamespace(),
    podName: optional("pod-name") ?? hostname(),
    leaseDurationMs,
    renewDeadlineMs,
    retryPeriodMs,
    corsAllowedOrigins,
    corsAllowCredentials,
    corsMaxAgeSeconds: int("cors-max-age"),
  };
}

/** The namespace a pod runs in, from its service account (else "default"). */
function podNamespace(): string {
  try {
    return readFileSync("/var/run/secrets/kubernetes.io/serviceaccount/namespace", "utf8").trim() || "default";
  } catch {
    return "default";
  }
}

function oneOf<T extends string>(text: string, values: readonly T[], what: string): T {
  const v = text.trim().toLowerCase() as T;
  if (!values.includes(v)) throw new ConfigError(`${what}: "${text}" is not one of ${values.join(", ")}`);
  return v;
}

function onOff(text: string, what: string): boolean {
  const v = text.trim().toLowerCase();
  if (v !== "on" && v !== "off") throw new ConfigError(`${what}: "${text}" is not on or off`);
  return v === "on";
}

function logLevel(text: string, what: string): LogLevel {
  const level = text.trim().toLowerCase() as LogLevel;
  if (!LOG_LEVELS.includes(level)) throw new ConfigError(`${what}: "${text}" is not one of ${LOG_LEVELS.join(", ")}`);
  return level;
}

function mustBeReadable(file: string, what: string): void {
  try {
    accessSync(file, constants.R_OK);
  } catch (err) {
    throw new ConfigError(`${what}: cannot read ${file}: ${(err as Error).message}`);
  }
}

/** A token from its file (or the environment). Errors name the file, never its content. */
function readToken(flag: string, file: string | undefined, fromEnv: string | undefined): string | undefined {
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(`--${flag}: cannot read ${file}: ${(err as Error).message}`);
    }
    const token = text.trim();
    if (token === "") throw new ConfigError(`--${flag}: ${file} is empty`);
    return token;
  }
  const token = fromEnv?.trim();
  return token === undefined || token === "" ? undefined : token;
}
