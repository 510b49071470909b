import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { ConflictError, type CandidateRecord, type LeaseRecord, type ResourceLock, type Versioned } from "./lock.js";

export interface ElectionTimings {
  /** Candidates take over a lease this long after they last saw it change. */
  readonly leaseDurationMs: number;
  /** The holder stops acting as primary this long after it sent its last successful renewal. */
  readonly renewDeadlineMs: number;
  /** Between two attempts (renewals, reads, acquisitions). */
  readonly retryPeriodMs: number;
}

/** How up to date a node's data is: its history's term first, then the revision. */
export interface Rank {
  readonly term: number;
  readonly history: string;
  readonly revision: number;
}

export interface ElectorOptions extends ElectionTimings {
  readonly group: string;
  readonly nodeId: string;
  /** HOST:PORT others reach this node at. */
  readonly address: string;
  readonly rank: () => Rank;
  /** The lease is ours: become primary of `term`. Leading starts only when this resolves. */
  readonly onStartedLeading: (term: number, reason: string) => Promise<void>;
  /** The lease is (or may be) lost: stop acknowledging writes at once. `validUntil`: when this node's lease stopped being valid (ms since the epoch). */
  readonly onStoppedLeading: (reason: string, validUntil: number) => void;
  /** Another node holds a valid lease (every read while it does). */
  readonly onLeader: (lease: LeaseRecord) => void;
  readonly log?: (msg: string, fields: Record<string, unknown>) => void;
}

/** What the elector knows, for Info and metrics. */
export interface ElectionStatus {
  readonly leading: boolean;
  /** The term of the lease last seen (ours when leading). */
  readonly term: number;
  readonly holder: string;
  readonly holderAddress: string;
  /** ms the lease is still ours for (0 when not leading). */
  readonly validForMs: number;
  /** Duration of the last successful renewal (ms), -1 before any. */
  readonly renewLatencyMs: number;
  readonly elections: number;
}

/**
 * Leader election over a ResourceLock, shared by every backend, in the manner
 * of client-go's leaderelection:
 *
 * - Expiry is judged by each node's own monotonic clock: a candidate may take
 *   the lease over `leaseDurationMs` after it last saw the record change, never
 *   by comparing wall clocks between machines.
 * - The holder renews every `retryPeriodMs` with a compare-and-swap on the
 *   record's version. Its lease is valid until `renewDeadlineMs` after it SENT
 *   its last successful renewal; since every other node saw that renewal
 *   after it was sent, and waits `leaseDurationMs` > `renewDeadlineMs` from
 *   then, the holder has stopped before anyone can take over, with
 *   `leaseDurationMs - renewDeadlineMs` to spare for differing clock rates.
 * - Each acquisition increments the record's term; a node leads only after a
 *   write of its own succeeded (also when the lease was handed to it).
 * - Who may acquire: only a candidate that no live candidate outranks (term of
 *   its history, then revision, then node id), so a node that restarted empty
 *   does not win while a peer holding the history is alive. A candidate is
 *   live while its record keeps changing (it republishes every retry period).
 */
/** Reads and writes a handover tries when its own renewals race it. */
const HANDOVER_ATTEMPTS = 3;

export class LeaderElector {
  readonly incarnation = randomBytes(8).toString("hex");
  private stopped = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private leading = false;
  /** performance.now() until which the lease is ours. */
  private validUntil = 0;
  private observed: Versioned<LeaseRecord> | undefined;
  private observedAt = 0;
  private readonly candidateSeen = new Map<string, { version: string; at: number }>();
  private beat = 0;
  private renewLatencyMs = -1;
  private elections = 0;
  private expiryTimer: NodeJS.Timeout | undefined;
  private lastDeferral = "";
  private lastError = "";
  /** When a handover made the lease invalid (performance.now()). */
  private invalidatedAt: number | undefined;

  constructor(
    private readonly lock: ResourceLock,
    private readonly options: ElectorOptions,
  ) {
    if (!(options.renewDeadlineMs < options.leaseDurationMs)) throw new Error("the renew deadline must be shorter than the lease duration");
    if (!(options.retryPeriodMs < options.renewDeadlineMs)) throw new Error("the retry period must be shorter than the renew deadline");
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Stops electing; a held lease is released (holder "") so that another node takes it at once. */
  async stop(release = true): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.running;
    if (this.leading) {
      const wasValid = this.holdsValidLease();
      this.stepDown("stopping");
      if (release && wasValid && this.observed !== undefined) {
        const rec = this.observed.value;
        await this.lock.update({ ...rec, holder: "", incarnation: "", renewTime: new Date().toISOString() }, this.observed.version).catch(() => undefined);
      }
    }
  }

  /** Whether this node holds the lease and it has not passed its renew deadline (checked on every write). */
  holdsValidLease(): boolean {
    return this.leading && performance.now() < this.validUntil;
  }

