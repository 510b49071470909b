import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";

type Obj = { metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [k: string]: unknown };

/**
 * The part of a Kubernetes API server the Kubernetes coordinator uses, over
 * plain HTTP: Leases (get, create, replace with resourceVersion checks that
 * answer 409 Conflict as the real one does, list by label) and Pods (get,
 * JSON merge patch of labels). No real API server runs on these machines;
 * this one keeps real optimistic concurrency, so conflicts are exercised.
 */
export class FakeKube {
  readonly leases = new Map<string, Obj>();
  readonly pods = new Map<string, Obj>();
  /** 409 answers given, by verb. */
  readonly conflicts = { create: 0, replace: 0 };
  requests = 0;
  private version = 100;
  private server: Server | undefined;
  private dir: string | undefined;
  url = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  addPod(namespace: string, name: string): void {
    this.pods.set(`${namespace}/${name}`, { apiVersion: "v1", kind: "Pod", metadata: { name, namespace, labels: {}, resourceVersion: this.nextVersion() } });
  }

  podLabel(namespace: string, name: string, label: string): string | undefined {
    return this.pods.get(`${namespace}/${name}`)?.metadata.labels?.[label];
  }

  /** A kubeconfig file (JSON is YAML) pointing at this server, for KUBECONFIG. */
  kubeconfigFile(namespace: string): string {
    this.dir ??= mkdtempSync(join(tmpdir(), "ripplecache-kube-"));
    const file = join(this.dir, "kubeconfig");
    writeFileSync(file, JSON.stringify(this.kubeconfigObject(namespace)));
    return file;
  }

  kubeConfig(namespace: string): KubeConfig {
    const kc = new KubeConfig();
    const o = this.kubeconfigObject(namespace);
    kc.loadFromOptions({ clusters: [{ name: "fake", server: this.url, skipTLSVerify: true }], users: [{ name: "u", token: "t" }], contexts: [{ name: "c", cluster: "fake", user: "u", namespace }], currentContext: o["current-context"] });
    return kc;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server === undefined ? resolve() : this.server.close(() => resolve())));
    if (this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }

  private kubeconfigObject(namespace: string) {
    return {
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "fake", cluster: { server: this.url, "insecure-skip-tls-verify": true } }],
      users: [{ name: "u", user: { token: "t" } }],
      contexts: [{ name: "c", context: { cluster: "fake", user: "u", namespace } }],
      "current-context": "c",
    };
  }

  private nextVersion(): string {
    return String(++this.version);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length > 0 ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as Obj) : undefined;
    const url = new URL(req.url ?? "/", "http://x");
    const send = (code: number, obj: unknown) => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(obj));
    };
    const status = (code: number, reason: string, message: string) => send(code, { apiVersion: "v1", kind: "Status", status: "Failure", code, reason, message });
    let m = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?$/.exec(url.pathname);
    if (m !== null) {
      const [, ns, name] = m;
      const key = `${ns}/${name}`;
      if (req.method === "GET" && name === undefined) {
        const selector = (url.searchParams.get("labelSelector") ?? "").split(",").filter((s) => s !== "").map((s) => s.split("="));
        const items = [...this.leases.values()].filter((l) => l.metadata.namespace === ns && selector.every(([k, v]) => l.metadata.labels?.[k] === v));
        return send(200, { apiVersion: "coordination.k8s.io/v1", kind: "LeaseList", metadata: { resourceVersion: String(this.version) }, items });
      }
      if (req.method === "GET") {
        const lease = this.leases.get(key);
        return lease === undefined ? status(404, "NotFound", `leases "${name}" not found`) : send(200, lease);
      }
      if (req.method === "POST" && name === undefined && body !== undefined) {
        const k = `${ns}/${body.metadata.name}`;
        if (this.leases.has(k)) {
          this.conflicts.create++;
          return status(409, "AlreadyExists", `leases "${body.metadata.name}" already exists`);
        }
        const stored = { ...body, metadata: { ...body.metadata, namespace: ns, resourceVersion: this.nextVersion() } };
        this.leases.set(k, stored);
        return send(201, stored);
      }
      if (req.method === "PUT" && name !== undefined && body !== undefined) {
        const current = this.leases.get(key);
        if (current === undefined) return status(404, "NotFound", `leases "${name}" not found`);
        if (body.metadata.resourceVersion !== current.metadata.resourceVersion) {
          this.conflicts.replace++;
          return status(409, "Conflict", `Operation cannot be fulfilled on leases.coordination.k8s.io "${name}": the object has been modified; please apply your changes to the latest version and try again`);
        }
        const stored = { ...body, metadata: { ...body.metadata, namespace: ns, resourceVersion: this.nextVersion() } };
        this.leases.set(key, stored);
        return send(200, stored);
      }
      return status(405, "MethodNotAllowed", `${req.method} is not served here`);
    }
    m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname);
    if (m !== null) {
      const key = `${m[1]}/${m[2]}`;
      const pod = this.pods.get(key);
      if (pod === undefined) return status(404, "NotFound", `pods "${m[2]}" not found`);
      if (req.method === "GET") return send(200, pod);
      if (req.method === "PATCH" && body !== undefined) {
        if (!/merge-patch\+json/.test(req.headers["content-type"] ?? "")) return status(415, "UnsupportedMediaType", `content type ${req.headers["content-type"]}`);
        const labels = { ...pod.metadata.labels, ...(body.metadata?.labels ?? {}) };
        const patched = { ...pod, metadata: { ...pod.metadata, labels, resourceVersion: this.nextVersion() } };
        this.pods.set(key, patched);
        return send(200, patched);
      }
    }
    status(404, "NotFound", `${req.method} ${url.pathname} is not served here`);
  }
}
