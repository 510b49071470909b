/**
 * What the failover bench (bench/failover.ts) and the failover chaos run
 * (bench/chaos-failover.ts) share: a RippleCache group coordinated by etcd,
 * a Redis Sentinel group, a minimal RESP client, write loops of the same
 * shape for both (distinct keys, every acknowledgement recorded with the
 * node that gave it and when), and a TCP proxy that can cut a node from etcd.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import * as net from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { CacheClient } from "../src/client/client.js";
import { Role } from "../src/gen/ripplecache/v1/cache_pb.js";
import { sleep, waitFor, type Node } from "../test/helpers/cluster.js";
import { CLI, freePort, requireTool, type ServerProcess } from "../test/helpers/server.js";

export { sleep, waitFor, type Node };

// --- write loops --------------------------------------------------------------

/** One acknowledged write: who acknowledged it and when (performance.now()). */
export interface Ack {
  readonly key: string;
  readonly value: string;
  /** The address that acknowledged. */
  readonly node: string;
  readonly sent: number;
  readonly recv: number;
}

/** How a write loop reaches the current primary: `write` throws when the write was not acknowledged. */
export interface WriteTarget {
  /** The primary's address as known now (undefined: ask again). */
  find(): Promise<string | undefined>;
  /** Sets key=value on addr; resolves when acknowledged (for a min-replica write: with a replica's ack). */
  write(addr: string, key: string, value: string): Promise<void>;
}

/**
 * Writers of distinct keys, sequential per worker, a short pause between
 * writes (the machine is shared): after a failure the primary is looked up
 * again and writes are retried every 10 ms. Every acknowledgement is kept.
 */
export class WriteLoop {
  readonly acks: Ack[] = [];
  errors = 0;
  private stopped = false;
  private readonly workers: Promise<void>[] = [];
  private seq = 0;

  constructor(
    private readonly target: WriteTarget,
    readonly prefix: string,
    concurrency = 2,
    private readonly pauseMs = 5,
  ) {
    for (let i = 0; i < concurrency; i++) this.workers.push(this.run());
  }

  /** The first acknowledgement received at or after `t` from an address other than `except`. */
  firstAckAfter(t: number, except?: string): Ack | undefined {
    return this.acks.find((a) => a.recv >= t && a.node !== except);
  }

  /** The longest time without an acknowledgement from `from` to the first acknowledgement after `to`. */
  maxGap(from: number, to: number): number {
    let last = from;
    let max = 0;
    for (const a of this.acks) {
      if (a.recv < from) continue;
      max = Math.max(max, a.recv - last);
      last = a.recv;
      if (a.recv > to) return max;
    }
    return Number.POSITIVE_INFINITY;
  }

  async waitAcks(n: number, timeoutMs = 30_000): Promise<void> {
    const want = this.acks.length + n;
    await waitFor(`${n} more acknowledged writes on ${this.prefix} (${this.errors} errors)`, () => this.acks.length >= want, timeoutMs, 10);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.workers);
  }

  private async run(): Promise<void> {
    let addr: string | undefined;
    while (!this.stopped) {
      if (addr === undefined) {
        addr = await this.target.find().catch(() => undefined);
        if (addr === undefined) {
          await sleep(10);
          continue;
        }
      }
      const n = ++this.seq;
      const key = `${this.prefix}${n}`;
      const value = `v${n}`;
      const sent = performance.now();
      try {
        await this.target.write(addr, key, value);
        this.acks.push({ key, value, node: addr, sent, recv: performance.now() });
        if (this.pauseMs > 0) await sleep(this.pauseMs);
      } catch {
        this.errors++;
        addr = undefined;
        await sleep(10);
      }
    }
  }
}

