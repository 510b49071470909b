import { setMaxListeners } from "node:events";
import { Code, ConnectError, createServiceImplSpec, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectHandlersWithClientFaults, streamedMessageFaults } from "./client-faults.js";
import { connectBridge } from "./h2/connect-bridge.js";
import { CacheService } from "../gen/ripplecache/v1/cache_pb.js";
import { ExpirySweeper } from "../store/expiry-sweeper.js";
import { ChangeLog } from "../store/change-log.js";
import { CacheStore } from "../store/store.js";
import { WatchHub } from "../watch/hub.js";
import { VERSION } from "../version.js";
import { cacheServiceImpl } from "./cache-service.js";
import type { ServerConfig } from "./config.js";
import { bearerAuth, replicaGuard, storeErrors } from "./interceptors.js";
import { adminServiceImpl } from "./admin-service.js";
import { AdminService, ReplicationService } from "../gen/ripplecache/v1/replication_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionAlpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Replication } from "../replication/replication.js";
import { NodeRole } from "../replication/node-role.js";
import { RevisionWaiter } from "../replication/revision-waiter.js";
import { logLine } from "../log.js";
import { startTelemetry } from "../telemetry/telemetry.js";
import { TRACE_CONTEXT } from "../telemetry/rpc.js";
import { startAdminHttp } from "./admin-http.js";
import { listen } from "./listener.js";
import { createFastPath, type FastStreamHandler } from "./fast-path/index.js";
import { type CorsPolicy, withCors } from "./cors.js";
import { HealthState, registerHealth, ServingStatus } from "./health.js";
import { registerReflection } from "./reflection.js";
import { http2TlsOptions } from "../client/tls.js";
import { CoordinatedNode, coordinationInfoFields, leaseFence } from "../coordination/coordinated-node.js";

export interface RunningServer {
  readonly port: number;
  /** The admin HTTP port (/livez, /readyz, /metrics), unless turned off. */
  readonly adminPort: number | undefined;
  readonly store: CacheStore;
  readonly hub: WatchHub;
  readonly health: HealthState;
  readonly replication: Replication;
  /** With --coordinator etcd or kubernetes: the lease election that decides this node's role. */
  readonly coordination: CoordinatedNode | undefined;
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
  const role = new NodeRole();
  const hub = new WatchHub(
    log,
    {
      maxStreams: config.maxStreams,
      streamBufferBytes: config.streamBufferBytes,
      maxTrackKeys: config.maxTrackKeys,
    },
    role,
  );
  const sweeper = new ExpirySweeper(store);
  sweeper.start();
  let coordination: CoordinatedNode | undefined;
  const replication = new Replication(store, log, hub, role, {
    coordinated: config.coordinator !== "static",
    onNewerTerm: () => coordination?.poke(),
    replicaOf: config.replicaOf,
    token: config.replicationToken ?? config.authToken,
    bufferBytes: config.replicationBufferBytes,
    heartbeatMs: config.replicationHeartbeatMs,
    log: (msg, fields) => logLine("info", msg, fields),
    tls:
      config.replicationTlsCaFile !== undefined || config.replicationTlsCertFile !== undefined
        ? http2TlsOptions({ caFile: config.replicationTlsCaFile, certFile: config.replicationTlsCertFile, keyFile: config.replicationTlsKeyFile })
        : undefined,
  });
  if (config.coordinator !== "static") {
    // Each coordinator call is bounded well inside the renew deadline, so a hung call cannot outlast the lease.
    const callTimeoutMs = Math.max(50, Math.floor(config.renewDeadlineMs / 2));
    // Loaded only when used: each client library takes a second or more to load on a busy machine.
    const lock =
      config.coordinator === "etcd"
        ? new (await import("../coordination/etcd.js")).EtcdLock({ endpoints: config.etcdEndpoints, group: config.group, nodeId: config.nodeId, callTimeoutMs })
        : new (await import("../coordination/kubernetes.js")).KubernetesLock({ group: config.group, nodeId: config.nodeId, namespace: config.kubernetesNamespace, podName: config.podName, callTimeoutMs });
    coordination = new CoordinatedNode(lock, replication, store, {
      coordinator: config.coordinator,
      group: config.group,
      nodeId: config.nodeId,
      leaseDurationMs: config.leaseDurationMs,
      renewDeadlineMs: config.renewDeadlineMs,
      retryPeriodMs: config.retryPeriodMs,
      log: (msg, fields) => logLine("info", msg, fields),
    });
  }
  // min_revision reads: they also wait while a full resync loads (the role says when).
  const revisions = new RevisionWaiter(log, replication.role);

