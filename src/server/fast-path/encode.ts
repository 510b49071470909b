import type { DescMessage, Message } from "@bufbuild/protobuf";
import {
  GetManyResponseSchema,
  GetResponseSchema,
  SetManyResponseSchema,
  SetResponseSchema,
  type Entry,
  type GetManyResponse,
  type GetResponse,
  type SetManyResponse,
  type SetResponse,
} from "../../gen/ripplecache/v1/cache_pb.js";
import { encodedBytes } from "../entries.js";
import { LEN, tag, utf8Length, VARINT, varintSize, writeUtf8, writeVarint } from "../../protobuf-wire.js";

/**
 * Hand-written protobuf encoders for the answers of the hot methods:
 * GetResponse, GetManyResponse, SetResponse and SetManyResponse.
 * @bufbuild/protobuf's reflective toBinary spent ~15 µs per Entry (a GetMany
 * of 100 keys took 1.5 ms, most of it in its writer's fork/join of
 * length-delimited fields), and SetManyResponse was 7% of a primary's CPU at
 * 20,000 writes/s; these compute the size, then write once into one buffer.
 *
 * They write exactly the bytes toBinary writes: fields in field-number order,
 * proto3 defaults omitted, varints as protobuf-es writes them (negative int64
 * in ten bytes). A message with unknown fields goes to toBinary.
 * test/fast-path.test.ts compares the bytes with connect-node's (which uses
 * toBinary) and test/encode.property.test.ts with toBinary on random messages.
 */
export function fastEncoder(schema: DescMessage): ((message: Message) => Uint8Array | undefined) | undefined {
  if (schema.typeName === GetResponseSchema.typeName) return (m) => encodeGetResponse(m as GetResponse);
  if (schema.typeName === GetManyResponseSchema.typeName) return (m) => encodeGetManyResponse(m as GetManyResponse);
  if (schema.typeName === SetResponseSchema.typeName) return (m) => encodeSetResponse(m as SetResponse);
  if (schema.typeName === SetManyResponseSchema.typeName) return (m) => encodeSetManyResponse(m as SetManyResponse);
  return undefined;
}


function hasUnknown(m: { $unknown?: unknown[] }): boolean {
  return m.$unknown !== undefined && m.$unknown.length > 0;
}

export function encodeGetResponse(m: GetResponse): Uint8Array | undefined {
  if (hasUnknown(m)) return undefined;
  const size = getResponseSize(m);
  const out = Buffer.allocUnsafe(size);
  const end = writeGetResponse(out, 0, m);
  return end === size ? out : undefined;
}

export function encodeGetManyResponse(m: GetManyResponse): Uint8Array | undefined {
  // The handler's answer is usually encoded already (entries.ts).
  const encoded = encodedBytes(m);
  if (encoded !== undefined) return encoded;
  if (hasUnknown(m)) return undefined;
  let size = 0;
  const sizes = new Array<number>(m.entries.length);
  for (let i = 0; i < m.entries.length; i++) {
    const e = m.entries[i];
    if (hasUnknown(e)) return undefined;
    const s = (sizes[i] = entrySize(e));
    size += 1 + varintSize(s) + s;
  }
  const out = Buffer.allocUnsafe(size);
  let p = 0;
  for (let i = 0; i < m.entries.length; i++) {
    out[p++] = tag(1, LEN);
    p = writeVarint(out, p, sizes[i]);
    p = writeEntry(out, p, m.entries[i]);
  }
  return p === size ? out : undefined;
}

export function encodeSetResponse(m: SetResponse): Uint8Array | undefined {
  if (hasUnknown(m)) return undefined;
  const size = setResponseSize(m);
  const out = Buffer.allocUnsafe(size);
  return writeSetResponse(out, 0, m) === size ? out : undefined;
}

export function encodeSetManyResponse(m: SetManyResponse): Uint8Array | undefined {
  if (hasUnknown(m)) return undefined;
  let size = 0;
  for (const r of m.results) {
    if (hasUnknown(r)) return undefined;
    const s = setResponseSize(r);
    size += 1 + varintSize(s) + s;
  }
  const out = Buffer.allocUnsafe(size);
  let p = 0;
  for (const r of m.results) {
    out[p++] = tag(1, LEN);
    p = writeVarint(out, p, setResponseSize(r));
    p = writeSetResponse(out, p, r);
  }
  return p === size ? out : undefined;
}

