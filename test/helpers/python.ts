import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, requireTool } from "./server.js";

/** Debian's Python: `python3` on the PATH is a pyenv build without Debian's packages. */
export const PYTHON = "/usr/bin/python3";

/** Fails (never skips) with the Debian packages to install when the Python side is missing. */
export function requirePythonGrpc(): void {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run "apt-get install python3 python3-grpcio python3-protobuf"`);
  const r = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"], { encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(`${PYTHON} cannot import grpc and google.protobuf: run "apt-get install python3-grpcio python3-protobuf"\n${r.stderr}`);
  }
}

/**
 * Generates Python stubs (messages and gRPC services) for the given files of
 * proto/ into a fresh directory, with Debian's protoc and grpc_python_plugin.
 * The caller removes the directory.
 */
export function generatePythonStubs(files: readonly string[] = ["ripplecache/v1/cache.proto", "grpc/health/v1/health.proto"]): string {
  requirePythonGrpc();
  const protoc = requireTool("protoc", "protobuf-compiler");
  const plugin = requireTool("grpc_python_plugin", "protobuf-compiler-grpc");
  const dir = mkdtempSync(join(tmpdir(), "ripplecache-py-"));
  const r = spawnSync(protoc, ["-I", join(ROOT, "proto"), `--python_out=${dir}`, `--grpc_out=${dir}`, `--plugin=protoc-gen-grpc=${plugin}`, ...files], {
    encoding: "utf8",
  });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`protoc failed (${r.status}):\n${r.stderr}`);
  }
  return dir;
}
