import type { ContextKey, ContextValues } from "@connectrpc/connect";

/**
 * Connect's ContextValues as its createContextValues makes them (values kept
 * on the object under each key's symbol), with the methods on a prototype
 * rather than three closures per call: the server makes one per call, and a
 * Watch keeps its own for its whole life.
 */
export class CallValues implements ContextValues {
  get<T>(key: ContextKey<T>): T {
    const self = this as unknown as Record<symbol, unknown>;
    return key.id in self ? (self[key.id] as T) : key.defaultValue;
  }

  set<T>(key: ContextKey<T>, value: T): this {
    (this as unknown as Record<symbol, unknown>)[key.id] = value;
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    delete (this as unknown as Record<symbol, unknown>)[key.id];
    return this;
  }
}
