import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import * as net from "node:net";

/** The compiled CLI (tests run from dist/test/). */
export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
/** The repository root. */
export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

export interface ServerProcess {
  readonly port: number;
  /** The admin HTTP port (/livez, /readyz, /metrics). */
  readonly adminPort: number;
  /** host:port */
  readonly addr: string;
  /** http://host:port */
  readonly url: string;
  readonly proc: ChildProcess;
  /** Every line the server wrote to stdout and stderr so far. */
  readonly output: string[];
  /** Sends `signal` (SIGTERM by default) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** How long a server may take to listen: seconds on an idle machine, far more on a loaded CI machine. */
const START_TIMEOUT_MS = 30_000;

/**
 * Starts `ripplecache serve` as a real process on 127.0.0.1 and a free port,
 * and resolves once it is listening.
 */
export async function startServer(args: readonly string[] = [], env: Record<string, string> = {}): Promise<ServerProcess> {
  const adminArgs = args.includes("--admin-port") ? [] : ["--admin-port", "0"];
  const proc = spawn(process.execPath, [CLI, "serve", "--host", "127.0.0.1", "--port", "0", ...adminArgs, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  createInterface({ input: proc.stderr! }).on("line", (line) => output.push(line));
  const lines = createInterface({ input: proc.stdout! });
  let adminPort = 0;
  const port = await new Promise<number>((resolve, reject) => {
    // A start that times out is killed, so that no stray server outlives the test that gave up on it.
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`server did not start within ${START_TIMEOUT_MS / 1000} s:\n${output.join("\n")}`));
    }, START_TIMEOUT_MS);
    lines.on("line", (line) => {
      output.push(line);
      try {
        const record = JSON.parse(line) as { msg?: string; port?: number; adminPort?: number };
        if (record.msg === "listening" && typeof record.port === "number") {
          clearTimeout(timer);
          adminPort = record.adminPort ?? 0;
          resolve(record.port);
        }
      } catch {
        // not a JSON log line
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${output.join("\n")}`));
    });
  });
  let exited: Promise<number | null> | undefined;
  const exitCode = () => (exited ??= proc.exitCode !== null ? Promise.resolve(proc.exitCode) : once(proc, "exit").then(([code]) => code as number | null));
  return {
    port,
    adminPort,
    addr: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    proc,
    output,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      const done = exitCode();
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      try {
        return await done;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/**
 * The path of a command the test needs. A missing tool fails the test (CI
 * installs every tool in .ci/run); it never skips.
 */
export function requireTool(command: string, debianPackage: string): string {
  const r = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
  const path = r.stdout.trim();
  if (r.status !== 0 || path === "") {
    throw new Error(`${command} is not installed: run "apt-get install ${debianPackage}" (bash .ci/run does it)`);
  }
  return path;
}

/**
 * A port nothing listens on, for a server that must start on a known port
 * (a replica started before its primary, a primary restarted in place). It
 * is picked below Linux's ephemeral range (32768-60999), so the outgoing
 * connections of other tests cannot take it between now and its use.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (ok) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return port;
    }
  }
  throw new Error("no free port between 20000 and 32000");
}
