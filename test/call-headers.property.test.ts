// The fast path's Headers (src/server/fast-path/call-headers.ts) must behave
// as the Fetch API's Headers (undici's, which connect-node uses) for every
// sequence of operations with valid names and values.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { CallHeaders } from "../src/server/fast-path/call-headers.js";

const name = fc.oneof(
  fc.constantFrom("content-type", "Content-Type", "grpc-status", "GRPC-Message", "set-cookie", "Set-Cookie", "x-a", "X-A", "trailer-x"),
  fc.stringMatching(/^[a-zA-Z0-9-]{1,12}$/),
);
// Visible ASCII and spaces/tabs inside, HTTP whitespace at the edges (which both strip).
const value = fc.tuple(fc.constantFrom("", " ", "\t", "  "), fc.stringMatching(/^[!-~]([ !-~\t]{0,20}[!-~])?$/), fc.constantFrom("", " ", "\t")).map(([a, b, c]) => a + b + c);
const op = fc.oneof(
  fc.record({ kind: fc.constant("append" as const), name, value }),
  fc.record({ kind: fc.constant("set" as const), name, value }),
  fc.record({ kind: fc.constant("delete" as const), name, value: fc.constant("") }),
);

function observe(h: Headers, names: readonly string[]): unknown {
  return {
    entries: [...h],
    forEach: (() => {
      const out: [string, string][] = [];
      h.forEach((v, k) => out.push([k, v]));
      return out;
    })(),
    keys: [...h.keys()],
    values: [...h.values()],
    get: names.map((n) => h.get(n)),
    has: names.map((n) => h.has(n)),
    cookies: h.getSetCookie(),
  };
}

test("CallHeaders answers as undici's Headers after any sequence of append, set and delete", () => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 25 }), fc.array(fc.tuple(name, value), { maxLength: 5 }), (ops, init) => {
      const ours = new CallHeaders(init);
      const theirs = new Headers(init);
      const names = [...ops.map((o) => o.name), ...init.map(([n]) => n), "absent"];
      for (const o of ops) {
        if (o.kind === "delete") {
          ours.delete(o.name);
          theirs.delete(o.name);
        } else {
          ours[o.kind](o.name, o.value);
          theirs[o.kind](o.name, o.value);
        }
        assert.deepEqual(observe(ours, names), observe(theirs, names));
      }
      // Either can be built from the other.
      assert.deepEqual(observe(new Headers(ours), names), observe(theirs, names));
      assert.deepEqual(observe(new CallHeaders(theirs), names), observe(theirs, names));
    }),
    { numRuns: 1500 },
  );
});

test("CallHeaders.fromNode: request headers as connect-node's nodeHeaderToWebHeader makes them", () => {
  const node = { ":path": "/x", ":authority": "h", "content-type": "application/grpc", te: "trailers", "x-multi": ["a", "b"], "grpc-timeout": "5S" };
  const h = CallHeaders.fromNode(node);
  assert.deepEqual([...h], [["content-type", "application/grpc"], ["grpc-timeout", "5S"], ["te", "trailers"], ["x-multi", "a, b"]]);
  assert.equal(h.get("Content-Type"), "application/grpc");
  assert.equal(h.get(":path"), null, "no pseudo-headers");
});
