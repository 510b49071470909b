/**
 * Errors the store raises for requests it refuses. The store knows nothing of
 * RPC: the server maps each kind to a Connect code at the edge.
 */
export type StoreErrorKind =
  /** The request is malformed: empty key, key or value over its limit, negative TTL. */
  | "invalid_argument"
  /** The request is well formed but the data does not allow it (INCR of a non-integer). */
  | "failed_precondition"
  /** An arithmetic result does not fit (INCR overflow). */
  | "out_of_range"
  /** The store cannot hold the entry at all (larger than the memory bound). */
  | "resource_exhausted";

export class StoreError extends Error {
  constructor(
    readonly kind: StoreErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "StoreError";
  }
}
