import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { envName, SETTINGS } from "../src/server/config.js";
import { ROOT } from "./helpers/server.js";

test("the README's config table lists every setting with its default", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  for (const s of SETTINGS) {
    const row = readme.split("\n").find((line) => line.startsWith(`| \`--${s.flag}\` |`));
    assert.ok(row !== undefined, `README.md has no row for --${s.flag}`);
    assert.ok(row.includes(`\`${envName(s.flag)}\``), `the row for --${s.flag} names ${envName(s.flag)}`);
    assert.ok(row.includes(s.defaultValue === "" ? "unset" : `\`${s.defaultValue}\``), `the row for --${s.flag} shows its default ${s.defaultValue}`);
  }
});
