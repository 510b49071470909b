import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ClientHttp2Stream, ClientSessionRequestOptions, Http2Session, OutgoingHttpHeaders, SecureClientSessionOptions } from "node:http2";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, type Http2SessionManager } from "@connectrpc/connect-node";
import { GuardedHttp2Sessions } from "../client/http2-sessions.js";
import { baseUrl, sendBearerToken } from "../client/client.js";
import { PushQueue } from "../client/push-queue.js";
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import { ReplicationService, SyncResponseEncodedSchema, type SyncRequestSchema } from "../gen/ripplecache/v1/replication_pb.js";
import type { CacheStore } from "../store/store.js";
import type { NodeRole } from "./node-role.js";
import { startActivity, type Activity } from "../telemetry/spans.js";
import { decodeChangeBatch, WireError } from "./change-batch-wire.js";

type SyncRequestInit = MessageInitShape<typeof SyncRequestSchema>;

export interface FollowerOptions {
  readonly primaryAddress: string;
  /** Sent as the bearer token of the Sync stream. */
  readonly token?: string;
  /** This node's client address, reported to the primary for its Info. */
  readonly ownAddress: string;
  /** The term of the lease the primary was seen to hold (0 without a coordinator): an older primary is refused. */
  readonly term?: number;
  /** The link is considered dead after this long without a message (the primary heartbeats more often). */
  readonly silenceTimeoutMs: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly log?: (msg: string, fields: Record<string, unknown>) => void;
  /** Called each time the stream to the primary ends (the coordinator looks at the lease at once). */
  readonly onLinkDown?: () => void;
  /** Set: the primary is reached over TLS (https) with these http2.connect options (--replication-tls-*). */
  readonly tls?: SecureClientSessionOptions;
}

class ProtocolError extends Error {}
/** The primary answered with an older term than its lease's: it is a deposed primary (the replica waits to be re-pointed). */
class StaleTermError extends Error {}

/**
 * ReplicationService as a replica calls it: Sync's answers read as
 * SyncResponseEncoded, the same bytes with each ChangeBatch left encoded, for
 * decodeChangeBatch (change-batch-wire.ts) to turn into the store's changes
 * without a message object per change. Only the output's type differs; the
 * path and the request are Sync's.
 */
const syncAsReplica = { ...ReplicationService.method.sync, output: SyncResponseEncodedSchema };
const ReplicaSyncService = {
  ...ReplicationService,
  methods: [syncAsReplica],
  method: { sync: syncAsReplica },
} as unknown as GenService<{ sync: { methodKind: "bidi_streaming"; input: typeof SyncRequestSchema; output: typeof SyncResponseEncodedSchema } }>;

/**
 * The HTTP/2 flow-control window the replica grants the primary, for the Sync
 * stream and for the connection (HTTP/2's default is 64 KiB for each). At
 * 20,000 writes/s of 100-byte values 64 KiB is 26 ms of changes: when the
 * replica is off its CPU longer than that, the primary stops sending and, once
 * the replica runs again, sends the rest one WINDOW_UPDATE round trip per
 * 32 KiB, so a short stall turned into a longer lag. 1 MiB is 400 ms of
 * changes at that rate (and one snapshot chunk), and well within Node's
 * default 10 MiB of session memory.
 */
const WINDOW_BYTES = 1024 * 1024;

/** Sessions whose connection window is widened to WINDOW_BYTES; the stream window comes from the SETTINGS. */
class WideWindowSessions extends GuardedHttp2Sessions {
  private widened: Http2Session | undefined;

  override async request(method: string, path: string, headers: OutgoingHttpHeaders, options: Omit<ClientSessionRequestOptions, "signal">): Promise<ClientHttp2Stream> {
    const stream = await super.request(method, path, headers, options);
    // The connection window has no SETTINGS entry: it is widened on the session, once per connection.
    const session = stream.session;
    if (session !== undefined && session !== this.widened && !session.destroyed) {
      session.setLocalWindowSize(WINDOW_BYTES);
      this.widened = session;
    }
    return stream;
  }
}

