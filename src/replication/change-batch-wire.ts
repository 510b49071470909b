import { ChangeType as WireChangeType } from "../gen/ripplecache/v1/replication_pb.js";
import { LEN, ProtobufReader, VARINT, varintSize, WireError, writeVarint } from "../protobuf-wire.js";
import type { Change, ChangeType } from "../store/change.js";

export { WireError };

/**
 * ChangeBatch (replication.proto) encoded and decoded by hand, straight from
 * and to the store's Change objects.
 *
 * Both ends of a Sync stream handle every write, so this is the replication
 * hot path. Through @bufbuild/protobuf's reflective toBinary and fromBinary,
 * a batch cost a ReplicatedChange object per change on each side plus the
 * reflection: encoding was ~20% of a primary's CPU at 20,000 writes/s and
 * decoding ~22% of its replica's. Here the primary computes the size, then
 * writes once into one buffer; the replica reads fields into a Change, its
 * values views of the received bytes (the store copies them into its arena).
 *
 * The encoder writes exactly the bytes toBinary writes (fields in number order,
 * proto3 defaults omitted); the decoder accepts anything fromBinary accepts
 * for these fields (fields in any order, unknown fields skipped, a repeated
 * scalar's last value winning) except keys that are not UTF-8, which it refuses. test/change-batch-wire.property.test.ts compares
 * both with protobuf-es on random batches.
 */

/** ChangeType (the proto enum) of each Change.type. */
export const WIRE_TYPES: Readonly<Record<ChangeType, WireChangeType>> = {
  put: WireChangeType.PUT,
  delete: WireChangeType.DELETE,
  expire: WireChangeType.EXPIRE,
  evict: WireChangeType.EVICT,
  flush: WireChangeType.FLUSH,
};
/** Change.type by wire value (the inverse of WIRE_TYPES). */
const TYPES: readonly (ChangeType | undefined)[] = [undefined, "put", "delete", "expire", "evict", "flush"];

// --- encoding -------------------------------------------------------------------

/**
 * The encoded ChangeBatch of `changes`, preceded by its length as a varint when
 * `lengthPrefixed` (the form a length-delimited field's bytes take inside an
 * enclosing message, as SyncResponse's unknown-field data).
 */
export function encodeChangeBatch(changes: readonly Change[], lengthPrefixed = false): Uint8Array {
  const sizes = new Array<number>(changes.length);
  const keyBytes = new Array<number>(changes.length);
  let body = 0;
  for (let i = 0; i < changes.length; i++) {
    const c = changes[i];
    const k = (keyBytes[i] = c.key.length === 0 ? 0 : Buffer.byteLength(c.key, "utf8"));
    const s = (sizes[i] = changeSize(c, k));
    body += 1 + varintSize(s) + s;
  }
  const prefix = lengthPrefixed ? varintSize(body) : 0;
  const out = Buffer.allocUnsafe(prefix + body);
  let p = lengthPrefixed ? writeVarint(out, 0, body) : 0;
  for (let i = 0; i < changes.length; i++) {
    out[p++] = (1 << 3) | LEN;
    p = writeVarint(out, p, sizes[i]);
    p = writeChange(out, p, changes[i], keyBytes[i]);
  }
  if (p !== out.length) throw new Error(`encodeChangeBatch: wrote ${p} of ${out.length} bytes`);
  return out;
}

function changeSize(c: Change, keyBytes: number): number {
  let n = 2 + 1 + varintSize(c.revision); // type (1..5) and revision (> 0)
  if (keyBytes > 0) n += 1 + varintSize(keyBytes) + keyBytes;
  const v = c.value?.byteLength ?? 0;
  if (v > 0) n += 1 + varintSize(v) + v;
  if (c.flags !== 0) n += 1 + varintSize(c.flags >>> 0);
  if (c.expiresAt !== 0) n += 1 + varintSize(c.expiresAt);
  return n;
}

function writeChange(out: Buffer, p: number, c: Change, keyBytes: number): number {
  out[p++] = (1 << 3) | VARINT;
  out[p++] = WIRE_TYPES[c.type];
  out[p++] = (2 << 3) | VARINT;
  p = writeVarint(out, p, c.revision);
  if (keyBytes > 0) {
    out[p++] = (3 << 3) | LEN;
    p = writeVarint(out, p, keyBytes);
    p += out.write(c.key, p, keyBytes, "utf8");
  }
  const v = c.value;
  if (v !== undefined && v.byteLength > 0) {
    out[p++] = (4 << 3) | LEN;
    p = writeVarint(out, p, v.byteLength);
    out.set(v, p);
    p += v.byteLength;
  }
  if (c.flags !== 0) {
    out[p++] = (5 << 3) | VARINT;
    p = writeVarint(out, p, c.flags >>> 0);
  }
  if (c.expiresAt !== 0) {
    out[p++] = (6 << 3) | VARINT;
    p = writeVarint(out, p, c.expiresAt);
  }
  return p;
}


// --- decoding -------------------------------------------------------------------

const EMPTY = new Uint8Array(0);

/**
 * The changes of an encoded ChangeBatch. Values are views of `bytes`. Throws
 * WireError (protobuf-wire.ts) for bytes that are not a ChangeBatch, an
 * unknown change type, or a revision or expiry beyond 2^53 (this node's
 * revisions are JS numbers).
 */
export function decodeChangeBatch(bytes: Uint8Array): Change[] {
  const r = new ProtobufReader(bytes);
  const out: Change[] = [];
  while (r.pos < r.end) {
    const t = r.varint32();
    if (t === ((1 << 3) | LEN)) {
      const len = r.varint32();
      out.push(decodeChange(r, r.limit(len)));
    } else r.skip(t);
  }
  return out;
}

function decodeChange(r: ProtobufReader, end: number): Change {
  let type = 0;
  let revision = 0;
  let key = "";
  let value: Uint8Array = EMPTY;
  let flags = 0;
  let expiresAt = 0;
  while (r.pos < end) {
    const t = r.varint32();
    switch (t) {
      case (1 << 3) | VARINT:
        type = r.int32();
        break;
      case (2 << 3) | VARINT:
        revision = r.int53();
        break;
      case (3 << 3) | LEN:
        key = r.string();
        break;
      case (4 << 3) | LEN:
        value = r.bytes();
        break;
      case (5 << 3) | VARINT:
        flags = r.uint32();
        break;
      case (6 << 3) | VARINT:
        expiresAt = r.int53();
        break;
      default:
        r.skip(t);
    }
  }
  if (r.pos !== end) throw new WireError("a ReplicatedChange runs past its length");
  const changeType = TYPES[type];
  if (changeType === undefined) throw new WireError(`unknown change type ${type}`);
  return changeType === "put" ? { type: changeType, revision, key, value, flags, expiresAt } : { type: changeType, revision, key, flags, expiresAt };
}
