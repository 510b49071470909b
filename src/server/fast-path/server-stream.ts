import { create, type DescMessage, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type StreamRequest, type StreamResponse } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import * as grpc from "@connectrpc/connect/protocol-grpc";
import * as connect from "@connectrpc/connect/protocol-connect";
import { asConnectError, COMPRESS_MIN_BYTES, copyHeaders, envelope, envelopeSync, FastCall, handlerContext, nodeHeaders, type FastMethod } from "./call.js";
import { pullIterator, type PullIterator } from "../../pull-iterator.js";
import { grpcTrailers } from "./unary.js";

export type ServerStreamingImplementation = (message: Message, ctx: HandlerContext) => AsyncIterable<unknown>;
export type StreamChain = (req: StreamRequest) => Promise<StreamResponse>;

/**
 * The innermost function of a server-streaming chain, as connect's
 * invokeStreamImplementation: take the one request message (connect's
 * ensureSingle errors), run the implementation, normalize what it yields.
 */
export function serverStreamInvoker(method: FastMethod, impl: ServerStreamingImplementation): StreamChain {
  return async (req) => {
    const input = await single(req.message);
    const ctx = handlerContext(req, true);
    const output = impl(input as Message, ctx);
    const schema = method.desc.output as DescMessage;
    return {
      stream: true,
      service: method.desc.parent,
      method: method.desc,
      message: normalized(output, schema),
      header: ctx.responseHeader,
      trailer: ctx.responseTrailer,
    } as StreamResponse;
  };
}

async function single<T>(messages: AsyncIterable<T>): Promise<T> {
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) throw new ConnectError("protocol error: missing input message for server-streaming method", Code.Unimplemented);
  const second = await it.next();
  if (second.done !== true) throw new ConnectError("protocol error: received extra input message for server-streaming method", Code.Unimplemented);
  return first.value;
}

/** Full messages of what the implementation yields, as connect's normalizeIterable (a mapping iterator, not another generator). */
function normalized(output: AsyncIterable<unknown>, schema: DescMessage): AsyncIterable<Message> {
  return new NormalizedMessages(output, schema);
}

/**
 * One object with its methods on a prototype: a Watch keeps it for its whole
 * life. Pullable when what it wraps is (src/pull-iterator.ts).
 */
class NormalizedMessages implements AsyncIterable<Message>, PullIterator<Message> {
  private it: AsyncIterator<unknown> | undefined;

  constructor(
    private readonly output: AsyncIterable<unknown>,
    private readonly schema: DescMessage,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    this.inner();
    return this;
  }

  get pullable(): boolean {
    return pullIterator(this.inner()) !== undefined;
  }

  pull(): IteratorResult<Message> | undefined {
    const r = (this.inner() as PullIterator<unknown>).pull();
    return r === undefined ? undefined : this.toMessage(r);
  }

  onReady(ready: () => void): void {
    (this.inner() as PullIterator<unknown>).onReady(ready);
  }

  next(): Promise<IteratorResult<Message>> {
    return this.inner().next().then((r) => this.toMessage(r));
  }

  return(value?: unknown): Promise<IteratorResult<Message>> {
    const it = this.inner();
    return it.return === undefined ? Promise.resolve({ done: true, value: undefined }) : it.return(value).then((r) => this.toMessage(r));
  }

  throw(error?: unknown): Promise<IteratorResult<Message>> {
    const it = this.inner();
    return it.throw === undefined ? Promise.reject(error) : it.throw(error).then((r) => this.toMessage(r));
  }

  private inner(): AsyncIterator<unknown> {
    return (this.it ??= this.output[Symbol.asyncIterator]());
  }

  private toMessage(r: IteratorResult<unknown>): IteratorResult<Message> {
    return r.done === true ? r : { done: false, value: create(this.schema, r.value as never) };
  }
}

/**
 * The request's messages, read when the implementation asks, with the
 * request's error (compression, deadline) raised then. A class: a generator
 * method in an object literal made a generator function, with its own
 * prototype and hidden classes, per call; a Watch kept them for its life.
 */
class RequestMessages implements AsyncIterable<Message> {
  constructor(
    private readonly read: () => Promise<Message[]>,
    private readonly error: ConnectError | undefined,
  ) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<Message> {
    if (this.error !== undefined) throw this.error;
    yield* await this.read();
  }
}

/**
 * Encoded messages by identity (messages handed to a stream are never changed
 * afterwards): the serialized bytes, their uncompressed envelope, and their
 * compressed envelopes by compression name.
 */
const sharedFrames = new WeakMap<Message, { readonly data: Uint8Array; readonly plain: Buffer; compressed: Map<string, Promise<Buffer>> | undefined }>();

/** connect's end-of-stream message flag (Connect streaming protocol). */
const END_STREAM_FLAG = 0b10;
const endStream = connect.createEndStreamSerialization({});

/**
 * One server-streaming call (Watch), answered as connect's gRPC and Connect
 * streaming handlers answer: headers with the first message, one envelope per
 * message, then the status (gRPC trailers, or Connect's end-of-stream message).
 * A write the client is not reading waits for the stream to drain, so a slow
 * consumer holds at most Node's stream buffer here; what it has not been sent
 * waits in its ChangeQueue, bounded by --stream-buffer-bytes (then RESYNC).
 */
export class ServerStreamCall extends FastCall {
  private chain!: StreamChain;
  private wake: (() => void) | undefined;

  withChain(chain: StreamChain): this {
    this.chain = chain;
    return this;
  }

  protected override closed(): void {
    this.wake?.();
  }

