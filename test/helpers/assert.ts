import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";

/** Expects `promise` to fail with `code` (and a message matching `message`); returns the error. */
export async function expectCode(promise: Promise<unknown>, code: Code, message?: RegExp): Promise<ConnectError> {
  const err = await promise.then(
    () => assert.fail(`expected ${Code[code]}, the call succeeded`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
  assert.equal(err.code, code, `expected ${Code[code]}, got ${Code[err.code]}: ${err.rawMessage}`);
  if (message) assert.match(err.rawMessage, message);
  return err;
}

/** Polls `fn` every 100 ms until `ok` holds for its value (errors count as not yet), or fails after `timeoutMs`. */
export async function eventually<T>(what: string, fn: () => Promise<T> | T, ok: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (ok(v)) return v;
      last = v;
    } catch (err) {
      last = err instanceof Error ? err.message : err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
