/**
 * Loaded into the server by `npm run attack` (`--import`), beside
 * bench/server-probe.js: it measures the server's event-loop delay, the
 * longest in each 100 ms, and on SIGUSR2 (the GC probe's signal) writes those
 * since the last SIGUSR2 to stderr as one line,
 * `{"loopProbe":[[epochMs, maxDelayMs], ...]}`. A probe call that waited long
 * while the server's loop did not stall waited on the machine, not the server.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";

const histogram = monitorEventLoopDelay({ resolution: 10 });
histogram.enable();
let series: [number, number][] = [];
setInterval(() => {
  series.push([Date.now(), Math.round(histogram.max / 1e5) / 10]);
  histogram.reset();
  if (series.length > 1000) series = series.slice(-1000);
}, 100).unref();
process.on("SIGUSR2", () => {
  process.stderr.write(`${JSON.stringify({ loopProbe: series })}\n`);
  series = [];
});
