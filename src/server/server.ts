import { setMaxListeners } from "node:events";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { CacheService } from "../gen/ripplecache/v1/cache_pb.js";
import { ExpirySweeper } from "../store/expiry-sweeper.js";
import { ChangeLog } from "../store/change-log.js";
import { CacheStore } from "../store/store.js";
import { WatchHub } from "../watch/hub.js";
import { VERSION } from "../version.js";
import { cacheServiceImpl } from "./cache-service.js";
import type { ServerConfig } from "./config.js";
import { bearerAuth, storeErrors } from "./interceptors.js";
import { listen } from "./listener.js";
import { HealthState, registerHealth, ServingStatus } from "./health.js";
import { registerReflection } from "./reflection.js";

export interface RunningServer {
  readonly port: number;
  readonly store: CacheStore;
  readonly hub: WatchHub;
  readonly health: HealthState;
  /** Graceful stop: refuse new connections, end streams, let in-flight calls finish, then close. */
  close(): Promise<void>;
}

export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const store = new CacheStore({
    limits: {
      maxMemoryBytes: config.maxMemoryBytes,
      maxKeyBytes: config.maxKeyBytes,
      maxValueBytes: config.maxValueBytes,
    },
  });
  const log = new ChangeLog({ maxEvents: config.changeLogEvents, maxBytes: config.changeLogBytes });
  store.onChange((change) => log.append(change));
  const hub = new WatchHub(log, {
    maxStreams: config.maxStreams,
    streamBufferBytes: config.streamBufferBytes,
    maxTrackKeys: config.maxTrackKeys,
  });
  const sweeper = new ExpirySweeper(store);
  sweeper.start();

  const health = new HealthState();
  const shutdown = new AbortController();
  // Every in-flight call links its own signal to this one: not a leak, just many listeners.
  setMaxListeners(0, shutdown.signal);
  const interceptors: Interceptor[] = [storeErrors];
  if (config.authToken !== undefined) interceptors.unshift(bearerAuth(config.authToken));

  const routes = (router: ConnectRouter) => {
    router.service(CacheService, cacheServiceImpl({ store, hub, maxBatch: config.maxBatch, version: VERSION, startedAt: Date.now() }));
    registerHealth(router, health);
    registerReflection(router);
  };
  const handler = connectNodeAdapter({
    routes,
    interceptors,
    readMaxBytes: config.maxRequestBytes,
    shutdownSignal: shutdown.signal,
  });
  const listener = await listen(handler, config);

  let closing: Promise<void> | undefined;
  return {
    port: listener.port,
    store,
    hub,
    health,
    close() {
      closing ??= (async () => {
        health.set(ServingStatus.NOT_SERVING);
        listener.stopAccepting();
        // Streams see their context signal abort and end with UNAVAILABLE, so
        // clients reconnect elsewhere instead of waiting for the grace period.
        shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
        await listener.close(config.shutdownTimeoutMs);
        sweeper.stop();
      })();
      return closing;
    },
  };
}
