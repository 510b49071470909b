/**
 * Property tests of the hand-written ChangeBatch codec (src/replication/
 * change-batch-wire.ts) against @bufbuild/protobuf: the encoder writes the
 * bytes toBinary writes for the same changes, and the decoder reads what
 * fromBinary reads from bytes that toBinary wrote from random ReplicatedChange
 * messages (any field values, unknown fields, fields repeated) and rejects
 * what it must (unknown change types, truncation, revisions beyond 2^53).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import {
  ChangeBatchSchema,
  ChangeType as WireChangeType,
  ReplicatedChangeSchema,
  SyncResponseEncodedSchema,
  SyncResponseSchema,
  type ReplicatedChange,
} from "../src/gen/ripplecache/v1/replication_pb.js";
import { decodeChangeBatch, encodeChangeBatch, WireError } from "../src/replication/change-batch-wire.js";
import type { Change, ChangeType } from "../src/store/change.js";

const WIRE: Record<ChangeType, WireChangeType> = {
  put: WireChangeType.PUT,
  delete: WireChangeType.DELETE,
  expire: WireChangeType.EXPIRE,
  evict: WireChangeType.EVICT,
  flush: WireChangeType.FLUSH,
};

const key = fc.oneof(fc.constant(""), fc.string({ maxLength: 10 }), fc.string({ unit: "grapheme", maxLength: 5 }), fc.string({ unit: "binary", maxLength: 30 }));
const safeInt = fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }));
const change: fc.Arbitrary<Change> = fc
  .record({
    type: fc.constantFrom<ChangeType>("put", "delete", "expire", "evict", "flush"),
    revision: safeInt,
    key,
    value: fc.uint8Array({ maxLength: 200 }),
    flags: fc.oneof(fc.constant(0), fc.nat(0xffffffff)),
    expiresAt: fc.oneof(fc.constant(0), safeInt),
  })
  .map((c) => (c.type === "put" ? c : { type: c.type, revision: c.revision, key: c.key, flags: c.flags, expiresAt: c.expiresAt }));

function asMessage(c: Change): ReplicatedChange {
  return create(ReplicatedChangeSchema, { type: WIRE[c.type], revision: BigInt(c.revision), key: c.key, value: c.value ?? new Uint8Array(0), flags: c.flags, expiresAtMs: BigInt(c.expiresAt) });
}

function plain(c: Change) {
  return { ...c, value: c.value === undefined ? undefined : Array.from(c.value) };
}

test("encodeChangeBatch writes the bytes toBinary writes", () => {
  fc.assert(
    fc.property(fc.array(change, { maxLength: 20 }), (changes) => {
      const want = toBinary(ChangeBatchSchema, create(ChangeBatchSchema, { changes: changes.map(asMessage) }));
      assert.deepEqual(Buffer.from(encodeChangeBatch(changes)), Buffer.from(want));
    }),
    { numRuns: 500 },
  );
});

test("a batch sent as SyncResponse's unknown field 5 is the bytes of kind 'changes', read back as ChangeBatch or as bytes", () => {
  fc.assert(
    fc.property(fc.array(change, { minLength: 1, maxLength: 10 }), (changes) => {
      const raw = create(SyncResponseSchema);
      raw.$unknown = [{ no: 5, wireType: WireType.LengthDelimited, data: encodeChangeBatch(changes, true) }];
      const bytes = toBinary(SyncResponseSchema, raw);
      const typed = toBinary(SyncResponseSchema, create(SyncResponseSchema, { kind: { case: "changes", value: { changes: changes.map(asMessage) } } }));
      assert.deepEqual(Buffer.from(bytes), Buffer.from(typed));
      const asReplica = fromBinary(SyncResponseEncodedSchema, bytes);
      assert.equal(asReplica.kind.case, "changes");
      assert.deepEqual(decodeChangeBatch(asReplica.kind.value as Uint8Array).map(plain), changes.map(plain));
    }),
    { numRuns: 200 },
  );
});

/** A ReplicatedChange written field by field, in any order, with unknown fields and repeats, as another implementation might. */
const scrambled = fc
  .record({
    c: change,
    order: fc.shuffledSubarray([1, 2, 3, 4, 5, 6, 7, 8], { minLength: 8, maxLength: 8 }),
    repeatRevision: fc.boolean(),
    unknownVarint: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    unknownBytes: fc.uint8Array({ maxLength: 20 }),
  })
  .map(({ c, order, repeatRevision, unknownVarint, unknownBytes }) => {
    const w = new BinaryWriter();
    for (const f of order) {
      if (f === 1) w.tag(1, WireType.Varint).int32(WIRE[c.type]);
      if (f === 2) {
        if (repeatRevision) w.tag(2, WireType.Varint).int64(12345);
        w.tag(2, WireType.Varint).int64(c.revision);
      }
      if (f === 3) w.tag(3, WireType.LengthDelimited).string(c.key);
      if (f === 4 && c.value !== undefined) w.tag(4, WireType.LengthDelimited).bytes(c.value);
      if (f === 5) w.tag(5, WireType.Varint).uint32(c.flags);
      if (f === 6) w.tag(6, WireType.Varint).int64(c.expiresAt);
      if (f === 7) w.tag(90, WireType.Varint).uint64(unknownVarint);
      if (f === 8) w.tag(91, WireType.LengthDelimited).bytes(unknownBytes).tag(92, WireType.Bit32).fixed32(7).tag(93, WireType.Bit64).fixed64(9n);
    }
    return { c, bytes: w.finish() };
  });

