#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { CacheClient, type Protocol } from "../client/client.js";
import { EventType, ResyncReason, Role, RoleSchema } from "../gen/ripplecache/v1/cache_pb.js";
import { ConfigError, envName, resolveConfig, SETTINGS } from "../server/config.js";
import { type RunningServer, startServer } from "../server/server.js";
import type { ServerConfig } from "../server/config.js";
import { VERSION } from "../version.js";
import { announce, configureLogging, logLine } from "../log.js";

const USAGE = `ripplecache ${VERSION}: a cache server with Connect, gRPC and gRPC-Web on one port.

Usage:
  ripplecache serve [flags]                     run the server (ripplecache serve --help lists flags)
  ripplecache get KEY                           print the value; exit code 1 on a miss
  ripplecache set KEY [VALUE] [--ttl MS] [--flags N] [--if-absent | --if-present | --if-revision N]
                                                VALUE from the argument, else from stdin (empty only with --empty)
  ripplecache del KEY [--if-revision N]         exit code 1 when nothing was deleted
  ripplecache incr KEY [DELTA] [--ttl MS]       print the new value
  ripplecache touch KEY --ttl MS                set a key's time to live (0 = never expires); exit code 1 on a miss
  ripplecache scan [PREFIX] [--keys-only] [--limit N]
                                                print KEY<TAB>VALUE lines (KEY lines with --keys-only)
  ripplecache info                              print server information as JSON
  ripplecache flush                             remove every key (admin token)
  ripplecache promote [--force]                 make a replica the primary; a primary that still answers becomes its replica (admin token)
  ripplecache failover [--to NODE]              planned switchover, asked of the primary (--coordinator etcd; admin token)
  ripplecache replica-of HOST:PORT              make a node a replica of HOST:PORT (admin token)
  ripplecache digest                            print the dataset checksum at the current revision
  ripplecache watch [KEY | --prefix P] [--from-revision N [--from-history H]] [--json]
                                                print changes as they come (every key without KEY or --prefix)

Client flags:
  --addr HOST:PORT   server address (RIPPLECACHE_ADDR; default 127.0.0.1:7420)
  --protocol P       connect, grpc or grpc-web (default connect)
  --http1            use HTTP/1.1 instead of HTTP/2 (connect and grpc-web)
  --token T          bearer token (RIPPLECACHE_TOKEN)
  --timeout MS       deadline per call, more than 0 (default 10000)
  --cacert FILE      TLS: PEM CA bundle that verifies the server (https; default: Node's root CAs with an https:// --addr)
  --cert FILE        TLS: PEM client certificate, for a server with --tls-client-ca (with --key)
  --key FILE         TLS: PEM private key of --cert
`;

const CLIENT_OPTIONS = {
  addr: { type: "string" },
  protocol: { type: "string" },
  http1: { type: "boolean" },
  token: { type: "string" },
  timeout: { type: "string" },
  cacert: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  ttl: { type: "string" },
  flags: { type: "string" },
  "if-absent": { type: "boolean" },
  "if-present": { type: "boolean" },
  "if-revision": { type: "string" },
  "keys-only": { type: "boolean" },
  limit: { type: "string" },
  prefix: { type: "string" },
  "from-revision": { type: "string" },
  "from-history": { type: "string" },
  force: { type: "boolean" },
  to: { type: "string" },
  json: { type: "boolean" },
  empty: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

/** Most positional arguments each client command takes (a command not listed takes any number). */
const MAX_POSITIONALS: Record<string, number> = { get: 1, set: 2, del: 1, incr: 2, touch: 1, scan: 1, info: 0, flush: 0, promote: 0, failover: 0, "replica-of": 1, digest: 0, watch: 1 };

/** The address the client commands talk to, for error messages. */
let clientAddr = "";

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve(rest);
    case "get":
    case "set":
    case "del":
    case "incr":
    case "touch":
    case "scan":
    case "info":
    case "flush":
    case "watch":
    case "promote":
    case "failover":
    case "replica-of":
    case "digest":
      return clientCommand(command, rest);
    case "version":
    case "--version":
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${command}"; run "ripplecache help"`);
  }
}

