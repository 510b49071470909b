import { HUFFMAN_CODES, STATIC_TABLE } from "./hpack-tables.js";
import { checkField, nameFault, REQUEST_FIELDS, valueFault } from "./validate.js";

/**
 * HPACK (RFC 7541), the server's half: a decoder for request header blocks
 * (static and dynamic table, Huffman strings) and an encoder for response
 * headers that never indexes (literal fields, static names), so that nothing
 * the client sent can grow our state beyond the 4,096-byte table we advertise.
 */

/** A header block that cannot be decoded: the connection is over (COMPRESSION_ERROR). */
export class HpackError extends Error {}

/** Request headers as node:http2 presents them: lower-case names, repeated values joined. */
export type HeaderMap = Record<string, string | string[] | undefined>;

// The Huffman code as a binary tree in flat arrays: children of node n at
// ZERO[n] and ONE[n]; SYMBOL[n] >= 0 at a leaf.
const { ZERO, ONE, SYMBOL } = (() => {
  const zero: number[] = [-1];
  const one: number[] = [-1];
  const symbol: number[] = [-1];
  HUFFMAN_CODES.forEach(([bits, code], sym) => {
    let n = 0;
    for (let i = bits - 1; i >= 0; i--) {
      const side = (code >>> i) & 1 ? one : zero;
      if (side[n] === -1) {
        side[n] = zero.length;
        zero.push(-1);
        one.push(-1);
        symbol.push(-1);
      }
      n = side[n];
    }
    symbol[n] = sym;
  });
  return { ZERO: Int16Array.from(zero), ONE: Int16Array.from(one), SYMBOL: Int16Array.from(symbol) };
})();

const EOS = 256;
const HUFFMAN_CACHE_MAX = 256;
const HUFFMAN_CACHE_LONGEST = 128;

/** A Huffman string's text; with `keep` false, only checked (a string nothing will read: see HpackDecoder.skip). */
function huffmanDecode(buf: Uint8Array, start: number, end: number, keep = true): string {
  let n = 0;
  let out = "";
  // Bits since the last symbol, and whether all were ones: the padding rule (5.2).
  let pending = 0;
  let allOnes = true;
  for (let i = start; i < end; i++) {
    const byte = buf[i];
    for (let k = 7; k >= 0; k--) {
      const bit = (byte >> k) & 1;
      n = bit === 1 ? ONE[n] : ZERO[n];
      pending++;
      allOnes &&= bit === 1;
      if (n < 0) throw new HpackError("invalid Huffman code");
      const sym = SYMBOL[n];
      if (sym >= 0) {
        if (sym === EOS) throw new HpackError("EOS in a Huffman string");
        if (keep) out += String.fromCharCode(sym);
        n = 0;
        pending = 0;
        allOnes = true;
      }
    }
  }
  if (pending > 7 || !allOnes) throw new HpackError("invalid Huffman padding");
  return out;
}

/** Names node:http2 keeps one value of (the first), as its kSingleValueHeaders. */
const SINGLE_VALUE = new Set([
  ":status", ":method", ":authority", ":scheme", ":path", ":protocol",
  "access-control-allow-credentials", "access-control-max-age", "access-control-request-method", "age", "authorization",
  "content-encoding", "content-language", "content-length", "content-location", "content-md5", "content-range",
  "content-type", "date", "dnt", "etag", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
  "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "proxy-authorization", "range",
  "referer", "retry-after", "tk", "upgrade-insecure-requests", "user-agent", "x-content-type-options",
]); // prettier-ignore

/** RFC 7541 4.1: each entry counts its name, its value and 32 bytes. */
const ENTRY_OVERHEAD = 32;

export class HpackDecoder {
  // Newest entry last; `first` is the oldest still in the table.
  private readonly names: string[] = [];
  private readonly values: string[] = [];
  /** Each entry's field fault (validate.ts), found when it was added: referring to a malformed entry makes the block malformed too. */
  private readonly faults: number[] = [];
  private first = 0;
  private size = 0;
  private maxSize: number;

