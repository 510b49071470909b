import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CacheClient } from "../../src/client/client.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import type { InfoResponse } from "../../src/gen/ripplecache/v1/cache_pb.js";
import { freePort, startServer, type ServerProcess } from "./server.js";

/** RIPPLECACHE_TEST_TRACE=1 prints how long node starts and waits take (to find what is slow on a loaded machine). */
const TRACE = process.env.RIPPLECACHE_TEST_TRACE === "1";
function trace(what: string, since: number): void {
  if (TRACE) process.stderr.write(`# ${Date.now() - since} ms: ${what}\n`);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Polls `probe` until it returns something other than undefined/false, or
 * throws after `timeoutMs` with `what` and the last value or error seen.
 * Errors thrown by the probe count as "not yet".
 */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const r = await probe();
      if (r !== undefined && r !== false) {
        trace(what, started);
        return r;
      }
      last = r;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${detail})`);
    }
    await sleep(intervalMs);
  }
}


export { freePort };

/** A running node and a client for it. */
export interface Node {
  readonly name: string;
  readonly server: ServerProcess;
  readonly client: CacheClient;
  readonly addr: string;
  readonly url: string;
  readonly output: string[];
}

/** The JSON log records a node wrote, from line `since` on. */
export function logRecords(node: Node, since = 0): { msg?: string; [k: string]: unknown }[] {
  const records: { msg?: string }[] = [];
  for (const line of node.output.slice(since)) {
    try {
      records.push(JSON.parse(line) as { msg?: string });
    } catch {
      // not a JSON line
    }
  }
  return records;
}

/** Log records of resyncs the node did as a replica ("full resync" / "partial resync"), from line `since` on. */
export function resyncs(node: Node, since = 0): { msg?: string; primary?: string }[] {
  return logRecords(node, since).filter((r) => r.msg === "full resync" || r.msg === "partial resync") as { msg?: string; primary?: string }[];
}

export async function health(node: Node): Promise<HealthCheckResponse_ServingStatus> {
  const client = createClient(Health, createConnectTransport({ baseUrl: node.url, httpVersion: "1.1" }));
  return (await client.check({ service: "" }, { timeoutMs: 2000 })).status;
}

export const SERVING = HealthCheckResponse_ServingStatus.SERVING;
export const NOT_SERVING = HealthCheckResponse_ServingStatus.NOT_SERVING;

export async function waitServing(node: Node, timeoutMs = 10_000): Promise<void> {
  await waitFor(`${node.name} to report SERVING`, async () => (await health(node)) === SERVING, timeoutMs);
}

export interface Digest {
  revision: bigint;
  digest: string;
  keys: bigint;
}

/**
 * Polls AdminService.Digest on every node until all report the same revision
 * and digest; returns that digest. Throws after `timeoutMs` with every node's last answer.
 */
export async function waitConverged(nodes: readonly Node[], timeoutMs = 10_000): Promise<Digest> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last: string[] = [];
  for (;;) {
    const answers = await Promise.all(
      nodes.map((n) =>
        n.client.admin.digest({}, { timeoutMs: 2000 }).then(
          (d) => ({ revision: d.revision, digest: d.digest, keys: d.keys }) as Digest,
          (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
        ),
      ),
    );
    const ok = answers.filter((a): a is Digest => !(a instanceof Error));
    if (ok.length === nodes.length && ok.every((d) => d.revision === ok[0].revision && d.digest === ok[0].digest)) {
      trace(`convergence of ${nodes.map((n) => n.name).join(", ")}`, started);
      return ok[0];
    }
    last = answers.map((a, i) => `${nodes[i].name}: ${a instanceof Error ? a.message : `rev ${a.revision} keys ${a.keys} ${a.digest.slice(0, 12)}`}`);
    if (Date.now() >= deadline) throw new Error(`nodes did not converge within ${timeoutMs} ms: ${last.join("; ")}`);
    await sleep(50);
  }
}

/**
 * Waits until no key on `node` (a primary) has a time to live, and none is
 * expired but not yet removed: after that, its dataset changes only with writes.
 */
export async function waitNoExpiring(node: Node, timeoutMs = 10_000): Promise<void> {
  await waitFor(`every key with a TTL on ${node.name} to expire`, async () => {
    let live = 0;
    for await (const e of node.client.scan("", { keysOnly: true, pageSize: 1000 })) {
      if (e.ttlMs > 0) throw new Error(`${e.key} still has ${e.ttlMs} ms to live`);
      live++;
    }
    const info = await node.client.info();
    if (info.keys !== BigInt(live)) throw new Error(`${info.keys} keys held, ${live} live`);
    return true;
  }, timeoutMs);
}

/** Polls Info on the primary until it lists exactly `replicas` (by address), all streaming, caught up, with no lag. */
export async function waitReplicasStreaming(primary: Node, replicas: readonly Node[], timeoutMs = 10_000): Promise<InfoResponse> {
  const want = replicas.map((r) => r.addr).sort();
  return waitFor(
    `${primary.name} to list ${want.join(", ")} streaming with lag 0`,
    async () => {
      const info = await primary.client.info();
      const got = info.replicas.map((r) => r.address).sort();
      const ok =
        JSON.stringify(got) === JSON.stringify(want) &&
        info.replicas.every((r) => r.state === "streaming" && r.lagRevisions === 0n && r.lagMs === 0n && r.ackedRevision === info.revision);
      if (ok) return info;
      const list = info.replicas.map((r) => `${r.address} ${r.state} acked ${r.ackedRevision} lag ${r.lagRevisions}/${r.lagMs}ms`);
      throw new Error(`revision ${info.revision}, replicas [${list.join("; ")}]`);
    },
    timeoutMs,
  );
}

export { expectCode } from "./assert.js";

/** Every node process started here: killed when the test process exits, even after a test timed out mid-way. */
const live = new Set<ServerProcess["proc"]>();
process.once("exit", () => {
  for (const proc of live) {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGCONT");
      proc.kill("SIGKILL");
    }
  }
});

export interface NodeSpec {
  readonly name: string;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** Sent by the node's client (the admin token). */
  readonly token?: string;
}

/**
 * The processes and clients of one test: `stopAll` (in finally) resumes any
 * stopped process and kills every one, and closes every client.
 */
export class Cluster {
  private readonly nodes: Node[] = [];
  private readonly clients: CacheClient[] = [];
  private count = 0;

  /** Starts a node; `token` is sent by its client (for admin RPCs). */
  async start(name: string, args: readonly string[] = [], env: Record<string, string> = {}, token?: string): Promise<Node> {
    const started = Date.now();
    const server = await startServer(["--shutdown-timeout", "3000", ...args], env);
    trace(`start ${name}`, started);
    live.add(server.proc);
    server.proc.once("exit", () => live.delete(server.proc));
    const client = this.client(server.addr, token);
    const node: Node = { name: `${name}#${++this.count}`, server, client, addr: server.addr, url: server.url, output: server.output };
    this.nodes.push(node);
    return node;
  }

  /** Starts a replica of `primary` (a node or a host:port). */
  startReplica(name: string, primary: Node | string, args: readonly string[] = [], env: Record<string, string> = {}, token?: string): Promise<Node> {
    return this.start(name, ["--replica-of", typeof primary === "string" ? primary : primary.addr, ...args], env, token);
  }

  /**
   * Starts a primary and its replicas at once (the primary on a port chosen
   * beforehand, so the replicas know its address while it starts). The
   * replicas back off and retry until it listens: wait for them with waitServing.
   */
  async startGroup(primary: NodeSpec, replicas: readonly NodeSpec[]): Promise<{ primary: Node; replicas: Node[] }> {
    const port = await freePort();
    const addr = `127.0.0.1:${port}`;
    const [p, ...rs] = await Promise.all([
      this.start(primary.name, ["--port", String(port), ...(primary.args ?? [])], primary.env, primary.token),
      ...replicas.map((r) => this.startReplica(r.name, addr, r.args, r.env, r.token)),
    ]);
    return { primary: p, replicas: rs };
  }

  /** A client that does not follow a replica's refusal to the primary: the tests see what each node answers. */
  client(addr: string, token?: string): CacheClient {
    const client = new CacheClient({ addr, token, timeoutMs: 5000, followPrimary: false });
    this.clients.push(client);
    return client;
  }

  async stopAll(): Promise<void> {
    for (const c of this.clients) c.close();
    await Promise.all(
      this.nodes.map(async (n) => {
        const p = n.server.proc;
        if (p.exitCode === null && p.signalCode === null) {
          p.kill("SIGCONT");
          await n.server.stop("SIGKILL");
        }
      }),
    );
  }
}