  let ownAddress = "";
  let draining = false;
  // Readiness tells the truth: not while draining, not before a replica's
  // first sync, not while a replica's link has been down too long.
  const notReadyReason = (): string | undefined => {
    const role = replication.role;
    if (draining) return "draining: the server is shutting down";
    if (!role.isReplica) return undefined;
    if (!role.synced) return `replica has not completed its first sync with ${role.primaryAddress}`;
    if (role.loadingSnapshot) return `replica is loading a full resync from ${role.primaryAddress}`;
    const downFor = role.linkDownSince === 0 ? 0 : Date.now() - role.linkDownSince;
    if (config.replicaUnreadyAfterMs > 0 && downFor > config.replicaUnreadyAfterMs) {
      return `replica has lost its primary ${role.primaryAddress} for ${downFor} ms`;
    }
    return undefined;
  };
  const servingStatus = () => (notReadyReason() === undefined ? ServingStatus.SERVING : ServingStatus.NOT_SERVING);
  const health = new HealthState(servingStatus);
  // Watch streams hear of changes from this timer; Check evaluates afresh.
  const updateHealth = () => health.set(servingStatus());
  replication.role.subscribe(updateHealth);
  updateHealth();
  const healthTimer = setInterval(updateHealth, 250);
  healthTimer.unref();
  const shutdown = new AbortController();
  // Every in-flight call links its own signal to this one: not a leak, just many listeners.
  setMaxListeners(0, shutdown.signal);
  const tokens: Record<string, string | undefined> = {
    [CacheService.typeName]: config.authToken,
    [ServerReflection.typeName]: config.authToken,
    [ServerReflectionAlpha.typeName]: config.authToken,
    [ReplicationService.typeName]: config.replicationToken ?? config.authToken,
    [AdminService.typeName]: config.adminToken ?? config.authToken,
  };
  // Telemetry (src/telemetry): metrics always, tracing when OTEL_* configures it; its interceptor goes first.
  const fastPathStats = { calls: 0 };
  const telemetry = await startTelemetry({ sources: { store, log, hub, replication, fastPath: fastPathStats }, shuttingDown: () => shutdown.signal.aborted });
  // Flush empties the whole cache: like Promote, an admin's act, not a client's.
  const tokenFor = (service: string, method: string) =>
    service === CacheService.typeName && method === "Flush" ? tokens[AdminService.typeName] : tokens[service];
  const tokenKind = (service: string, method: string) =>
    service === AdminService.typeName || (service === CacheService.typeName && method === "Flush") ? "admin" : service === ReplicationService.typeName ? "replication" : "client";
  const interceptors: Interceptor[] = [
    telemetry.interceptor,
    bearerAuth(tokenFor, tokenKind),
    // With a coordinator, writes are fenced by the lease first (src/coordination/coordinated-node.ts).
    ...(coordination !== undefined ? [leaseFence(coordination)] : []),
    replicaGuard(replication.role),
    storeErrors,
  ];

