import { create, type DescMessage, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import * as grpc from "@connectrpc/connect/protocol-grpc";
import * as connect from "@connectrpc/connect/protocol-connect";
import { requestFaultError } from "../client-faults.js";
import { specEncodeGrpcMessageHeader } from "../grpc-message.js";
import { asConnectError, COMPRESS_MIN_BYTES, copyHeaders, envelope, FastCall, handlerContext, nodeHeaders, type FastMethod } from "./call.js";

export type UnaryImplementation = (message: Message, ctx: HandlerContext) => unknown;
export type UnaryChain = (req: UnaryRequest) => Promise<UnaryResponse>;

/** The innermost function of a unary chain, as connect's invokeUnaryImplementation: run the implementation, normalize its answer. */
export function unaryInvoker(method: FastMethod, impl: UnaryImplementation): UnaryChain {
  return async (req) => {
    const ctx = handlerContext(req);
    const answer = await impl(req.message, ctx);
    return {
      stream: false,
      service: method.desc.parent,
      method: method.desc,
      message: create(method.desc.output as DescMessage, answer as never),
      header: ctx.responseHeader,
      trailer: ctx.responseTrailer,
    } as UnaryResponse;
  };
}

/** One unary call, answered as connect's gRPC and Connect unary handlers answer. */
export class UnaryCall extends FastCall {
  private chain!: UnaryChain;

  withChain(chain: UnaryChain): this {
    this.chain = chain;
    return this;
  }

  protected async run(): Promise<void> {
    const grpcCall = this.protocol === "grpc";
    const { context, timeoutError } = this.context(grpcCall ? grpc.contentTypeProto : connect.contentTypeUnaryProto, grpcCall ? { "grpc-status": grpc.grpcStatusOk } : undefined);
    const compression = this.compression();
    let message: Message | undefined;
    let error: ConnectError | undefined;
    try {
      if (compression.error) throw compression.error;
      if (timeoutError !== undefined) throw timeoutError;
      const input = await this.input();
      const res = await this.chain(this.request<UnaryRequest>(context, false, input));
      copyHeaders(res.header, context.responseHeader);
      copyHeaders(res.trailer, context.responseTrailer);
      message = res.message;
    } catch (e) {
      error = asConnectError(e);
    }
    this.done = true;
    this.signal.release();
    if (this.gone) return;
    const body = message !== undefined && error === undefined ? this.method.serialize(message) : undefined;
    if (grpcCall) await this.respondGrpc(context, compression.response, body, error);
    else await this.respondConnect(context, compression.response, body, error);
  }

  /** The one request message, with connect's errors for none or two (its ensureSingle) and client-faults.ts's codes. */
  private async input(): Promise<Message> {
    let messages: Message[];
    try {
      messages = await this.messages();
    } catch (e) {
      throw e instanceof ConnectError ? requestFaultError(e, this.method.desc.input) : e;
    }
    if (messages.length === 0) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
    if (messages.length > 1) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
    return messages[0];
  }

  /** As connect's gRPC handler: headers, then the message (if any) in one envelope, then the status in trailers. */
  private async respondGrpc(ctx: HandlerContext, compression: Compression | null, body: Uint8Array | undefined, error: ConnectError | undefined): Promise<void> {
    if (compression !== null) ctx.responseHeader.set("grpc-encoding", compression.name);
    const frame = body === undefined ? undefined : await envelope(0, body, compression);
    if (error !== undefined) grpc.setTrailerStatus(ctx.responseTrailer, error);
    const trailers = grpcTrailers(ctx.responseTrailer);
    if (this.gone) return;
    try {
      this.stream.respond({ ":status": 200, ...nodeHeaders(ctx.responseHeader) }, { waitForTrailers: true });
      this.stream.once("wantTrailers", () => this.stream.sendTrailers(trailers));
      this.stream.end(frame);
    } catch {
      // The stream was reset while we answered: nothing to tell anyone.
    }
  }

  /** As connect's unary handler: the message or the error as JSON, trailers as `trailer-` headers, a content-length. */
  private async respondConnect(ctx: HandlerContext, compression: Compression | null, body: Uint8Array | undefined, error: ConnectError | undefined): Promise<void> {
    let status = 200;
    if (error !== undefined) {
      status = connect.codeToHttpStatus(error.code);
      ctx.responseHeader.set("content-type", connect.contentTypeUnaryJson);
      error.metadata.forEach((value, key) => ctx.responseHeader.set(key, value));
      body = connect.errorToJsonBytes(error, {});
    }
    let out = body!;
    if (compression !== null && out.byteLength >= COMPRESS_MIN_BYTES) {
      out = await compression.compress(out);
      ctx.responseHeader.set("content-encoding", compression.name);
    }
    const header = connect.trailerMux(ctx.responseHeader, ctx.responseTrailer);
    header.set("content-length", out.byteLength.toString(10));
    if (this.gone) return;
    try {
      this.stream.respond({ ":status": status, ...nodeHeaders(header) });
      this.stream.end(out);
    } catch {
      // The stream was reset while we answered.
    }
  }
}

/** Headers or trailers for node:http2 (and our engine), grpc-message encoded as the spec says (see grpc-message.ts). */
export function grpcTrailers(trailer: Headers): ReturnType<typeof nodeHeaders> {
  const trailers = nodeHeaders(trailer);
  specEncodeGrpcMessageHeader(trailers);
  return trailers;
}
