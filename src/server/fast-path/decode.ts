import type { DescMessage, Message } from "@bufbuild/protobuf";
import {
  GetManyRequestSchema,
  GetRequestSchema,
  SetManyRequestSchema,
  SetRequestSchema,
  type GetManyRequest,
  type GetRequest,
  type SetManyRequest,
  type SetRequest,
} from "../../gen/ripplecache/v1/cache_pb.js";
import { LEN, ProtobufReader, VARINT, WireError } from "../../protobuf-wire.js";

/**
 * Hand-written protobuf decoders for the requests of the hot methods: Get,
 * GetMany, Set and SetMany. @bufbuild/protobuf's reflective fromBinary was
 * 12% of a primary's CPU at 20,000 writes/s in SetMany(100).
 *
 * They decode only what they can decode exactly as fromBinary does, and
 * otherwise return undefined so that the caller runs fromBinary, which then
 * gives the same message or the same error: unknown fields (kept by
 * fromBinary as $unknown), a field with another wire type than its own,
 * int64 values that are negative or beyond 2^53 (bigint arithmetic), any
 * malformed or truncated input, strings that are not UTF-8.
 * test/decode.property.test.ts compares them with fromBinary on random
 * messages and on random bytes.
 */
export function fastDecoder(schema: DescMessage): ((bytes: Uint8Array) => Message | undefined) | undefined {
  const decode = DECODERS.get(schema.typeName);
  if (decode === undefined) return undefined;
  return (bytes) => {
    try {
      return decode(new ProtobufReader(bytes), bytes.length);
    } catch (e) {
      if (e instanceof WireError) return undefined;
      throw e;
    }
  };
}

type Decoder = (r: ProtobufReader, end: number) => Message | undefined;

const DECODERS = new Map<string, Decoder>([
  [GetRequestSchema.typeName, decodeGetRequest],
  [GetManyRequestSchema.typeName, decodeGetManyRequest],
  [SetRequestSchema.typeName, decodeSetRequest],
  [SetManyRequestSchema.typeName, decodeSetManyRequest],
]);

export function decodeGetRequest(r: ProtobufReader, end: number): GetRequest | undefined {
  let key = "";
  let minRevision = 0n;
  while (r.pos < end) {
    switch (r.varint32()) {
      case (1 << 3) | LEN:
        key = r.string();
        break;
      case (2 << 3) | VARINT:
        minRevision = BigInt(r.int53());
        break;
      default:
        return undefined;
    }
  }
  return { $typeName: "ripplecache.v1.GetRequest", key, minRevision };
}

export function decodeGetManyRequest(r: ProtobufReader, end: number): GetManyRequest | undefined {
  const keys: string[] = [];
  let minRevision = 0n;
  while (r.pos < end) {
    switch (r.varint32()) {
      case (1 << 3) | LEN:
        keys.push(r.string());
        break;
      case (2 << 3) | VARINT:
        minRevision = BigInt(r.int53());
        break;
      default:
        return undefined;
    }
  }
  return { $typeName: "ripplecache.v1.GetManyRequest", keys, minRevision };
}

export function decodeSetRequest(r: ProtobufReader, end: number): SetRequest | undefined {
  let key = "";
  let value: Uint8Array | undefined;
  let ttlMs = 0n;
  let flags = 0;
  let condition: SetRequest["condition"] = { case: undefined };
  let minReplicas = 0;
  let replicaTimeoutMs = 0;
  while (r.pos < end) {
    switch (r.varint32()) {
      case (1 << 3) | LEN:
        key = r.string();
        break;
      case (2 << 3) | LEN:
        value = r.bytes();
        break;
      case (3 << 3) | VARINT:
        ttlMs = BigInt(r.int53());
        break;
      case (4 << 3) | VARINT:
        flags = r.uint32();
        break;
      case (5 << 3) | VARINT:
        condition = { case: "ifAbsent", value: r.bool() };
        break;
      case (6 << 3) | VARINT:
        condition = { case: "ifPresent", value: r.bool() };
        break;
      case (7 << 3) | VARINT:
        condition = { case: "ifRevision", value: BigInt(r.int53()) };
        break;
      case (8 << 3) | VARINT:
        minReplicas = r.uint32();
        break;
      case (9 << 3) | VARINT:
        replicaTimeoutMs = r.uint32();
        break;
      default:
        return undefined;
    }
  }
  if (r.pos !== end) return undefined;
  return { $typeName: "ripplecache.v1.SetRequest", key, value: value ?? new Uint8Array(0), ttlMs, flags, condition, minReplicas, replicaTimeoutMs };
}

export function decodeSetManyRequest(r: ProtobufReader, end: number): SetManyRequest | undefined {
  const entries: SetRequest[] = [];
  while (r.pos < end) {
    if (r.varint32() !== ((1 << 3) | LEN)) return undefined;
    const entry = decodeSetRequest(r, r.limit(r.varint32()));
    if (entry === undefined) return undefined;
    entries.push(entry);
  }
  return { $typeName: "ripplecache.v1.SetManyRequest", entries };
}