async function serve(args: string[]): Promise<number> {
  const options: ParseArgsConfig["options"] = { help: { type: "boolean", short: "h" } };
  for (const s of SETTINGS) options[s.flag] = { type: "string" };
  const { values } = parseArgs({ args: withOptionValues(args, options), options, strict: true, allowPositionals: false });
  if (values.help) {
    process.stdout.write("ripplecache serve [flags]\n\nEach flag can also be set by its environment variable.\n\n");
    for (const s of SETTINGS) {
      process.stdout.write(`  --${s.flag.padEnd(20)} ${envName(s.flag).padEnd(34)} default ${s.defaultValue || "(unset)"}\n      ${s.help}\n`);
    }
    return 0;
  }
  const flags: Record<string, string | undefined> = {};
  for (const s of SETTINGS) flags[s.flag] = values[s.flag] as string | undefined;
  const config = resolveConfig(flags);
  if (config.replicaOf !== undefined && !isHostPort(config.replicaOf)) {
    throw new ConfigError(`--replica-of (RIPPLECACHE_REPLICA_OF): "${config.replicaOf}" is not HOST:PORT (example: 10.0.0.5:7420)`);
  }
  if (config.advertiseAddress !== undefined && !isHostPort(config.advertiseAddress)) {
    throw new ConfigError(`--advertise-address (RIPPLECACHE_ADVERTISE_ADDRESS): "${config.advertiseAddress}" is not HOST:PORT`);
  }
  if (config.adminPort !== undefined && config.adminPort !== 0 && config.adminPort === config.port) {
    throw new ConfigError(`--admin-port (RIPPLECACHE_ADMIN_PORT) and --port are both ${config.port}: give the admin server a port of its own`);
  }
  configureLogging(config.logLevel);
  // Signals are handled from the start: a SIGTERM during start-up still stops gracefully.
  let signalled: string | undefined;
  let onSignal: ((signal: string) => void) | undefined;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      signalled = signal;
      onSignal?.(signal);
    });
  }
  let server: RunningServer;
  try {
    server = await startServer(config);
  } catch (err) {
    throw startError(err, config);
  }
  announce("listening", { host: config.host, port: server.port, adminPort: server.adminPort, version: VERSION, maxMemoryBytes: config.maxMemoryBytes, auth: config.authToken !== undefined, tls: config.tlsCertFile !== undefined });
  await new Promise<void>((resolve) => {
    onSignal = (signal: string) => {
      logLine("info", "shutting down", { signal });
      void server.close().then(resolve);
    };
    if (signalled !== undefined) onSignal(signalled);
  });
  logLine("info", "stopped", {});
  return 0;
}

