import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import protobuf from "protobufjs";
import { CacheService } from "../src/gen/ripplecache/v1/cache_pb.js";
import { AdminService } from "../src/gen/ripplecache/v1/replication_pb.js";
import { otelSignals } from "../src/telemetry/otel-env.js";
import { startServer, type ServerProcess } from "./helpers/server.js";
import { eventually } from "./helpers/assert.js";
import { startEtcd, type EtcdProcess } from "./helpers/etcd.js";
import { coordinatedArgs } from "./helpers/failover.js";

/**
 * Telemetry through a real exporter path: the server exports OTLP/HTTP with
 * protobuf to a receiver this test runs, which decodes the payloads with the
 * message definitions below (a subset of opentelemetry-proto: fields not
 * listed are skipped by the decoder).
 */
const OTLP_PROTO = `
syntax = "proto3";
package otlp;
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; }
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  string name = 5;
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  Status status = 15;
  fixed32 flags = 16;
}
enum SpanKind { SPAN_KIND_UNSPECIFIED = 0; SPAN_KIND_INTERNAL = 1; SPAN_KIND_SERVER = 2; SPAN_KIND_CLIENT = 3; SPAN_KIND_PRODUCER = 4; SPAN_KIND_CONSUMER = 5; }
message Status { string message = 2; StatusCode code = 3; }
enum StatusCode { STATUS_CODE_UNSET = 0; STATUS_CODE_OK = 1; STATUS_CODE_ERROR = 2; }
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
message ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
message ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; }
message Metric { string name = 1; string description = 2; string unit = 3; }
`;

const root = protobuf.parse(OTLP_PROTO, { keepCase: true }).root;
const TraceRequest = root.lookupType("otlp.ExportTraceServiceRequest");
const MetricsRequest = root.lookupType("otlp.ExportMetricsServiceRequest");

type AttrValue = string | number | boolean | undefined;

interface ReceivedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: string;
  readonly status: { code: string; message: string };
  readonly attributes: Record<string, AttrValue>;
  readonly durationMs: number;
}

interface KV {
  key: string;
  value?: { string_value?: string; bool_value?: boolean; int_value?: number | string; double_value?: number };
}

function attributes(list: KV[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of list ?? []) {
    const v = kv.value ?? {};
    out[kv.key] = v.string_value ?? v.bool_value ?? (v.int_value !== undefined ? Number(v.int_value) : v.double_value);
  }
  return out;
}

/** An OTLP/HTTP receiver on 127.0.0.1: POST /v1/traces and /v1/metrics with protobuf bodies. */
class Receiver {
  readonly spans: ReceivedSpan[] = [];
  readonly metricNames = new Map<string, Set<string>>();
  readonly contentTypes = new Set<string>();
  private server!: http.Server;
  port = 0;

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        this.contentTypes.add(`${req.url} ${req.headers["content-type"]}`);
        try {
          if (req.url === "/v1/traces") this.traces(body);
          else if (req.url === "/v1/metrics") this.metrics(body);
        } catch (err) {
          res.writeHead(400).end(String(err));
          return;
        }
        res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private traces(body: Buffer): void {
    const msg = TraceRequest.toObject(TraceRequest.decode(body), { enums: String, longs: Number, bytes: Buffer, defaults: true }) as {
      resource_spans: { resource?: { attributes: KV[] }; scope_spans: { spans: Record<string, unknown>[] }[] }[];
    };
    for (const rs of msg.resource_spans) {
      const service = String(attributes(rs.resource?.attributes)["service.name"]);
      for (const ss of rs.scope_spans) {
        for (const s of ss.spans) {
          const status = (s.status ?? {}) as { code?: string; message?: string };
          this.spans.push({
            service,
            traceId: (s.trace_id as Buffer).toString("hex"),
            spanId: (s.span_id as Buffer).toString("hex"),
            parentSpanId: (s.parent_span_id as Buffer).toString("hex"),
            name: s.name as string,
            kind: s.kind as string,
            status: { code: status.code ?? "STATUS_CODE_UNSET", message: status.message ?? "" },
            attributes: attributes(s.attributes as KV[]),
            durationMs: (Number(s.end_time_unix_nano) - Number(s.start_time_unix_nano)) / 1e6,
          });
        }
      }
    }
  }

