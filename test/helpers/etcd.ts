import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { freePort, requireTool } from "./server.js";

/** A single-member etcd on loopback, its data in memory (/dev/shm). */
export interface EtcdProcess {
  readonly endpoint: string;
  readonly proc: ChildProcess;
  readonly output: string[];
  stop(): Promise<void>;
}

/** Raft heartbeat and election timeout (ms): short, so that etcd's smallest lease TTL and its start are short too. */
const HEARTBEAT_MS = 50;
const ELECTION_TIMEOUT_MS = 500;
/** Bound on etcd's start (it starts in well under a second on loopback). */
const START_TIMEOUT_MS = 15_000;

/** Starts Debian's etcd (package etcd-server); a missing etcd fails the test, it never skips. */
export async function startEtcd(): Promise<EtcdProcess> {
  const etcd = requireTool("etcd", "etcd-server");
  const dir = mkdtempSync("/dev/shm/ripplecache-etcd-");
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const proc = spawn(
    etcd,
    [
      "--name", "test",
      "--data-dir", dir,
      "--listen-client-urls", endpoint,
      "--advertise-client-urls", endpoint,
      "--listen-peer-urls", peer,
      "--initial-advertise-peer-urls", peer,
      "--initial-cluster", `test=${peer}`,
      "--heartbeat-interval", String(HEARTBEAT_MS),
      "--election-timeout", String(ELECTION_TIMEOUT_MS),
      "--log-level", "error",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const output: string[] = [];
  for (const s of [proc.stdout, proc.stderr]) s?.on("data", (d: Buffer) => output.push(...d.toString("utf8").split("\n").filter((l) => l !== "")));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await healthy(endpoint))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`etcd did not start at ${endpoint}: ${output.slice(-5).join(" | ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { endpoint, proc, output, stop };
}

/** etcd's /health answers {"health":"true"} once it has a leader. */
async function healthy(endpoint: string): Promise<boolean> {
  const url = new URL(endpoint);
  const up = await new Promise<boolean>((resolve) => {
    const s = connect(Number(url.port), url.hostname, () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  if (!up) return false;
  try {
    const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    return /"health":\s*"true"/.test(await res.text());
  } catch {
    return false;
  }
}
