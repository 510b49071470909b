// The fast path's hand-written encoders (src/server/fast-path/encode.ts) and
// GetMany's answer encoded from the store (src/server/entries.ts) must write
// exactly what @bufbuild/protobuf's toBinary writes, for any message.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { create, toBinary } from "@bufbuild/protobuf";
import { EntrySchema, GetManyResponseSchema, GetResponseSchema, SetManyResponseSchema, SetResponseSchema } from "../src/gen/ripplecache/v1/cache_pb.js";
import { encodeGetManyResponse, encodeGetResponse, encodeSetManyResponse, encodeSetResponse } from "../src/server/fast-path/encode.js";
import { getManyAnswer, toEntry } from "../src/server/entries.js";
import { CacheStore, type EntryView } from "../src/store/store.js";

const int64 = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 2n ** 53n }), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const uint32 = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff }));
const bytes = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 300 }));
const fields = { found: fc.boolean(), value: bytes, revision: int64, ttlMs: int64, flags: uint32 };

test("GetResponse: the fast encoder writes toBinary's bytes", () => {
  fc.assert(
    fc.property(fc.record(fields), (init) => {
      const m = create(GetResponseSchema, init);
      assert.deepEqual(Buffer.from(encodeGetResponse(m)!), Buffer.from(toBinary(GetResponseSchema, m)));
    }),
    { numRuns: 2000 },
  );
});

test("GetManyResponse: the fast encoder writes toBinary's bytes", () => {
  const entry = fc.record({ key: fc.oneof(fc.constant(""), fc.oneof(fc.string({ unit: "binary", maxLength: 100 }), fc.string({ maxLength: 100 }))), ...fields });
  fc.assert(
    fc.property(fc.array(entry, { maxLength: 30 }), (entries) => {
      const m = create(GetManyResponseSchema, { entries: entries.map((e) => create(EntrySchema, e)) });
      assert.deepEqual(Buffer.from(encodeGetManyResponse(m)!), Buffer.from(toBinary(GetManyResponseSchema, m)));
    }),
    { numRuns: 1000 },
  );
});

const setFields = { applied: fc.boolean(), revision: int64, replicasAcked: uint32 };

test("SetResponse and SetManyResponse: the fast encoders write toBinary's bytes", () => {
  fc.assert(
    fc.property(fc.record(setFields), fc.array(fc.record(setFields), { maxLength: 30 }), (one, many) => {
      const m = create(SetResponseSchema, one);
      assert.deepEqual(Buffer.from(encodeSetResponse(m)!), Buffer.from(toBinary(SetResponseSchema, m)));
      const mm = create(SetManyResponseSchema, { results: many });
      assert.deepEqual(Buffer.from(encodeSetManyResponse(mm)!), Buffer.from(toBinary(SetManyResponseSchema, mm)));
    }),
    { numRuns: 1000 },
  );
});

test("a message with unknown fields is left to toBinary", () => {
  const m = create(GetResponseSchema, { found: true });
  m.$unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
  assert.equal(encodeGetResponse(m), undefined);
});

test("The Entry literal (entries.ts toEntry) equals create(EntrySchema) for found and missing keys", () => {
  const view = fc.record({
    value: fc.uint8Array({ maxLength: 50 }),
    revision: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    ttlMs: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    flags: fc.integer({ min: 0, max: 0xffffffff }),
  });
  fc.assert(
    fc.property(fc.string({ maxLength: 20 }), fc.option(view, { nil: undefined }), (key, v) => {
      const e: EntryView | undefined = v === undefined ? undefined : { key, ...v };
      const expected = create(EntrySchema, v === undefined ? { key } : { key, found: true, value: v.value, revision: BigInt(v.revision), ttlMs: BigInt(v.ttlMs), flags: v.flags });
      const got = toEntry(key, e);
      // Same fields (a field added to Entry and not to toEntry fails here), same values.
      assert.deepEqual(Object.keys(got).sort(), Object.keys(expected).sort());
      assert.deepEqual(got, expected);
      assert.deepEqual(Buffer.from(toBinary(EntrySchema, got)), Buffer.from(toBinary(EntrySchema, expected)));
    }),
    { numRuns: 500 },
  );
});

test("GetMany's answer from the store (entries.ts getManyAnswer) is toBinary of the Entry of each key's get, read or spread the same", () => {
  // Keys of every kind the reader decodes (short and long ASCII, any Unicode); values empty, small, large (own buffer).
  const key = fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.string({ unit: "binary", minLength: 1, maxLength: 40 }), fc.constantFrom("k1", "k2", "ключ", "a".repeat(70)));
  const value = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ minLength: 9000, maxLength: 9100 }));
  const write = fc.record({ key, value, ttlMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5000 })), flags: uint32 });
  fc.assert(
    fc.property(fc.array(write, { maxLength: 20 }), fc.array(key, { maxLength: 30 }), fc.integer({ min: 0, max: 6000 }), (writes, asked, later) => {
      const clock = { t: 1_000_000, now: () => clock.t };
      const make = () => {
        const store = new CacheStore({ clock });
        for (const w of writes) store.set(w.key, w.value, { ttlMs: w.ttlMs, flags: w.flags });
        return store;
      };
      clock.t = 1_000_000;
      const a = make();
      const b = make();
      clock.t += later; // some keys have expired by now
      const keys = [...asked, ...writes.slice(0, 5).map((w) => w.key)];
      const expected = create(GetManyResponseSchema, { entries: keys.map((k) => toEntry(k, a.get(k))) });
      const answer = getManyAnswer(keys, b.readMany(keys));
      assert.deepEqual(Buffer.from(encodeGetManyResponse(answer)!), Buffer.from(toBinary(GetManyResponseSchema, expected)));
      // Same effects on the store (hits, misses, expiry): the same stats.
      assert.deepEqual(b.stats(), a.stats());
      // Anyone else reads the same entries, and a spread copy keeps them without the bytes.
      const copy = { ...answer };
      assert.deepEqual(answer.entries, expected.entries);
      assert.deepEqual(copy.entries, expected.entries);
      assert.deepEqual(Buffer.from(toBinary(GetManyResponseSchema, copy)), Buffer.from(toBinary(GetManyResponseSchema, expected)));
    }),
    { numRuns: 300 },
  );
});

test("GetMany's encoded answer: assigning entries replaces the bytes the fast path sends", () => {
  const store = new CacheStore();
  store.set("a", new Uint8Array([1]));
  const answer = getManyAnswer(["a"], store.readMany(["a"]));
  answer.entries = [create(EntrySchema, { key: "b" })];
  assert.deepEqual(Buffer.from(encodeGetManyResponse(answer)!), Buffer.from(toBinary(GetManyResponseSchema, create(GetManyResponseSchema, { entries: [create(EntrySchema, { key: "b" })] }))));
});
