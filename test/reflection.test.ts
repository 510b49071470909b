// gRPC server reflection (grpc.reflection.v1 and v1alpha) as a real client
// sees it: @grpc/grpc-js with messages from the repository's reflection.proto,
// file descriptors decoded with protobuf-es.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { fromBinary, isFieldSet } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  FileDescriptorProtoSchema,
  MethodOptions_IdempotencyLevel,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ROOT, startServer, type ServerProcess } from "./helpers/server.js";

type Msg = Record<string, any>;
type Version = "v1" | "v1alpha";

let server: ServerProcess;
const clients = new Map<Version, grpc.Client & Record<string, Function>>();

before(async () => {
  server = await startServer();
  for (const version of ["v1", "v1alpha"] as const) {
    const def = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, {
      keepCase: true,
      longs: String,
      enums: String,
      bytes: Buffer,
      defaults: true,
      oneofs: true,
      includeDirs: [join(ROOT, "proto")],
    });
    const pkg = (grpc.loadPackageDefinition(def) as any).grpc.reflection[version];
    clients.set(version, new pkg.ServerReflection(server.addr, grpc.credentials.createInsecure()));
  }
});

after(async () => {
  for (const c of clients.values()) c.close();
  await server?.stop();
});

/**
 * Sends `requests` one at a time on one bidi stream (as grpcurl does), waiting
 * for each answer before the next request, and returns the answers.
 */
async function reflect(version: Version, requests: Msg[]): Promise<Msg[]> {
  const call = clients.get(version)!.ServerReflectionInfo({ deadline: Date.now() + 5000 }) as grpc.ClientDuplexStream<Msg, Msg>;
  const answers: Msg[] = [];
  const queue: Msg[] = [];
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  let ended = false;
  call.on("data", (m: Msg) => {
    queue.push(m);
    wake?.();
  });
  call.on("error", (e: Error) => {
    failure = e;
    wake?.();
  });
  call.on("end", () => {
    ended = true;
    wake?.();
  });
  try {
    for (const req of requests) {
      call.write({ host: "", ...req });
      while (queue.length === 0) {
        if (failure !== undefined) throw failure;
        if (ended) throw new Error(`stream ended before the answer to ${JSON.stringify(req)}`);
        await new Promise<void>((r) => (wake = r));
      }
      answers.push(queue.shift()!);
    }
    call.end();
    // The server ends the stream once the client has: the call ends with OK.
    while (!ended && failure === undefined) await new Promise<void>((r) => (wake = r));
    if (failure !== undefined) throw failure;
    assert.equal(queue.length, 0, `unexpected extra answers ${JSON.stringify(queue)}`);
  } finally {
    call.cancel();
  }
  return answers;
}

