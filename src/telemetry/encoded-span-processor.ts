import { context, TraceFlags } from "@opentelemetry/api";
import { ExportResultCode, globalErrorHandler, suppressTracing, type ExportResult } from "@opentelemetry/core";
import { OTLPExporterBase } from "@opentelemetry/otlp-exporter-base";
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from "@opentelemetry/otlp-exporter-base/node-http";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { Resource } from "@opentelemetry/resources";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace";
import { exportRequest, ProtoWriter, writeSpan, type Scope } from "./otlp-encoding.js";
import { envValue, list } from "./otel-env.js";

/** Spans of one resource and scope, encoded (writeSpan), waiting for export. */
export interface EncodedBatch {
  readonly resource: Resource;
  readonly scope: Scope;
  readonly spans: Uint8Array;
  readonly count: number;
}

/** Where batches go: OTLPExporterBase over OTLP/HTTP (otlpHttpBatchExporter), or a test's. */
export interface BatchExporter {
  export(batch: EncodedBatch, done: (result: ExportResult) => void): void;
  shutdown(): Promise<void>;
}

/** The batch processor's settings, named and defaulted as OTEL_BSP_* (the spec's BatchSpanProcessor). */
export interface BatchOptions {
  readonly maxQueueSize: number;
  readonly maxExportBatchSize: number;
  readonly scheduledDelayMillis: number;
  readonly exportTimeoutMillis: number;
}

/** On top of maxQueueSize: a bound in bytes, for spans with large attributes (no length limit is set by default). */
const MAX_QUEUE_BYTES = 8 * 1024 * 1024;

/**
 * The SDK's BatchSpanProcessor, keeping each span's OTLP bytes rather than
 * the span. A span is encoded when it ends (otlp-encoding.ts) and dropped; a
 * batch is the bytes of its spans, wrapped in the resource and scope when it
 * is sent.
 *
 * Why: with traces sampled at 10%, a Get served at ~15 µs cost ~3 µs more on
 * average for the export alone. The BatchSpanProcessor keeps every span
 * object (with its attribute, event, link and time objects) until its batch
 * goes, a second or more, so each one was copied by the young-generation GC
 * and promoted; then otlp-transformer walked the spans twice (measure, then
 * write). Here a span's objects die young, and it is written once.
 *
 * Same contract as the BatchSpanProcessor: only sampled spans are exported;
 * a batch goes when it has maxExportBatchSize spans or scheduledDelayMillis
 * after its first; one export at a time; past maxQueueSize spans (or 8 MiB)
 * waiting, new spans are dropped (counted, reported once per episode through
 * the global error handler); forceFlush and shutdown send what is waiting.
 */
export class EncodedSpanProcessor implements SpanProcessor {
  private readonly writer = new ProtoWriter(64 * 1024);
  private resource: Resource | undefined;
  private scope: Scope | undefined;
  private count = 0;
  private readonly sealed: EncodedBatch[] = [];
  private queuedSpans = 0;
  private queuedBytes = 0;
  private exporting = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private dropping = false;
  private idleWaiters: (() => void)[] = [];
  private shutdownDone: Promise<void> | undefined;
  /** Spans dropped because the queue was full, since start. */
  dropped = 0;

  constructor(
    private readonly exporter: BatchExporter,
    private readonly options: BatchOptions,
  ) {}

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (this.stopped || (span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.queuedSpans >= this.options.maxQueueSize || this.queuedBytes >= MAX_QUEUE_BYTES) {
      this.dropped++;
      if (!this.dropping) {
        this.dropping = true;
        globalErrorHandler(new Error(`span export queue full (${this.queuedSpans} spans, ${this.queuedBytes} bytes): dropping spans until it drains`));
      }
      return;
    }
    if (this.count > 0 && (span.resource !== this.resource || span.instrumentationScope !== this.scope)) {
      // The other scope's spans go now: sealing stops the timer, which would otherwise restart with every change of scope.
      this.seal();
      this.exportNext();
    }
    const before = this.writer.pos;
    try {
      writeSpan(this.writer, span);
    } catch (err) {
      // A span the encoder cannot write is lost alone; the call that ended it carries on.
      this.writer.pos = before;
      globalErrorHandler(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.resource = span.resource;
    this.scope = span.instrumentationScope;
    this.count++;
    this.queuedSpans++;
    this.queuedBytes += this.writer.pos - before;
    if (this.count >= this.options.maxExportBatchSize) {
      this.seal();
      this.exportNext();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.seal();
        this.exportNext();
      }, this.options.scheduledDelayMillis);
      this.timer.unref();
    }
  }

