import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { docsFor, DOCS_MARKERS, NOT_MEASURED, renderPerformance, verdict, type BenchResults } from "../bench/format.js";
import { envName, SETTINGS } from "../src/server/config.js";
import { ROOT } from "./helpers/server.js";

const read = (file: string) => readFileSync(join(ROOT, file), "utf8");
const DOCS = readdirSync(join(ROOT, "docs"))
  .filter((f) => f.endsWith(".md"))
  .map((f) => `docs/${f}`);

test("docs/CONFIGURATION.md's table lists every setting with its variable and default", () => {
  const doc = read("docs/CONFIGURATION.md");
  for (const s of SETTINGS) {
    const row = doc.split("\n").find((line) => line.startsWith(`| \`--${s.flag}\` |`));
    assert.ok(row !== undefined, `docs/CONFIGURATION.md has no row for --${s.flag}: add one`);
    assert.ok(row.includes(`\`${envName(s.flag)}\``), `the row for --${s.flag} names ${envName(s.flag)}`);
    assert.ok(row.includes(s.defaultValue === "" ? "unset" : `\`${s.defaultValue}\``), `the row for --${s.flag} shows its default ${s.defaultValue}`);
  }
});

test("README.md is at most 250 lines", () => {
  const lines = read("README.md").split("\n").length;
  assert.ok(lines <= 250, `README.md has ${lines} lines: move detail into docs/`);
});

/** Relative links of a Markdown file: [text](target), without the #fragment. */
function relativeLinks(markdown: string): string[] {
  const out: string[] = [];
  for (const m of markdown.matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = m[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue;
    out.push(target.split("#")[0]!);
  }
  return out;
}

test("every relative link in README.md and docs/ names a file or directory that exists", () => {
  const broken: string[] = [];
  for (const file of ["README.md", ...DOCS]) {
    for (const target of relativeLinks(read(file))) {
      if (!existsSync(resolve(ROOT, dirname(file), target))) broken.push(`${file} -> ${target}`);
    }
  }
  assert.deepEqual(broken, []);
  // The check sees links at all.
  assert.ok(relativeLinks(read("README.md")).includes("docs/PERFORMANCE.md"));
});

/** Wording of a diary: who did what when. Docs describe the software as it is; git log keeps the history. */
const DIARY = [
  /\b(today|tonight|yesterday|this morning|this afternoon)\b/i,
  /\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|this|next|previous|earlier|later|\d+(st|nd|rd|th)) (session|work period)\b/i,
  /\b(session|work period) \d+\b/i,
  // A time of day (the 18:36 run, 13:13 (anchors)), but not a port, a ratio or an ISO timestamp's parts.
  /(?<![\d:T.])(?:[01]?\d|2[0-3]):[0-5]\d(?![\d:])(?! ?(?:[x%]|ms|µs))/,
];

test("README.md and docs/ contain no diary (sessions, 'today', runs by time of day)", () => {
  const found: string[] = [];
  for (const file of ["README.md", ...DOCS]) {
    read(file)
      .split("\n")
      .forEach((line, i) => {
        // Code blocks and command lines may hold times of their own (cron, logs); prose may not.
        if (DIARY.some((re) => re.test(line))) found.push(`${file}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(found, []);
  // The patterns catch what the old README had.
  for (const line of ["The full runs of 18:36 (HEAD at the fifth session's end)", "Earlier today: 08:33 Get 2.51x etcd", "13:13 (anchors) gave"]) {
    assert.ok(DIARY.some((re) => re.test(line)), line);
  }
  for (const line of ["listens on 127.0.0.1:7420", "kubectl port-forward svc/ripplecache-primary 7420:7420", "Run of 2026-12-08T02:13:11.123Z", "every HTTP/2 session (`--keepalive-interval`)"]) {
    assert.ok(!DIARY.some((re) => re.test(line)), line);
  }
});

test("the generated tables of docs/PERFORMANCE.md and README.md are what bench/format.ts makes of bench/results/latest.json", () => {
  const results = JSON.parse(read("bench/results/latest.json")) as BenchResults;
  for (const [file, expected] of docsFor(results, read)) {
    assert.equal(read(file), expected, `${file} differs from bench/results/latest.json: run "npm run build && node dist/bench/format.js --docs" (or npm run bench)`);
  }
  // Both files hold the section, once.
  for (const { file, start, end } of Object.values(DOCS_MARKERS)) {
    const text = read(file);
    assert.equal(text.split(start).length, 2, `${file} has one ${start}`);
    assert.equal(text.split(end).length, 2, `${file} has one ${end}`);
  }
});

test("the generator judges targets on the run alone and marks what the run did not measure", () => {
  const ratio = (value: number) => ({ sideBySide: { rows: [], ratios: [{ name: "Set (gRPC) / etcd Put", value, target: ">= 2" }] } });
  const row = (r: BenchResults) => renderPerformance(r).split("\n").find((l) => l.startsWith("| Set / etcd Put |"));
  assert.equal(row(ratio(2.52)), "| Set / etcd Put | 2.52x | >= 2x | met |");
  assert.equal(row(ratio(1.96)), "| Set / etcd Put | 1.96x | >= 2x | not met |");
  assert.equal(row({ config: { sections: ["memory"] } }), `| Set / etcd Put | ${NOT_MEASURED} | >= 2x |  |`);
  const partial = renderPerformance({ config: { sections: ["memory"] } });
  assert.match(partial, /not run: anchors, tls, throughput, fanout, lag, resync, expiry, telemetry/);
  assert.ok(!/\| met \|/.test(partial), "a run without figures meets no target");
  // Memory: ours against Redis, and the calibration's check at 1 KiB.
  const memory = {
    memory: {
      status: "ok",
      raw: {
        keys: 1_000_000,
        valueBytes: 100,
        rssBytesPerKey: 300,
        heapBytesPerKey: 220,
        countedBytesPerKey: 270,
        entryOverheadBytes: 154,
        rssToRedisRss: 1.6,
        redis: { status: "ok", version: "7.0.15", rssBytesPerKey: 187.5, usedMemoryBytesPerKey: 180 },
        calibration: { keys: 250_000, valueBytes: 1024, rssBytesPerKey: 1400, countedBytesPerKey: 1295, countedToRss: 0.925 },
      },
    },
  };
  const text = renderPerformance(memory);
  assert.match(text, /\| RSS per key \/ Redis's RSS per key \| 1\.60x \| <= 1\.5x \| not met \|/);
  assert.match(text, /\| Redis 7\.0\.15 bytes per key, the same keys and values: RSS \/ used_memory \| 188 \/ 180 B \|/);
  assert.match(text, /\| Counted \/ RSS per key at 1024 B values \(the calibration checked, 250,000 keys\) \| 1,295 \/ 1,400 B = 0\.93 \| 1 \+- 0\.10 \| met \|/);
  assert.equal(verdict({ value: "x", measure: 0.85, target: { op: "within", bound: 0.1, text: "" } }), "not met");
});
