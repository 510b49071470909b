/**
 * Differential fuzzing of our HTTP/2 engine against node:http2 (nghttp2),
 * the same server code on both (test/helpers/h2-fuzz.ts has the generator,
 * the client and the known differences: deliberate deviations and engine bugs not fixed yet).
 *
 *   npm run fuzz:h2 -- --cases N [--seed S] [--first I] [--concurrency C] [--recycle-every K]
 *   npm run fuzz:h2 -- --seed S --case N        one case: its frames and both outcomes
 *
 * Exits 1 when a difference is not a known one (KNOWN_DIFFERENCES).
 */
import { parseArgs } from "node:util";
import { campaign, classify, compareCase, KNOWN_DIFFERENCES, describeCase, generateCase, outcomeText, PATIENT, runCase, startEngines, type CampaignResult } from "../test/helpers/h2-fuzz.js";

const { values } = parseArgs({
  options: {
    cases: { type: "string", default: "10000" },
    seed: { type: "string", default: "1" },
    first: { type: "string", default: "0" },
    case: { type: "string" },
    concurrency: { type: "string", default: "64" },
    "recycle-every": { type: "string", default: "10000" },
    quiet: { type: "boolean", default: false },
  },
});
const seed = Number(values.seed);

function summary(r: CampaignResult, final: boolean): string {
  const lines = [
    `${final ? "done" : "progress"}: seed ${seed}, ${r.cases} cases in ${r.seconds.toFixed(0)} s (${(r.cases / Math.max(r.seconds, 0.001)).toFixed(0)} cases/s), ${r.differing} differing (${r.unconfirmed} more differed once, not when run again)`,
    `  classes ours: ${[...r.kinds.ours].map(([k, n]) => `${k} ${n}`).join(", ")}`,
    `  classes node: ${[...r.kinds.node].map(([k, n]) => `${k} ${n}`).join(", ")}`,
  ];
  for (const [name, t] of [...r.known].sort((a, b) => b[1].count - a[1].count)) {
    const d = KNOWN_DIFFERENCES.find((k) => k.name === name);
    lines.push(`  ${t.count} x known (${d?.kind}) ${name} (first: --case ${t.first})`);
  }
  for (const [sig, t] of [...r.unclassified].sort((a, b) => b[1].count - a[1].count)) lines.push(`  ${t.count} x UNCLASSIFIED ${sig} (first: --case ${t.first})`);
  for (const crash of engines.crashes) lines.push(`  CRASH of the ${crash.engine} server: ${crash.message}; cases in flight: ${crash.inFlight.join(" ")}`);
  return lines.join("\n");
}

const engines = await startEngines();
// The servers log warnings and errors (an engine's own failure is a bug to report); their lines are kept here, not in memory.
const drain = setInterval(() => {
  for (const { engine, line } of engines.takeOutput()) if (/error|failed|assert/i.test(line) && !values.quiet) console.error(`${engine} server: ${line}`);
}, 1000);
let exitCode = 0;
try {
  if (values.case !== undefined) {
    const c = generateCase(seed, Number(values.case));
    console.log(describeCase(c));
    const r = await compareCase(engines, c);
    console.log(`ours: ${outcomeText(r.ours)}`);
    console.log(`node: ${outcomeText(r.node)}`);
    if (r.signature === "") console.log("same class of outcome");
    else {
      const { known, residual } = classify(c, r.ours, r.node);
      console.log(`differs: ${r.signature}\nknown: ${known.join(", ") || "none"}\n${residual === "" ? "all of it explained" : `unexplained: ${residual}`}`);
    }
    // What each server sent, frame by frame (a patient run of its own).
    for (const name of ["ours", "node"] as const) {
      const server = engines[name];
      const trace: string[] = [];
      await runCase(server.port, c, PATIENT, trace);
      console.log(`${name} sent:\n  ${trace.join("\n  ")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    for (const crash of engines.crashes) console.log(`CRASH of the ${crash.engine} server: ${crash.message}`);
  } else {
    let latest: CampaignResult | undefined;
    const stop = { stopped: false };
    // A campaign stopped early (SIGINT, SIGTERM) takes no more cases, prints what it found and stops its servers.
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      process.once(signal, () => {
        stop.stopped = true;
        if (latest !== undefined) console.log(summary(latest, false));
        console.log(`stopped by ${signal}`);
        void engines.stop().then(() => process.exit(latest !== undefined && latest.unclassified.size > 0 ? 1 : 0));
      });
    }
    const r = await campaign(engines, {
      seed,
      first: Number(values.first),
      count: Number(values.cases),
      concurrency: Number(values.concurrency),
      stop,
      recycleEvery: Number(values["recycle-every"]),
      progress: (p) => {
        latest = p;
        console.log(summary(p, false));
      },
    });
    console.log(summary(r, true));
    if (r.unclassified.size > 0 || engines.crashes.some((c) => c.engine === "ours")) exitCode = 1;
  }
} finally {
  clearInterval(drain);
  await engines.stop();
}
process.exit(exitCode);
