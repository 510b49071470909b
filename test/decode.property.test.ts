// The fast path's hand-written request decoders (src/server/fast-path/decode.ts)
// must read exactly what @bufbuild/protobuf's fromBinary reads, or decline
// (undefined) so that fromBinary runs: never a different message.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { create, fromBinary, toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { GetManyRequestSchema, GetRequestSchema, SetManyRequestSchema, SetRequestSchema } from "../src/gen/ripplecache/v1/cache_pb.js";
import { fastDecoder } from "../src/server/fast-path/decode.js";

const int64 = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 53n + 2n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const uint32 = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff }));
const key = fc.oneof(fc.constant(""), fc.string({ maxLength: 20 }), fc.string({ unit: "binary", maxLength: 20 }));
const bytes = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 100 }));
const condition = fc.oneof(
  fc.constant({ case: undefined }),
  fc.record({ case: fc.constant("ifAbsent" as const), value: fc.boolean() }),
  fc.record({ case: fc.constant("ifPresent" as const), value: fc.boolean() }),
  fc.record({ case: fc.constant("ifRevision" as const), value: int64 }),
);
const setInit = fc.record({ key, value: bytes, ttlMs: int64, flags: uint32, condition, minReplicas: uint32, replicaTimeoutMs: uint32 });

const schemas: [DescMessage, fc.Arbitrary<Message>][] = [
  [GetRequestSchema, fc.record({ key, minRevision: int64 }).map((i) => create(GetRequestSchema, i))],
  [GetManyRequestSchema, fc.record({ keys: fc.array(key, { maxLength: 20 }), minRevision: int64 }).map((i) => create(GetManyRequestSchema, i))],
  [SetRequestSchema, setInit.map((i) => create(SetRequestSchema, i))],
  [SetManyRequestSchema, fc.array(setInit, { maxLength: 10 }).map((entries) => create(SetManyRequestSchema, { entries }))],
];

/** What each decoder must agree with: fromBinary's message, or its error (then the decoder declines). */
function expectSame(schema: DescMessage, input: Buffer, why: string): boolean {
  const decoded = fastDecoder(schema)!(input);
  let want: Message | Error;
  try {
    want = fromBinary(schema, input);
  } catch (e) {
    want = e as Error;
  }
  if (want instanceof Error) {
    assert.equal(decoded, undefined, `${why}: fromBinary throws (${want.message}), the decoder must decline`);
    return false;
  }
  if (decoded !== undefined) assert.deepEqual(decoded, want, why);
  return decoded !== undefined;
}

test("fast request decoders read what fromBinary reads, on every message toBinary writes within 2^53", () => {
  for (const [schema, arb] of schemas) {
    let decoded = 0;
    fc.assert(
      fc.property(arb, (m) => {
        if (expectSame(schema, Buffer.from(toBinary(schema, m)), schema.typeName)) decoded++;
      }),
      { numRuns: 500 },
    );
    assert.ok(decoded > 100, `${schema.typeName}: the decoder declined too often (${decoded} of 500 decoded)`);
  }
});

test("fast request decoders decline or agree on field orders, repeats, unknown fields, wrong wire types and random bytes", () => {
  const field = fc.oneof(
    fc.record({ no: fc.integer({ min: 1, max: 12 }), kind: fc.constant("varint" as const), v: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
    fc.record({ no: fc.integer({ min: 1, max: 12 }), kind: fc.constant("len" as const), v: fc.oneof(fc.uint8Array({ maxLength: 12 }), key.map((k) => new TextEncoder().encode(k))) }),
    fc.record({ no: fc.integer({ min: 1, max: 12 }), kind: fc.constant("fixed32" as const), v: fc.nat() }),
  );
  const written = fc.array(field, { maxLength: 12 }).map((fields) => {
    const w = new BinaryWriter();
    for (const f of fields) {
      if (f.kind === "varint") w.tag(f.no, WireType.Varint).uint64(f.v);
      else if (f.kind === "len") w.tag(f.no, WireType.LengthDelimited).bytes(f.v);
      else w.tag(f.no, WireType.Bit32).fixed32(f.v);
    }
    return w.finish();
  });
  for (const [schema, arb] of schemas) {
    fc.assert(
      fc.property(fc.oneof(written, fc.uint8Array({ maxLength: 40 }), arb.map((m) => toBinary(schema, m)).chain((b) => fc.tuple(fc.constant(b), fc.nat(), fc.nat(255)).map(([b2, at, byte]) => {
        const c = Uint8Array.from(b2);
        if (c.length > 0) c[at % c.length] = byte;
        return c;
      }))), (input) => {
        expectSame(schema, Buffer.from(input), schema.typeName);
      }),
      { numRuns: 1500 },
    );
  }
});

test("SetMany entries written as nested fields in any order decode as fromBinary decodes them", () => {
  const inner = new BinaryWriter().tag(9, WireType.Varint).uint32(5).tag(1, WireType.LengthDelimited).string("k").tag(5, WireType.Varint).bool(false).tag(2, WireType.LengthDelimited).bytes(new Uint8Array([1])).tag(1, WireType.LengthDelimited).string("k2").finish();
  const outer = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(inner).tag(1, WireType.LengthDelimited).bytes(new Uint8Array(0)).finish();
  assert.ok(expectSame(SetManyRequestSchema, Buffer.from(outer), "nested"), "decoded, not declined");
  const m = fastDecoder(SetManyRequestSchema)!(Buffer.from(outer)) as ReturnType<typeof fromBinary<typeof SetManyRequestSchema>>;
  assert.equal(m.entries[0].key, "k2");
  assert.deepEqual(m.entries[0].condition, { case: "ifAbsent", value: false });
  assert.equal(m.entries.length, 2);
  // An entry whose key runs past the entry's own length (into the next entry): never read across.
  const overrun = Buffer.from([0x0a, 0x03, 0x0a, 0x05, 0x61, 0x0a, 0x02, 0x0a, 0x00]);
  assert.equal(fastDecoder(SetManyRequestSchema)!(overrun), undefined);
  expectSame(SetManyRequestSchema, overrun, "overrun");
});
