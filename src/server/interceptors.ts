import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { StoreError, type StoreErrorKind } from "../store/errors.js";

const CODES: Record<StoreErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  failed_precondition: Code.FailedPrecondition,
  out_of_range: Code.OutOfRange,
  resource_exhausted: Code.ResourceExhausted,
};

/** Maps store errors to ConnectErrors with the code their kind names. */
export const storeErrors: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    if (err instanceof StoreError) throw new ConnectError(err.message, CODES[err.kind]);
    throw err;
  }
};

/** Services any caller may use without a token (health probes come from the kubelet). */
const PUBLIC_SERVICES = new Set(["grpc.health.v1.Health"]);

/**
 * Bearer-token auth: `authorization: Bearer <token>`. Tokens are compared as
 * SHA-256 digests with timingSafeEqual, so neither the content nor the length
 * of the expected token leaks through timing.
 */
export function bearerAuth(token: string): Interceptor {
  const expected = digest(token);
  return (next) => async (req) => {
    if (!PUBLIC_SERVICES.has(req.service.typeName)) {
      const header = req.header.get("authorization");
      if (header === null) {
        throw new ConnectError("missing token: send the header 'authorization: Bearer <token>'", Code.Unauthenticated);
      }
      const m = /^Bearer\s+(.+)$/i.exec(header.trim());
      if (m === null || !timingSafeEqual(digest(m[1]), expected)) {
        throw new ConnectError("invalid token", Code.Unauthenticated);
      }
    }
    return next(req);
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