async function clientCommand(command: string, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: withOptionValues(args, CLIENT_OPTIONS), options: CLIENT_OPTIONS, strict: true, allowPositionals: true });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const most = MAX_POSITIONALS[command] ?? Number.POSITIVE_INFINITY;
  if (positionals.length > most) {
    throw new UsageError(`${command} takes ${most === 0 ? "no arguments" : `at most ${most} argument${most === 1 ? "" : "s"}`}; unexpected ${positionals.slice(most).map((a) => JSON.stringify(a)).join(" ")}`);
  }
  const timeoutMs = number(values.timeout ?? "10000", "--timeout");
  if (timeoutMs === 0) throw new UsageError("--timeout must be more than 0 milliseconds (it is the deadline of each call)");
  const protocol = (values.protocol ?? "connect") as Protocol;
  if (!["connect", "grpc", "grpc-web"].includes(protocol)) throw new UsageError(`--protocol must be connect, grpc or grpc-web, not "${protocol}"`);
  clientAddr = values.addr ?? process.env.RIPPLECACHE_ADDR ?? "127.0.0.1:7420";
  const client = new CacheClient({
    addr: clientAddr,
    protocol,
    httpVersion: values.http1 ? "1.1" : "2",
    token: values.token ?? process.env.RIPPLECACHE_TOKEN,
    timeoutMs,
    ...(values.cacert !== undefined || values.cert !== undefined ? { tls: { caFile: values.cacert, certFile: values.cert, keyFile: values.key } } : {}),
  });
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError("--cert and --key go together");
  const key = (): string => {
    const k = positionals[0];
    if (k === undefined) throw new UsageError(`${command} needs a KEY`);
    return k;
  };
  try {
    switch (command) {
      case "get": {
        const r = await client.get(key());
        if (r === undefined) {
          process.stderr.write(`(not found)\n`);
          return 1;
        }
        process.stdout.write(r.value);
        if (process.stdout.isTTY) process.stdout.write("\n");
        return 0;
      }
      case "set": {
        if (values.empty && positionals[1] !== undefined) throw new UsageError("set takes a VALUE or --empty, not both");
        const value = values.empty ? new Uint8Array(0) : positionals[1] !== undefined ? new TextEncoder().encode(positionals[1]) : await readStdin();
        const r = await client.set(key(), value, {
          ttlMs: number(values.ttl ?? "0", "--ttl"),
          flags: number(values.flags ?? "0", "--flags"),
          ifAbsent: values["if-absent"],
          ifPresent: values["if-present"],
          ifRevision: values["if-revision"] === undefined ? undefined : number(values["if-revision"], "--if-revision"),
        });
        process.stdout.write(r.applied ? `OK revision ${r.revision}\n` : `not applied: condition not met (revision ${r.revision})\n`);
        return r.applied ? 0 : 1;
      }
      case "del": {
        const ifRevision = values["if-revision"] === undefined ? undefined : number(values["if-revision"], "--if-revision");
        const r = await client.delete(key(), ifRevision);
        process.stdout.write(r.deleted ? `deleted revision ${r.revision}\n` : `not deleted (revision ${r.revision})\n`);
        return r.deleted ? 0 : 1;
      }
      case "incr": {
        const delta = positionals[1] ?? "1";
        if (!/^-?[0-9]+$/.test(delta)) throw new UsageError(`DELTA must be an integer, not "${delta}"`);
        const r = await client.increment(key(), BigInt(delta), number(values.ttl ?? "0", "--ttl"));
        process.stdout.write(`${r.value}\n`);
        return 0;
      }
      case "touch": {
        if (values.ttl === undefined) throw new UsageError("touch needs --ttl MS (0 = the key never expires)");
        const r = await client.rpc.touch({ key: key(), ttlMs: BigInt(number(values.ttl, "--ttl")) });
        if (!r.found) {
          process.stderr.write("(not found)\n");
          return 1;
        }
        process.stdout.write(`OK revision ${r.revision}\n`);
        return 0;
      }
      case "flush": {
        const r = await client.rpc.flush({});
        process.stdout.write(`flushed at revision ${r.revision}\n`);
        return 0;
      }
      case "scan": {
        const limit = number(values.limit ?? "0", "--limit");
        for await (const e of client.scan(positionals[0] ?? "", { keysOnly: values["keys-only"], pageSize: limit })) {
          process.stdout.write(values["keys-only"] ? `${e.key}\n` : `${e.key}\t${Buffer.from(e.value).toString("utf8")}\n`);
        }
        return 0;
      }
      case "promote": {
        const r = await client.admin.promote({ force: values.force === true });
        process.stdout.write(
          r.alreadyPrimary
            ? `already the primary: nothing changed (replication id ${r.replicationId} at revision ${r.revision})\n`
            : `primary now, replication id ${r.replicationId} at revision ${r.revision}\n`,
        );
        return 0;
      }
      case "failover": {
        const r = await client.admin.failover({ to: values.to ?? "" });
        process.stdout.write(`${r.nodeId} at ${r.address} is primary now (term ${r.term}, every revision up to ${r.revision})\n`);
        return 0;
      }
      case "replica-of": {
        const primary = positionals[0];
        if (primary === undefined) throw new UsageError("replica-of needs the primary's HOST:PORT");
        await client.admin.replicaOf({ primaryAddress: primary });
        process.stdout.write(`replicating from ${primary}\n`);
        return 0;
      }
      case "digest": {
        const d = await client.admin.digest({});
        process.stdout.write(`${JSON.stringify({ revision: Number(d.revision), digest: d.digest, keys: Number(d.keys) })}\n`);
        return 0;
      }
      case "watch":
        return await watch(client, positionals[0], values.prefix, number(values["from-revision"] ?? "0", "--from-revision"), values["from-history"] ?? "", values.json === true);
      case "info": {
        const i = await client.info();
        const out = {
          // The API's JSON name (ROLE_PRIMARY), as curl and every JSON client show it.
          role: RoleSchema.value[i.role]?.name ?? String(i.role),
          version: i.version,
          revision: Number(i.revision),
          keys: Number(i.keys),
          bytesUsed: Number(i.bytesUsed),
          bytesLimit: Number(i.bytesLimit),
          hits: Number(i.hits),
          misses: Number(i.misses),
          evictions: Number(i.evictions),
          expirations: Number(i.expirations),
          uptimeMs: Number(i.uptimeMs),
          replicationId: i.replicationId,
          oldestRevision: Number(i.oldestRevision),
          streams: Number(i.streams),
          term: Number(i.term),
          ...(i.role === Role.REPLICA ? { primaryAddress: i.primaryAddress, linkState: i.linkState } : {}),
          // With a coordinator (docs/FAILOVER.md): the group, this node and the lease.
          ...(i.coordinator !== "" && i.coordinator !== "static"
            ? {
                coordinator: i.coordinator,
                group: i.group,
                nodeId: i.nodeId,
                leaseHolder: i.leaseHolder,
                leaseHolderAddress: i.leaseHolderAddress,
                leaseValidMs: Number(i.leaseValidMs),
                leaseRenewLatencyMs: i.leaseRenewLatencyMs,
              }
            : {}),
          replicas: i.replicas.map((r) => ({
            address: r.address,
            state: r.state,
            ackedRevision: Number(r.ackedRevision),
            lagRevisions: Number(r.lagRevisions),
            lagMs: Number(r.lagMs),
            fullResyncs: Number(r.fullResyncs),
          })),
        };
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
        return 0;
      }
    }
    return 2;
  } finally {
    client.close();
  }
}