  const cacheImpl = cacheServiceImpl({ store, hub, replication, revisions, maxBatch: config.maxBatch, version: VERSION, startedAt: Date.now() });
  // Info also reports coordination: role, term, lease holder (src/coordination).
  const baseInfo = cacheImpl.info.bind(cacheImpl);
  cacheImpl.info = async (req, ctx) => ({ ...(await baseInfo(req, ctx)), ...coordinationInfoFields(coordination, replication) });
  const adminImpl = adminServiceImpl(store, replication, () => ownAddress, {
    coordination,
    peer: {
      token: config.authToken,
      adminToken: config.adminToken ?? config.authToken,
      tls:
        config.replicationTlsCaFile !== undefined || config.replicationTlsCertFile !== undefined
          ? { caFile: config.replicationTlsCaFile, certFile: config.replicationTlsCertFile, keyFile: config.replicationTlsKeyFile }
          : undefined,
    },
  });
  const routes = (router: ConnectRouter) => {
    router.service(CacheService, cacheImpl);
    router.service(ReplicationService, {
      sync: (requests, ctx) => replication.source.sync(requests, ctx.signal, "", !/json/i.test(ctx.requestHeader.get("content-type") ?? ""), ctx.values.get(TRACE_CONTEXT)),
    });
    router.service(AdminService, adminImpl);
    registerHealth(router, health);
    registerReflection(router);
  };
  const cors: CorsPolicy | undefined =
    config.corsAllowedOrigins.length === 0
      ? undefined
      : {
          allowedOrigins: config.corsAllowedOrigins,
          allowCredentials: config.corsAllowCredentials,
          maxAgeSeconds: config.corsMaxAgeSeconds,
          allowAuthorization: config.authToken !== undefined || config.adminToken !== undefined,
        };
  const { nodeHandler: handler, handlers } = connectHandlersWithClientFaults({
    routes,
    interceptors,
    ...(telemetry.contextValues !== undefined ? { contextValues: telemetry.contextValues } : {}),
    readMaxBytes: config.maxRequestBytes,
    shutdownSignal: shutdown.signal,
  }, cors === undefined ? undefined : (h) => withCors(cors, h));
  // Unary and server-streaming calls in binary over HTTP/2 skip connect-node's
  // plumbing: the same implementations and interceptors (with the one the
  // client-faults adapter adds first), the same answers.
  const fastPath = config.fastPath
    ? createFastPath({
        services: [createServiceImplSpec<typeof CacheService>(CacheService, cacheImpl), createServiceImplSpec<typeof AdminService>(AdminService, adminImpl)],
        interceptors: [streamedMessageFaults, ...interceptors],
        readMaxBytes: config.maxRequestBytes,
        shutdownSignal: shutdown.signal,
        stats: fastPathStats,
        ...(telemetry.networkContextValues !== undefined ? { contextValues: telemetry.networkContextValues } : {}),
      })
    : undefined;
  // A browser's call (it sends Origin) goes to connect's handlers, which add the CORS headers.
  const fastStream: FastStreamHandler | undefined =
    fastPath === undefined || cors === undefined ? fastPath : (stream, headers) => headers.origin === undefined && fastPath(stream, headers);
  // HTTP/2 (h2c, and TLS with ALPN h2) on our own engine (src/server/h2), unless --http2-engine node.
  const ownEngine = config.http2Engine === "ripple" ? connectBridge(handlers, telemetry.networkContextValues) : undefined;
  const listener = await listen(handler, { ...config, fastStream, ownEngine });
  ownAddress = config.advertiseAddress ?? `${config.host}:${listener.port}`;
  replication.start(ownAddress);
  coordination?.start(ownAddress);
  const admin =
    config.adminPort === undefined
      ? undefined
      : await startAdminHttp({
          host: config.host,
          port: config.adminPort,
          notReadyReason,
          wedgedAfterMs: config.wedgedAfterMs,
          metrics: () => telemetry.prometheus(),
        });

  let closing: Promise<void> | undefined;
  return {
    port: listener.port,
    adminPort: admin?.port,
    store,
    hub,
    health,
    replication,
    coordination,
    close() {
      closing ??= (async () => {
        // Drain: report not ready at once and keep serving, so that load
        // balancers and Kubernetes Services move traffic away before we stop.
        draining = true;
        updateHealth();
        clearInterval(healthTimer);
        // A primary stops taking writes and releases its lease at once: another node takes over without waiting for it to expire.
        await coordination?.stop();
        if (config.drainPeriodMs > 0) await new Promise((r) => setTimeout(r, config.drainPeriodMs));
        await replication.close();
        listener.stopAccepting();
        // Streams see their context signal abort and end with UNAVAILABLE, so
        // clients reconnect elsewhere instead of waiting for the grace period.
        shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
        await listener.close(config.shutdownTimeoutMs);
        sweeper.stop();
        await admin?.close();
        await telemetry.shutdown();
      })();
      return closing;
    },
  };
}
