import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  SyncResponseSchema,
  type ReplicatedChange,
  type SyncRequest,
  type SyncResponse,
} from "../gen/ripplecache/v1/replication_pb.js";
import type { Change } from "../store/change.js";
import { changeBytes, type ChangeLog } from "../store/change-log.js";
import type { CacheStore } from "../store/store.js";
import { ChangeQueue } from "../watch/change-queue.js";
import { releaseOnAbort } from "../watch/watch-stream.js";
import type { WatchHub } from "../watch/hub.js";
import type { NodeRole } from "./node-role.js";
import type { Context } from "@opentelemetry/api";
import { startActivity, type Activity } from "../telemetry/spans.js";
import { encodeChangeBatch, WIRE_TYPES } from "./change-batch-wire.js";

type SyncResponseInit = MessageInitShape<typeof SyncResponseSchema>;

export interface ReplicationSourceOptions {
  /** Bytes of changes a replica may be behind on its stream before the primary drops it (it then resyncs). */
  readonly bufferBytes: number;
  /** Heartbeat after this long without changes. */
  readonly heartbeatMs: number;
  /** A replica named a later term than this node's: this node has lost its lease (the coordinator is asked again). */
  readonly onNewerTerm?: (term: number, replica: string) => void;
}

/** Entries per snapshot chunk, and the soft byte bound of one chunk. */
const CHUNK_ENTRIES = 1000;
const CHUNK_BYTES = 1024 * 1024;
/** Changes per ChangeBatch. */
const BATCH_CHANGES = 1000;


/** A replica connected to this primary. */
interface ReplicaLink {
  readonly address: string;
  ackedRevision: number;
  state: "full-resync" | "partial-resync" | "streaming";
  fullResyncs: number;
  /** (last revision, time sent) of batches not yet acknowledged, oldest first: the lag in time. */
  readonly unacked: { revision: number; at: number }[];
  /** Set by closeLinks: the stream ends (this node stopped being primary). */
  closed: boolean;
  readonly queue: ChangeQueue;
}

/** Totals per replica address that ever connected, kept across reconnects (for metrics). */
export interface ReplicaTotals {
  readonly address: string;
  readonly connected: boolean;
  readonly fullResyncs: number;
  /** Bytes of keys and values sent (snapshot entries and changes, including a fixed overhead per change). */
  readonly bytesSent: number;
}

export interface ReplicaStatus {
  readonly address: string;
  readonly ackedRevision: number;
  readonly lagRevisions: number;
  readonly lagMs: number;
  readonly state: string;
  readonly fullResyncs: number;
}

/**
 * The primary's side of replication. Each Sync stream follows this protocol,
 * top to bottom:
 *
 * 1. HELLO. The replica says which history it holds (replication id) and the
 *    last revision it applied.
 * 2. DECIDE. The stream registers for every change first and notes the
 *    latest revision R; from here on every change after R is queued.
 *    - PARTIAL when the replica's history is ours (or the one we continued
 *      after a promotion, up to where we left it) and the change log still
 *      holds every revision after its applied one: send those up to R.
 *    - FULL otherwise: send the dataset in bounded chunks, then DONE at R.
 *      Entries are read lazily while writes go on; any entry changed after R
 *      is also in the queue, and replaying it later makes the replica exact.
 * 3. STREAM. Queued changes in batches; a heartbeat when idle. The replica
 *    acknowledges applied revisions, which measure its lag and satisfy
 *    `min_replicas` waits. A replica that falls more than the buffer behind
 *    is dropped; it reconnects and resyncs.
 *
 * Latency: a write's changes reach the queue during the write and wake the
 * stream, so their batch is sent in the same turn of the event loop as the
 * write's answer (no timer, no flush interval; a batch takes what queued
 * while the previous one was being written). The replica asks for no
 * compression (at 20,000 writes/s gzip took 11% of the primary's CPU and 18%
 * of the replica's, with thread-pool hops per batch) and grants 1 MiB HTTP/2
 * windows, so a replica briefly off its CPU is sent everything at once when
 * it runs again (ReplicaFollower, follower.ts).
 */