export function pause(node: Node): void {
  assert.ok(node.server.proc.kill("SIGSTOP"), `SIGSTOP ${node.name}`);
}

export function resume(node: Node): void {
  assert.ok(node.server.proc.kill("SIGCONT"), `SIGCONT ${node.name}`);
}

const enc = new TextEncoder();

export interface LoadOptions {
  /** Every key starts with this. */
  readonly prefix: string;
  /** Concurrent writers. */
  readonly concurrency?: number;
  /** Distinct plain keys. */
  readonly keys?: number;
  /** A Flush once this many operations were done (once). */
  readonly flushAfter?: number;
  /** Pause between operations of one writer, ms (limits the rate). */
  readonly delayMs?: number;
  /** Keep going when calls fail (the primary is being killed). */
  readonly tolerateErrors?: boolean;
}

/**
 * Continuous writes on a primary: sets (some with flags), sets with short
 * TTLs that expire during the load, deletes, increments, touches, SetMany,
 * and optionally one Flush.
 */
export class Load {
  ops = 0;
  errors = 0;
  flushed = false;
  private stopped = false;
  private firstError: unknown;
  private readonly workers: Promise<void>[] = [];

  constructor(
    private client: CacheClient,
    private readonly options: LoadOptions,
  ) {
    for (let i = 0; i < (options.concurrency ?? 3); i++) this.workers.push(this.run());
  }