/** The keys of `acks` that `read` does not return with their acknowledged value. */
export async function lostAcks(acks: readonly Ack[], read: (keys: string[]) => Promise<(string | undefined)[]>): Promise<string[]> {
  const lost: string[] = [];
  for (let i = 0; i < acks.length; i += 500) {
    const chunk = acks.slice(i, i + 500);
    const got = await read(chunk.map((a) => a.key));
    chunk.forEach((a, j) => {
      if (got[j] !== a.value) lost.push(a.key);
    });
  }
  return lost;
}

// --- RippleCache --------------------------------------------------------------

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Election timings: undefined = the defaults of `ripplecache serve` (lease 1500, renew deadline 1000, retry 250 ms). */
export interface Timings {
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
}
export const DEFAULT_TIMINGS: Timings = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 250 };

export function candidateArgs(etcdEndpoint: string, group: string, nodeId: string, timings?: Timings): string[] {
  const t = timings === undefined ? [] : ["--lease-duration", String(timings.leaseDurationMs), "--renew-deadline", String(timings.renewDeadlineMs), "--retry-period", String(timings.retryPeriodMs)];
  return ["--coordinator", "etcd", "--etcd-endpoints", etcdEndpoint, "--group", group, "--node-id", nodeId, ...t];
}

/**
 * A RippleCache client's view of a group: one client per address (no
 * redirection of its own), the primary found by asking every node's Info
 * (a primary with a valid lease), as test/helpers/failover.ts's writer does.
 */
export class RippleTarget implements WriteTarget {
  private readonly clients = new Map<string, CacheClient>();

  constructor(
    private readonly addrs: () => readonly string[],
    private readonly minReplicas: number,
  ) {}

  client(addr: string): CacheClient {
    let c = this.clients.get(addr);
    if (c === undefined) this.clients.set(addr, (c = new CacheClient({ addr, timeoutMs: 2000, followPrimary: false })));
    return c;
  }

  async find(): Promise<string | undefined> {
    const answers = await Promise.all(
      this.addrs().map(async (addr) => {
        try {
          const i = await this.client(addr).rpc.info({}, { timeoutMs: 300 });
          return i.role === Role.PRIMARY && i.leaseValidMs > 0n ? addr : undefined;
        } catch {
          return undefined;
        }
      }),
    );
    return answers.find((a) => a !== undefined);
  }

  async write(addr: string, key: string, value: string): Promise<void> {
    const r = await this.client(addr).rpc.set({ key, value: enc.encode(value), minReplicas: this.minReplicas, replicaTimeoutMs: 1000 }, { timeoutMs: 2000 });
    if (r.replicasAcked < this.minReplicas) throw new Error(`${r.replicasAcked} of ${this.minReplicas} replicas acknowledged`);
  }

  async read(addr: string, keys: string[]): Promise<(string | undefined)[]> {
    const r = await this.client(addr).rpc.getMany({ keys }, { timeoutMs: 10_000 });
    return keys.map((_, i) => (r.entries[i]?.found ? dec.decode(r.entries[i].value) : undefined));
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
  }
}

export function alive(node: Node): boolean {
  return node.server.proc.exitCode === null && node.server.proc.signalCode === null;
}

/** The one live node that is primary with a valid lease while every other live node streams from it. */
export async function onePrimary(nodes: readonly Node[], timeoutMs = 30_000): Promise<Node> {
  return waitFor(
    "one primary, the other nodes streaming from it",
    async () => {
      const live = nodes.filter(alive);
      const infos = await Promise.all(live.map((n) => n.client.rpc.info({}, { timeoutMs: 1000 })));
      const primaries = live.filter((_, i) => infos[i].role === Role.PRIMARY && infos[i].leaseValidMs > 0n);
      if (primaries.length !== 1) throw new Error(`${primaries.length} primaries`);
      const p = primaries[0];
      if (!live.every((n, i) => n === p || (infos[i].role === Role.REPLICA && infos[i].primaryAddress === p.addr && infos[i].linkState === "streaming"))) {
        throw new Error(`not all streaming from ${p.addr}: ${infos.map((x, i) => `${live[i].addr} ${Role[x.role]} -> ${x.primaryAddress} ${x.linkState}`).join("; ")}`);
      }
      return p;
    },
    timeoutMs,
    50,
  );
}

