// The client library's public entry point: `import { CacheClient } from "ripplecache"`
// (also "ripplecache/client"). The generated messages are under "ripplecache/gen/...".
export { CacheClient, baseUrl, sendBearerToken, PRIMARY_HEADER } from "./client.js";
export type { ClientOptions, Protocol, ScanEntry, SetParams, ValueResult } from "./client.js";
export { NearCache } from "./near-cache.js";
export type { NearCacheOptions, NearCacheStats } from "./near-cache.js";
export { ResumingWatch } from "./resuming-watch.js";
export type { ResumingWatchOptions, WatchUpdate } from "./resuming-watch.js";
export type { TlsClientFiles } from "./tls.js";
