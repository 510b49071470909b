/**
 * Protobuf wire pieces for the hand-written codecs (the fast path's requests
 * and answers, replication's ChangeBatch): varints to write, and a cursor to
 * read. Every read is bounds-checked; anything malformed throws WireError,
 * which each decoder turns into its own answer (the fast path falls back to
 * @bufbuild/protobuf for its exact error; a replica drops the stream).
 */
export class WireError extends Error {}

export const VARINT = 0;
export const BIT64 = 1;
export const LEN = 2;
export const BIT32 = 5;

/** A field's tag byte(s) value: (field number << 3) | wire type. */
export const tag = (field: number, wireType: number): number => (field << 3) | wireType;

/** Writes a non-negative safe integer as a varint at `p`; returns the position after it. */
export function writeVarint(out: Buffer, p: number, v: number): number {
  while (v > 0x7f) {
    out[p++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  out[p++] = v;
  return p;
}

/** Bytes of a non-negative safe integer as a varint. */
export function varintSize(v: number): number {
  let n = 1;
  while (v > 0x7f) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/** The gRPC envelope's prefix: a flags byte and a 4-byte length. */
const ENVELOPE_PREFIX_BYTES = 5;
const ENVELOPE_ROOM = Symbol("room for a gRPC envelope prefix");

/**
 * A buffer for a message of `size` bytes with room for its gRPC envelope's
 * prefix just before it, so that enveloping it (envelopeInPlace) takes no
 * second buffer and no copy: a GetMany(100) answer is ~11 KB, and the copy
 * was as much again in external memory per call (V8 runs full GCs on
 * external memory growth).
 */
export function bufferWithEnvelopeRoom(size: number): Buffer {
  const b = Buffer.allocUnsafe(ENVELOPE_PREFIX_BYTES + size).subarray(ENVELOPE_PREFIX_BYTES);
  (b as Buffer & { [ENVELOPE_ROOM]?: true })[ENVELOPE_ROOM] = true;
  return b;
}

/** `data` enveloped in the room before it (bufferWithEnvelopeRoom), or undefined when it has none. */
export function envelopeInPlace(flags: number, data: Uint8Array): Buffer | undefined {
  if ((data as Uint8Array & { [ENVELOPE_ROOM]?: true })[ENVELOPE_ROOM] !== true) return undefined;
  const frame = Buffer.from(data.buffer, data.byteOffset - ENVELOPE_PREFIX_BYTES, ENVELOPE_PREFIX_BYTES + data.byteLength);
  frame[0] = flags;
  frame.writeUInt32BE(data.byteLength, 1);
  return frame;
}

/** Keys this short are measured and copied in JavaScript when ASCII: cheaper than a call into Buffer's native code per key. */
const SHORT_KEY = 64;

/** UTF-8 length of `s`. */
export function utf8Length(s: string): number {
  const n = s.length;
  if (n > SHORT_KEY) return Buffer.byteLength(s);
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s);
  return n;
}

/** Writes `s`, whose UTF-8 length is `bytes`, at `p`. */
export function writeUtf8(out: Buffer, p: number, s: string, bytes: number): number {
  if (bytes !== s.length || bytes > SHORT_KEY) return p + out.write(s, p, bytes, "utf8");
  // Equal lengths: every character is ASCII, one byte each.
  for (let i = 0; i < bytes; i++) out[p + i] = s.charCodeAt(i);
  return p + bytes;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Strings of at most this many bytes are decoded in JavaScript when ASCII. */
const SHORT_STRING = 8;

/**
 * `b[start, end)` (1 to SHORT_STRING bytes) as a string when every byte is
 * ASCII, else undefined. One String.fromCharCode of the codes: a third of the
 * cost of a call into Buffer's native code for strings this short
 * (GetMany's keys often are), and one allocation.
 */
function shortAscii(b: Uint8Array, start: number, end: number): string | undefined {
  for (let i = start; i < end; i++) if (b[i]! >= 0x80) return undefined;
  const s = start;
  switch (end - start) {
    case 1:
      return String.fromCharCode(b[s]!);
    case 2:
      return String.fromCharCode(b[s]!, b[s + 1]!);
    case 3:
      return String.fromCharCode(b[s]!, b[s + 1]!, b[s + 2]!);
    case 4:
      return String.fromCharCode(b[s]!, b[s + 1]!, b[s + 2]!, b[s + 3]!);
    case 5:
      return String.fromCharCode(b[s]!, b[s + 1]!, b[s + 2]!, b[s + 3]!, b[s + 4]!);
    case 6:
      return String.fromCharCode(b[s]!, b[s + 1]!, b[s + 2]!, b[s + 3]!, b[s + 4]!, b[s + 5]!);
    case 7:
      return String.fromCharCode(b[s]!, b[s + 1]!, b[s + 2]!, b[s + 3]!, b[s + 4]!, b[s + 5]!, b[s + 6]!);
    default:
      return String.fromCharCode(b[s]!, b[s + 1]!, b[s + 2]!, b[s + 3]!, b[s + 4]!, b[s + 5]!, b[s + 6]!, b[s + 7]!);
  }
}

export class ProtobufReader {
  pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  get end(): number {
    return this.buf.length;
  }

  /** Checks that `len` bytes follow and returns where they end. */
  limit(len: number): number {
    const end = this.pos + len;
    if (end > this.buf.length) throw new WireError("a length-delimited field runs past the message");
    return end;
  }

  /** A varint that must fit 32 bits (tags, lengths, uint32 fields). */
  varint32(): number {
    const v = this.varint();
    if (v > 0xffffffff) throw new WireError("a tag or length does not fit 32 bits");
    return v;
  }

  /** int32 as protobuf writes it (negative: ten bytes); the low 32 bits, signed. */
  int32(): number {
    return this.varintLow32() | 0;
  }

  /** uint32 as protobuf reads it: the low 32 bits of the varint. */
  uint32(): number {
    return this.varintLow32() >>> 0;
  }

  /** An int64 that must be a non-negative safe integer (revisions, times). */
  int53(): number {
    const v = this.varint();
    if (v > Number.MAX_SAFE_INTEGER) throw new WireError("a revision or time is negative or beyond 2^53");
    return v;
  }

  bool(): boolean {
    return this.varint() !== 0;
  }

  /** A length-delimited UTF-8 string; bytes that are not UTF-8 throw. */
  string(): string {
    const len = this.varint32();
    const end = this.limit(len);
    const b = this.buf;
    let s = len === 0 ? "" : len <= SHORT_STRING ? shortAscii(b, this.pos, end) : undefined;
    if (s === undefined) {
      let ascii = b instanceof Buffer;
      for (let i = this.pos; ascii && i < end; i++) ascii = b[i] < 0x80;
      // Half the cost of TextDecoder for the short ASCII keys most requests carry.
      if (ascii) s = (b as Buffer).toString("latin1", this.pos, end);
      else {
        try {
          s = utf8.decode(b.subarray(this.pos, end));
        } catch {
          throw new WireError("a string is not UTF-8");
        }
      }
    }
    this.pos = end;
    return s;
  }

  /** A length-delimited field's bytes, as a view (not a copy). */
  bytes(): Uint8Array {
    const end = this.limit(this.varint32());
    const b = this.buf.subarray(this.pos, end);
    this.pos = end;
    return b;
  }

  skip(tag: number): void {
    switch (tag & 7) {
      case VARINT:
        this.varint();
        break;
      case BIT64:
        this.pos = this.limit(8);
        break;
      case LEN:
        this.pos = this.limit(this.varint32());
        break;
      case BIT32:
        this.pos = this.limit(4);
        break;
      default:
        throw new WireError(`field ${tag >>> 3} has wire type ${tag & 7} (groups are not used)`);
    }
  }

  /** A varint of up to ten bytes as a number (exact up to 2^53; larger ones are only compared). */
  varint(): number {
    let v = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new WireError("a varint runs past the message");
      const b = this.buf[this.pos++];
      v += (b & 0x7f) * scale;
      if (b < 0x80) return v;
      scale *= 0x80;
    }
    throw new WireError("a varint is longer than ten bytes");
  }

  /** The low 32 bits of a varint of up to ten bytes. */
  private varintLow32(): number {
    let v = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new WireError("a varint runs past the message");
      const b = this.buf[this.pos++];
      if (i < 5) v |= (b & 0x7f) << (7 * i);
      if (b < 0x80) return v;
    }
    throw new WireError("a varint is longer than ten bytes");
  }
}