  async forceFlush(): Promise<void> {
    this.seal();
    this.exportNext();
    if (!this.exporting && this.sealed.length === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  shutdown(): Promise<void> {
    // Spans ended from now on are not taken (as the SDK's processor); a second call waits for the first.
    this.stopped = true;
    return (this.shutdownDone ??= this.forceFlush().then(() => this.exporter.shutdown()));
  }

  /** The spans written so far become a batch. */
  private seal(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.count === 0 || this.resource === undefined || this.scope === undefined) return;
    this.sealed.push({ resource: this.resource, scope: this.scope, spans: Buffer.from(this.writer.view()), count: this.count });
    this.writer.reset();
    this.count = 0;
  }

  private exportNext(): void {
    if (this.exporting) return;
    const batch = this.sealed.shift();
    if (batch === undefined) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
      return;
    }
    this.exporting = true;
    let settled = false;
    const finish = (result: ExportResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      this.exporting = false;
      this.queuedSpans -= batch.count;
      this.queuedBytes -= batch.spans.length;
      this.dropping = false;
      if (result.code !== ExportResultCode.SUCCESS) globalErrorHandler(result.error ?? new Error("span export failed"));
      this.exportNext();
    };
    const timeout = setTimeout(() => finish({ code: ExportResultCode.FAILED, error: new Error(`span export timed out after ${this.options.exportTimeoutMillis} ms`) }), this.options.exportTimeoutMillis);
    timeout.unref();
    // The exporter's own work (its HTTP request) is not traced.
    context.with(suppressTracing(context.active()), () => {
      try {
        this.exporter.export(batch, finish);
      } catch (err) {
        finish({ code: ExportResultCode.FAILED, error: err instanceof Error ? err : new Error(String(err)) });
      }
    });
  }
}

/**
 * OTLP/HTTP with protobuf, configured as the SDK's OTLPTraceExporter is (the
 * OTEL_EXPORTER_OTLP_* endpoint, headers, timeout, compression; retries),
 * through the same transport: only the serializer is ours (exportRequest).
 */
export function otlpHttpBatchExporter(): BatchExporter {
  const delegate = createOtlpHttpExportDelegate<EncodedBatch, unknown>(
    convertLegacyHttpOptions({}, "TRACES", "v1/traces", { "Content-Type": "application/x-protobuf" }),
    {
      serializeRequest: (batch) => exportRequest(batch.resource, batch.scope, batch.spans),
      deserializeResponse: (data) => ProtobufTraceSerializer.deserializeResponse(data),
    },
    "otlp_http_span_exporter",
    { name: "span", countItems: (batch) => batch.count },
    undefined,
  );
  return new OTLPExporterBase(delegate);
}

/**
 * True when the environment asks for what EncodedSpanProcessor does: one
 * exporter, OTLP, over HTTP with protobuf (the defaults). Anything else
 * (console, zipkin, grpc, http/json, several) is left to the SDK.
 */
export function encodedExportApplies(env: NodeJS.ProcessEnv): boolean {
  const exporters = new Set((list(env.OTEL_TRACES_EXPORTER) ?? []).filter((s) => s !== "null"));
  if (exporters.size > 1 || (exporters.size === 1 && !exporters.has("otlp"))) return false;
  const protocol = envValue(env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) ?? envValue(env.OTEL_EXPORTER_OTLP_PROTOCOL) ?? "http/protobuf";
  return protocol === "http/protobuf";
}

/** OTEL_BSP_*, with the spec's defaults for what is unset or not a positive number. */
export function batchOptionsFromEnv(env: NodeJS.ProcessEnv): BatchOptions {
  const read = (name: string, fallback: number): number => {
    const raw = envValue(env[name]);
    const n = raw === undefined ? NaN : Number(raw);
    // As sdk-node: zero or less is no setting.
    return Number.isFinite(n) && n > 0 ? n : fallback;
  };
  const maxQueueSize = Math.max(1, read("OTEL_BSP_MAX_QUEUE_SIZE", 2048));
  return {
    maxQueueSize,
    // As the SDK's processor: a batch no larger than the queue.
    maxExportBatchSize: Math.max(1, Math.min(read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), maxQueueSize)),
    scheduledDelayMillis: read("OTEL_BSP_SCHEDULE_DELAY", 5000),
    exportTimeoutMillis: read("OTEL_BSP_EXPORT_TIMEOUT", 30000),
  };
}