/**
 * The replica's side of replication: keeps one Sync stream to the primary
 * open, applies what it sends with the primary's revisions, and acknowledges.
 *
 * States (NodeRole.linkState): "connecting" until the primary answers;
 * "full-sync" while a snapshot loads (reads answer UNAVAILABLE: the dataset
 * is partial); "streaming" once the replica holds a complete history;
 * "disconnected" between attempts, which back off exponentially with full
 * jitter. Any break in the stream of revisions is a protocol error: the
 * replica forgets its history id, so the next attempt is a full resync.
 */
export class ReplicaFollower {
  private stopped = false;
  private current: AbortController | undefined;
  private readonly sessions: Http2SessionManager;
  private readonly client;
  private running: Promise<void> | undefined;
  /** Ends the wait between attempts early (stop, promote, re-point). */
  private wakeFromBackoff: (() => void) | undefined;

  constructor(
    private readonly store: CacheStore,
    private readonly role: NodeRole,
    private readonly options: FollowerOptions,
  ) {
    const url = options.tls === undefined ? baseUrl(options.primaryAddress) : baseUrl(options.primaryAddress).replace(/^http:/, "https:");
    this.sessions = new WideWindowSessions(
      url,
      { pingIntervalMs: Math.max(1000, options.silenceTimeoutMs / 2), pingTimeoutMs: options.silenceTimeoutMs },
      { ...options.tls, settings: { ...options.tls?.settings, initialWindowSize: WINDOW_BYTES } },
    );
    const interceptors: Interceptor[] = options.token === undefined ? [] : [sendBearerToken(options.token)];
    // No compression on the Sync stream (acceptCompression: [] keeps the primary
    // from gzipping it): at 20,000 writes/s gzip and gunzip took 11% of the
    // primary's CPU and 18% of the replica's, and zlib runs each message through
    // the thread pool and back, a hop per batch on the lag path. Replication
    // runs inside a cluster's network, where bytes are cheaper than latency.
    this.client = createClient(ReplicaSyncService, createGrpcTransport({ baseUrl: url, sessionManager: this.sessions, interceptors, acceptCompression: [] }));
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort();
    this.wakeFromBackoff?.();
    await this.running;
    this.sessions.abort();
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const ok = await this.follow();
      if (this.stopped) break;
      this.options.onLinkDown?.();
      this.role.linkState = "disconnected";
      if (this.role.linkDownSince === 0) this.role.linkDownSince = Date.now();
      this.role.changed();
      failures = ok ? 0 : failures + 1;
      const delay = Math.random() * Math.min(this.options.maxBackoffMs, this.options.initialBackoffMs * 2 ** failures);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, delay);
        this.wakeFromBackoff = done;
        function done() {
          clearTimeout(timer);
          resolve();
        }
      });
      this.wakeFromBackoff = undefined;
    }
  }

  /** One Sync stream, from hello to its end. Returns true if it got as far as streaming. */
  private async follow(): Promise<boolean> {
    const abort = new AbortController();
    this.current = abort;
    const requests = new PushQueue<SyncRequestInit>();
    const store = this.store;
    const role = this.role;
    const knownId = role.loadingSnapshot ? "" : role.replicationId;
    const minTerm = this.options.term ?? 0;
    requests.push({ kind: { case: "hello", value: { replicationId: knownId, appliedRevision: BigInt(store.currentRevision), address: this.options.ownAddress, term: BigInt(minTerm) } } });
    const checkTerm = (term: bigint) => {
      if (Number(term) < minTerm) throw new StaleTermError(`${this.options.primaryAddress} answered with term ${term}, older than the lease's term ${minTerm}`);
    };
    role.linkState = "connecting";
    role.changed();
    const silence = setTimeout(() => abort.abort(), this.options.silenceTimeoutMs);
    let reachedStreaming = false;
    let snapshotId = "";
    let snapshotTerm = 0;
    let fullResync: Activity | undefined;
    let loadedEntries = 0;
    const ack = (revision: number) => requests.push({ kind: { case: "ack", value: { appliedRevision: BigInt(revision) } } });
    const streaming = () => {
      reachedStreaming = true;
      role.linkState = "streaming";
      role.synced = true;
      role.loadingSnapshot = false;
      role.linkDownSince = 0;
      role.changed();
    };
    try {
      for await (const res of this.client.sync(requests, { signal: abort.signal, timeoutMs: 0 })) {
        // Re-armed, not made anew: this runs for every batch.
        silence.refresh();
        const k = res.kind;
        switch (k.case) {
          case "partial":
            checkTerm(k.value.term);
            if (Number(k.value.fromRevision) !== store.currentRevision + 1) throw new ProtocolError("partial resync does not start after the applied revision");
            role.replicationId = k.value.replicationId;
            role.term = Number(k.value.term);
            this.options.log?.("partial resync", { primary: this.options.primaryAddress, from: Number(k.value.fromRevision) });
            streaming();
            break;
          case "full":
            checkTerm(k.value.term);
            // Until DONE the dataset is partial: forget the history id so a
            // broken snapshot leads to another full resync, never to a mix.
            snapshotId = k.value.replicationId;
            snapshotTerm = Number(k.value.term);
            role.replicationId = "";
            role.term = 0;
            role.loadingSnapshot = true;
            role.linkState = "full-sync";
            role.changed();
            this.options.log?.("full resync", { primary: this.options.primaryAddress, revision: Number(k.value.revision) });
            fullResync?.fail("a new full resync began");
            fullResync = startActivity("ripplecache.replication.full_resync", {
              "ripplecache.replication.role": "replica",
              "ripplecache.replication.primary": this.options.primaryAddress,
              "ripplecache.replication.revision": Number(k.value.revision),
            }, true);
            loadedEntries = 0;
            store.beginSnapshot(Number(k.value.revision));
            break;
          case "chunk":
            if (!role.loadingSnapshot) throw new ProtocolError("snapshot chunk outside a full resync");
            for (const e of k.value.entries) {
              store.loadSnapshotEntry({ key: e.key, value: e.value, revision: Number(e.revision), expiresAt: Number(e.expiresAtMs), flags: e.flags });
            }
            loadedEntries += k.value.entries.length;
            break;
          case "done":
            if (!role.loadingSnapshot) throw new ProtocolError("snapshot done outside a full resync");
            role.replicationId = snapshotId;
            role.term = snapshotTerm;
            fullResync?.end({ "ripplecache.replication.entries": loadedEntries });
            streaming();
            ack(store.currentRevision);
            break;
          case "changes":
            if (role.loadingSnapshot) throw new ProtocolError("changes before the snapshot was done");
            for (const c of decodeChangeBatch(k.value)) {
              if (c.revision !== store.currentRevision + 1) throw new ProtocolError(`change ${c.revision} does not follow applied revision ${store.currentRevision}`);
              store.applyChange(c);
            }
            ack(store.currentRevision);
            break;
          case "heartbeat":
            break;
        }
      }
    } catch (err) {
      fullResync?.fail(err);
      if (err instanceof ProtocolError || err instanceof WireError) {
        role.replicationId = "";
        this.options.log?.("replication protocol error", { error: err.message });
      } else if (err instanceof StaleTermError) {
        this.options.log?.("refused a primary of an older term", { error: err.message });
      } else if (!this.stopped) {
        this.options.log?.("replication link down", { primary: this.options.primaryAddress, error: err instanceof Error ? err.message : String(err) });
      }
    } finally {
      fullResync?.fail("the Sync stream ended before the snapshot was done");
      clearTimeout(silence);
      requests.close();
      abort.abort();
    }
    return reachedStreaming;
  }
}
