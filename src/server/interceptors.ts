import { createHash, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { CacheService } from "../gen/ripplecache/v1/cache_pb.js";
import type { NodeRole } from "../replication/node-role.js";
import { PRIMARY_HEADER } from "../headers.js";
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

/**
 * Bearer-token auth: `authorization: Bearer <token>`, with the token that
 * `tokenFor` names for the called method (undefined: no token needed).
 * Tokens are compared as SHA-256 digests with timingSafeEqual, so neither the
 * content nor the length of the expected token leaks through timing.
 *
 * Every refusal is UNAUTHENTICATED, also for a token that is valid for other
 * methods (a client token calling Flush, Promote or Sync): the answer does not
 * tell which tokens exist. `kindOf` names the token a method needs ("admin",
 * "replication") for the message. Neither the expected nor the sent token is
 * ever part of a message or a log line.
 */
export function bearerAuth(
  tokenFor: (service: string, method: string) => string | undefined,
  kindOf: (service: string, method: string) => string = () => "auth",
): Interceptor {
  const digests = new Map<string, Buffer>();
  // Not async: a call that passes goes straight on, with no promise and no async frame of this
  // interceptor's (it checks synchronously); a refusal is a rejected promise, as before.
  return (next) => (req) => {
    const token = tokenFor(req.service.typeName, req.method.name);
    if (token !== undefined) {
      let expected = digests.get(token);
      if (expected === undefined) digests.set(token, (expected = digest(token)));
      const needs = `${req.service.typeName}/${req.method.name} needs the ${kindOf(req.service.typeName, req.method.name)} token`;
      const header = req.header.get("authorization");
      if (header === null) {
        return Promise.reject(new ConnectError(`missing token: ${needs}; send the header 'authorization: Bearer <token>'`, Code.Unauthenticated));
      }
      const m = /^Bearer\s+(.+)$/i.exec(header.trim());
      if (m === null || !timingSafeEqual(digest(m[1]), expected)) {
        return Promise.reject(new ConnectError(`invalid token: ${needs}`, Code.Unauthenticated));
      }
    }
    return next(req);
  };
}

const WRITES = new Set(["Set", "SetMany", "Delete", "Increment", "Touch", "Load", "Flush"]);
const NEEDS_DATA = new Set(["Get", "GetMany", "Scan", "Watch", "Track"]);

/**
 * On a replica: writes are refused with FAILED_PRECONDITION naming the
 * primary (message and header), and reads are refused with UNAVAILABLE until
 * the replica holds a complete history (its first sync, or a full resync, is done).
 * Not async, as bearerAuth: a call that passes costs no promise here.
 */
export function replicaGuard(role: NodeRole): Interceptor {
  return (next) => (req) => {
    if (role.isReplica && req.service.typeName === CacheService.typeName) {
      if (WRITES.has(req.method.name)) {
        return Promise.reject(
          new ConnectError(`this node is a read-only replica: send writes to the primary at ${role.primaryAddress}`, Code.FailedPrecondition, {
            [PRIMARY_HEADER]: role.primaryAddress,
          }),
        );
      }
      if (NEEDS_DATA.has(req.method.name) && (!role.synced || role.loadingSnapshot)) {
        return Promise.reject(
          new ConnectError(`this replica has not completed its sync with ${role.primaryAddress} yet; retry or read from the primary`, Code.Unavailable, {
            [PRIMARY_HEADER]: role.primaryAddress,
          }),
        );
      }
    }
    return next(req);
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