/** How long a node may take to start listening: a loaded 2-core machine can take over 10 s (the test helper's bound). */
const START_TIMEOUT_MS = 45_000;

/**
 * The nodes of one run, started as test/helpers/server.ts does but with a
 * longer bound, and killed (process and all) when a start times out, on
 * stopAll and when this process exits.
 */
export class NodeSet {
  private readonly nodes: Node[] = [];
  private readonly procs = new Set<ChildProcess>();
  private count = 0;
  private readonly onExit = () => {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  };

  constructor() {
    process.on("exit", this.onExit);
  }

  async start(id: string, args: readonly string[]): Promise<Node> {
    const proc = spawn(process.execPath, [CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--shutdown-timeout", "3000", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    this.procs.add(proc);
    proc.once("exit", () => this.procs.delete(proc));
    const output: string[] = [];
    createInterface({ input: proc.stderr! }).on("line", (line) => output.push(line));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill("SIGKILL");
        reject(new Error(`node ${id} did not start within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      createInterface({ input: proc.stdout! }).on("line", (line) => {
        output.push(line);
        try {
          const r = JSON.parse(line) as { msg?: string; port?: number };
          if (r.msg === "listening" && typeof r.port === "number") {
            clearTimeout(timer);
            resolve(r.port);
          }
        } catch {
          // not a JSON line
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`node ${id} exited with ${code} before listening: ${output.slice(-3).join(" | ")}`));
      });
    });
    const addr = `127.0.0.1:${port}`;
    const server: ServerProcess = {
      port,
      adminPort: 0,
      addr,
      url: `http://${addr}`,
      proc,
      output,
      async stop(signal: NodeJS.Signals = "SIGTERM") {
        if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
        const done = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
        proc.kill(signal);
        const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
        try {
          return await done;
        } finally {
          clearTimeout(timer);
        }
      },
    };
    const node: Node = { name: `${id}#${++this.count}`, server, client: new CacheClient({ addr, timeoutMs: 5000, followPrimary: false }), addr, url: server.url, output };
    this.nodes.push(node);
    return node;
  }

  async stopAll(): Promise<void> {
    await Promise.all(
      this.nodes.map(async (n) => {
        n.client.close();
        const p = n.server.proc;
        if (p.exitCode === null && p.signalCode === null) {
          p.kill("SIGCONT");
          await n.server.stop("SIGKILL");
        }
      }),
    );
    // Any node still starting when a start failed.
    this.onExit();
    process.removeListener("exit", this.onExit);
  }
}

/** The node id a node was started with (NodeSet names nodes "id#n"). */
export const nodeId = (n: Node) => n.name.split("#")[0];


// --- a TCP proxy that can cut a node from etcd ----------------------------------

/**
 * A TCP proxy between one node and etcd. `cut()` closes every proxied
 * connection and refuses new ones (the node cannot reach the coordinator,
 * while its clients still reach it); `restore()` lets connections through again.
 */
export class CutProxy {
  private readonly sockets = new Set<net.Socket>();
  private isCut = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<CutProxy> {
    const server = net.createServer();
    const port = await freePort();
    const proxy = new CutProxy(server, port);
    server.on("connection", (c) => proxy.accept(c, targetPort));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(c: net.Socket, targetPort: number): void {
    if (this.isCut) {
      c.destroy();
      return;
    }
    const u = net.connect(targetPort, "127.0.0.1");
    for (const s of [c, u]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.once("close", () => {
        this.sockets.delete(s);
        c.destroy();
        u.destroy();
      });
      s.on("error", () => undefined);
    }
    c.pipe(u);
    u.pipe(c);
  }

  cut(): void {
    this.isCut = true;
    for (const s of this.sockets) s.destroy();
  }

  restore(): void {
    this.isCut = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// --- RESP (Redis) ---------------------------------------------------------------

export class RespError extends Error {}
type RespValue = string | number | null | RespError | RespValue[];

/** Parses one RESP value at `at`; undefined when the buffer does not hold all of it yet. */
function parseResp(buf: Buffer, at: number): [RespValue, number] | undefined {
  const eol = buf.indexOf("\r\n", at);
  if (eol < 0) return undefined;
  const line = buf.toString("utf8", at + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buf[at])) {
    case "+":
      return [line, next];
    case "-":
      return [new RespError(line), next];
    case ":":
      return [Number(line), next];
    case "$": {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return undefined;
      return [buf.toString("utf8", next, next + len), next + len + 2];
    }
    case "*": {
      const len = Number(line);
      if (len < 0) return [null, next];
      const out: RespValue[] = [];
      let p = next;
      for (let i = 0; i < len; i++) {
        const r = parseResp(buf, p);
        if (r === undefined) return undefined;
        out.push(r[0]);
        p = r[1];
      }
      return [out, p];
    }
    default:
      throw new Error(`RESP: unexpected byte ${buf[at]}`);
  }
}

/** A RESP connection: commands in order, each with a deadline; any failure closes the connection. */
export class Resp {
  private buf: Buffer = Buffer.alloc(0);
  private readonly pending: { resolve: (v: RespValue) => void; reject: (e: Error) => void }[] = [];
  private closedWith: Error | undefined;

  private constructor(private readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on("data", (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      for (;;) {
        let r: [RespValue, number] | undefined;
        try {
          r = parseResp(this.buf, 0);
        } catch (err) {
          this.fail(err as Error);
          return;
        }
        if (r === undefined) break;
        this.buf = this.buf.subarray(r[1]);
        this.pending.shift()?.resolve(r[0]);
      }
    });
    sock.on("error", (err) => this.fail(err));
    sock.on("close", () => this.fail(new Error("connection closed")));
  }

  static connect(addr: string, timeoutMs = 1000): Promise<Resp> {
    const [host, port] = addr.split(":");
    return new Promise((resolve, reject) => {
      const sock = net.connect(Number(port), host);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect ${addr}: timeout`));
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        resolve(new Resp(sock));
      });
      sock.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private fail(err: Error): void {
    this.closedWith ??= err;
    this.sock.destroy();
    for (const p of this.pending.splice(0)) p.reject(err);
  }

  /** Sends a command; rejects on an error reply, a closed connection or the deadline (which closes the connection). */
  async call(args: readonly string[], timeoutMs = 1000): Promise<RespValue> {
    if (this.closedWith !== undefined) throw this.closedWith;
    const parts = [`*${args.length}\r\n`];
    for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
    const reply = new Promise<RespValue>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.sock.write(parts.join(""));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new Error(`${args[0]}: no reply within ${timeoutMs} ms`);
        this.fail(err);
        reject(err);
      }, timeoutMs);
    });
    try {
      const v = await Promise.race([reply, timeout]);
      if (v instanceof RespError) throw v;
      return v;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.fail(new Error("closed"));
  }
}

/** One command on a fresh connection. */
export async function respOnce(addr: string, args: readonly string[], timeoutMs = 1000): Promise<RespValue> {
  const c = await Resp.connect(addr, timeoutMs);
  try {
    return await c.call(args, timeoutMs);
  } finally {
    c.close();
  }
}

// --- Redis Sentinel -------------------------------------------------------------

export const SENTINEL_MASTER = "mymaster";
/** Sentinel's failure detection, the same as the anchor of issue 21 (Sentinel's default is 30 s). */
export const DOWN_AFTER_MS = 1000;

export interface RedisProcess {
  readonly addr: string;
  readonly proc: ChildProcess;
}

/** A Redis primary, two replicas and three sentinels on loopback, data and configs in a temporary directory on /dev/shm. */
export class SentinelGroup {
  readonly redis: RedisProcess[] = [];
  readonly sentinels: RedisProcess[] = [];
  private readonly dir = mkdtempSync("/dev/shm/ripplecache-sentinel-");
  private readonly onExit = () => this.killAll();

  private constructor() {
    process.once("exit", this.onExit);
  }

  static async start(): Promise<SentinelGroup> {
    const server = requireTool("redis-server", "redis-server");
    const sentinel = requireTool("redis-sentinel", "redis-sentinel");
    const g = new SentinelGroup();
    try {
      const ports = [await freePort(), await freePort(), await freePort()];
      const master = `127.0.0.1:${ports[0]}`;
      ports.forEach((port, i) => {
        const dir = join(g.dir, `redis-${i}`);
        mkdirSync(dir, { recursive: true });
        const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no"];
        if (i > 0) args.push("--replicaof", "127.0.0.1", String(ports[0]));
        g.redis.push({ addr: `127.0.0.1:${port}`, proc: spawn(server, args, { stdio: "ignore" }) });
      });
      for (let i = 0; i < 3; i++) {
        const port = await freePort();
        const conf = join(g.dir, `sentinel-${i}.conf`);
        writeFileSync(
          conf,
          [
            `port ${port}`,
            "bind 127.0.0.1",
            "protected-mode no",
            `dir ${g.dir}`,
            `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${ports[0]} 2`,
            `sentinel down-after-milliseconds ${SENTINEL_MASTER} ${DOWN_AFTER_MS}`,
            `sentinel parallel-syncs ${SENTINEL_MASTER} 1`,
            "",
          ].join("\n"),
        );
        g.sentinels.push({ addr: `127.0.0.1:${port}`, proc: spawn(sentinel, [conf], { stdio: "ignore" }) });
      }
      // Replicas synced, and every sentinel knows both replicas and the two other sentinels (hello messages every 2 s).
      for (const r of g.redis.slice(1)) {
        await waitFor(`${r.addr} replicating`, async () => /master_link_status:up/.test(String(await respOnce(r.addr, ["INFO", "replication"]))), 30_000, 100);
      }
      for (const s of g.sentinels) {
        await waitFor(
          `sentinel ${s.addr} to know 2 replicas and 2 sentinels`,
          async () => {
            const a = (await respOnce(s.addr, ["SENTINEL", "master", SENTINEL_MASTER])) as string[];
            const f = new Map<string, string>();
            for (let i = 0; i + 1 < a.length; i += 2) f.set(a[i], a[i + 1]);
            return f.get("num-slaves") === "2" && f.get("num-other-sentinels") === "2" && f.get("ip") === "127.0.0.1" && `127.0.0.1:${f.get("port")}` === master;
          },
          60_000,
          200,
        );
      }
      return g;
    } catch (err) {
      await g.stop();
      throw err;
    }
  }

  /** The master's address as the first sentinel that answers names it (a Sentinel client's discovery). */
  async master(timeoutMs = 300): Promise<string | undefined> {
    for (const s of this.sentinels) {
      try {
        const a = (await respOnce(s.addr, ["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER], timeoutMs)) as string[] | null;
        if (a !== null && a.length === 2) return `${a[0]}:${a[1]}`;
      } catch {
        // the next sentinel
      }
    }
    return undefined;
  }

  byAddr(addr: string): RedisProcess | undefined {
    return this.redis.find((r) => r.addr === addr);
  }

  private killAll(): void {
    for (const p of [...this.redis, ...this.sentinels]) {
      if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill("SIGKILL");
    }
  }

  async stop(): Promise<void> {
    const exits = [...this.redis, ...this.sentinels]
      .filter((p) => p.proc.exitCode === null && p.proc.signalCode === null)
      .map((p) => new Promise((resolve) => p.proc.once("exit", resolve)));
    this.killAll();
    await Promise.all(exits);
    process.removeListener("exit", this.onExit);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Writes through Sentinel: on any failure the master is asked of the sentinels again. `waitReplicas` adds WAIT 1 (acknowledged when a replica has it). */
export class SentinelTarget implements WriteTarget {
  private readonly conns = new Map<string, Resp>();

  constructor(
    private readonly group: SentinelGroup,
    private readonly waitReplicas: boolean,
  ) {}

  find(): Promise<string | undefined> {
    return this.group.master();
  }

  async write(addr: string, key: string, value: string): Promise<void> {
    let c = this.conns.get(addr);
    if (c === undefined) {
      c = await Resp.connect(addr, 1000);
      this.conns.set(addr, c);
    }
    try {
      await c.call(["SET", key, value], 2000);
      if (this.waitReplicas) {
        const n = await c.call(["WAIT", "1", "1000"], 2000);
        if (typeof n !== "number" || n < 1) throw new Error(`WAIT: ${String(n)} replicas`);
      }
    } catch (err) {
      c.close();
      this.conns.delete(addr);
      throw err;
    }
  }

  async read(addr: string, keys: string[]): Promise<(string | undefined)[]> {
    const r = (await respOnce(addr, ["MGET", ...keys], 10_000)) as (string | null)[];
    return r.map((v) => v ?? undefined);
  }

  close(): void {
    for (const c of this.conns.values()) c.close();
    this.conns.clear();
  }
}

// --- who holds a valid lease ------------------------------------------------------

/**
 * Polls every node's Info (as test/helpers/failover.ts's PrimaryMonitor) and
 * keeps, per node, the intervals it held a valid lease by its own answers:
 * from an answer's arrival to the request's send time plus the validity it
 * reported. A lease handed over (a switchover) ends before that validity
 * runs out, so the intervals are also cut at the send time of the node's
 * next answer that reports no valid lease: two nodes overlapping then means
 * both reported a valid lease in overlapping windows.
 */
export class LeaseMonitor {
  private stopped = false;
  private readonly running: Promise<void>;
  readonly intervals: { node: string; from: number; to: number; term: bigint }[] = [];
  /** Per node id, send times of answers that reported no valid lease. */
  readonly invalidAt = new Map<string, number[]>();

  constructor(private readonly nodes: () => readonly Node[]) {
    this.running = this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await Promise.all(
        this.nodes()
          .filter(alive)
          .map(async (n) => {
            const sent = performance.now();
            try {
              const i = await n.client.rpc.info({}, { timeoutMs: 500 });
              const recv = performance.now();
              if (i.role === Role.PRIMARY && i.leaseValidMs > 0n) this.intervals.push({ node: i.nodeId, from: recv, to: sent + Number(i.leaseValidMs), term: i.term });
              else {
                const list = this.invalidAt.get(i.nodeId) ?? [];
                list.push(sent);
                this.invalidAt.set(i.nodeId, list);
              }
            } catch {
              // a stopped or killed node
            }
          }),
      );
      await sleep(30);
    }
  }

  /** The intervals, each cut at its node's next answer reporting no valid lease (`trim`), or as reported. */
  held(trim: boolean): { node: string; from: number; to: number; term: bigint }[] {
    return this.intervals
      .map((x) => {
        if (!trim) return x;
        const next = (this.invalidAt.get(x.node) ?? []).find((t) => t > x.from);
        return next === undefined || next >= x.to ? x : { ...x, to: next };
      })
      .filter((x) => x.to > x.from);
  }

  /** The most nodes holding a valid lease at one instant. */
  maxSimultaneous(trim: boolean): number {
    const events = this.held(trim).flatMap((x) => [
      { at: x.from, node: x.node, d: 1 },
      { at: x.to, node: x.node, d: -1 },
    ]);
    events.sort((a, b) => a.at - b.at || a.d - b.d);
    const open = new Map<string, number>();
    let max = 0;
    for (const e of events) {
      open.set(e.node, (open.get(e.node) ?? 0) + e.d);
      max = Math.max(max, [...open.values()].filter((v) => v > 0).length);
    }
    return max;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }
}