  protected async run(): Promise<void> {
    const grpcCall = this.protocol === "grpc";
    const { context, timeoutError } = this.context(
      grpcCall ? grpc.contentTypeProto : connect.contentTypeStreamProto,
      grpcCall ? { "grpc-status": grpc.grpcStatusOk } : undefined,
    );
    const compression = this.compression();
    if (compression.response !== null) context.responseHeader.set(grpcCall ? "grpc-encoding" : "connect-content-encoding", compression.response.name);
    // As in connect, request errors (compression, timeout, decoding) surface when the implementation reads its message, inside the interceptors.
    const input = new RequestMessages(() => this.messages(), compression.error ?? timeoutError);
    let error: ConnectError | undefined;
    let headersSent = false;
    const sendHeaders = () => {
      if (headersSent || this.gone) return;
      headersSent = true;
      this.stream.respond({ ":status": 200, ...nodeHeaders(context.responseHeader) }, { waitForTrailers: grpcCall });
    };
    let it: AsyncIterator<Message> | undefined;
    try {
      const res = await this.chain(this.request<StreamRequest>(context, true, input));
      // The chain has read the request (the invoker takes its one message first).
      this.releaseRequest();
      copyHeaders(res.header, context.responseHeader);
      it = (res.message as AsyncIterable<Message>)[Symbol.asyncIterator]();
      const pullable = pullIterator(it);
      if (pullable !== undefined) {
        await this.pump(pullable, compression.response, sendHeaders);
      } else {
        for (;;) {
          const r = await it.next();
          if (r.done === true) break;
          if (this.gone) break;
          const shared = this.frame(r.value, compression.response);
          const frame = shared instanceof Buffer ? shared : await shared;
          sendHeaders();
          if (!this.stream.write(frame)) await this.drained();
        }
      }
      copyHeaders(res.trailer, context.responseTrailer);
    } catch (e) {
      error = asConnectError(e);
    } finally {
      // A client that left mid-stream, or a failure of ours (a frame that could not be made): let the
      // implementation's finally run (unregister from the hub, give back its stream slot).
      if (this.gone || error !== undefined) await it?.return?.().catch(() => undefined);
    }
    this.done = true;
    this.signal.release();
    if (this.gone) return;
    try {
      if (grpcCall) {
        if (error !== undefined) grpc.setTrailerStatus(context.responseTrailer, error);
        const trailers = grpcTrailers(context.responseTrailer);
        sendHeaders();
        this.stream.once("wantTrailers", () => this.stream.sendTrailers(trailers));
        this.stream.end();
      } else {
        const end = await envelope(END_STREAM_FLAG, endStream.serialize({ metadata: context.responseTrailer, error }), compression.response);
        sendHeaders();
        this.stream.end(end);
      }
    } catch {
      // The stream was reset while we answered.
    }
  }

  /**
   * The envelope of a message, made once per message object and compression:
   * a Watch fan-out sends one object to every watcher. Most clients offer
   * gzip (connect-node and grpc-js do), and a message under
   * COMPRESS_MIN_BYTES goes uncompressed then, so the plain frame serves them too.
   */
  private frame(message: Message, compression: Compression | null): Buffer | Promise<Buffer> {
    let frames = sharedFrames.get(message);
    if (frames === undefined) {
      const plain = envelopeSync(0, this.method.serialize(message));
      frames = { data: plain.subarray(5), plain, compressed: undefined };
      sharedFrames.set(message, frames);
    }
    if (compression === null || frames.data.byteLength < COMPRESS_MIN_BYTES) return frames.plain;
    frames.compressed ??= new Map();
    let compressed = frames.compressed.get(compression.name);
    if (compressed === undefined) {
      const name = compression.name;
      frames.compressed.set(name, (compressed = envelope(0, frames.data, compression)));
      // A failure is not kept: the next watcher of this message tries again.
      compressed.catch(() => frames.compressed?.delete(name));
    }
    return compressed;
  }

  /**
   * The loop above for a pullable stream (a Watch), with no promise per
   * message: write what is ready, then ask to be called back when more is,
   * or when the stream drains. Settles when the messages end or fail, or
   * when the client is gone.
   */
  private pump(it: PullIterator<Message>, compression: Compression | null, sendHeaders: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const step = (): void => {
        if (settled) return;
        try {
          for (;;) {
            if (this.gone) break;
            const r = it.pull();
            if (r === undefined) return it.onReady(step);
            if (r.done === true) break;
            const shared = this.frame(r.value, compression);
            if (shared instanceof Buffer) {
              if (!write(shared)) return;
              continue;
            }
            // A compressed frame, made once for every watcher of this message; the client may have gone meanwhile.
            void (shared as Promise<Buffer>).then((frame) => {
              if (settled) return;
              try {
                if (this.gone || write(frame)) step();
              } catch (e) {
                fail(e);
              }
            }, fail);
            return;
          }
          settled = true;
          resolve();
        } catch (e) {
          fail(e);
        }
      };
      /** False when the stream is full: step runs again once it drains. */
      const write = (frame: Buffer): boolean => {
        sendHeaders();
        if (this.stream.write(frame)) return true;
        void this.drained().then(step);
        return false;
      };
      const fail = (e: unknown): void => {
        if (settled) return;
        settled = true;
        reject(e);
      };
      step();
    });
  }

  /** Resolves when the stream can take more, or is gone. */
  private drained(): Promise<void> {
    // A closed stream never drains (nor closes again).
    if (this.gone) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.stream.off("drain", done);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      this.stream.once("drain", done);
    });
  }
}

