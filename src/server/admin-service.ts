import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { AdminService } from "../gen/ripplecache/v1/replication_pb.js";
import type { Replication } from "../replication/replication.js";
import type { CacheStore } from "../store/store.js";

/** Admin RPCs: role changes and the dataset digest. */
export function adminServiceImpl(store: CacheStore, replication: Replication, ownAddress: () => string): ServiceImpl<typeof AdminService> {
  return {
    async promote() {
      const r = await replication.promote();
      return { replicationId: r.replicationId, revision: BigInt(r.revision) };
    },
    async replicaOf(req) {
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