  /** Sends the rest of the load to another client (a restarted primary). */
  retarget(client: CacheClient): void {
    this.client = client;
  }

  /** Resolves once at least `n` more operations have completed. */
  async waitOps(n: number, timeoutMs = 15_000): Promise<void> {
    const target = this.ops + n;
    await waitFor(`${n} more load operations (at ${this.ops})`, () => this.ops >= target || (this.firstError !== undefined && !this.options.tolerateErrors && this.firstError), timeoutMs, 20);
    if (this.firstError !== undefined && !this.options.tolerateErrors) throw this.firstError;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
    if (this.firstError !== undefined && !this.options.tolerateErrors) throw this.firstError;
  }

  private async run(): Promise<void> {
    const { prefix } = this.options;
    const keys = this.options.keys ?? 100;
    while (!this.stopped) {
      const n = Math.floor(Math.random() * keys);
      const r = Math.random();
      try {
        if (this.options.flushAfter !== undefined && !this.flushed && this.ops >= this.options.flushAfter) {
          this.flushed = true;
          await this.client.rpc.flush({});
        } else if (r < 0.35) {
          await this.client.set(`${prefix}k/${n}`, `v${this.ops}-${Math.random()}`, { flags: n % 3 });
        } else if (r < 0.5) {
          await this.client.set(`${prefix}ttl/${n}`, `t${this.ops}`, { ttlMs: 100 + Math.floor(Math.random() * 300) });
        } else if (r < 0.65) {
          await this.client.delete(`${prefix}k/${n}`);
        } else if (r < 0.8) {
          await this.client.increment(`${prefix}c/${n % 10}`, BigInt(Math.floor(Math.random() * 11) - 5));
        } else if (r < 0.9) {
          await this.client.rpc.setMany({
            entries: Array.from({ length: 5 }, (_, i) => ({ key: `${prefix}m/${(n + i) % keys}`, value: enc.encode(`m${this.ops}`) })),
          });
        } else {
          await this.client.rpc.touch({ key: `${prefix}k/${n}`, ttlMs: BigInt(n % 2 === 0 ? 0 : 200) });
        }
        this.ops++;
      } catch (err) {
        this.errors++;
        this.firstError ??= err;
        if (!this.options.tolerateErrors) return;
        await sleep(20);
      }
      if (this.options.delayMs !== undefined) await sleep(this.options.delayMs);
    }
  }
}
