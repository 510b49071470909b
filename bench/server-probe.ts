/**
 * Loaded into a benchmarked server with `node --expose-gc --import
 * dist/bench/server-probe.js` (bench/fanout.ts): on SIGUSR2 it runs two full
 * garbage collections and writes one line to stderr,
 * `{"probe":"memory","heapUsed":...,"external":...,"arrayBuffers":...,"rss":...}`,
 * so the bench can tell live memory from garbage not yet collected. It changes
 * nothing else in the server.
 */
const gc = (globalThis as { gc?: () => void }).gc;
process.on("SIGUSR2", () => {
  if (typeof gc === "function") {
    gc();
    gc();
  }
  const m = process.memoryUsage();
  process.stderr.write(
    `${JSON.stringify({ probe: "memory", gc: typeof gc === "function", heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss })}\n`,
  );
});
