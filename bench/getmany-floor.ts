/**
 * The least work per key that GetMany can do in V8, in one process, with no
 * network: read a key from the request's bytes into a string, find it in a
 * Map, and copy the key and a 100-byte value into a protobuf reply. Our
 * GetMany does all of this plus HTTP/2, the LRU's bookkeeping, the TTL check
 * and the syscalls. bench/anchors.ts runs it on the server core and sets it
 * beside Redis's MGET, whose figure is its whole cost per key: when Redis
 * spends less per key than this loop, the GetMany target is beyond what V8
 * does per key, whatever the server around it.
 *
 *   node dist/bench/getmany-floor.js   prints {"nsPerKey": N}, the median of 7 rounds
 */
const KEYS = 1000;
const BATCH = 100;
const VALUE_BYTES = 100;
const CALLS_PER_ROUND = 50_000;

const index = new Map<string, number>();
for (let i = 0; i < KEYS; i++) index.set(`k${i}`, i * VALUE_BYTES);
const values = Buffer.alloc(KEYS * VALUE_BYTES, 0x78);

// GetManyRequest { repeated string keys = 1 } for k0..k99, as the bench sends it.
const request = Buffer.concat(
  Array.from({ length: BATCH }, (_, i) => {
    const key = Buffer.from(`k${i}`);
    return Buffer.concat([Buffer.from([0x0a, key.length]), key]);
  }),
);
const reply = Buffer.alloc(BATCH * (VALUE_BYTES + 16));

/** The key as a string, the fastest way V8 has for the bench's keys ("k0".."k99"): String.fromCharCode of the bytes. */
function keyAt(b: Buffer, start: number, length: number): string {
  return length === 2 ? String.fromCharCode(b[start], b[start + 1]) : String.fromCharCode(b[start], b[start + 1], b[start + 2]);
}

/** One GetMany: every entry is { key = 1, value = 2 } inside field 1 of the reply. */
function getMany(req: Buffer): number {
  let at = 0;
  let out = 0;
  while (at < req.length) {
    const length = req[at + 1];
    const start = at + 2;
    at = start + length;
    const offset = index.get(keyAt(req, start, length));
    if (offset === undefined) continue;
    reply[out++] = 0x0a;
    reply[out++] = 2 + length + 2 + VALUE_BYTES;
    reply[out++] = 0x0a;
    reply[out++] = length;
    out += req.copy(reply, out, start, at);
    reply[out++] = 0x12;
    reply[out++] = VALUE_BYTES;
    out += values.copy(reply, out, offset, offset + VALUE_BYTES);
  }
  return out;
}

// Every key found: each entry is 6 bytes of framing, the key and the value.
const keyBytes = request.length - 2 * BATCH;
if (getMany(request) !== BATCH * (6 + VALUE_BYTES) + keyBytes) throw new Error("a key was not found");

const rounds: number[] = [];
let bytes = 0;
for (let round = 0; round < 8; round++) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS_PER_ROUND; i++) bytes += getMany(request);
  const ns = Number(process.hrtime.bigint() - t0) / (CALLS_PER_ROUND * BATCH);
  if (round > 0) rounds.push(ns); // the first round compiles
}
if (bytes === 0) throw new Error("nothing copied");
rounds.sort((a, b) => a - b);
console.log(JSON.stringify({ nsPerKey: rounds[Math.floor(rounds.length / 2)] }));
