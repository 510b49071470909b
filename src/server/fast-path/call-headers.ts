import type { IncomingHttpHeaders } from "node:http";

/** HTTP whitespace, which the Fetch standard strips from both ends of a header value. */
const EDGE_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;

function normalizeValue(value: string): string {
  const n = value.length;
  if (n === 0) return value;
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(n - 1);
  const ws = (c: number) => c === 32 || c === 9 || c === 10 || c === 13;
  return ws(first) || ws(last) ? value.replace(EDGE_WHITESPACE, "") : value;
}

/**
 * The `Headers` of a fast-path call: what connect, our interceptors and the
 * handlers use of the Fetch API's Headers (case-insensitive names, the values
 * of one name joined with ", ", set-cookie kept apart, iteration sorted by
 * name), in a plain Map. undici's Headers validates every name and value and
 * keeps extra bookkeeping; three of them per call were ~7% of a Get's server
 * time. Nothing is lost by not validating here: node:http2 validates every
 * header it sends, and request headers come from its parser.
 */
export class CallHeaders implements Headers {
  /**
   * Names and values, alternating, in insertion order: a call has a handful
   * of headers, a scan of a few strings is as fast as a Map, and a Watch keeps
   * three of these for its whole life (a Map's table was ~160 bytes each).
   */
  private fields: string[] | undefined;
  private cookies: string[] | undefined;

  /** A new field: arrays of exactly the length needed (push would reserve room for 17 elements). */
  private add(key: string, value: string): void {
    this.fields = this.fields === undefined ? [key, value] : this.fields.concat(key, value);
  }

  private indexOf(key: string): number {
    const f = this.fields;
    if (f !== undefined) for (let i = 0; i < f.length; i += 2) if (f[i] === key) return i;
    return -1;
  }

  constructor(init?: HeadersInit) {
    if (init === undefined) return;
    if (isIterable(init)) {
      for (const [k, v] of init) this.append(k, v);
    } else {
      for (const k of Object.keys(init)) this.append(k, (init as Record<string, string>)[k]);
    }
  }

  /** Request headers as connect-node presents them (nodeHeaderToWebHeader): no pseudo-headers. */
  static fromNode(headers: IncomingHttpHeaders): CallHeaders {
    const out = new CallHeaders();
    for (const key in headers) {
      if (key.charCodeAt(0) === 58 /* ":" */) continue;
      const v = headers[key];
      if (v === undefined) continue;
      if (typeof v === "string") out.append(key, v);
      else for (const e of v) out.append(key, e);
    }
    return out;
  }

  append(name: string, value: string): void {
    const key = name.toLowerCase();
    const v = normalizeValue(String(value));
    if (key === "set-cookie") {
      (this.cookies ??= []).push(v);
      return;
    }
    const i = this.indexOf(key);
    if (i >= 0) this.fields![i + 1] = `${this.fields![i + 1]}, ${v}`;
    else this.add(key, v);
  }

  set(name: string, value: string): void {
    const key = name.toLowerCase();
    const v = normalizeValue(String(value));
    if (key === "set-cookie") this.cookies = [v];
    else {
      const i = this.indexOf(key);
      if (i >= 0) this.fields![i + 1] = v;
      else this.add(key, v);
    }
  }

  delete(name: string): void {
    const key = name.toLowerCase();
    if (key === "set-cookie") this.cookies = undefined;
    else {
      const i = this.indexOf(key);
      if (i >= 0) this.fields!.splice(i, 2);
    }
  }

  get(name: string): string | null {
    const key = name.toLowerCase();
    if (key === "set-cookie") return this.cookies === undefined ? null : this.cookies.join(", ");
    const i = this.indexOf(key);
    return i >= 0 ? this.fields![i + 1] : null;
  }

  has(name: string): boolean {
    const key = name.toLowerCase();
    return key === "set-cookie" ? this.cookies !== undefined : this.indexOf(key) >= 0;
  }

  getSetCookie(): string[] {
    return this.cookies === undefined ? [] : [...this.cookies];
  }

  forEach(callbackfn: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [k, v] of this.sorted()) callbackfn.call(thisArg, v, k, this);
  }

  *entries(): HeadersIterator<[string, string]> {
    yield* this.sorted();
  }

  *keys(): HeadersIterator<string> {
    for (const [k] of this.sorted()) yield k;
  }

  *values(): HeadersIterator<string> {
    for (const [, v] of this.sorted()) yield v;
  }

  [Symbol.iterator](): HeadersIterator<[string, string]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return "Headers";
  }

  /** As the Fetch standard's "sort and combine": by name, each set-cookie value on its own. */
  private sorted(): [string, string][] {
    const out: [string, string][] = [];
    const f = this.fields;
    if (f !== undefined) for (let i = 0; i < f.length; i += 2) out.push([f[i], f[i + 1]]);
    if (this.cookies !== undefined) for (const c of this.cookies) out.push(["set-cookie", c]);
    if (out.length > 1) out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return out;
  }
}

function isIterable(init: unknown): init is Iterable<[string, string]> {
  return typeof (init as Iterable<unknown>)[Symbol.iterator] === "function";
}
