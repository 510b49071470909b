/**
 * A change to the dataset. Every change takes the next value of the store's
 * one revision counter; the stream of changes in revision order is the spine
 * that watchers and replicas follow.
 */
export type ChangeType = "put" | "delete" | "expire" | "evict" | "flush";

export interface Change {
  readonly type: ChangeType;
  readonly revision: number;
  /** The key changed; "" for a flush. */
  readonly key: string;
  /** The new value of a put (owned by the store: never mutate). */
  readonly value?: Uint8Array;
  /** Flags of a put. */
  readonly flags: number;
  /** Absolute expiry of a put in ms since the Unix epoch; 0 = none. */
  readonly expiresAt: number;
}

/** Receives every change synchronously, in revision order, right after it is applied. */
export type ChangeListener = (change: Change) => void;