/** Prints a watch stream until interrupted; exits 0 on SIGINT/SIGTERM, 2 when the stream fails. */
async function watch(client: CacheClient, key: string | undefined, prefix: string | undefined, fromRevision: number, fromHistory: string, json: boolean): Promise<number> {
  if (key !== undefined && prefix !== undefined) throw new UsageError("watch takes a KEY or --prefix, not both");
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  process.once("SIGTERM", () => stop.abort());
  const target = key !== undefined ? { case: "key" as const, value: key } : { case: "prefix" as const, value: prefix ?? "" };
  const out = (record: Record<string, unknown>, text: string) => process.stdout.write(json ? `${JSON.stringify(record)}\n` : `${text}\n`);
  try {
    const stream = client.rpc.watch({ target, startRevision: BigInt(fromRevision), startHistory: fromHistory, withValues: true }, { signal: stop.signal, timeoutMs: 0 });
    for await (const m of stream) {
      const k = m.kind;
      switch (k.case) {
        case "created":
          out({ type: "CREATED", revision: Number(k.value.revision), history: k.value.history }, `# watching at revision ${k.value.revision} of history ${k.value.history}`);
          break;
        case "events":
          for (const e of k.value.events) {
            const type = EventType[e.type];
            const value = Buffer.from(e.value).toString("utf8");
            out({ type, key: e.key, revision: Number(e.revision), value, flags: e.flags, expiresAtMs: Number(e.expiresAtMs) }, `${e.revision}\t${type}\t${e.key}${type === "PUT" ? `\t${value}` : ""}`);
          }
          break;
        case "progress":
          if (json) out({ type: "PROGRESS", revision: Number(k.value.revision), history: k.value.history }, "");
          break;
        case "resync":
          out({ type: "RESYNC", reason: ResyncReason[k.value.reason], revision: Number(k.value.revision), history: k.value.history }, `# RESYNC (${ResyncReason[k.value.reason]}): drop cached copies; continuing after revision ${k.value.revision}`);
          break;
      }
    }
  } catch (err) {
    if (!stop.signal.aborted) throw err;
  }
  return 0;
}

function number(text: string, what: string): number {
  if (!/^[0-9]+$/.test(text)) throw new UsageError(`${what} must be a non-negative integer, not "${text}"`);
  return Number(text);
}

async function readStdin(): Promise<Uint8Array> {
  if (process.stdin.isTTY) throw new UsageError("set needs a VALUE argument or a value on stdin");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  // An empty stdin is more often a mistake (a command that printed nothing) than a wish.
  if (chunks.length === 0 || Buffer.concat(chunks).length === 0) throw new UsageError("set read an empty value from stdin: give --empty to store an empty value");
  return Buffer.concat(chunks);
}

