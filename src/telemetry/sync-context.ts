import { context as otelContext, ROOT_CONTEXT, type Context, type ContextManager } from "@opentelemetry/api";

/**
 * An OpenTelemetry context manager without AsyncLocalStorage: `with()` makes
 * a context active for the synchronous run of its function only. OTel's
 * AsyncLocalStorage manager turns on Node's promise hooks for every promise in
 * the process as soon as one call is traced, which cost about 5% of a cached
 * Get's server time with traces sampled at 10%, on calls that were not sampled
 * too.
 *
 * What needs a context across an await gets it explicitly: a call's trace
 * context travels in its Connect context values (TRACE_CONTEXT, rpc.ts) to the
 * spans it starts later (startActivity's parent), and a log line written after
 * an await is written inside its span with inSpan (spans.ts). Within one
 * synchronous run (an interceptor calling the handler up to its first await,
 * the RPC log line) the active context is what `with()` set, as before.
 */
export class SyncContextManager implements ContextManager {
  private readonly stack: Context[] = [];

  active(): Context {
    return this.stack.length === 0 ? ROOT_CONTEXT : this.stack[this.stack.length - 1];
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(context: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    this.stack.push(context);
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.stack.pop();
    }
  }

  /**
   * with() for one argument, called directly: the API's context.with() looks
   * the global manager up and spreads its arguments twice, on every call
   * served (rpc.ts). Only for a manager that is the registered one (isGlobal).
   */
  run<A, R>(context: Context, fn: (arg: A) => R, arg: A): R {
    this.stack.push(context);
    try {
      return fn(arg);
    } finally {
      this.stack.pop();
    }
  }

  /** True when this manager is the one the API's context.with() and active() use. */
  isGlobal(): boolean {
    const probe = ROOT_CONTEXT.setValue(Symbol("probe"), true);
    return this.run(probe, () => otelContext.active() === probe, undefined);
  }

  bind<T>(context: Context, target: T): T {
    if (typeof target !== "function") return target;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    const manager = this;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(context, () => fn.apply(this, args));
    } as unknown as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.stack.length = 0;
    return this;
  }
}
