import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";

export interface AdminHttpOptions {
  readonly host: string;
  readonly port: number;
  /** Readiness: undefined when ready, else the reason it is not. */
  readonly notReadyReason: () => string | undefined;
  /** Prometheus text exposition of the current metrics. */
  readonly metrics: () => Promise<string> | string;
  /** Liveness fails when the event loop was blocked longer than this (ms). */
  readonly wedgedAfterMs: number;
}

export interface AdminHttp {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * The admin HTTP port for Kubernetes and Prometheus:
 * - /livez: 200 unless the process is wedged (its event loop was blocked
 *   longer than the bound in the last few seconds). Never fails because a
 *   peer is down: restarting would not help.
 * - /readyz: 200 when the node should receive traffic; 503 with the reason.
 * - /metrics: Prometheus text format.
 */
export async function startAdminHttp(options: AdminHttpOptions): Promise<AdminHttp> {
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  let worstRecentMs = 0;
  const window = setInterval(() => {
    worstRecentMs = delay.max / 1e6;
    delay.reset();
  }, 5000);
  window.unref();

  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "method not allowed\n");
    switch (path) {
      case "/livez": {
        const blocked = Math.max(worstRecentMs, delay.max / 1e6);
        return blocked > options.wedgedAfterMs ? send(503, `event loop blocked for ${Math.round(blocked)} ms\n`) : send(200, "ok\n");
      }
      case "/readyz": {
        const reason = options.notReadyReason();
        return reason === undefined ? send(200, "ok\n") : send(503, `${reason}\n`);
      }
      case "/metrics":
        Promise.resolve(options.metrics()).then(
          (text) => send(200, text, "text/plain; version=0.0.4; charset=utf-8"),
          (err: unknown) => send(500, `${err instanceof Error ? err.message : String(err)}\n`),
        );
        return;
      default:
        return send(404, "not found: try /livez, /readyz or /metrics\n");
    }
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      clearInterval(window);
      delay.disable();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
