/** Types and helpers shared by bench/run.ts and bench/load.ts. */

export type Op = "get" | "set" | "getMany";
export type BenchProtocol = "grpc" | "connect";

export interface LoadConfig {
  readonly url: string;
  readonly protocol: BenchProtocol;
  readonly op: Op;
  readonly connections: number;
  /** In-flight calls per connection. */
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Keys key:0 .. key:(keys-1) exist (the parent preloads them). */
  readonly keys: number;
  readonly valueBytes: number;
  /** Keys per GetMany. */
  readonly batch: number;
}

export interface LoadResult {
  readonly ops: number;
  readonly errors: number;
  /** First error message seen, if any. */
  readonly firstError: string | undefined;
  /** Get/GetMany entries that came back not found (the preload should make this 0). */
  readonly misses: number;
  readonly elapsedMs: number;
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
  /** CPU time of this process over the measured window / window length (1 = one core). */
  readonly loadCpu: number;
}

export type LoadMessage =
  | { readonly type: "ready" }
  | { readonly type: "measure-start" }
  | { readonly type: "measure-end" }
  | { readonly type: "result"; readonly result: LoadResult }
  | { readonly type: "error"; readonly message: string };

export function keyName(i: number): string {
  return `key:${String(i).padStart(7, "0")}`;
}

/** Nearest-rank percentile of an ascending-sorted array. */
export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

