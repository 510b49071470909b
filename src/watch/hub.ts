import { Code, ConnectError } from "@connectrpc/connect";
import type { Change } from "../store/change.js";
import type { ChangeLog } from "../store/change-log.js";
import { SINGLE_HISTORY, type RevisionHistory } from "./history.js";

/** Receives, synchronously and in revision order, the changes it registered for. */
export interface Subscriber {
  deliver(change: Change): void;
}

export interface StreamLimits {
  /** Most watch and track streams open at once on this server. */
  readonly maxStreams: number;
  /** Bytes of undelivered events a stream may hold before it gets a Resync (OVERFLOW). */
  readonly streamBufferBytes: number;
  /** Most keys one Track stream may track. */
  readonly maxTrackKeys: number;
}

export type StreamKind = "watch" | "track";

/**
 * Plain counters the streams bump as they deliver, read by the metrics
 * (src/telemetry); the hub itself knows nothing of telemetry.
 */
export class StreamCounters {
  /** Events sent on Watch streams ("watch") and invalidations sent on Track streams ("track"). */
  readonly delivered: Record<StreamKind, number> = { watch: 0, track: 0 };
  /** RESYNC messages sent, by stream kind and reason name (COMPACTED, OVERFLOW, FLUSH). */
  readonly resyncs: Record<StreamKind, Map<string, number>> = { watch: new Map(), track: new Map() };

  resync(kind: StreamKind, reason: string): void {
    const m = this.resyncs[kind];
    m.set(reason, (m.get(reason) ?? 0) + 1);
  }
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  maxStreams: 16_384,
  streamBufferBytes: 1024 * 1024,
  maxTrackKeys: 100_000,
};

/**
 * Fans the change log out to watch and track streams. Subscribers register
 * for exact keys or for prefixes; a flush goes to every subscriber, because it
 * touches every range.
 */
export class WatchHub {
  readonly limits: StreamLimits;
  private readonly byKey = new Map<string, Set<Subscriber>>();
  private readonly byPrefix = new Map<string, Set<Subscriber>>();
  private readonly everyone = new Set<Subscriber>();
  private openStreams = 0;
  private readonly openByKind: Record<StreamKind, number> = { watch: 0, track: 0 };
  readonly counters = new StreamCounters();
  private readonly unsubscribe: () => void;

  constructor(
    readonly log: ChangeLog,
    limits: Partial<StreamLimits> = {},
    /** Which history the log's revisions belong to, for resuming streams. */
    readonly history: RevisionHistory = SINGLE_HISTORY,
  ) {
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...limits };
    this.unsubscribe = log.subscribe((change) => this.dispatch(change));
  }

  get streams(): number {
    return this.openStreams;
  }

  /** Open streams of one kind. */
  streamsOf(kind: StreamKind): number {
    return this.openByKind[kind];
  }

  /** Takes a stream slot or throws RESOURCE_EXHAUSTED; call the result when the stream ends. */
  admit(kind: StreamKind): () => void {
    if (this.openStreams >= this.limits.maxStreams) {
      throw new ConnectError(
        `too many watch and track streams: the server allows ${this.limits.maxStreams} (--max-streams); retry later or on another node`,
        Code.ResourceExhausted,
      );
    }
    this.openStreams++;
    this.openByKind[kind]++;
    let released = false;
    return () => {
      if (!released) {
        this.openStreams--;
        this.openByKind[kind]--;
      }
      released = true;
    };
  }

  addSubscriber(subscriber: Subscriber): void {
    this.everyone.add(subscriber);
  }

  removeSubscriber(subscriber: Subscriber): void {
    this.everyone.delete(subscriber);
  }

  addKey(key: string, subscriber: Subscriber): void {
    addTo(this.byKey, key, subscriber);
  }

  removeKey(key: string, subscriber: Subscriber): void {
    removeFrom(this.byKey, key, subscriber);
  }

  addPrefix(prefix: string, subscriber: Subscriber): void {
    addTo(this.byPrefix, prefix, subscriber);
  }

  removePrefix(prefix: string, subscriber: Subscriber): void {
    removeFrom(this.byPrefix, prefix, subscriber);
  }

  close(): void {
    this.unsubscribe();
  }

  private dispatch(change: Change): void {
    if (change.type === "flush") {
      for (const s of this.everyone) s.deliver(change);
      return;
    }
    const exact = this.byKey.get(change.key);
    if (exact !== undefined) for (const s of exact) s.deliver(change);
    for (const [prefix, subscribers] of this.byPrefix) {
      if (change.key.startsWith(prefix)) for (const s of subscribers) s.deliver(change);
    }
  }
}

function addTo(index: Map<string, Set<Subscriber>>, name: string, subscriber: Subscriber): void {
  let set = index.get(name);
  if (set === undefined) index.set(name, (set = new Set()));
  set.add(subscriber);
}

function removeFrom(index: Map<string, Set<Subscriber>>, name: string, subscriber: Subscriber): void {
  const set = index.get(name);
  if (set === undefined) return;
  set.delete(subscriber);
  if (set.size === 0) index.delete(name);
}