  private metrics(body: Buffer): void {
    const msg = MetricsRequest.toObject(MetricsRequest.decode(body), { defaults: true }) as {
      resource_metrics: { resource?: { attributes: KV[] }; scope_metrics: { metrics: { name: string }[] }[] }[];
    };
    for (const rm of msg.resource_metrics) {
      const service = String(attributes(rm.resource?.attributes)["service.name"]);
      let names = this.metricNames.get(service);
      if (names === undefined) this.metricNames.set(service, (names = new Set()));
      for (const sm of rm.scope_metrics) for (const m of sm.metrics) names.add(m.name);
    }
  }

  async waitFor(what: string, pick: (s: ReceivedSpan) => boolean, timeoutMs = 10_000): Promise<ReceivedSpan> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.spans.find(pick);
      if (found !== undefined) return found;
      if (Date.now() > deadline) {
        throw new Error(`no span ${what} within ${timeoutMs} ms; received: ${JSON.stringify(this.spans.map((s) => [s.service, s.name, s.traceId]))}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function newTraceparent(): { traceId: string; parentId: string; header: string } {
  const traceId = randomBytes(16).toString("hex");
  const parentId = randomBytes(8).toString("hex");
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
}

function otelEnv(receiver: Receiver, service: string): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_SERVICE_NAME: service,
    OTEL_BSP_SCHEDULE_DELAY: "100",
    OTEL_METRIC_EXPORT_INTERVAL: "500",
    OTEL_METRIC_EXPORT_TIMEOUT: "500",
  };
}

function logRecords(server: ServerProcess): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of server.output) {
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not JSON
    }
  }
  return out;
}

describe("OTEL_* environment", () => {
  test("off unless configured; OTEL_SDK_DISABLED wins", () => {
    assert.deepEqual(otelSignals({}), { traces: false, otlpMetrics: false });
    assert.deepEqual(otelSignals({ OTEL_SERVICE_NAME: "x", OTEL_TRACES_SAMPLER: "always_on" }), { traces: false, otlpMetrics: false });
    assert.deepEqual(otelSignals({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }), { traces: true, otlpMetrics: true });
    assert.deepEqual(otelSignals({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" }), { traces: false, otlpMetrics: false });
    assert.deepEqual(otelSignals({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_TRACES_EXPORTER: "none" }), { traces: false, otlpMetrics: true });
    assert.deepEqual(otelSignals({ OTEL_TRACES_EXPORTER: "otlp" }), { traces: true, otlpMetrics: false });
    assert.deepEqual(otelSignals({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/v1/traces" }), { traces: true, otlpMetrics: false });
    assert.deepEqual(otelSignals({ OTEL_METRICS_EXPORTER: "otlp" }), { traces: false, otlpMetrics: true });
  });
});

describe("traces, metrics and logs exported by OTLP/HTTP protobuf", () => {
  const receiver = new Receiver();
  let server: ServerProcess;

  before(async () => {
    await receiver.start();
    server = await startServer(["--max-key-bytes", "16", "--log-level", "debug"], otelEnv(receiver, "ripplecache-test"));
  });
  after(async () => {
    await server?.stop();
    await receiver.close();
  });

  test("a gRPC call continues the caller's trace: server span with the RPC semantic conventions", async () => {
    const tp = newTraceparent();
    const client = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
    await client.set({ key: "t/a", value: new TextEncoder().encode("1") });
    const res = await client.get({ key: "t/a" }, { headers: { traceparent: tp.header } });
    assert.equal(res.found, true);
    const span = await receiver.waitFor("for the Get", (s) => s.traceId === tp.traceId);
    assert.equal(span.service, "ripplecache-test");
    assert.equal(span.name, "ripplecache.v1.CacheService/Get");
    assert.equal(span.kind, "SPAN_KIND_SERVER");
    assert.equal(span.parentSpanId, tp.parentId, "the server span is a child of the caller's span");
    assert.equal(span.status.code, "STATUS_CODE_UNSET");
    assert.deepEqual(
      {
        system: span.attributes["rpc.system"],
        service: span.attributes["rpc.service"],
        method: span.attributes["rpc.method"],
        status: span.attributes["rpc.grpc.status_code"],
        address: span.attributes["server.address"],
        port: span.attributes["server.port"],
        protocol: span.attributes["network.protocol.name"],
        version: span.attributes["network.protocol.version"],
      },
      {
        system: "grpc",
        service: "ripplecache.v1.CacheService",
        method: "Get",
        status: 0,
        address: "127.0.0.1",
        port: server.port,
        protocol: "http",
        version: "2",
      },
    );
    assert.equal(span.attributes["client.address"], "127.0.0.1");
    assert.ok(typeof span.attributes["client.port"] === "number" && span.attributes["client.port"] > 0, `client.port ${span.attributes["client.port"]}`);
    // The debug line of the call carries its trace and span ids; it names no key or value.
    const line = logRecords(server).find((r) => r.msg === "rpc" && r.trace_id === tp.traceId);
    assert.ok(line !== undefined, "a log line written inside the call has the trace id");
    assert.equal(line.span_id, span.spanId);
    assert.equal(line.method, "Get");
    assert.equal(line.level, "debug");
    assert.ok(!JSON.stringify(line).includes("t/a"));
  });

  test("a Connect call over HTTP/1.1 that fails: rpc.connect_rpc.error_code, status left unset for a caller's error", async () => {
    const tp = newTraceparent();
    const client = createClient(CacheService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
    await assert.rejects(client.get({ key: "k".repeat(100) }, { headers: { traceparent: tp.header } }), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.InvalidArgument);
      return true;
    });
    const span = await receiver.waitFor("for the failed Get", (s) => s.traceId === tp.traceId);
    assert.equal(span.attributes["rpc.system"], "connect_rpc");
    assert.equal(span.attributes["rpc.connect_rpc.error_code"], "invalid_argument");
    assert.equal(span.attributes["rpc.grpc.status_code"], undefined);
    assert.equal(span.attributes["network.protocol.version"], "1.1");
    assert.equal(span.status.code, "STATUS_CODE_UNSET");
  });

  test("a stream is one span with its message counts and the reason it ended", async () => {
    const tp = newTraceparent();
    const client = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
    const writer = createClient(CacheService, createConnectTransport({ baseUrl: server.url, httpVersion: "2" }));
    const stop = new AbortController();
    const seen: string[] = [];
    const watching = (async () => {
      try {
        for await (const m of client.watch({ target: { case: "prefix", value: "w/" } }, { headers: { traceparent: tp.header }, signal: stop.signal })) {
          seen.push(m.kind.case ?? "");
          if (m.kind.case === "created") {
            for (let i = 0; i < 3; i++) await writer.set({ key: `w/${i}`, value: new Uint8Array([i]) });
          }
          if (seen.filter((c) => c === "events").length >= 3) stop.abort();
        }
      } catch {
        // cancelled by us
      }
    })();
    await watching;
    const span = await receiver.waitFor("for the Watch", (s) => s.traceId === tp.traceId && s.name.endsWith("/Watch"));
    assert.equal(span.kind, "SPAN_KIND_SERVER");
    assert.equal(span.attributes["ripplecache.stream.end_reason"], "cancelled");
    assert.ok(Number(span.attributes["ripplecache.stream.messages_sent"]) >= 4, `created and 3 events: ${JSON.stringify(span.attributes)}`);
    assert.equal(span.attributes["ripplecache.stream.messages_received"], 1);
    assert.equal(span.attributes["rpc.grpc.status_code"], Code.Canceled);
  });

  test("metrics are pushed by OTLP too", async () => {
    const deadline = Date.now() + 10_000;
    const names = () => receiver.metricNames.get("ripplecache-test") ?? new Set<string>();
    while (!(names().has("rpc.server.call.duration") && names().has("ripplecache.cache.hits")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const name of ["rpc.server.call.duration", "ripplecache.cache.hits", "ripplecache.cache.keys", "ripplecache.revision"]) {
      assert.ok(names().has(name), `OTLP metrics include ${name}: ${[...names()].join(", ")}`);
    }
    assert.ok(receiver.contentTypes.has("/v1/traces application/x-protobuf"), [...receiver.contentTypes].join("; "));
    assert.ok(receiver.contentTypes.has("/v1/metrics application/x-protobuf"), [...receiver.contentTypes].join("; "));
  });

  test("the listening line keeps msg, port and adminPort", () => {
    const line = logRecords(server).find((r) => r.msg === "listening");
    assert.ok(line !== undefined);
    assert.equal(line.port, server.port);
    assert.equal(line.adminPort, server.adminPort);
    assert.equal(line.level, "info");
  });
});

/** The TraceIdRatioBased sampler's hash of a trace id: its four 32-bit words XORed (the sampler admits hash < ratio * 0xffffffff). */
function ratioHash(traceId: string): number {
  const b = Buffer.from(traceId, "hex");
  return (b.readUInt32BE(0) ^ b.readUInt32BE(4) ^ b.readUInt32BE(8) ^ b.readUInt32BE(12)) >>> 0;
}

/** A sampled (flags 01) or unsampled (00) traceparent whose trace id the ratio admits or not, as asked. */
function traceparentWith(flags: "00" | "01", admitted: boolean, ratio: number): { traceId: string; header: string } {
  for (;;) {
    const traceId = randomBytes(16).toString("hex");
    if (ratioHash(traceId) < Math.floor(ratio * 0xffffffff) === admitted) return { traceId, header: `00-${traceId}-${randomBytes(8).toString("hex")}-${flags}` };
  }
}

describe("sampling (parentbased_traceidratio at 0.5)", () => {
  const receiver = new Receiver();
  let server: ServerProcess;
  const ratio = 0.5;

  before(async () => {
    await receiver.start();
    server = await startServer(["--log-level", "debug"], {
      ...otelEnv(receiver, "ripplecache-sampling"),
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: String(ratio),
    });
  });
  after(async () => {
    await server?.stop();
    await receiver.close();
  });

  test("root calls sampled by their trace id; the caller's flag decides for the others; a dropped call's log line keeps its trace id", async () => {
    const client = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
    const roots = 200;
    for (let i = 0; i < roots; i += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => client.get({ key: `s/${i + j}` })));
    // Sampled callers whose trace ids the ratio alone would drop, unsampled ones it would keep.
    const sampledParents = Array.from({ length: 10 }, () => traceparentWith("01", false, ratio));
    const unsampledParents = Array.from({ length: 10 }, () => traceparentWith("00", true, ratio));
    for (const tp of [...sampledParents, ...unsampledParents]) await client.get({ key: "s/p" }, { headers: { traceparent: tp.header } });

    for (const tp of sampledParents) await receiver.waitFor("of a sampled caller", (s) => s.traceId === tp.traceId);
    // What was ended before those calls has been exported with them or before (one export at a time, in order).
    await new Promise((r) => setTimeout(r, 300));
    const gets = receiver.spans.filter((s) => s.service === "ripplecache-sampling" && s.name === "ripplecache.v1.CacheService/Get");
    const rootSpans = gets.filter((s) => s.parentSpanId === "");
    // 200 calls at 1/2: the binomial's standard deviation is ~7; 40 either side cannot be chance.
    assert.ok(rootSpans.length > roots * ratio - 40 && rootSpans.length < roots * ratio + 40, `${rootSpans.length} of ${roots} root calls exported`);
    for (const s of rootSpans) {
      assert.ok(ratioHash(s.traceId) < Math.floor(ratio * 0xffffffff), `root span ${s.traceId} was exported although its trace id is above the ratio`);
    }
    assert.equal(new Set(rootSpans.map((s) => s.traceId)).size, rootSpans.length, "each root call its own trace");
    const unsampledIds = new Set(unsampledParents.map((tp) => tp.traceId));
    assert.deepEqual(
      gets.filter((s) => unsampledIds.has(s.traceId)),
      [],
      "a caller's unsampled flag is followed",
    );
    for (const tp of unsampledParents) {
      const line = logRecords(server).find((r) => r.msg === "rpc" && r.trace_id === tp.traceId);
      assert.ok(line !== undefined, "the debug line of a dropped call carries the caller's trace id");
      assert.equal(line.trace_flags, "00");
      assert.match(String(line.span_id), /^[0-9a-f]{16}$/);
      assert.ok(!tp.header.includes(String(line.span_id)), "the call has a span id of its own");
    }
  });
});

describe("replication spans", () => {
  const receiver = new Receiver();
  before(() => receiver.start());
  after(() => receiver.close());

  test("full resyncs on both sides and a promotion are spans; the promotion's log line carries the caller's trace", async () => {
    const primary = await startServer([], otelEnv(receiver, "primary"));
    let replica: ServerProcess | undefined;
    try {
      const writer = createClient(CacheService, createGrpcTransport({ baseUrl: primary.url }));
      for (let i = 0; i < 10; i++) await writer.set({ key: `r/${i}`, value: new Uint8Array(8) });
      replica = await startServer(["--replica-of", primary.addr], otelEnv(receiver, "replica"));
      const sent = await receiver.waitFor("for the primary's full resync", (s) => s.service === "primary" && s.name === "ripplecache.replication.full_resync");
      assert.equal(sent.attributes["ripplecache.replication.role"], "primary");
      assert.equal(sent.attributes["ripplecache.replication.entries"], 10);
      // A child of the Sync stream's server span (exported when the stream ends).
      assert.notEqual(sent.parentSpanId, "");
      const loaded = await receiver.waitFor("for the replica's full resync", (s) => s.service === "replica" && s.name === "ripplecache.replication.full_resync");
      assert.equal(loaded.attributes["ripplecache.replication.role"], "replica");
      assert.equal(loaded.attributes["ripplecache.replication.entries"], 10);
      assert.equal(loaded.status.code, "STATUS_CODE_UNSET");

      const tp = newTraceparent();
      const admin = createClient(AdminService, createGrpcTransport({ baseUrl: replica.url }));
      const promoted = await admin.promote({}, { headers: { traceparent: tp.header } });
      const rpc = await receiver.waitFor("for Promote", (s) => s.traceId === tp.traceId && s.name === "ripplecache.v1.AdminService/Promote");
      const span = await receiver.waitFor("for the promotion", (s) => s.traceId === tp.traceId && s.name === "ripplecache.replication.promote");
      assert.equal(span.parentSpanId, rpc.spanId);
      assert.equal(span.attributes["ripplecache.replication.id"], promoted.replicationId);
      const line = logRecords(replica).find((r) => r.msg === "promoted");
      assert.ok(line !== undefined, "the replica logs its promotion");
      assert.equal(line.trace_id, tp.traceId);
      assert.equal(line.span_id, span.spanId);
      // Individual replicated events are no spans.
      assert.equal(receiver.spans.filter((s) => /apply|change|event/i.test(s.name)).length, 0);
    } finally {
      await replica?.stop();
      await primary.stop();
    }
  });
});

describe("failover spans", () => {
  const receiver = new Receiver();
  let etcd: EtcdProcess;
  before(async () => {
    await receiver.start();
    etcd = await startEtcd();
  });
  after(async () => {
    receiver.close();
    await etcd?.stop();
  });

  test("a switchover is a span in the caller's trace on the old primary, and the new primary's promotion a span that says why", async () => {
    const first = await startServer(coordinatedArgs(etcd.endpoint, "spans", "s1"), otelEnv(receiver, "s1"));
    let second: ServerProcess | undefined;
    try {
      const info = (s: ServerProcess) => createClient(CacheService, createGrpcTransport({ baseUrl: s.url })).info({});
      await eventually("s1 holds the lease", async () => (await info(first)).leaseValidMs, (ms) => ms > 0n, 20_000);
      second = await startServer(coordinatedArgs(etcd.endpoint, "spans", "s2"), otelEnv(receiver, "s2"));
      await eventually("s2 streams from s1", async () => (await info(second!)).linkState, (s) => s === "streaming", 20_000);
      const elected = await receiver.waitFor("for s1's election", (s) => s.service === "s1" && s.name === "ripplecache.replication.promote");
      assert.match(String(elected.attributes["ripplecache.replication.reason"]), /./, "the first election says why");

      const tp = newTraceparent();
      const admin = createClient(AdminService, createGrpcTransport({ baseUrl: first.url }));
      const moved = await admin.failover({ to: "s2" }, { headers: { traceparent: tp.header } });
      const rpc = await receiver.waitFor("for Failover", (s) => s.traceId === tp.traceId && s.name === "ripplecache.v1.AdminService/Failover");
      const span = await receiver.waitFor("for the switchover", (s) => s.traceId === tp.traceId && s.name === "ripplecache.coordination.switchover");
      assert.equal(span.parentSpanId, rpc.spanId);
      assert.equal(span.attributes["ripplecache.coordination.to"], "s2");
      assert.equal(span.attributes["ripplecache.replication.term"], Number(moved.term));
      assert.equal(span.status.code, "STATUS_CODE_UNSET");
      const promoted = await receiver.waitFor("for s2's promotion", (s) => s.service === "s2" && s.name === "ripplecache.replication.promote");
      assert.equal(promoted.attributes["ripplecache.replication.term"], Number(moved.term));
      assert.match(String(promoted.attributes["ripplecache.replication.reason"]), /hand/i, "the promotion says the lease was handed over");
    } finally {
      await second?.stop();
      await first.stop();
    }
  });
});

/**
 * NODE_OPTIONS that make the server print every @opentelemetry package it
 * resolves ("LOADED <url>" on stderr), through a module resolve hook.
 */
function reportOtelPackages(): string {
  const hooks = `import { writeSync } from "node:fs"; export async function resolve(s, c, n) { const r = await n(s, c); if (r.url.includes("@opentelemetry/")) writeSync(2, "LOADED " + r.url + "\\n"); return r; }`;
  const register = `import { register } from "node:module"; register("data:text/javascript,${encodeURIComponent(hooks)}");`;
  return `--import=data:text/javascript,${encodeURIComponent(register)}`;
}

describe("telemetry off", () => {
  test("no OTEL_* configuration: the tracing SDK is not loaded, no trace ids in logs, /metrics still served", async () => {
    const server = await startServer(["--log-level", "debug"], { OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_TRACES_EXPORTER: "", NODE_OPTIONS: reportOtelPackages() });
    try {
      const client = createClient(CacheService, createGrpcTransport({ baseUrl: server.url }));
      await client.get({ key: "x" }, { headers: { traceparent: newTraceparent().header } });
      const res = await fetch(`http://127.0.0.1:${server.adminPort}/metrics`);
      const text = await res.text();
      assert.match(text, /^ripplecache_cache_misses_total 1$/m);
      assert.match(text, /^rpc_server_call_duration_seconds_count\{rpc_system="grpc",rpc_service="ripplecache.v1.CacheService",rpc_method="Get",rpc_grpc_status_code="0"\} 1$/m);
      await new Promise((r) => setTimeout(r, 100));
      const line = logRecords(server).find((r) => r.msg === "rpc");
      assert.ok(line !== undefined, "the debug line of the call");
      assert.equal(line.trace_id, undefined);
      const loaded = new Set(server.output.filter((l) => l.startsWith("LOADED ")).map((l) => /@opentelemetry\/([a-z-]+)/.exec(l)?.[1]));
      assert.ok(loaded.has("sdk-metrics") && loaded.has("api"), `the hook sees the packages: ${[...loaded].join(", ")}`);
      for (const sdk of ["sdk-node", "sdk-trace", "sdk-trace-base", "sdk-trace-node", "context-async-hooks", "exporter-trace-otlp-proto", "otlp-exporter-base"]) {
        assert.ok(!loaded.has(sdk), `${sdk} is not loaded when tracing is off`);
      }
    } finally {
      await server.stop();
    }
  });
});
