import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { CLI, freePort } from "./server.js";

/**
 * A private network for a chaos test: one Linux network namespace per node,
 * each with a veth ("eth0") plugged into a bridge in a hub namespace, and one
 * veth from the test's own (root) namespace into the same bridge, so the test
 * reaches every node directly. Addresses are 10.213.<subnet>.0/24: node i has
 * .<i+1>, the test has .254. Nothing is routed or forwarded, and nothing
 * outside the namespaces changes except the one root-side veth, which goes
 * away with the hub namespace.
 *
 * Faults:
 * - isolate(node): the node's link goes down (it loses every peer, clients too);
 * - partition(a, b): blackhole routes in both namespaces: a and b cannot talk,
 *   each still talks to everyone else (the test included).
 *
 * Names carry the test process's pid ("rc<pid>-..."): destroy() removes them,
 * an exit handler does too, and create() first removes leftovers of test
 * processes that no longer exist (a run killed with SIGKILL).
 *
 * Where namespaces cannot be made (not root, no `ip`, no netns support) the
 * lab runs in "loopback" mode: nodes listen on 127.0.0.1 with distinct ports
 * and network faults are unavailable; `reason` says why. The caller decides
 * how loudly to degrade.
 */
export interface NetLab {
  readonly mode: "netns" | "loopback";
  /** Why the lab is in loopback mode. */
  readonly reason?: string;
  /** Address a node listens on and is reached at (host:port). */
  addr(node: string): string;
  /** The command prefix that runs a process in the node's namespace ([] in loopback mode). */
  prefix(node: string): string[];
  isolate(node: string): void;
  rejoin(node: string): void;
  partition(a: string, b: string): void;
  heal(a: string, b: string): void;
  /** Removes every namespace and link (idempotent). */
  destroy(): void;
}

const NS_PREFIX = "rc";
const PORT = 7420;

function ip(args: string[], allowFail = false): { ok: boolean; out: string; err: string } {
  const r = spawnSync("ip", args, { encoding: "utf8", timeout: 10_000 });
  const ok = r.status === 0;
  if (!ok && !allowFail) throw new Error(`ip ${args.join(" ")} failed (${r.status ?? r.error?.message}): ${r.stderr.trim()}`);
  return { ok, out: r.stdout ?? "", err: r.stderr ?? "" };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Kills the processes still inside namespace `ns` (only ours: the namespace is ours). */
function killInside(ns: string): void {
  const pids = ip(["netns", "pids", ns], true)
    .out.split(/\s+/)
    .filter((s) => /^[0-9]+$/.test(s))
    .map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGCONT");
      process.kill(pid, "SIGKILL");
    } catch {
      // gone already
    }
  }
}

function namespaces(): string[] {
  return ip(["netns", "list"], true)
    .out.split("\n")
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n) => n !== undefined && n !== "");
}

/** Removes namespaces and root-side links left behind by test processes that are gone. */
function removeLeftovers(): string[] {
  const removed: string[] = [];
  for (const ns of namespaces()) {
    const m = new RegExp(`^${NS_PREFIX}([0-9]+)-`).exec(ns);
    if (m === null || alive(Number(m[1]))) continue;
    killInside(ns);
    ip(["netns", "del", ns], true);
    ip(["link", "del", `${NS_PREFIX}${m[1]}t`], true);
    removed.push(ns);
  }
  return removed;
}

/** A /24 in 10.213.0.0/16 that no route of the root namespace touches. */
function freeSubnet(): number {
  const routes = ip(["-4", "route", "show", "table", "all"], true).out + ip(["-4", "addr", "show"], true).out;
  const start = (process.pid % 250) + 1;
  for (let i = 0; i < 250; i++) {
    const s = ((start + i - 1) % 250) + 1;
    if (!routes.includes(`10.213.${s}.`)) return s;
  }
  throw new Error("no free 10.213.x.0/24 subnet");
}