  status(): ElectionStatus {
    const lease = this.observed?.value;
    return {
      leading: this.leading,
      term: lease?.term ?? 0,
      holder: lease?.holder ?? "",
      holderAddress: lease?.address ?? "",
      validForMs: this.leading ? Math.max(0, Math.round(this.validUntil - performance.now())) : 0,
      renewLatencyMs: this.renewLatencyMs,
      elections: this.elections,
    };
  }

  /** Looks at the coordinator now rather than at the next retry (a peer named a newer term). */
  poke(): void {
    this.wake?.();
  }

  /**
   * Hands the lease to `node` (a live candidate): the record names it with
   * the next term, so it becomes primary at its next read; this node stops
   * leading at once. Returns the new term.
   */
  async handOver(candidate: CandidateRecord): Promise<number> {
    if (!this.holdsValidLease() || this.observed === undefined) throw new Error("this node does not hold the lease");
    const rec = this.observed.value;
    const now = new Date().toISOString();
    const next: LeaseRecord = { ...rec, holder: candidate.node, incarnation: candidate.incarnation, address: candidate.address, term: rec.term + 1, acquireTime: now, renewTime: now };
    // Invalid from here on (writes are refused), but the step-down (which ends the replicas' streams) waits for the
    // new record, so that the replica that looks at once sees itself named.
    this.validUntil = 0;
    this.invalidatedAt = performance.now();
    try {
      let read = this.observed;
      for (let attempt = 1; ; attempt++) {
        try {
          const version = await this.lock.update({ ...next, term: read.value.term + 1 }, read.version);
          this.observed = { value: { ...next, term: read.value.term + 1 }, version };
          this.observedAt = performance.now();
          break;
        } catch (err) {
          // A renewal of this node's own may have raced the handover: read again, hand over if the lease is still ours.
          if (!(err instanceof ConflictError) || attempt >= HANDOVER_ATTEMPTS) throw err;
          const fresh = await this.lock.get();
          if (fresh === undefined || fresh.value.holder !== this.options.nodeId || fresh.value.incarnation !== this.incarnation) throw err;
          read = fresh;
        }
      }
    } finally {
      this.stepDown(`handed over to ${candidate.node}`);
      this.wake?.();
    }
    return this.observed.value.term;
  }

