import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventually } from "./assert.js";

/** A real Prometheus (Debian's `prometheus`) on loopback, scraping every second. */
export interface Prometheus {
  readonly port: number;
  readonly proc: ChildProcess;
  readonly output: string[];
  query(promql: string): Promise<Sample[]>;
  stop(): Promise<void>;
}

export interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** Starts Prometheus on `port` with its data in `dir`, scraping `targets` as job "ripplecache", loading `ruleFiles`. */
export async function startPrometheus(binary: string, targets: readonly string[], port: number, dir: string, ruleFiles: readonly string[] = []): Promise<Prometheus> {
  const config = join(dir, "prometheus.yml");
  writeFileSync(
    config,
    [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "  evaluation_interval: 1s",
      ...(ruleFiles.length > 0 ? ["rule_files:", ...ruleFiles.map((f) => `  - ${JSON.stringify(f)}`)] : []),
      "scrape_configs:",
      "  - job_name: ripplecache",
      "    static_configs:",
      `      - targets: [${targets.map((t) => `"${t}"`).join(", ")}]`,
      "",
    ].join("\n"),
  );
  const proc = spawn(
    binary,
    [`--config.file=${config}`, `--web.listen-address=127.0.0.1:${port}`, `--storage.tsdb.path=${join(dir, "data")}`, "--log.level=warn"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const output: string[] = [];
  proc.stdout!.on("data", (c: Buffer) => output.push(c.toString()));
  proc.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
  const prometheus: Prometheus = {
    port,
    proc,
    output,
    query: async (promql) => {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`);
      const body = (await res.json()) as { status: string; data?: { resultType: string; result: Sample[] }; error?: string };
      if (body.status !== "success") throw new Error(`query ${promql} failed: ${body.error}`);
      return body.data!.result;
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        await once(proc, "exit");
      }
    },
  };
  await eventually(
    "prometheus ready",
    async () => (await fetch(`http://127.0.0.1:${port}/-/ready`)).status,
    (s) => s === 200,
  ).catch(async (err: unknown) => {
    await prometheus.stop();
    throw new Error(`${String(err)}\n${output.join("")}`);
  });
  return prometheus;
}