/**
 * The arguments with each string option joined to its value (`--ttl -5` becomes
 * `--ttl=-5`), so that a negative number reaches our validation instead of
 * parseArgs' "argument is ambiguous"; and positional negative numbers (`incr k -5`)
 * moved after `--`, in order, so that they are not taken for options.
 */
function withOptionValues(args: readonly string[], options: ParseArgsConfig["options"]): string[] {
  const opts: string[] = [];
  const positionals: string[] = [];
  const negative = /^-[0-9]/;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (negative.test(arg) || arg === "-" || !arg.startsWith("-")) positionals.push(arg);
    else {
      const name = arg.startsWith("--") && !arg.includes("=") ? arg.slice(2) : undefined;
      const next = args[i + 1];
      if (name !== undefined && options?.[name]?.type === "string" && next !== undefined && (!next.startsWith("-") || next === "-" || negative.test(next))) {
        opts.push(`${arg}=${next}`);
        i++;
      } else opts.push(arg);
    }
  }
  return positionals.length === 0 ? opts : [...opts, "--", ...positionals];
}

/** HOST:PORT (or an http(s) URL), as the ReplicaOf RPC takes it. */
function isHostPort(address: string): boolean {
  if (/^https?:\/\//.test(address)) return true;
  const m = /^[^\s:]+:([0-9]{1,5})$/.exec(address);
  return m !== null && Number(m[1]) <= 65535;
}

/** A start-up failure as one line naming the flag to change. */
function startError(err: unknown, config: ServerConfig): Error {
  const e = err as NodeJS.ErrnoException & { port?: number; address?: string };
  const code = e?.code ?? "";
  const onAdmin = e?.port !== undefined && e.port === config.adminPort && e.port !== config.port;
  const flag = onAdmin ? "--admin-port (RIPPLECACHE_ADMIN_PORT)" : "--port (RIPPLECACHE_PORT)";
  const where = `${config.host}:${e?.port ?? (onAdmin ? config.adminPort : config.port)}`;
  const otherPort = onAdmin ? `give another --admin-port (0 = any free port, "off" = no admin server)` : "give another --port (0 = any free port)";
  switch (code) {
    case "EADDRINUSE":
      return new ConfigError(`cannot listen on ${where} for ${flag}: the address is in use; ${otherPort}`);
    case "EACCES":
      return new ConfigError(`cannot listen on ${where} for ${flag}: permission denied (ports below 1024 need privileges); ${otherPort}`);
    case "EADDRNOTAVAIL":
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_FAIL":
      return new ConfigError(`--host (RIPPLECACHE_HOST): cannot listen on "${config.host}" (${code}): not an address of this machine`);
  }
  const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
  if (!/--[a-z]/.test(message) && (code.startsWith("ERR_OSSL") || /PEM|certificate|private key/i.test(message))) {
    return new ConfigError(`cannot start TLS: ${message}: check --tls-cert, --tls-key and --tls-client-ca`);
  }
  return new ConfigError(`cannot start: ${message}${code !== "" && !message.includes(code) ? ` (${code})` : ""}`);
}


/**
 * Errors that mean the peer answered, but not as RippleCache does: an HTTP/2
 * session refused by an HTTP/1.1 server, a plain HTTP status (404, 405) where
 * a Connect or gRPC answer belongs, or bytes that are not HTTP at all.
 */
function notRippleCache(err: ConnectError): boolean {
  if (err.code !== Code.Internal && err.code !== Code.Unknown && err.code !== Code.Unimplemented) return false;
  return /^(Protocol error|HTTP (404|405)|Parse Error)/.test(err.rawMessage);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConnectError && notRippleCache(err)) {
      process.stderr.write(`ripplecache: ${clientAddr} is not a RippleCache port (${Code[err.code]}: ${err.rawMessage}): is it the admin port (--admin-port, /livez /readyz /metrics)? --addr takes the server's main port (--port, 7420 by default)\n`);
    } else if (err instanceof ConnectError) {
      const hint = err.code === Code.Unavailable ? " (is the server running at that address?)" : "";
      process.stderr.write(`ripplecache: ${Code[err.code]}: ${err.rawMessage}${hint}\n`);
    } else if (err instanceof UsageError || err instanceof ConfigError || (err instanceof Error && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS"))) {
      process.stderr.write(`ripplecache: ${(err as Error).message}\n`);
    } else {
      process.stderr.write(`ripplecache: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    }
    process.exit(2);
  },
);
