import { fromBinary } from "@bufbuild/protobuf";
import { EntrySchema, GetManyResponseSchema, type Entry, type GetManyResponse } from "../gen/ripplecache/v1/cache_pb.js";
import { bufferWithEnvelopeRoom, LEN, tag, utf8Length, VARINT, varintSize, writeUtf8, writeVarint } from "../protobuf-wire.js";
import type { BatchRead, EntryView } from "../store/store.js";

const NO_BYTES = new Uint8Array(0);
const ENTRY_TYPE = EntrySchema.typeName as "ripplecache.v1.Entry";
const GET_MANY_RESPONSE_TYPE = GetManyResponseSchema.typeName as "ripplecache.v1.GetManyResponse";

/**
 * The Entry of `key`, written as the object protobuf-es's create() makes
 * (messages are plain objects with every field set): create() walked
 * EntrySchema's fields by reflection for every key, 17% of a GetMany(100).
 * test/encode.property.test.ts checks it against create() field by field, so
 * a field added to Entry fails there until it is added here.
 */
export function toEntry(key: string, e: EntryView | undefined): Entry {
  return e === undefined
    ? { $typeName: ENTRY_TYPE, key, found: false, value: NO_BYTES, revision: 0n, ttlMs: 0n, flags: 0 }
    : { $typeName: ENTRY_TYPE, key, found: true, value: e.value, revision: BigInt(e.revision), ttlMs: BigInt(e.ttlMs), flags: e.flags };
}

/** The protobuf bytes an answer was made from (encodedMessage), for the fast path's encoder. */
const ENCODED = Symbol("ripplecache.encoded");

/** The bytes `message` was made from, if encodedMessage made it and nothing has replaced its fields since. */
export function encodedBytes(message: object): Uint8Array | undefined {
  return (message as { [ENCODED]?: Uint8Array })[ENCODED];
}

/**
 * GetMany's answer, encoded straight from the store's tables: no Entry
 * object, value copy or BigInt per key. Through Entry objects a GetMany(100)
 * made ~500 objects and copied every value twice (into the objects, then into
 * the answer), and the store, the objects and the encoder were ~40% of its
 * server time. The fast path sends these bytes as they are; any other reader
 * (connect-node's JSON or binary serializer, an interceptor) finds the same
 * entries decoded from them on first read of `entries`.
 */
export function getManyAnswer(keys: readonly string[], read: BatchRead): GetManyResponse {
  const bytes = encodeGetMany(keys, read);
  if (bytes !== undefined) return encodedMessage(bytes);
  // Flags beyond uint32 (a direct caller of the store's): protobuf-es decides what they become.
  return { $typeName: GET_MANY_RESPONSE_TYPE, entries: keys.map((key, i) => toEntry(key, viewOf(key, read, i))) };
}

function viewOf(key: string, read: BatchRead, i: number): EntryView | undefined {
  if (!read.found(i)) return undefined;
  const value = new Uint8Array(read.valueLength(i));
  read.copyValue(i, value, 0);
  return { key, value, revision: read.revision(i), ttlMs: read.ttlMs(i), flags: read.flags(i) };
}

/**
 * GetManyResponse bytes as toBinary writes them (entries in order; in each,
 * fields in number order, proto3 defaults left out): measured, then written
 * once. Undefined when a found key's flags are not a uint32.
 */
function encodeGetMany(keys: readonly string[], read: BatchRead): Buffer | undefined {
  const n = keys.length;
  const sizes: number[] = new Array<number>(n);
  const keyBytes: number[] = new Array<number>(n);
  let size = 0;
  for (let i = 0; i < n; i++) {
    const k = (keyBytes[i] = utf8Length(keys[i]!));
    let s = k > 0 ? 1 + varintSize(k) + k : 0;
    if (read.found(i)) {
      const flags = read.flags(i);
      if (flags >>> 0 !== flags) return undefined;
      const length = read.valueLength(i);
      const revision = read.revision(i);
      const ttlMs = read.ttlMs(i);
      s += 2;
      if (length > 0) s += 1 + varintSize(length) + length;
      if (revision !== 0) s += 1 + varintSize(revision);
      if (ttlMs !== 0) s += 1 + varintSize(ttlMs);
      if (flags !== 0) s += 1 + varintSize(flags);
    }
    sizes[i] = s;
    size += 1 + varintSize(s) + s;
  }
  const out = bufferWithEnvelopeRoom(size);
  let p = 0;
  for (let i = 0; i < n; i++) {
    out[p++] = tag(1, LEN);
    p = writeVarint(out, p, sizes[i]!);
    const k = keyBytes[i]!;
    if (k > 0) {
      out[p++] = tag(1, LEN);
      p = writeVarint(out, p, k);
      p = writeUtf8(out, p, keys[i]!, k);
    }
    if (!read.found(i)) continue;
    out[p++] = tag(2, VARINT);
    out[p++] = 1;
    const length = read.valueLength(i);
    if (length > 0) {
      out[p++] = tag(3, LEN);
      p = writeVarint(out, p, length);
      read.copyValue(i, out, p);
      p += length;
    }
    p = writeNonZero(out, p, 4, read.revision(i));
    p = writeNonZero(out, p, 5, read.ttlMs(i));
    p = writeNonZero(out, p, 6, read.flags(i));
  }
  if (p !== size) throw new Error(`GetMany answer: wrote ${p} of ${size} bytes`);
  return out;
}

/** A varint field, left out when 0 (proto3's default). */
function writeNonZero(out: Buffer, p: number, field: number, v: number): number {
  if (v === 0) return p;
  out[p++] = tag(field, VARINT);
  return writeVarint(out, p, v);
}

/**
 * A GetManyResponse that is its protobuf bytes until someone reads
 * `entries` (an own, enumerable accessor, so a spread copy reads it too and
 * keeps the entries, without the bytes). Assigning `entries` drops the bytes.
 */
function encodedMessage(bytes: Uint8Array): GetManyResponse {
  let entries: Entry[] | undefined;
  const message = { $typeName: GET_MANY_RESPONSE_TYPE } as GetManyResponse & { [ENCODED]?: Uint8Array };
  Object.defineProperty(message, "entries", {
    enumerable: true,
    configurable: true,
    // As a Uint8Array, not our Buffer: the values are views of it, and other paths give Uint8Arrays.
    get: () => (entries ??= fromBinary(GetManyResponseSchema, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).entries),
    set: (value: Entry[]) => {
      entries = value;
      delete message[ENCODED];
    },
  });
  Object.defineProperty(message, ENCODED, { value: bytes, configurable: true, enumerable: false });
  return message;
}
