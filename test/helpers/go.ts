import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT, requireTool } from "./server.js";

/** Where Debian's Go packages put their sources (GOPATH mode). */
const DEBIAN_GOPATH = "/usr/share/gocode";
const GO_PACKAGES = "golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc";

/**
 * Builds test/go/interop_client.go against stubs generated now from proto/
 * (protoc with protoc-gen-go and protoc-gen-go-grpc), with Debian's grpc-go,
 * offline, in GOPATH mode. Fails (never skips) naming the Debian packages
 * when a piece is missing. Returns the binary's path and the directory to
 * remove afterwards.
 */
export function buildGoInteropClient(): { binary: string; dir: string } {
  const go = requireTool("go", "golang-go");
  const protoc = requireTool("protoc", "protobuf-compiler");
  requireTool("protoc-gen-go", "protoc-gen-go");
  requireTool("protoc-gen-go-grpc", "protoc-gen-go-grpc");
  if (!existsSync(join(DEBIAN_GOPATH, "src", "google.golang.org", "grpc", "health", "grpc_health_v1"))) {
    throw new Error(`grpc-go is not in ${DEBIAN_GOPATH}: run "apt-get install ${GO_PACKAGES}" (bash .ci/run does it)`);
  }
  const dir = mkdtempSync(join(tmpdir(), "ripplecache-go-"));
  try {
    const gen = join(dir, "src", "ripplecache", "gen");
    const main = join(dir, "src", "interop");
    mkdirSync(gen, { recursive: true });
    mkdirSync(main, { recursive: true });
    // Our .proto files name no go_package: the import path is given here (M option).
    const importPath = "Mripplecache/v1/cache.proto=ripplecache/gen/ripplecache/v1";
    run(protoc, ["-I", join(ROOT, "proto"), `--go_out=${gen}`, "--go_opt=paths=source_relative", `--go_opt=${importPath}`, `--go-grpc_out=${gen}`, "--go-grpc_opt=paths=source_relative", `--go-grpc_opt=${importPath}`, "ripplecache/v1/cache.proto"], dir);
    copyFileSync(join(ROOT, "test", "go", "interop_client.go"), join(main, "main.go"));
    const binary = join(dir, "interop_client");
    run(go, ["build", "-o", binary, "."], main, { GO111MODULE: "off", GOPATH: `${dir}:${DEBIAN_GOPATH}`, GOCACHE: join(dir, "cache"), GOFLAGS: "" });
    return { binary, dir };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(command, args, { cwd, encoding: "utf8", env: { ...process.env, ...env }, timeout: 180_000 });
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
}