  /** @param tableSize our SETTINGS_HEADER_TABLE_SIZE, the most the encoder may ask for */
  constructor(private readonly tableSize = 4096) {
    this.maxSize = tableSize;
  }

  /**
   * Decodes one complete header block into `out`. Returns the block's size
   * as RFC 7540 6.5.2 counts it (SETTINGS_MAX_HEADER_LIST_SIZE). Once that
   * passes `limit`, the rest of the block is only read (`skip`): the dynamic
   * table stays in step with the client's, no more fields are made, and the
   * size returned is over the limit (the caller refuses the block).
   */
  decode(buf: Uint8Array, start: number, end: number, out: HeaderMap, limit = Infinity): number {
    let pos = start;
    let listSize = 0;
    let fields = 0;
    while (pos < end) {
      const b = buf[pos];
      let name: string;
      let value: string;
      // The field's own fault (validate.ts): none for the static table, kept with each dynamic entry, found for literals.
      let fault = 0;
      if (b & 0x80) {
        const index = this.readInt(buf, pos, end, 7);
        pos = this.next;
        if (index === 0) throw new HpackError("index 0");
        if (index <= STATIC_TABLE.length) {
          name = STATIC_TABLE[index - 1][0];
          value = STATIC_TABLE[index - 1][1];
        } else {
          const slot = this.dynamicSlot(index);
          name = this.names[slot];
          value = this.values[slot];
          fault = this.faults[slot];
        }
      } else if ((b & 0xe0) === 0x20) {
        // Table size updates may only come first (4.2).
        if (fields > 0) throw new HpackError("table size update after a field");
        const size = this.readInt(buf, pos, end, 5);
        pos = this.next;
        if (size > this.tableSize) throw new HpackError(`table size ${size} over the ${this.tableSize} allowed`);
        this.maxSize = size;
        this.evict(0);
        continue;
      } else {
        const indexing = (b & 0xc0) === 0x40;
        const index = this.readInt(buf, pos, end, indexing ? 6 : 4);
        pos = this.next;
        if (index === 0) {
          name = this.readString(buf, pos, end);
          pos = this.next;
          fault = nameFault(name);
        } else {
          name = this.nameAt(index);
          if (index > STATIC_TABLE.length) fault = nameFault(name);
        }
        value = this.readString(buf, pos, end);
        pos = this.next;
        fault ||= this.stringFault;
        if (indexing) this.add(name, value, fault);
      }
      fields++;
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize > limit) return this.skip(buf, pos, end, listSize);
      // In the order the fields came: a header map keeps one :method of two (8.3).
      this.fieldState = checkField(this.fieldState, name, fault);
      addHeader(out, name, value);
    }
    return listSize;
  }

  /**
   * The rest of a block past the header list limit (an attacker's block of
   * thousands of one-byte references to a 4 KiB entry decoded to megabytes).
   * Only what keeps the dynamic table in step with the client's is decoded:
   * a literal with incremental indexing, entered as `decode` would. An
   * indexed field costs its index check; any other literal, its length (and
   * its Huffman code's check: a block nghttp2 cannot decode stays an error).
   */
  private skip(buf: Uint8Array, pos: number, end: number, listSize: number): number {
    while (pos < end) {
      const b = buf[pos];
      if (b & 0x80) {
        const index = this.readInt(buf, pos, end, 7);
        pos = this.next;
        if (index === 0) throw new HpackError("index 0");
        if (index > STATIC_TABLE.length) this.dynamicSlot(index);
        continue;
      }
      // Table size updates may only come first (4.2), and a field came.
      if ((b & 0xe0) === 0x20) throw new HpackError("table size update after a field");
      const indexing = (b & 0xc0) === 0x40;
      const index = this.readInt(buf, pos, end, indexing ? 6 : 4);
      pos = this.next;
      if (!indexing) {
        if (index === 0) pos = this.skipString(buf, pos, end);
        else this.nameAt(index);
        pos = this.skipString(buf, pos, end);
        continue;
      }
      let name: string;
      let fault = 0;
      if (index === 0) {
        name = this.readString(buf, pos, end);
        pos = this.next;
        fault = nameFault(name);
      } else {
        name = this.nameAt(index);
        if (index > STATIC_TABLE.length) fault = nameFault(name);
      }
      const value = this.readString(buf, pos, end);
      pos = this.next;
      this.add(name, value, fault || this.stringFault);
    }
    return listSize;
  }

  /** Reads past a string nobody will use; returns where it ends. */
  private skipString(buf: Uint8Array, pos: number, end: number): number {
    if (pos >= end) throw new HpackError("truncated string");
    const huffman = (buf[pos] & 0x80) !== 0;
    const length = this.readInt(buf, pos, end, 7);
    const from = this.next;
    const to = from + length;
    if (to > end) throw new HpackError("truncated string");
    if (huffman) huffmanDecode(buf, from, to, false);
    return to;
  }

  /** Where the last read ended (saves an allocation per integer or string). */
  private next = 0;

  private readInt(buf: Uint8Array, pos: number, end: number, prefixBits: number): number {
    const max = (1 << prefixBits) - 1;
    let value = buf[pos++] & max;
    if (value === max) {
      let shift = 0;
      let b: number;
      do {
        if (pos >= end) throw new HpackError("truncated integer");
        b = buf[pos++];
        // RFC 7541 5.1: bound the encoding; past 2^31 nothing in a header block makes sense (and 2 ** shift would reach Infinity).
        if (shift > 28) throw new HpackError("integer encoding too long");
        value += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (value > 0x7fffffff) throw new HpackError("integer overflow");
      } while (b & 0x80);
    }
    this.next = pos;
    return value;
  }

  private readString(buf: Uint8Array, pos: number, end: number): string {
    if (pos >= end) throw new HpackError("truncated string");
    const huffman = (buf[pos] & 0x80) !== 0;
    const length = this.readInt(buf, pos, end, 7);
    const from = this.next;
    const to = from + length;
    if (to > end) throw new HpackError("truncated string");
    this.next = to;
    const raw = Buffer.from(buf.buffer, buf.byteOffset + from, length).toString("latin1");
    if (!huffman) {
      this.stringFault = valueFault(raw);
      return raw;
    }
    // Clients index most fields, but nghttp2 (node:http2, grpc-js, h2load) sends every :path as a new Huffman literal.
    // The cache holds only strings without a value fault, so a hit needs no check.
    let decoded = this.huffmanCache.get(raw);
    if (decoded !== undefined) {
      this.stringFault = 0;
      return decoded;
    }
    decoded = huffmanDecode(buf, from, to);
    this.stringFault = valueFault(decoded);
    if (this.huffmanCache.size >= HUFFMAN_CACHE_MAX) this.huffmanCache.clear();
    if (length <= HUFFMAN_CACHE_LONGEST && this.stringFault === 0) this.huffmanCache.set(raw, decoded);
    return decoded;
  }

  /** The valueFault (validate.ts) of the last string read. */
  private stringFault = 0;

  /** Decoded Huffman strings by their encoded bytes (as Latin-1). */
  private readonly huffmanCache = new Map<string, string>();

  /**
   * The fields of the blocks decoded since the caller set it (REQUEST_FIELDS or
   * TRAILER_FIELDS), checked in their order (validate.ts checkField): negative
   * once one broke a rule of RFC 9113 8.2.1 or 8.3 (the block is malformed).
   */
  fieldState = REQUEST_FIELDS;

  private nameAt(index: number): string {
    if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1][0];
    return this.names[this.dynamicSlot(index)];
  }

  private dynamicSlot(index: number): number {
    const slot = this.names.length - 1 - (index - STATIC_TABLE.length - 1);
    if (slot < this.first) throw new HpackError(`index ${index} beyond the table`);
    return slot;
  }

  private add(name: string, value: string, fault: number): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    this.evict(size);
    if (size > this.maxSize) return; // 4.4: an entry larger than the table empties it
    this.names.push(name);
    this.values.push(value);
    this.faults.push(fault);
    this.size += size;
  }

  /** Drops the oldest entries until `room` more bytes fit. */
  private evict(room: number): void {
    while (this.size + room > this.maxSize && this.first < this.names.length) {
      this.size -= this.names[this.first].length + this.values[this.first].length + ENTRY_OVERHEAD;
      this.first++;
    }
    // Compact now and then, so the arrays do not grow with the connection's age.
    if (this.first > 64 && this.first * 2 > this.names.length) {
      this.names.splice(0, this.first);
      this.values.splice(0, this.first);
      this.faults.splice(0, this.first);
      this.first = 0;
    }
  }
}

