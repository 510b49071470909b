import assert from "node:assert/strict";
import { test } from "node:test";
import { campaign, startEngines } from "./helpers/h2-fuzz.js";

/*
 * A short seeded run of the differential fuzzer (bench/fuzz-h2.ts runs long
 * campaigns): the same random and mutated frame sequences to a server on our
 * HTTP/2 engine and to one on node:http2, and every difference in the class
 * of outcome must be one we know (KNOWN_DIFFERENCES in helpers/h2-fuzz.ts).
 * Reproduce a case: npm run fuzz:h2 -- --seed 20 --case N
 */
const SEED = 20;
const CASES = 1500;

test(`differential fuzzing: ${CASES} cases of seed ${SEED} on our engine and on node:http2`, { timeout: 300_000 }, async () => {
  const engines = await startEngines();
  try {
    const r = await campaign(engines, { seed: SEED, count: CASES, concurrency: 32 });
    assert.equal(r.cases, CASES);
    // The comparison can see a difference: both engines answered, reset and closed with GOAWAY in these cases.
    for (const side of ["ours", "node"] as const) {
      for (const kind of ["answered", "reset", "goaway", "none", "open"]) {
        assert.ok((r.kinds[side].get(kind) ?? 0) > 0, `${side}: no outcome of kind ${kind} among ${CASES} cases`);
      }
    }
    assert.ok(r.differing > 0, "no difference at all: the known deviations alone should show some");
    assert.deepEqual(engines.crashes.filter((c) => c.engine === "ours"), [], "our server died");
    const unexplained = r.findings.filter((f) => f.residual !== "");
    assert.deepEqual(
      unexplained.map((f) => `case ${f.index}: ${f.residual}`),
      [],
      "differences no known difference explains (npm run fuzz:h2 -- --seed 20 --case N shows one)",
    );
  } finally {
    await engines.stop();
  }
});
