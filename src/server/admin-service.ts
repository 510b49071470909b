import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { context } from "@opentelemetry/api";
import { CacheClient } from "../client/client.js";
import type { TlsClientFiles } from "../client/tls.js";
import type { CoordinatedNode } from "../coordination/coordinated-node.js";
import { Role } from "../gen/ripplecache/v1/cache_pb.js";
import { AdminService } from "../gen/ripplecache/v1/replication_pb.js";
import type { Replication } from "../replication/replication.js";
import type { CacheStore } from "../store/store.js";

export interface AdminOptions {
  /** With a coordinator, the lease decides roles: Promote and ReplicaOf are refused, Failover hands the lease over. */
  readonly coordination?: CoordinatedNode;
  /** How this node calls its primary's Info before a promotion (the token and TLS files replicas use). */
  readonly peer?: { readonly token?: string; readonly adminToken?: string; readonly tls?: TlsClientFiles };
}

/** How long a promotion waits for each call to the current primary: it answers in milliseconds when alive. */
const PRIMARY_PROBE_MS = 1000;
/** How long a promotion waits to apply what the live primary had when asked, before demoting it. */
const CATCH_UP_MS = 2000;
/** A switchover's wait for the replica to catch up, when the request gives none. */
const DEFAULT_FAILOVER_TIMEOUT_MS = 5000;

/** Admin RPCs: role changes and the dataset digest. */
export function adminServiceImpl(store: CacheStore, replication: Replication, ownAddress: () => string, options: AdminOptions = {}): ServiceImpl<typeof AdminService> {
  const coordinated = (what: string) =>
    new ConnectError(`${what} is refused: the coordinator's lease decides roles here; use Failover (ripplecache failover [--to NODE]) on the primary`, Code.FailedPrecondition);
  return {
    async promote(req) {
      if (options.coordination !== undefined) throw coordinated("Promote");
      const role = replication.role;
      if (!role.isReplica) {
        return { replicationId: role.replicationId, revision: BigInt(store.currentRevision), alreadyPrimary: true };
      }
      // The call's trace context is active only until its first await (sync-context.ts): kept for the promotion's span.
      const trace = context.active();
      if (!req.force && role.primaryAddress !== "") await demoteLivePrimary(role.primaryAddress, ownAddress(), store, options.peer);
      const r = await context.with(trace, () => replication.promote());
      return { replicationId: r.replicationId, revision: BigInt(r.revision) };
    },
    async failover(req) {
      if (options.coordination === undefined) {
        throw new ConnectError("Failover needs a coordinator (--coordinator etcd); in static mode stop the primary, Promote a replica and ReplicaOf the others", Code.FailedPrecondition);
      }
      const r = await options.coordination.switchover(req.to.trim(), req.timeoutMs === 0 ? DEFAULT_FAILOVER_TIMEOUT_MS : req.timeoutMs);
      return { nodeId: r.nodeId, address: r.address, term: BigInt(r.term), revision: BigInt(r.revision) };
    },
    async replicaOf(req) {
      if (options.coordination !== undefined) throw coordinated("ReplicaOf");
      const address = req.primaryAddress.trim();
      if (!/^[^\s:]+:[0-9]{1,5}$/.test(address) && !/^https?:\/\//.test(address)) {
        throw new ConnectError(`primary_address "${address}" is not HOST:PORT`, Code.InvalidArgument);
      }
      if (address === ownAddress()) throw new ConnectError("a node cannot replicate itself", Code.InvalidArgument);
      await replication.replicaOf(address);
      return {};
    },
    digest() {
      const d = store.digest();
      return { revision: BigInt(d.revision), digest: d.digest, keys: BigInt(d.keys) };
    },
  };
}

/**
 * Before a replica is promoted: when its primary still answers as primary,
 * this node applies what that primary had (bounded), then makes it a replica
 * of this node, so there are never two primaries taking writes. A primary
 * that does not answer is taken for dead. A primary that answers but cannot
 * be demoted refuses the promotion (FAILED_PRECONDITION; `force` skips all this).
 */
async function demoteLivePrimary(primary: string, self: string, store: CacheStore, peer: AdminOptions["peer"]): Promise<void> {
  const client = new CacheClient({ addr: primary, token: peer?.token, tls: peer?.tls, timeoutMs: PRIMARY_PROBE_MS, followPrimary: false });
  const admin = new CacheClient({ addr: primary, token: peer?.adminToken ?? peer?.token, tls: peer?.tls, timeoutMs: PRIMARY_PROBE_MS, followPrimary: false });
  try {
    let revision: number;
    try {
      const info = await client.rpc.info({}, { timeoutMs: PRIMARY_PROBE_MS });
      if (info.role !== Role.PRIMARY) return;
      revision = Number(info.revision);
    } catch {
      return;
    }
    const deadline = Date.now() + CATCH_UP_MS;
    while (store.currentRevision < revision && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    try {
      await admin.admin.replicaOf({ primaryAddress: self }, { timeoutMs: PRIMARY_PROBE_MS });
    } catch (err) {
      throw new ConnectError(
        `the primary ${primary} still answers and could not be made a replica of this node (${err instanceof Error ? err.message : String(err)}): ` +
          "promoting would leave two primaries taking writes; stop it first, or promote with force",
        Code.FailedPrecondition,
      );
    }
  } finally {
    client.close();
    admin.close();
  }
}