function addHeader(out: HeaderMap, name: string, value: string): void {
  const prev = out[name];
  if (prev === undefined) {
    out[name] = name === "set-cookie" ? [value] : value;
  } else if (name === "set-cookie") {
    (prev as string[]).push(value);
  } else if (name === "cookie") {
    out[name] = `${prev as string}; ${value}`;
  } else if (!SINGLE_VALUE.has(name)) {
    out[name] = `${prev as string}, ${value}`;
  }
}

// --- Encoding -------------------------------------------------------------

/** The static index of each name (its first entry), for literal fields. */
const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name], i) => {
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

/** Encoded fields of short values, which repeat on every response (content-type, grpc-status 0). */
const fieldCache = new Map<string, Map<string, Buffer>>();
const FIELD_CACHE_MAX = 256;
const STATUS_INDEX: Record<number, number> = { 200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14 };

/** A header block: the status (if any), then each field as a literal never added to the table. */
export function encodeHeaders(status: number | undefined, fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  let length = 0;
  if (status !== undefined) {
    const index = STATUS_INDEX[status];
    const part = index !== undefined ? Buffer.of(0x80 | index) : literal(":status", String(status));
    parts.push(part);
    length += part.length;
  }
  for (const [name, value] of fields) {
    const part = field(name, value);
    parts.push(part);
    length += part.length;
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts, length);
}

function field(name: string, value: string): Buffer {
  if (value.length > 64) return literal(name, value);
  let byValue = fieldCache.get(name);
  if (byValue === undefined) {
    if (fieldCache.size >= FIELD_CACHE_MAX) fieldCache.clear();
    fieldCache.set(name, (byValue = new Map()));
  }
  let part = byValue.get(value);
  if (part === undefined) {
    // Bounded per name too (date changes every second).
    if (byValue.size >= FIELD_CACHE_MAX) byValue.clear();
    part = literal(name, value);
    byValue.set(value, part);
  }
  return part;
}

/** Literal Header Field without Indexing (6.2.2), raw strings (values are Latin-1 as node:http2 sends them). */
function literal(name: string, value: string): Buffer {
  const index = STATIC_NAME.get(name);
  const nameLength = index === undefined ? Buffer.byteLength(name, "latin1") : 0;
  const valueLength = Buffer.byteLength(value, "latin1");
  const out = Buffer.allocUnsafe(1 + 5 + (index === undefined ? 5 + nameLength : 0) + 5 + valueLength);
  let pos = 0;
  if (index === undefined) {
    out[pos++] = 0x00;
    pos = writeInt(out, pos, 7, 0, nameLength);
    pos += out.write(name, pos, "latin1");
  } else {
    pos = writeInt(out, pos, 4, 0x00, index);
  }
  pos = writeInt(out, pos, 7, 0, valueLength);
  pos += out.write(value, pos, "latin1");
  return out.subarray(0, pos);
}

function writeInt(out: Buffer, pos: number, prefixBits: number, flags: number, value: number): number {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out[pos++] = flags | value;
    return pos;
  }
  out[pos++] = flags | max;
  value -= max;
  while (value >= 0x80) {
    out[pos++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  out[pos++] = value;
  return pos;
}