function descriptors(answer: Msg): FileDescriptorProto[] {
  assert.equal(answer.message_response, "file_descriptor_response", `answer ${JSON.stringify(answer)}`);
  const files: Buffer[] = answer.file_descriptor_response.file_descriptor_proto;
  assert.ok(files.length >= 1);
  return files.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

function cacheFile(answer: Msg): FileDescriptorProto {
  const files = descriptors(answer);
  const file = files.find((f) => f.name === "ripplecache/v1/cache.proto");
  assert.ok(file, `no ripplecache/v1/cache.proto among ${files.map((f) => f.name)}`);
  // The answer carries the file's imports too, transitively, as clients need them.
  const names = new Set(files.map((f) => f.name));
  for (const f of files) for (const dep of f.dependency) assert.ok(names.has(dep), `${f.name} imports ${dep}, which the answer lacks`);
  return file;
}

/** CacheService's methods as the repository's .proto declares them, in order. */
const CACHE_METHODS: { name: string; clientStreaming: boolean; serverStreaming: boolean }[] = Object.values(
  protoLoader.loadSync("ripplecache/v1/cache.proto", { includeDirs: [join(ROOT, "proto")] })["ripplecache.v1.CacheService"] as protoLoader.ServiceDefinition,
).map((m) => ({ name: m.path.split("/").pop()!, clientStreaming: m.requestStream, serverStreaming: m.responseStream }));

/** Checks the decoded cache.proto describes the API as the .proto file does. */
function assertCacheFile(file: FileDescriptorProto): void {
  assert.equal(file.package, "ripplecache.v1");
  assert.equal(file.syntax, "proto3");
  assert.equal(file.service.length, 1);
  const service = file.service[0];
  assert.equal(service.name, "CacheService");
  assert.deepEqual(
    service.method.map((m) => ({ name: m.name, clientStreaming: m.clientStreaming ?? false, serverStreaming: m.serverStreaming ?? false })),
    CACHE_METHODS,
    "the served descriptor matches proto/ripplecache/v1/cache.proto",
  );
  assert.ok(CACHE_METHODS.length >= 11);

  const method = (name: string) => service.method.find((m) => m.name === name)!;
  assert.equal(method("Get").inputType, ".ripplecache.v1.GetRequest");
  assert.equal(method("Get").outputType, ".ripplecache.v1.GetResponse");
  assert.equal(method("Get").options?.idempotencyLevel, MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS);
  assert.equal(method("Set").options?.idempotencyLevel ?? MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN, MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN);
  assert.equal(method("Load").clientStreaming, true);
  assert.equal(method("Load").serverStreaming ?? false, false);
  assert.equal(method("Get").clientStreaming ?? false, false);

  // Every message the methods name is in the file.
  const messages = new Set(file.messageType.map((m) => `.ripplecache.v1.${m.name}`));
  for (const m of service.method) {
    assert.ok(messages.has(m.inputType), `${m.inputType} missing`);
    assert.ok(messages.has(m.outputType), `${m.outputType} missing`);
  }
  assert.ok(file.enumType.some((e) => e.name === "Role"));

  // The proto3 `optional` field keeps its synthetic oneof, or protoc-based
  // tools (grpcurl, grpcio reflection clients) reject the descriptor.
  const del = file.messageType.find((m) => m.name === "DeleteRequest")!;
  const ifRevision = del.field.find((f) => f.name === "if_revision")!;
  assert.equal(ifRevision.type, FieldDescriptorProto_Type.INT64);
  assert.equal(ifRevision.proto3Optional, true);
  assert.ok(isFieldSet(ifRevision, FieldDescriptorProtoSchema.field.oneofIndex));
  assert.equal(del.oneofDecl[ifRevision.oneofIndex]?.name, "_if_revision");
  // The real oneof of SetRequest.
  const set = file.messageType.find((m) => m.name === "SetRequest")!;
  assert.deepEqual(set.oneofDecl.map((o) => o.name), ["condition"]);
  assert.deepEqual(
    set.field.filter((f) => isFieldSet(f, FieldDescriptorProtoSchema.field.oneofIndex) && f.oneofIndex === 0).map((f) => f.name),
    ["if_absent", "if_present", "if_revision"],
  );
}

for (const version of ["v1", "v1alpha"] as const) {
  test(`${version}: list_services names CacheService, Health and reflection`, async () => {
    const [answer] = await reflect(version, [{ list_services: "" }]);
    assert.equal(answer.message_response, "list_services_response");
    const names = answer.list_services_response.service.map((s: Msg) => s.name as string);
    assert.ok(names.includes("ripplecache.v1.CacheService"), `services: ${names}`);
    assert.ok(names.includes("grpc.health.v1.Health"), `services: ${names}`);
    assert.ok(names.includes(`grpc.reflection.${version}.ServerReflection`), `services: ${names}`);
    assert.equal(new Set(names).size, names.length, `duplicates in ${names}`);
    // The answer echoes the request.
    assert.equal(answer.original_request.list_services, "");
    assert.equal(answer.original_request.message_request, "list_services");
  });

  test(`${version}: file_containing_symbol for the service and for a method`, async () => {
    const answers = await reflect(version, [
      { file_containing_symbol: "ripplecache.v1.CacheService" },
      { file_containing_symbol: "ripplecache.v1.CacheService.Get" },
      { file_containing_symbol: "ripplecache.v1.GetRequest" },
      { file_containing_symbol: "ripplecache.v1.Role" },
    ]);
    for (const answer of answers) assertCacheFile(cacheFile(answer));
    assert.equal(answers[1].original_request.file_containing_symbol, "ripplecache.v1.CacheService.Get");
  });

  test(`${version}: file_by_filename and the health service`, async () => {
    const [byName, health] = await reflect(version, [
      { file_by_filename: "ripplecache/v1/cache.proto" },
      { file_containing_symbol: "grpc.health.v1.Health" },
    ]);
    assertCacheFile(cacheFile(byName));
    const [file] = descriptors(health);
    assert.equal(file.name, "grpc/health/v1/health.proto");
    assert.equal(file.package, "grpc.health.v1");
    assert.deepEqual(file.service.map((s) => [s.name, s.method.map((m) => m.name)]), [["Health", ["Check", "Watch"]]]);
    assert.equal(file.service[0].method[1].serverStreaming, true);
  });

  test(`${version}: unknown symbols and files get error_response NOT_FOUND, and the stream goes on`, async () => {
    const answers = await reflect(version, [
      { file_containing_symbol: "ripplecache.v1.NoSuchThing" },
      { file_containing_symbol: "ripplecache.v1.CacheService.NoSuchMethod" },
      { file_by_filename: "no/such/file.proto" },
      { file_containing_symbol: "ripplecache.v1.CacheService" },
    ]);
    for (const answer of answers.slice(0, 3)) {
      assert.equal(answer.message_response, "error_response", JSON.stringify(answer));
      assert.equal(answer.error_response.error_code, grpc.status.NOT_FOUND);
      assert.ok(answer.error_response.error_message.length > 0);
    }
    assert.match(answers[0].error_response.error_message, /ripplecache\.v1\.NoSuchThing/);
    assertCacheFile(cacheFile(answers[3]));
  });
}