export class ReplicationSource {
  private readonly links = new Set<ReplicaLink>();
  private readonly ackWaiters = new Set<() => void>();
  /** Full resyncs per replica address, kept across reconnects. */
  private readonly fullResyncCounts = new Map<string, number>();
  /** Bytes sent per replica address, kept across reconnects. */
  private readonly sentBytes = new Map<string, number>();

  constructor(
    private readonly store: CacheStore,
    private readonly log: ChangeLog,
    private readonly hub: WatchHub,
    private readonly role: NodeRole,
    private readonly options: ReplicationSourceOptions,
  ) {}

  get replicaCount(): number {
    return this.links.size;
  }

  status(): ReplicaStatus[] {
    const latest = this.log.latestRevision;
    const now = Date.now();
    return [...this.links].map((l) => ({
      address: l.address,
      ackedRevision: l.ackedRevision,
      lagRevisions: Math.max(0, latest - l.ackedRevision),
      lagMs: l.unacked.length > 0 ? now - l.unacked[0].at : 0,
      state: l.state,
      fullResyncs: l.fullResyncs,
    }));
  }

  totals(): ReplicaTotals[] {
    const connected = new Set([...this.links].map((l) => l.address));
    return [...this.sentBytes.keys()].map((address) => ({
      address,
      connected: connected.has(address),
      fullResyncs: this.fullResyncCounts.get(address) ?? 0,
      bytesSent: this.sentBytes.get(address) ?? 0,
    }));
  }

  private countSent(address: string, bytes: number): void {
    this.sentBytes.set(address, (this.sentBytes.get(address) ?? 0) + bytes);
  }