  /** Candidates seen live (their record changed within the lease duration), this node included. */
  async liveCandidates(): Promise<CandidateRecord[]> {
    const all = await this.lock.candidates();
    const now = performance.now();
    const live: CandidateRecord[] = [];
    for (const c of all) {
      const seen = this.candidateSeen.get(c.value.node);
      if (seen === undefined || seen.version !== c.version) this.candidateSeen.set(c.value.node, { version: c.version, at: now });
      const at = this.candidateSeen.get(c.value.node)?.at ?? now;
      if (c.value.node === this.options.nodeId ? c.value.incarnation === this.incarnation : now - at < this.options.leaseDurationMs) live.push(c.value);
    }
    return live;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const started = performance.now();
      try {
        await this.tick();
        this.lastError = "";
      } catch (err) {
        // Once per distinct error, not every retry period.
        const error = err instanceof Error ? err.message : String(err);
        if (error !== this.lastError) this.options.log?.("coordinator unreachable", { group: this.options.group, lock: this.lock.description, error });
        this.lastError = error;
      }
      if (this.stopped) break;
      const delay = Math.max(0, this.options.retryPeriodMs - (performance.now() - started));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, delay);
        this.wake = done;
        function done() {
          clearTimeout(timer);
          resolve();
        }
      });
      this.wake = undefined;
    }
  }

  private rankRecord(): CandidateRecord {
    const r = this.options.rank();
    return { node: this.options.nodeId, incarnation: this.incarnation, address: this.options.address, term: r.term, history: r.history, revision: r.revision, beat: ++this.beat };
  }

  private async tick(): Promise<void> {
    // Published even when the lease cannot be read: liveness and rank are separate from the lease.
    const published = this.lock.publish(this.rankRecord()).then(
      () => undefined,
      (err: unknown) => err,
    );
    const got = await this.lock.get();
    const publishError = await published;
    if (publishError !== undefined) this.options.log?.("could not publish candidacy", { group: this.options.group, error: publishError instanceof Error ? publishError.message : String(publishError) });
    const readAt = performance.now();
    if (got?.version !== this.observed?.version) this.observedAt = readAt;
    this.observed = got;
    const rec = got?.value;
    const ours = rec !== undefined && rec.holder === this.options.nodeId && rec.incarnation === this.incarnation;
    if (ours) {
      await this.renew(got!);
      return;
    }
    if (this.leading) this.stepDown(rec === undefined ? "the lease record is gone" : `the lease is held by ${rec.holder || "nobody"} (term ${rec.term})`);
    // A record naming this node with another incarnation is its previous process's: that process is gone.
    const previousLife = rec !== undefined && rec.holder === this.options.nodeId;
    if (rec !== undefined && rec.holder !== "" && !previousLife && readAt - this.observedAt < this.options.leaseDurationMs) {
      this.options.onLeader(rec);
      return;
    }
    if (previousLife) {
      // Released rather than taken: the most up-to-date live candidate, maybe not this one, takes it next.
      await this.lock.update({ ...rec, holder: "", incarnation: "", renewTime: new Date().toISOString() }, got!.version).catch((err: unknown) => {
        if (!(err instanceof ConflictError)) throw err;
      });
      this.options.log?.("released the lease of this node's previous process", { group: this.options.group, term: rec.term });
      return;
    }
    if (!(await this.mayAcquire())) return;
    const now = new Date().toISOString();
    const next: LeaseRecord = {
      holder: this.options.nodeId,
      incarnation: this.incarnation,
      address: this.options.address,
      term: (rec?.term ?? 0) + 1,
      leaseDurationMs: this.options.leaseDurationMs,
      acquireTime: now,
      renewTime: now,
    };
    const sentAt = performance.now();
    let version: string;
    try {
      version = got === undefined ? await this.lock.create(next) : await this.lock.update(next, got.version);
    } catch (err) {
      if (err instanceof ConflictError) return; // another candidate was first
      throw err;
    }
    this.acquired(next, version, sentAt);
    const reason =
      rec === undefined ? "no lease existed" : rec.holder === "" ? `the lease was released by its holder` : `the lease of ${rec.holder} (term ${rec.term}) expired`;
    await this.startLeading(next.term, reason);
  }

  private acquired(rec: LeaseRecord, version: string, sentAt: number): void {
    this.observed = { value: rec, version };
    this.observedAt = performance.now();
    // A renewal that raced a handover does not make the lease valid again.
    this.validUntil = this.invalidatedAt !== undefined ? 0 : sentAt + this.options.renewDeadlineMs;
    this.renewLatencyMs = Math.round((performance.now() - sentAt) * 10) / 10;
    this.armExpiry();
  }

  private async startLeading(term: number, reason: string): Promise<void> {
    this.elections++;
    this.leading = true;
    this.lastDeferral = "";
    try {
      await this.options.onStartedLeading(term, reason);
    } catch (err) {
      this.stepDown(`could not become primary: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async renew(got: Versioned<LeaseRecord>): Promise<void> {
    const rec: LeaseRecord = { ...got.value, address: this.options.address, leaseDurationMs: this.options.leaseDurationMs, renewTime: new Date().toISOString() };
    const sentAt = performance.now();
    try {
      const version = await this.lock.update(rec, got.version);
      this.acquired(rec, version, sentAt);
    } catch (err) {
      if (err instanceof ConflictError) {
        if (this.leading) this.stepDown("the lease changed under its holder");
        return;
      }
      throw err;
    }
    // Handed over to this node, or this node's renewal after a restart of its elector.
    if (!this.leading) await this.startLeading(rec.term, "the lease was handed to this node");
  }

  /** Steps down when the renew deadline passes without a renewal, even while a renewal call hangs. */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(() => {
      if (this.leading && performance.now() >= this.validUntil) this.stepDown(`no renewal within the renew deadline (${this.options.renewDeadlineMs} ms)`);
    }, Math.max(0, this.validUntil - performance.now()) + 1);
    this.expiryTimer.unref();
  }

  private stepDown(reason: string): void {
    clearTimeout(this.expiryTimer);
    if (!this.leading) return;
    const now = performance.now();
    const ended = this.invalidatedAt ?? (this.validUntil === 0 ? now : Math.min(now, this.validUntil));
    this.leading = false;
    this.validUntil = 0;
    this.invalidatedAt = undefined;
    this.options.onStoppedLeading(reason, Math.round(performance.timeOrigin + ended));
  }

  /** Whether no live candidate outranks this node. */
  private async mayAcquire(): Promise<boolean> {
    const me = this.rankRecord();
    const better = (await this.liveCandidates()).filter((c) => c.node !== me.node && outranks(c, me));
    if (better.length === 0) return true;
    const who = better.map((c) => `${c.node} (term ${c.term}, revision ${c.revision})`).join(", ");
    if (who !== this.lastDeferral) {
      this.lastDeferral = who;
      this.options.log?.("not a candidate: a live peer is more up to date", { group: this.options.group, term: me.term, revision: me.revision, peers: who });
    }
    return false;
  }
}

/** Whether candidate `a` should win over `b`: the later term of history, then the higher revision, then the smaller node id. */
export function outranks(a: Rank & { node: string }, b: Rank & { node: string }): boolean {
  if (a.term !== b.term) return a.term > b.term;
  if (a.revision !== b.revision) return a.revision > b.revision;
  return a.node < b.node;
}
