import { diag, SamplingDecision, type SamplingResult } from "@opentelemetry/api";
import { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, type Sampler } from "@opentelemetry/sdk-trace";
import { envValue } from "./otel-env.js";

/**
 * The sampler OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG name, made as
 * @opentelemetry/sdk-node makes it (its createSamplerFromEnv is not public),
 * with the TracerProvider's default (parentbased_always_on) when the variable
 * is unset or unknown. We make it ourselves, rather than let the SDK, to hold
 * the instance: ServerSpans (server-spans.ts) asks it first, and starts no
 * SDK span for a call it drops.
 *
 * Every sampler here decides from its inputs alone (the parent's flags, the
 * trace id), so asking it twice about one span gives one answer.
 */
export function samplerFromEnv(env: NodeJS.ProcessEnv = process.env): Sampler {
  const name = envValue(env.OTEL_TRACES_SAMPLER);
  switch (name) {
    case undefined:
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "traceidratio":
      return new TraceIdRatioSampler(ratioFromEnv(env));
    case "parentbased_traceidratio": {
      const root = new TraceIdRatioSampler(ratioFromEnv(env));
      const sampler = new ParentBasedSampler({ root });
      ratioRoots.set(sampler, root);
      return sampler;
    }
    default:
      diag.error(`unknown OTEL_TRACES_SAMPLER value "${name}", using parentbased_always_on`);
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** OTEL_TRACES_SAMPLER_ARG, a ratio in [0, 1]; 1 when blank or out of range (as the SDK does). */
function ratioFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = envValue(env.OTEL_TRACES_SAMPLER_ARG);
  const ratio = raw === undefined ? NaN : Number(raw);
  if (Number.isNaN(ratio) || ratio < 0 || ratio > 1) {
    diag.error(`OTEL_TRACES_SAMPLER_ARG=${raw ?? ""} is not a ratio in [0, 1], using 1`);
    return 1;
  }
  return ratio;
}

/** The TraceIdRatioSampler at the root of the ParentBasedSamplers samplerFromEnv made. */
const ratioRoots = new WeakMap<Sampler, TraceIdRatioSampler>();

/**
 * The TraceIdRatioSampler that decides for a root span (one with no valid
 * parent) under `sampler`, if one does: then a root call's decision needs
 * only its trace id's hash (ServerSpans).
 */
export function rootRatioSampler(sampler: Sampler): TraceIdRatioSampler | undefined {
  return sampler instanceof TraceIdRatioSampler ? sampler : ratioRoots.get(sampler);
}

const SAMPLED: SamplingResult = Object.freeze({ decision: SamplingDecision.RECORD_AND_SAMPLED });
const DROPPED: SamplingResult = Object.freeze({ decision: SamplingDecision.NOT_RECORD });

/** Hex digit values by character code; -1 for what is not one. */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[65 + i] = HEX_VALUE[97 + i] = 10 + i;

/**
 * The SDK's TraceIdRatioBasedSampler, decision for decision (the same hash of
 * the trace id, the same bound; the test compares them over random ids), in a
 * third of its time: the SDK's validates the id with a regular expression and
 * allocates a result per call. Every call served asks it once, ~0.3 µs of a
 * ~15 µs Get before.
 */
export class TraceIdRatioSampler implements Sampler {
  private readonly upperBound: number;

  constructor(private readonly ratio: number) {
    this.ratio = Number.isNaN(ratio) ? 0 : Math.min(1, Math.max(0, ratio));
    this.upperBound = this.ratio === 1 ? 0x100000000 : Math.floor(this.ratio * 0xffffffff);
  }

  shouldSample(_context: unknown, traceId: string): SamplingResult {
    const hash = traceIdHash(traceId);
    return hash !== undefined && this.samples(hash) ? SAMPLED : DROPPED;
  }

  /** The decision for a valid trace id of this hash (traceIdHash; PooledSpanIds.drawnHash). */
  samples(hash: number): boolean {
    return hash < this.upperBound;
  }

  toString(): string {
    return `TraceIdRatioBased{${this.ratio}}`;
  }
}

/** The four 32-bit words of a valid trace id (32 hex digits, not all zero) XORed; undefined for an invalid one. */
function traceIdHash(traceId: string): number | undefined {
  if (traceId.length !== 32) return undefined;
  let hash = 0;
  let any = 0;
  for (let i = 0; i < 32; i += 8) {
    let word = 0;
    for (let j = i; j < i + 8; j++) {
      const c = traceId.charCodeAt(j);
      const v = c < 128 ? HEX_VALUE[c] : -1;
      if (v < 0) return undefined;
      word = (word << 4) | v;
    }
    any |= word;
    hash = (hash ^ word) >>> 0;
  }
  return any === 0 ? undefined : hash;
}
