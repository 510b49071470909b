import { create, createRegistry, toBinary, type DescFile, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_ripplecache_v1_cache } from "../gen/ripplecache/v1/cache_pb.js";

/** The files this server describes: every service it registers. */
const FILES: readonly DescFile[] = [
  file_ripplecache_v1_cache,
  file_grpc_health_v1_health,
  v1.file_grpc_reflection_v1_reflection,
  v1alpha.file_grpc_reflection_v1alpha_reflection,
];

type Request = v1.ServerReflectionRequest;
type Response = Omit<v1.ServerReflectionResponse, "$typeName" | "originalRequest">;

/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha, which are the same
 * messages under two package names), so grpcurl, grpcui and Postman discover
 * the API without proto files.
 */
export function registerReflection(router: ConnectRouter): void {
  const registry = createRegistry(...FILES);
  const services = FILES.flatMap((f) => f.services.map((s) => s.typeName));
  const answer = (req: Request): Response => respond(registry, services, req);

  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield { ...answer(req), originalRequest: req };
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        // Same wire format: convert through the v1 shape.
        const asV1 = create(v1.ServerReflectionRequestSchema, {
          host: req.host,
          messageRequest: req.messageRequest as v1.ServerReflectionRequest["messageRequest"],
        });
        const res = answer(asV1);
        yield {
          validHost: res.validHost,
          originalRequest: req,
          messageResponse: res.messageResponse as v1alpha.ServerReflectionResponse["messageResponse"],
        };
      }
    },
  });
}

function respond(registry: Registry, services: readonly string[], req: Request): Response {
  const r = req.messageRequest;
  switch (r.case) {
    case "listServices":
      return ok({ case: "listServicesResponse", value: create(v1.ListServiceResponseSchema, { service: services.map((name) => ({ name })) }) });
    case "fileByFilename": {
      const file = FILES.find((f) => f.proto.name === r.value);
      return file ? files(file) : notFound(`file "${r.value}" is not known to this server`);
    }
    case "fileContainingSymbol": {
      const file = fileOfSymbol(registry, r.value);
      return file ? files(file) : notFound(`symbol "${r.value}" is not known to this server`);
    }
    case "fileContainingExtension":
      return notFound(`no extensions of "${r.value.containingType}" are known to this server`);
    case "allExtensionNumbersOfType": {
      if (registry.getMessage(r.value) === undefined) return notFound(`type "${r.value}" is not known to this server`);
      return ok({ case: "allExtensionNumbersResponse", value: create(v1.ExtensionNumberResponseSchema, { baseTypeName: r.value }) });
    }
    default:
      return error(Code.InvalidArgument, "the request names no reflection query");
  }
}

function fileOfSymbol(registry: Registry, symbol: string): DescFile | undefined {
  const desc = registry.get(symbol);
  if (desc !== undefined) return desc.file;
  // A method or field: look up its parent.
  const parent = symbol.slice(0, Math.max(0, symbol.lastIndexOf(".")));
  const service = registry.getService(parent);
  if (service?.methods.some((m) => m.name === symbol.slice(parent.length + 1))) return service.file;
  const message = registry.getMessage(parent);
  if (message?.fields.some((f) => f.name === symbol.slice(parent.length + 1))) return message.file;
  return undefined;
}

/** The file and, transitively, the files it imports. */
function files(file: DescFile): Response {
  const seen = new Set<DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f)) return;
    seen.add(f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  const fileDescriptorProto = [...seen].map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
  return ok({ case: "fileDescriptorResponse", value: create(v1.FileDescriptorResponseSchema, { fileDescriptorProto }) });
}

function ok(messageResponse: Response["messageResponse"]): Response {
  return { validHost: "", messageResponse };
}

function notFound(message: string): Response {
  return error(Code.NotFound, message);
}

function error(code: Code, errorMessage: string): Response {
  return ok({ case: "errorResponse", value: create(v1.ErrorResponseSchema, { errorCode: code, errorMessage }) });
}
