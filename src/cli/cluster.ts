#!/usr/bin/env node
/**
 * `npm run cluster`: the Kubernetes topology on loopback, for people without
 * a cluster: a primary on 127.0.0.1:7420 (admin 9090) and two replicas on
 * 7421 and 7422 (admin 9091, 9092). Each line of output is prefixed with its
 * node's name. Ctrl-C stops all three gracefully.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { SERVER_NODE_FLAGS } from "./node-flags.js";

const CLI = fileURLToPath(new URL("./main.js", import.meta.url));
const BASE_PORT = Number(process.env.RIPPLECACHE_CLUSTER_PORT ?? 7420);
const BASE_ADMIN = Number(process.env.RIPPLECACHE_CLUSTER_ADMIN_PORT ?? 9090);
const primary = `127.0.0.1:${BASE_PORT}`;

const nodes: { name: string; args: string[] }[] = [
  { name: "primary", args: ["--port", String(BASE_PORT), "--admin-port", String(BASE_ADMIN)] },
  { name: "replica-1", args: ["--port", String(BASE_PORT + 1), "--admin-port", String(BASE_ADMIN + 1), "--replica-of", primary] },
  { name: "replica-2", args: ["--port", String(BASE_PORT + 2), "--admin-port", String(BASE_ADMIN + 2), "--replica-of", primary] },
];

const children: ChildProcess[] = nodes.map(({ name, args }) => {
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, CLI, "serve", "--host", "127.0.0.1", ...args, ...process.argv.slice(2)], { stdio: ["ignore", "pipe", "pipe"] });
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => process.stdout.write(`${name.padEnd(9)} | ${line}\n`));
  }
  child.once("exit", (code, signal) => {
    process.stdout.write(`${name.padEnd(9)} | exited (${signal ?? code})\n`);
    if (!stopping) stop(1);
  });
  return child;
});

process.stdout.write(`cluster: primary ${primary} (writes), replicas 127.0.0.1:${BASE_PORT + 1} and :${BASE_PORT + 2} (reads); Ctrl-C stops\n`);

let stopping = false;
function stop(code: number): void {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  let left = children.filter((c) => c.exitCode === null).length;
  if (left === 0) process.exit(code);
  for (const c of children) c.once("exit", () => --left === 0 && process.exit(code));
}
process.once("SIGINT", () => stop(0));
process.once("SIGTERM", () => stop(0));
