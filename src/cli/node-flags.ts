/**
 * V8 flags the server runs with: package.json's `start`, the `ripplecache`
 * command's shebang, the Dockerfile's entrypoint, `npm run cluster` and the
 * bench start it so (V8 reads them when the process starts: NODE_OPTIONS
 * refuses them and `v8.setFlagsFromString` comes too late);
 * test/node-flags.test.ts and test/k8s.test.ts keep those places in step.
 *
 * --initial-old-space-size=64: V8 starts a full collection when the old
 * generation's room left is less than the young generation could promote. A
 * small dataset (the lag bench's 10,000 keys: a 14 MB old generation) after a
 * burst of writes has grown its young generation to 2 x 16 MB, and from then on
 * every young-generation fill ran a Mark-Compact instead of a scavenge: one a
 * second at 20,000 writes/s, each pausing the primary and its replica 5-12 ms,
 * for as long as the process ran (--trace-gc; Node 20 and 22 alike). A 64 MB
 * floor under the old generation's limit leaves that room (0-1 of them in 8 s
 * instead of 4-8; the bench's replication lag p99 at 20,000 writes/s 4.5-5.3
 * ms instead of 10.8-11.2). Its cost: up to 64 MB of garbage before the first
 * full collection of a small process. A large dataset's limit is above it
 * anyway.
 */
export const SERVER_NODE_FLAGS: readonly string[] = ["--initial-old-space-size=64"];