test("decodeChangeBatch reads what fromBinary reads, written in any field order with unknown fields", () => {
  fc.assert(
    fc.property(fc.array(scrambled, { maxLength: 10 }), (items) => {
      const w = new BinaryWriter();
      for (const { bytes } of items) w.tag(1, WireType.LengthDelimited).bytes(bytes);
      const batch = w.finish();
      const viaProtobufEs = fromBinary(ChangeBatchSchema, batch).changes;
      const decoded = decodeChangeBatch(batch);
      assert.equal(decoded.length, viaProtobufEs.length);
      decoded.forEach((d, i) => {
        const m = viaProtobufEs[i];
        assert.equal(WIRE[d.type], m.type);
        assert.equal(BigInt(d.revision), m.revision);
        assert.equal(d.key, m.key);
        assert.deepEqual(Array.from(d.value ?? []), d.type === "put" ? Array.from(m.value) : []);
        assert.equal(d.flags, m.flags);
        assert.equal(BigInt(d.expiresAt), m.expiresAtMs);
      });
      assert.deepEqual(decoded.map(plain), items.map(({ c }) => plain(c.type === "put" ? c : { ...c })));
    }),
    { numRuns: 300 },
  );
});

test("decodeChangeBatch rejects broken batches with WireError, never garbage", () => {
  const one = encodeChangeBatch([{ type: "put", revision: 7, key: "k", value: new Uint8Array([1, 2, 3]), flags: 1, expiresAt: 99 }]);
  for (let cut = 1; cut < one.length; cut++) {
    assert.throws(() => decodeChangeBatch(one.subarray(0, cut)), WireError, `cut at ${cut} of ${one.length}`);
  }
  const typed = (type: number) => toBinary(ChangeBatchSchema, create(ChangeBatchSchema, { changes: [{ type, revision: 1n }] }));
  assert.throws(() => decodeChangeBatch(typed(0)), /unknown change type 0/);
  assert.throws(() => decodeChangeBatch(typed(9)), /unknown change type 9/);
  const huge = toBinary(ChangeBatchSchema, create(ChangeBatchSchema, { changes: [{ type: 1, revision: 1n << 60n }] }));
  assert.throws(() => decodeChangeBatch(huge), /beyond 2\^53/);
  const negative = toBinary(ChangeBatchSchema, create(ChangeBatchSchema, { changes: [{ type: 1, revision: -1n }] }));
  assert.throws(() => decodeChangeBatch(negative), /beyond 2\^53/);
  const badUtf8 = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Varint).int32(1).tag(3, WireType.LengthDelimited).bytes(new Uint8Array([0xff, 0xfe])).finish()).finish();
  assert.throws(() => decodeChangeBatch(badUtf8), /not UTF-8/, "a key that is not UTF-8 is refused");
  assert.deepEqual(decodeChangeBatch(new Uint8Array(0)), []);
});
