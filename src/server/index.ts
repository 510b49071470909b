// Embedding the server: `import { resolveConfig, startServer } from "ripplecache/server"`.
// resolveConfig({}) gives the defaults (and reads RIPPLECACHE_* from the environment).
export { startServer } from "./server.js";
export type { RunningServer } from "./server.js";
export { ConfigError, SETTINGS, envName, parseBytes, resolveConfig } from "./config.js";
export type { ServerConfig } from "./config.js";
export { configureLogging } from "../log.js";
export type { LogLevel } from "../log.js";