  /** Waits until `count` replicas (of `address` only, when given) acknowledged `revision` or `timeoutMs` passes; returns how many did. */
  async waitForAcks(revision: number, count: number, timeoutMs: number, signal: AbortSignal, address?: string): Promise<number> {
    const acked = () => [...this.links].filter((l) => l.ackedRevision >= revision && (address === undefined || (l.address === address && l.state === "streaming"))).length;
    const deadline = Date.now() + timeoutMs;
    while (acked() < count && !signal.aborted) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          this.ackWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        signal.addEventListener("abort", done, { once: true });
        this.ackWaiters.add(done);
      });
    }
    return acked();
  }

  /**
   * One replica's Sync stream. `binary`: the call's codec is protobuf binary
   * (not JSON), so batches of changes can be sent already encoded (see
   * `batch`). `trace` is the call's trace context, the parent of its
   * full-resync span.
   */
  async *sync(requests: AsyncIterable<SyncRequest>, signal: AbortSignal, peer: string, binary: boolean, trace?: Context): AsyncGenerator<SyncResponseInit | SyncResponse> {
    if (this.role.isReplica) {
      throw new ConnectError(`this node is a replica of ${this.role.primaryAddress}: replicate from the primary`, Code.FailedPrecondition);
    }
    const it = requests[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.kind.case !== "hello") {
      throw new ConnectError("the first Sync message must be a hello", Code.InvalidArgument);
    }
    const hello = first.value.kind.value;
    const applied = Number(hello.appliedRevision);
    const address = hello.address !== "" ? hello.address : peer;
    if (Number(hello.term) > this.role.term) {
      this.options.onNewerTerm?.(Number(hello.term), address);
      throw new ConnectError(`this node's term ${this.role.term} is older than the replica's term ${hello.term}: it no longer holds the lease`, Code.FailedPrecondition);
    }

    const queue = new ChangeQueue(this.options.bufferBytes);
    this.hub.addSubscriber(queue);
    this.hub.addPrefix("", queue);
    const link: ReplicaLink = { address, ackedRevision: applied, state: "partial-resync", fullResyncs: this.fullResyncCounts.get(address) ?? 0, unacked: [], closed: false, queue };
    this.links.add(link);
    this.countSent(address, 0);
    const reader = this.readAcks(it, link, queue);
    let fullResync: Activity | undefined;
    // On abort as well as in the finally: a replica that stops reading and
    // then vanishes leaves this generator suspended at a yield whose write
    // waits for a "drain" that never comes, and the finally would never run
    // (the link, its queue and its hub subscription held forever; found by
    // test/chaos.test.ts). The signal does abort: connect-node listens for "close".
    const unregister = releaseOnAbort(signal, () => {
      fullResync?.fail("the Sync stream ended before the snapshot was done");
      this.hub.removePrefix("", queue);
      this.hub.removeSubscriber(queue);
      queue.close();
      this.links.delete(link);
      this.notifyAcks();
    });
    try {
      const from = applied + 1;
      const registeredAt = this.log.latestRevision;
      const id = this.role.replicationId;
      const term = BigInt(this.role.term);
      if (this.continuesOurHistory(hello.replicationId, applied)) {
        yield { kind: { case: "partial", value: { replicationId: id, fromRevision: BigInt(from), term } } };
        for (let r = from; r <= registeredAt; ) {
          const chunk = this.log.readFrom(r, BATCH_CHANGES);
          if (chunk === "compacted") throw new ConnectError("the change log moved past this replica during its resync; reconnect", Code.Aborted);
          const upTo = chunk.filter((c) => c.revision <= registeredAt);
          if (upTo.length === 0) break;
          r += upTo.length;
          yield this.batch(link, upTo, binary);
        }
      } else {
        link.state = "full-resync";
        link.fullResyncs++;
        // The revision in the hello belongs to another history: acks count from zero.
        link.ackedRevision = 0;
        this.fullResyncCounts.set(address, link.fullResyncs);
        fullResync = startActivity("ripplecache.replication.full_resync", {
          "ripplecache.replication.role": "primary",
          "ripplecache.replica.address": address,
          "ripplecache.replication.revision": registeredAt,
        }, false, trace);
        let sentEntries = 0;
        let sentBytes = 0;
        yield { kind: { case: "full", value: { replicationId: id, revision: BigInt(registeredAt), term } } };
        for (let cursor = 0; cursor >= 0; ) {
          const page = this.store.snapshotPage(cursor, CHUNK_ENTRIES);
          cursor = page.next;
          let bytes = 0;
          let entries: typeof page.entries = [];
          for (const e of page.entries) {
            entries.push(e);
            bytes += e.key.length + e.value.byteLength;
            if (bytes >= CHUNK_BYTES) {
              sentEntries += entries.length;
              sentBytes += bytes;
              this.countSent(address, bytes);
              yield this.chunk(entries);
              entries = [];
              bytes = 0;
            }
          }
          if (entries.length > 0) {
            sentEntries += entries.length;
            sentBytes += bytes;
            this.countSent(address, bytes);
            yield this.chunk(entries);
          }
          if (signal.aborted) return;
          if (link.closed) throw closedError();
        }
        yield { kind: { case: "done", value: { revision: BigInt(registeredAt) } } };
        fullResync.end({ "ripplecache.replication.entries": sentEntries, "ripplecache.replication.bytes": sentBytes });
        link.unacked.push({ revision: registeredAt, at: Date.now() });
      }
      link.state = "streaming";

      while (!signal.aborted) {
        if (link.closed) throw closedError();
        if (queue.takeOverflow()) {
          throw new ConnectError(`replica ${address} fell more than ${this.options.bufferBytes} bytes behind; it must resync`, Code.ResourceExhausted);
        }
        const changes = queue.take(BATCH_CHANGES);
        if (changes.length > 0) {
          yield this.batch(link, changes, binary);
          continue;
        }
        if ((await queue.wait(this.options.heartbeatMs, signal)) === "timeout") {
          yield { kind: { case: "heartbeat", value: { revision: BigInt(this.log.latestRevision), timeMs: BigInt(Date.now()) } } };
        }
      }
    } finally {
      unregister();
      void reader;
    }
  }

  /** Ends every replica's stream: this node is no longer primary (it lost or handed over its lease). */
  closeLinks(): void {
    for (const link of this.links) {
      link.closed = true;
      link.queue.wake();
    }
  }

  /** Whether a replica at `applied` of history `id` can continue from our change log. */
  private continuesOurHistory(id: string, applied: number): boolean {
    const logHolds = applied + 1 >= this.log.oldestRevision && applied <= this.log.latestRevision;
    if (!logHolds || id === "") return false;
    if (id === this.role.replicationId) return true;
    const previous = this.role.previous;
    return previous !== undefined && id === previous.id && applied <= previous.upTo;
  }

  /**
   * SyncResponse{changes} of `changes`. In binary, the ChangeBatch is encoded
   * here by hand (change-batch-wire.ts; the reflective encoder was a fifth of a
   * busy primary's CPU) and handed to protobuf-es as the message's unknown
   * field 5: toBinary writes unknown fields as they are, tag then bytes, so the
   * bytes on the wire are those of `kind: {case: "changes"}`. JSON has no
   * unknown fields: a JSON call gets the message built field by field.
   */
  private batch(link: ReplicaLink, changes: readonly Change[], binary: boolean): SyncResponseInit | SyncResponse {
    link.unacked.push({ revision: changes[changes.length - 1].revision, at: Date.now() });
    let bytes = 0;
    for (const c of changes) bytes += changeBytes(c);
    this.countSent(link.address, bytes);
    if (binary) {
      const message = create(SyncResponseSchema);
      message.$unknown = [{ no: 5, wireType: WireType.LengthDelimited, data: encodeChangeBatch(changes, true) }];
      return message;
    }
    const wire: Omit<ReplicatedChange, "$typeName">[] = changes.map((c) => ({
      type: WIRE_TYPES[c.type],
      revision: BigInt(c.revision),
      key: c.key,
      value: c.value ?? EMPTY,
      flags: c.flags,
      expiresAtMs: BigInt(c.expiresAt),
    }));
    return { kind: { case: "changes", value: { changes: wire } } };
  }

  private chunk(entries: readonly { key: string; value: Uint8Array; revision: number; expiresAt: number; flags: number }[]): SyncResponseInit {
    return {
      kind: {
        case: "chunk",
        value: { entries: entries.map((e) => ({ key: e.key, value: e.value, revision: BigInt(e.revision), expiresAtMs: BigInt(e.expiresAt), flags: e.flags })) },
      },
    };
  }

  private async readAcks(it: AsyncIterator<SyncRequest>, link: ReplicaLink, queue: ChangeQueue): Promise<void> {
    try {
      for (let next = await it.next(); !next.done; next = await it.next()) {
        const k = next.value.kind;
        if (k.case !== "ack") continue;
        const revision = Number(k.value.appliedRevision);
        // Before the comparison: an idle new replica acknowledges a snapshot at the revision it
        // already reported (0 on a fresh pair), which must still clear the snapshot's lag entry.
        while (link.unacked.length > 0 && link.unacked[0].revision <= revision) link.unacked.shift();
        if (revision <= link.ackedRevision) continue;
        link.ackedRevision = revision;
        this.notifyAcks();
      }
    } catch {
      // The stream ended; the generator's finally cleans up.
    } finally {
      queue.wake();
    }
  }

  private notifyAcks(): void {
    const waiters = [...this.ackWaiters];
    this.ackWaiters.clear();
    for (const w of waiters) w();
  }
}

function closedError(): ConnectError {
  return new ConnectError("this node is no longer the primary: follow the lease's holder", Code.Unavailable);
}

const EMPTY = new Uint8Array(0);
