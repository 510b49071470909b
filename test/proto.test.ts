import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { ROOT } from "./helpers/server.js";

const BUF = join(ROOT, "node_modules", ".bin", "buf");

test("buf lint passes (STANDARD)", () => {
  execFileSync(BUF, ["lint"], { cwd: ROOT, stdio: "pipe" });
});

test("src/gen is what buf generate makes from proto/", () => {
  const dir = mkdtempSync(join(tmpdir(), "ripplecache-gen-"));
  try {
    for (const f of ["proto", "buf.yaml", "buf.gen.yaml"]) cpSync(join(ROOT, f), join(dir, f), { recursive: true });
    symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
    execFileSync(BUF, ["generate"], { cwd: dir, stdio: "pipe", env: { ...process.env, PATH: `${join(ROOT, "node_modules", ".bin")}:${process.env.PATH}` } });
    const fresh = listFiles(join(dir, "src", "gen"));
    const committed = listFiles(join(ROOT, "src", "gen"));
    assert.deepEqual(committed, fresh, "files in src/gen differ from the generated set: run npm run generate");
    for (const f of fresh) {
      const a = readFileSync(join(dir, "src", "gen", f), "utf8");
      const b = readFileSync(join(ROOT, "src", "gen", f), "utf8");
      assert.ok(a === b, `src/gen/${f} is out of date: run npm run generate and commit`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}
