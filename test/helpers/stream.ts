import * as http2 from "node:http2";
import { fromBinary, toBinary, create, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";

/** Resolves with `promise`, or rejects when it takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` until it returns true or `ms` pass; fails with `what` on timeout. */
export async function eventually(probe: () => Promise<boolean>, ms: number, what: string, pauseMs = 50): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(pauseMs);
  }
}

/**
 * A gRPC call over a bare node:http2 stream, so a test controls reading:
 * `pause()` stops consuming the response (HTTP/2 flow control then stops the
 * server), `resume()` reads on. Responses are decoded with protobuf-es.
 */
export class RawGrpcCall<I extends DescMessage, O extends DescMessage> {
  readonly stream: http2.ClientHttp2Stream;
  /** Every decoded response, in order. */
  readonly messages: MessageShape<O>[] = [];
  /** grpc-status and grpc-message once the call ended (from trailers or a trailers-only response). */
  status: { code: number; message: string } | undefined;
  /** Set when the stream closed (with or without an error). */
  closed = false;
  error: Error | undefined;
  private pending: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  constructor(
    readonly session: http2.ClientHttp2Session,
    path: string,
    private readonly input: I,
    private readonly output: O,
  ) {
    this.stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc+proto",
      te: "trailers",
    });
    const onStatus = (headers: http2.IncomingHttpHeaders) => {
      const code = headers["grpc-status"];
      if (code !== undefined) this.status = { code: Number(code), message: decodeURIComponent(String(headers["grpc-message"] ?? "")) };
      this.wake();
    };
    this.stream.on("response", onStatus);
    this.stream.on("trailers", onStatus);
    this.stream.on("data", (chunk: Buffer) => this.onData(chunk));
    this.stream.on("error", (err) => {
      this.error = err;
      this.wake();
    });
    this.stream.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Sends one request message. */
  send(message: MessageInitShape<I>): void {
    const body = toBinary(this.input, create(this.input, message));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    this.stream.write(frame);
  }

  /** Half-closes the request side. */
  end(): void {
    this.stream.end();
  }

  pause(): void {
    this.stream.pause();
  }

  resume(): void {
    this.stream.resume();
  }

  /** Resolves once `predicate` holds for the messages received, or rejects after `ms` (or when the call ends without it). */
  async until(predicate: (messages: readonly MessageShape<O>[]) => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate(this.messages)) {
      if (this.closed || this.status !== undefined) {
        throw new Error(`the call ended (status ${JSON.stringify(this.status)}, error ${this.error?.message}) before ${what}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what} (${this.messages.length} messages so far)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Resolves when the call ended, or rejects after `ms`. */
  async ended(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for the call to end`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Resets the stream (the client cancels the call). */
  cancel(): void {
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 5) {
      const length = this.pending.readUInt32BE(1);
      if (this.pending.length < 5 + length) break;
      if (this.pending[0] !== 0) throw new Error("compressed gRPC messages are not expected");
      this.messages.push(fromBinary(this.output, this.pending.subarray(5, 5 + length)));
      this.pending = this.pending.subarray(5 + length);
    }
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/** Opens an HTTP/2 connection to `url` and resolves once it is connected. */
export async function connectH2(url: string, options: http2.ClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(url, options);
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  session.on("error", () => {
    // Errors surface on the streams; a torn-down connection is expected in some tests.
  });
  return session;
}

/** An async iterable fed by `push` and finished by `end`: the request side of a client or bidi stream. */
export class Pushable<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: (() => void) | undefined;
  private done = false;

  push(item: T): void {
    this.items.push(item);
    this.wake();
  }

  end(): void {
    this.done = true;
    this.wake();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) yield this.items.shift()!;
      else if (this.done) return;
      else await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}