function setResponseSize(m: SetResponse): number {
  let n = 0;
  if (m.applied) n += 2;
  if (m.revision !== 0n) n += 1 + int64Size(m.revision);
  if (m.replicasAcked !== 0) n += 1 + varintSize(m.replicasAcked);
  return n;
}

function writeSetResponse(out: Buffer, p: number, m: SetResponse): number {
  if (m.applied) {
    out[p++] = tag(1, VARINT);
    out[p++] = 1;
  }
  if (m.revision !== 0n) p = writeInt64(out, p, 2, m.revision);
  if (m.replicasAcked !== 0) {
    out[p++] = tag(3, VARINT);
    p = writeVarint(out, p, m.replicasAcked);
  }
  return p;
}

/** The fields GetResponse and Entry share, numbered from `first` (GetResponse 1-5, Entry 2-6 after its key). */
type ValueFields = Pick<GetResponse, "found" | "value" | "revision" | "ttlMs" | "flags">;

function valueFieldsSize(m: ValueFields): number {
  let n = 0;
  if (m.found) n += 2;
  if (m.value.byteLength > 0) n += 1 + varintSize(m.value.byteLength) + m.value.byteLength;
  if (m.revision !== 0n) n += 1 + int64Size(m.revision);
  if (m.ttlMs !== 0n) n += 1 + int64Size(m.ttlMs);
  if (m.flags !== 0) n += 1 + varintSize(m.flags);
  return n;
}

function writeValueFields(out: Buffer, p: number, m: ValueFields, first: number): number {
  if (m.found) {
    out[p++] = tag(first, VARINT);
    out[p++] = 1;
  }
  if (m.value.byteLength > 0) p = writeBytes(out, p, first + 1, m.value);
  if (m.revision !== 0n) p = writeInt64(out, p, first + 2, m.revision);
  if (m.ttlMs !== 0n) p = writeInt64(out, p, first + 3, m.ttlMs);
  if (m.flags !== 0) {
    out[p++] = tag(first + 4, VARINT);
    p = writeVarint(out, p, m.flags);
  }
  return p;
}

function getResponseSize(m: GetResponse): number {
  return valueFieldsSize(m);
}

function writeGetResponse(out: Buffer, p: number, m: GetResponse): number {
  return writeValueFields(out, p, m, 1);
}

function entrySize(e: Entry): number {
  const k = utf8Length(e.key);
  return (k > 0 ? 1 + varintSize(k) + k : 0) + valueFieldsSize(e);
}

function writeEntry(out: Buffer, p: number, e: Entry): number {
  if (e.key.length > 0) {
    const bytes = utf8Length(e.key);
    out[p++] = tag(1, LEN);
    p = writeVarint(out, p, bytes);
    p = writeUtf8(out, p, e.key, bytes);
  }
  return writeValueFields(out, p, e, 2);
}

function writeBytes(out: Buffer, p: number, field: number, bytes: Uint8Array): number {
  out[p++] = tag(field, LEN);
  p = writeVarint(out, p, bytes.byteLength);
  out.set(bytes, p);
  return p + bytes.byteLength;
}

function writeInt64(out: Buffer, p: number, field: number, v: bigint): number {
  out[p++] = tag(field, VARINT);
  if (v >= 0n && v <= 0x1fffffffffffffn) return writeVarint(out, p, Number(v));
  // Negative (or huge) int64: ten bytes of two's complement, as protobuf-es writes it.
  let x = BigInt.asUintN(64, v);
  while (x > 0x7fn) {
    out[p++] = Number(x & 0x7fn) | 0x80;
    x >>= 7n;
  }
  out[p++] = Number(x);
  return p;
}


function int64Size(v: bigint): number {
  if (v >= 0n && v <= 0x1fffffffffffffn) return varintSize(Number(v));
  let x = BigInt.asUintN(64, v);
  let n = 1;
  while (x > 0x7fn) {
    x >>= 7n;
    n++;
  }
  return n;
}