export async function createNetLab(nodes: readonly string[], options: { forceLoopback?: string } = {}): Promise<NetLab> {
  const why = options.forceLoopback ?? netnsUnavailable();
  if (why !== undefined) return loopbackLab(nodes, why);
  try {
    return netnsLab(nodes);
  } catch (err) {
    return loopbackLab(nodes, `network namespaces could not be set up: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function netnsUnavailable(): string | undefined {
  if (process.platform !== "linux") return `not Linux (${process.platform})`;
  if (process.getuid?.() !== 0) return `not root (uid ${process.getuid?.()}): ip netns needs CAP_SYS_ADMIN and CAP_NET_ADMIN`;
  const r = spawnSync("ip", ["netns", "list"], { encoding: "utf8" });
  if (r.error !== undefined) return `the ip command is missing (${r.error.message}): apt-get install iproute2`;
  if (r.status !== 0) return `ip netns list failed: ${r.stderr.trim()}`;
  return undefined;
}

async function loopbackLab(nodes: readonly string[], reason: string): Promise<NetLab> {
  const ports = new Map<string, number>();
  for (const n of nodes) ports.set(n, await freePort());
  const unavailable = (): never => {
    throw new Error(`network faults are unavailable in loopback mode (${reason})`);
  };
  return {
    mode: "loopback",
    reason,
    addr: (n) => `127.0.0.1:${ports.get(n)!}`,
    prefix: () => [],
    isolate: unavailable,
    rejoin: unavailable,
    partition: unavailable,
    heal: unavailable,
    destroy: () => undefined,
  };
}

function netnsLab(nodes: readonly string[]): NetLab {
  removeLeftovers();
  const tag = `${NS_PREFIX}${process.pid}`;
  const hub = `${tag}-hub`;
  const rootLink = `${tag}t`; // at most 2 + 7 + 1 characters: within IFNAMSIZ
  const ns = (n: string) => `${tag}-${n}`;
  const subnet = freeSubnet();
  const address = new Map(nodes.map((n, i) => [n, `10.213.${subnet}.${i + 1}`]));
  const created: string[] = [];
  let destroyed = false;
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    for (const name of [...created].reverse()) {
      killInside(name);
      ip(["netns", "del", name], true);
    }
    ip(["link", "del", rootLink], true);
    process.removeListener("exit", destroy);
  };
  process.once("exit", destroy);
  try {
    ip(["netns", "add", hub]);
    created.push(hub);
    ip(["-n", hub, "link", "add", "br0", "type", "bridge"]);
    ip(["-n", hub, "link", "set", "br0", "up"]);
    // The test's own leg: root side in the root namespace, peer on the bridge.
    ip(["link", "add", rootLink, "type", "veth", "peer", "name", "t0", "netns", hub]);
    ip(["-n", hub, "link", "set", "t0", "master", "br0", "up"]);
    ip(["addr", "add", `10.213.${subnet}.254/24`, "dev", rootLink]);
    ip(["link", "set", rootLink, "up"]);
    nodes.forEach((n, i) => {
      ip(["netns", "add", ns(n)]);
      created.push(ns(n));
      ip(["-n", ns(n), "link", "set", "lo", "up"]);
      ip(["-n", hub, "link", "add", `p${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns(n)]);
      ip(["-n", hub, "link", "set", `p${i}`, "master", "br0", "up"]);
      ip(["-n", ns(n), "addr", "add", `${address.get(n)}/24`, "dev", "eth0"]);
      ip(["-n", ns(n), "link", "set", "eth0", "up"]);
    });
  } catch (err) {
    destroy();
    throw err;
  }
  const pair = (a: string, b: string) => [
    [ns(a), address.get(b)!],
    [ns(b), address.get(a)!],
  ];
  return {
    mode: "netns",
    addr: (n) => `${address.get(n)}:${PORT}`,
    prefix: (n) => ["ip", "netns", "exec", ns(n)],
    isolate: (n) => void ip(["-n", ns(n), "link", "set", "eth0", "down"]),
    rejoin: (n) => {
      ip(["-n", ns(n), "link", "set", "eth0", "up"]);
      // The connected route comes back with the link; make sure (older kernels).
      ip(["-n", ns(n), "route", "replace", `10.213.${subnet}.0/24`, "dev", "eth0", "src", address.get(n)!], true);
    },
    partition: (a, b) => {
      for (const [space, peer] of pair(a, b)) ip(["-n", space, "route", "add", "blackhole", `${peer}/32`]);
    },
    heal: (a, b) => {
      for (const [space, peer] of pair(a, b)) ip(["-n", space, "route", "del", "blackhole", `${peer}/32`], true);
    },
    destroy,
  };
}

/** The namespaces of this process still present (for a test that checks its cleanup). */
export function ownNamespaces(): string[] {
  return namespaces().filter((n) => n.startsWith(`${NS_PREFIX}${process.pid}-`));
}

/** A `ripplecache serve` process started in a lab: its own process group, killed as a group. */
export interface LabProcess {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly output: string[];
  readonly exited: Promise<unknown>;
  signal(sig: NodeJS.Signals): boolean;
  /** SIGCONT then SIGKILL to the process group; resolves once it exited. */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after `ms`); resolves with the exit code. */
  terminate(ms?: number): Promise<number | null>;
}

export async function startLabNode(lab: NetLab, name: string, args: readonly string[], env: Record<string, string> = {}): Promise<LabProcess> {
  const [host, port] = lab.addr(name).split(":");
  const argv = [...lab.prefix(name), process.execPath, CLI, "serve", "--host", host, "--port", port, "--admin-port", "0", ...args];
  const proc = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const pid = proc.pid!;
  const output: string[] = [];
  const exited = once(proc, "exit").catch(() => undefined);
  const group = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
      return true;
    } catch {
      return false;
    }
  };
  const node: LabProcess = {
    name,
    proc,
    pid,
    output,
    exited,
    signal: (sig) => group(sig),
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      group("SIGCONT");
      group("SIGKILL");
      await exited;
    },
    async terminate(ms = 10_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      group("SIGCONT");
      group("SIGTERM");
      const timer = setTimeout(() => group("SIGKILL"), ms);
      await exited;
      clearTimeout(timer);
      return proc.exitCode;
    },
  };
  createInterface({ input: proc.stderr! }).on("line", (l) => output.push(l));
  const lines = createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      void node.kill();
      reject(new Error(`${name} did not start within 20 s:\n${output.join("\n")}`));
    }, 20_000);
    lines.on("line", (line) => {
      output.push(line);
      if (line.includes('"msg":"listening"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? sig}) before listening:\n${output.join("\n")}`));
    });
  });
  return node;
}

/** VmRSS of a process in bytes (undefined when it is gone). */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+([0-9]+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** Open file descriptors of a process (undefined when it is gone). */
export function fdCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}
