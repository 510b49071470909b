import { context, isSpanContextValid, trace } from "@opentelemetry/api";
import { pino, type Logger } from "pino";

/**
 * Structured logs: one JSON object per line on stdout (pino), with
 * `time` (ISO 8601), `level` (its name), `msg` and the given fields. A line
 * written inside a traced call also carries `trace_id` and `span_id` of the
 * current span. Never pass values or tokens: fields named like them are
 * redacted anyway.
 */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
export const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];

const destination = pino.destination({ dest: 1, sync: true });

function create(level: LogLevel): Logger {
  return pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: traceFields,
      redact: {
        paths: ["value", "values", "token", "authorization", "password", "*.value", "*.token", "*.authorization"],
        censor: "[redacted]",
      },
    },
    destination,
  );
}

/** trace_id and span_id of the active span, if any (nothing when tracing is off: no context manager is registered). */
function traceFields(): Record<string, string> {
  const span = trace.getSpan(context.active());
  if (span === undefined) return {};
  const sc = span.spanContext();
  if (!isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId, trace_flags: `0${sc.traceFlags.toString(16)}`.slice(-2) };
}

let logger = create("info");
/** Writes at info whatever the level: start-up lines that tools read (the "listening" line). */
let announcer = logger;

/** Sets the level of every later line (--log-level). */
export function configureLogging(level: LogLevel): void {
  logger = create(level);
  debug = logger.isLevelEnabled("debug");
  announcer = LOG_LEVELS.indexOf(level) <= LOG_LEVELS.indexOf("info") ? logger : create("info");
}

let debug = false;

/** Whether debug lines are written (a plain flag: checked on every RPC). */
export function debugEnabled(): boolean {
  return debug;
}

/** One JSON log line on stdout. Never pass values or tokens. */
export function logLine(level: "debug" | "info" | "warn" | "error", msg: string, fields: Record<string, unknown> = {}): void {
  logger[level](fields, msg);
}

/**
 * An info line written whatever --log-level says (even "silent"): the
 * "listening" line, whose msg, port and adminPort fields tests and tools read.
 */
export function announce(msg: string, fields: Record<string, unknown> = {}): void {
  announcer.info(fields, msg);
}
