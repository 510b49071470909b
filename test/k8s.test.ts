import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer, request, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { parseAllDocuments } from "yaml";
import { SERVER_NODE_FLAGS } from "../src/cli/node-flags.js";
import { KubeConfig } from "@kubernetes/client-node";
import { LeaderElector } from "../src/coordination/elector.js";
import { API_CALLS, candidateLeaseName, KubernetesLock, leaseName, ROLE_LABEL } from "../src/coordination/kubernetes.js";
import { resolveConfig, SETTINGS, type ServerConfig } from "../src/server/config.js";
import { waitFor } from "./helpers/cluster.js";
import { FakeKube } from "./helpers/fake-kube.js";
import { checkManifest, MODELS_API_VERSION } from "./helpers/k8s-schema.js";
import { ROOT } from "./helpers/server.js";

/*
 * The Kubernetes manifests in k8s/, as `kubectl apply -k k8s/` would send them:
 * rendered with `kubectl kustomize` (offline), every object checked strictly
 * against the API models of @kubernetes/client-node (test/helpers/k8s-schema.ts),
 * then for consistency: selectors, ports, probes, references, grace period,
 * security, and the server settings each pod would run with, resolved by the
 * server's own config code (src/server/config.ts) from the pod's args and env;
 * and RBAC: the Role grants exactly the API calls the Kubernetes coordinator
 * makes (API_CALLS in src/coordination/kubernetes.ts, itself checked against
 * the calls in that file), on exactly the objects each pod touches.
 */

const K8S_DIR = join(ROOT, "k8s");
const KUBECTL = process.env.KUBECTL ?? "kubectl";
const NAMESPACE = "ns-under-test";

/** The image the manifests run, and the user the Dockerfile and the pods agree on. */
const IMAGE = "ripplecache:0.1.0";
const RUN_AS_USER = 10001;
/** Process baseline beyond the store and change log (Node, code, telemetry, buffers), and headroom. */
const BASELINE_BYTES = 100 * 2 ** 20;
const HEADROOM = 1.2;
/** A startup probe must allow at least this long for a replica's first sync. */
const MIN_STARTUP_SECONDS = 300;
/** The StatefulSet whose pods are the candidates, and how many at least (a majority survives one loss). */
const STATEFULSET = "ripplecache";
const MIN_PODS = 3;

/**
 * How long a primary's switchover on SIGTERM may take before its drain starts:
 * STOP_SWITCHOVER_MS in src/coordination/coordinated-node.ts (not exported,
 * read from the source so that a change there reaches this check).
 */
const STOP_SWITCHOVER_MS: number = (() => {
  const m = /^const STOP_SWITCHOVER_MS = ([0-9_]+);$/m.exec(readFileSync(join(ROOT, "src", "coordination", "coordinated-node.ts"), "utf8"));
  if (m === null) throw new Error("src/coordination/coordinated-node.ts no longer defines STOP_SWITCHOVER_MS: update test/k8s.test.ts");
  return Number(m[1]!.replaceAll("_", ""));
})();

// Objects are plain parsed YAML; the strict schema check runs first, so field access below is on checked shapes.
type Obj = Record<string, any>;

function render(dir = K8S_DIR): string {
  const r = spawnSync(KUBECTL, ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
  if (r.error !== undefined) {
    if ((r.error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error(
        `"${KUBECTL}" is not on the PATH. test/k8s.test.ts renders k8s/ with \`kubectl kustomize\` and needs kubectl >= 1.22 ` +
          "(kustomize v4+: `labels:`, configMapGenerator `envs:`). The project's machine image has it (the `kubectl` Debian " +
          "package, v1.32, from the Google Cloud CLI apt repository). Debian bookworm's own `kubernetes-client` (v1.20, " +
          "kustomize v2.0.3) is too old, and the npm registry has no maintained kubectl package. Install kubectl, or set " +
          "KUBECTL=/path/to/kubectl.",
      );
    }
    throw r.error;
  }
  if (r.status !== 0) throw new Error(`${KUBECTL} kustomize ${dir} failed (exit ${r.status}):\n${r.stderr}`);
  return r.stdout;
}

function parse(text: string): Obj[] {
  return parseAllDocuments(text).map((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`document ${i}: ${doc.errors.map((e) => e.message).join("; ")}`);
    return doc.toJS() as Obj;
  });
}

// Rendered once; a failure (kubectl missing, kustomize error) fails every test below with its message.
const RENDERING: { objects?: Obj[]; error?: Error } = (() => {
  try {
    return { objects: parse(render()) };
  } catch (err) {
    return { error: err as Error };
  }
})();
const OBJECTS: Obj[] = RENDERING.objects ?? [];
const rendered = () => {
  if (RENDERING.error !== undefined) throw RENDERING.error;
};

// ---------- helpers over the rendered objects ----------

const WORKLOAD_KINDS = new Set(["StatefulSet", "Deployment", "DaemonSet", "ReplicaSet"]);

function id(o: Obj): string {
  return `${o.kind}/${o.metadata?.name}`;
}

function find(objects: Obj[], kind: string, name: string): Obj | undefined {
  return objects.find((o) => o.kind === kind && o.metadata?.name === name);
}

function workloads(objects: Obj[]): Obj[] {
  return objects.filter((o) => WORKLOAD_KINDS.has(o.kind));
}

function byKind(objects: Obj[], kind: string): Obj[] {
  return objects.filter((o) => o.kind === kind);
}

/** Does a label selector ({matchLabels, matchExpressions} or a Service's plain map) select these labels? */
function selects(selector: Obj | undefined, labels: Record<string, string> | undefined, plain = false): boolean {
  if (selector === undefined || selector === null) return false;
  const have = labels ?? {};
  const matchLabels: Record<string, string> = plain ? selector : (selector.matchLabels ?? {});
  const expressions: Obj[] = plain ? [] : (selector.matchExpressions ?? []);
  if (Object.keys(matchLabels).length === 0 && expressions.length === 0) return false; // empty selects nothing useful here
  for (const [k, v] of Object.entries(matchLabels)) if (have[k] !== v) return false;
  for (const e of expressions) {
    const value = have[e.key];
    const ok =
      e.operator === "In" ? value !== undefined && e.values.includes(value)
      : e.operator === "NotIn" ? value === undefined || !e.values.includes(value)
      : e.operator === "Exists" ? value !== undefined
      : value === undefined;
    if (!ok) return false;
  }
  return true;
}

function podLabels(workload: Obj): Record<string, string> {
  return workload.spec?.template?.metadata?.labels ?? {};
}

function containers(workload: Obj): Obj[] {
  return workload.spec?.template?.spec?.containers ?? [];
}

/** Does some container of the workload declare this port (a name or a number)? */
function resolvePort(workload: Obj, port: string | number): number | undefined {
  for (const c of containers(workload)) {
    for (const p of c.ports ?? []) {
      if (typeof port === "string" ? p.name === port : p.containerPort === port) return p.containerPort;
    }
  }
  return undefined;
}

/** resource.Quantity to a number (bytes for memory). */
function quantity(q: string | number): number {
  if (typeof q === "number") return q;
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(q);
  if (m === null) throw new Error(`not a quantity: ${q}`);
  const factor: Record<string, number> = {
    "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40,
  };
  const f = factor[m[2]!];
  if (f === undefined) throw new Error(`unsupported quantity suffix in ${q}`);
  return Number(m[1]) * f;
}

/** Kubernetes' $(VAR) expansion; `$$(` escapes. Unknown references are reported, as Kubernetes would leave them as is. */
function expand(text: string, env: ReadonlyMap<string, string>, where: string, errors: string[]): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string | undefined) => {
    if (name === undefined) return "$";
    const v = env.get(name);
    if (v === undefined) {
      errors.push(`${where}: $(${name}) is not defined before it is used (Kubernetes would pass "${whole}" literally)`);
      return whole;
    }
    return v;
  });
}

/** Sample values for the downward API, for a pod named `podName` in NAMESPACE. */
function fieldRef(path: string, podName: string): string | undefined {
  return { "metadata.name": podName, "metadata.namespace": NAMESPACE, "status.podIP": "10.1.2.3", "spec.nodeName": "node-a" }[path];
}

interface ContainerView {
  /** The environment the process would see (unset optional references left out). */
  readonly env: Map<string, string>;
  /** args after $(VAR) expansion. */
  readonly args: string[];
  readonly command: string[] | undefined;
}

/** What a container of pod `ordinal` would run with, as the kubelet computes it; problems are pushed to `errors`. */
function containerView(objects: Obj[], workload: Obj, container: Obj, errors: string[], ordinal = 0): ContainerView {
  const where = `${id(workload)} container ${container.name}`;
  const podName = `${workload.metadata.name}-${ordinal}`;
  const env = new Map<string, string>();
  for (const from of container.envFrom ?? []) {
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef !== undefined ? "ConfigMap" : "Secret";
    const source = find(objects, kind, ref?.name);
    if (source === undefined) {
      if (ref?.optional !== true) errors.push(`${where}: envFrom ${kind} ${ref?.name} does not exist (and is not optional)`);
      continue;
    }
    for (const [k, v] of Object.entries<string>(source.data ?? {})) {
      env.set(`${from.prefix ?? ""}${k}`, kind === "Secret" ? Buffer.from(v, "base64").toString("utf8") : v);
    }
    for (const [k, v] of Object.entries<string>(source.stringData ?? {})) env.set(`${from.prefix ?? ""}${k}`, v);
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) {
      env.set(e.name, expand(String(e.value), env, `${where} env ${e.name}`, errors));
      continue;
    }
    const vf = e.valueFrom ?? {};
    if (vf.fieldRef !== undefined) {
      const v = fieldRef(vf.fieldRef.fieldPath, podName);
      if (v === undefined) errors.push(`${where} env ${e.name}: fieldRef ${vf.fieldRef.fieldPath} is not one this test knows`);
      else env.set(e.name, v);
    } else if (vf.configMapKeyRef !== undefined || vf.secretKeyRef !== undefined) {
      const ref = vf.configMapKeyRef ?? vf.secretKeyRef;
      const kind = vf.configMapKeyRef !== undefined ? "ConfigMap" : "Secret";
      const source = find(objects, kind, ref.name);
      const value = source?.data?.[ref.key] ?? source?.stringData?.[ref.key];
      if (value === undefined) {
        if (ref.optional !== true) errors.push(`${where} env ${e.name}: ${kind} ${ref.name} key ${ref.key} does not exist (and is not optional)`);
        continue;
      }
      env.set(e.name, kind === "Secret" && source?.data?.[ref.key] !== undefined ? Buffer.from(value, "base64").toString("utf8") : value);
    } else if (vf.resourceFieldRef !== undefined) {
      env.set(e.name, "1");
    } else {
      errors.push(`${where} env ${e.name}: neither value nor a known valueFrom`);
    }
  }
  const args = (container.args ?? []).map((a: string, i: number) => expand(String(a), env, `${where} args[${i}]`, errors));
  const command = container.command?.map((a: string, i: number) => expand(String(a), env, `${where} command[${i}]`, errors));
  return { env, args, command };
}

/** The settings `ripplecache serve` would resolve in this container, through the server's own code. */
function serverConfig(view: ContainerView, where: string, errors: string[]): ServerConfig | undefined {
  if (view.command !== undefined) {
    errors.push(`${where}: sets command; the image's entrypoint (node bin/ripplecache.js) is expected to stay`);
    return undefined;
  }
  const [sub, ...rest] = view.args;
  if (sub !== "serve") {
    errors.push(`${where}: args must start with "serve" (they replace the image's CMD), got ${JSON.stringify(view.args)}`);
    return undefined;
  }
  const options: ParseArgsConfig["options"] = {};
  for (const s of SETTINGS) options[s.flag] = { type: "string" };
  try {
    const { values } = parseArgs({ args: rest, options, strict: true, allowPositionals: false });
    return resolveConfig(values as Record<string, string | undefined>, Object.fromEntries(view.env));
  } catch (err) {
    errors.push(`${where}: ripplecache serve would refuse its flags or environment: ${(err as Error).message}`);
    return undefined;
  }
}

/** Seconds a preStop hook sleeps (exec sleep N, or the sleep action). */
function preStopSeconds(container: Obj): number {
  const preStop = container.lifecycle?.preStop;
  if (preStop === undefined) return 0;
  if (preStop.sleep !== undefined) return Number(preStop.sleep.seconds);
  const cmd: string[] = preStop.exec?.command ?? [];
  const m = /^(?:\/bin\/)?sleep$/.test(cmd[0] ?? "") ? Number(cmd[1]) : NaN;
  return Number.isFinite(m) ? m : 0;
}

function hostPort(addr: string | undefined): { host: string; port: number } | undefined {
  const m = /^(.+):([0-9]+)$/.exec(addr ?? "");
  return m === null ? undefined : { host: m[1]!, port: Number(m[2]) };
}

/** DNS names that reach `pod` of a StatefulSet whose governing Service is `service`, from a pod in NAMESPACE. */
function podDnsNames(pod: string, service: string): string[] {
  return [`${pod}.${service}`, `${pod}.${service}.${NAMESPACE}.svc`, `${pod}.${service}.${NAMESPACE}.svc.cluster.local`];
}

/** The settings each pod of a StatefulSet resolves to, by pod name (pod names differ, so do their $(POD_NAME)s). */
function podConfigs(objects: Obj[], set: Obj, container: Obj, errors: string[]): Map<string, ServerConfig> {
  const out = new Map<string, ServerConfig>();
  for (let i = 0; i < (set.spec?.replicas ?? 1); i++) {
    const pod = `${set.metadata.name}-${i}`;
    const config = serverConfig(containerView(objects, set, container, errors, i), `${id(set)} pod ${pod}`, errors);
    if (config !== undefined) out.set(pod, config);
  }
  return out;
}

/** One permission: verb on a resource of an API group, on one named object or on any ("*"). */
type Grant = string;
const grant = (apiGroup: string, resource: string, verb: string, name: string): Grant => `${apiGroup === "" ? "core" : apiGroup}/${resource} ${verb} ${name}`;

/**
 * RBAC against what the coordinator does: the pods run under a ServiceAccount
 * that is bound (in their namespace) to a Role granting exactly API_CALLS for
 * every pod: each call on the objects it touches by name where RBAC can
 * restrict it, on any object where it cannot; nothing else, no wildcard.
 */
function rbacErrors(objects: Obj[], set: Obj, pods: ReadonlyMap<string, ServerConfig>): string[] {
  const errors: string[] = [];
  const err = (m: string) => errors.push(m);
  const pod = set.spec?.template?.spec ?? {};
  const accountName: string = pod.serviceAccountName ?? "default";
  const account = find(objects, "ServiceAccount", accountName);
  if (pod.serviceAccountName === undefined) err(`${id(set)}: serviceAccountName must name the coordinator's ServiceAccount (the namespace's default account has no Role)`);
  else if (account === undefined) err(`${id(set)}: serviceAccountName ${accountName} is no ServiceAccount here`);
  if ((pod.automountServiceAccountToken ?? account?.automountServiceAccountToken ?? true) !== true) {
    err(`${id(set)}: the pods need their service account token (automountServiceAccountToken), the coordinator's in-cluster credentials`);
  }
  if (byKind(objects, "ClusterRole").length + byKind(objects, "ClusterRoleBinding").length > 0) err("no ClusterRole or ClusterRoleBinding: the coordinator needs nothing outside its namespace");

  // Roles bound to the pods' account (a subject without namespace is the binding's own namespace, the pods').
  const roles: Obj[] = [];
  for (const b of byKind(objects, "RoleBinding")) {
    const ref = b.roleRef ?? {};
    if (ref.apiGroup !== "rbac.authorization.k8s.io" || ref.kind !== "Role") err(`${id(b)}: roleRef must be a Role of rbac.authorization.k8s.io (namespaced), is ${JSON.stringify(ref)}`);
    const role = find(objects, "Role", ref.name);
    if (role === undefined) err(`${id(b)}: roleRef names Role ${ref.name}, which does not exist`);
    const bound = (b.subjects ?? []).some((s: Obj) => s.kind === "ServiceAccount" && s.name === accountName && (s.namespace === undefined || s.namespace === NAMESPACE));
    if (!bound) err(`${id(b)}: does not bind ServiceAccount ${accountName} of the pods' namespace`);
    else if (role !== undefined) roles.push(role);
  }
  if (roles.length === 0) {
    err(`ServiceAccount ${accountName}: no RoleBinding binds it to a Role`);
    return errors;
  }

  const granted = new Set<Grant>();
  for (const role of roles) {
    for (const [i, rule] of (role.rules ?? []).entries()) {
      const where = `${id(role)} rules[${i}]`;
      const fields: [string, string[]][] = [["apiGroups", rule.apiGroups ?? []], ["resources", rule.resources ?? []], ["verbs", rule.verbs ?? []], ["resourceNames", rule.resourceNames ?? []]];
      for (const [field, values] of fields) if (values.includes("*")) err(`${where}: no wildcard in ${field}`);
      if ((rule.nonResourceURLs ?? []).length > 0) err(`${where}: nonResourceURLs belong to ClusterRoles`);
      const names: string[] = (rule.resourceNames ?? []).length > 0 ? rule.resourceNames : ["*"];
      for (const g of rule.apiGroups ?? []) for (const r of rule.resources ?? []) for (const v of rule.verbs ?? []) for (const n of names) granted.add(grant(g, r, v, n));
    }
  }

  // What the pods need: every API call, on each pod's objects (or on any, where RBAC cannot restrict by name).
  const needed = new Set<Grant>();
  for (const config of pods.values()) {
    const objectName = { lease: leaseName(config.group), candidate: candidateLeaseName(config.group, config.nodeId), pod: config.podName } as const;
    for (const call of API_CALLS) {
      for (const name of call.on === "any" ? ["*"] : call.on.map((o) => objectName[o])) needed.add(grant(call.apiGroup, call.resource, call.verb, name));
    }
  }
  for (const n of needed) {
    const [what, verb] = n.split(" ");
    if (!granted.has(n) && !granted.has(`${what} ${verb} *`)) err(`the Role does not allow ${n} (the coordinator calls it)`);
    else if (!n.endsWith(" *") && !granted.has(n)) err(`the Role allows ${what} ${verb} on any object; restrict it with resourceNames to ${n.split(" ")[2]} and the other objects the pods touch`);
  }
  for (const g of granted) if (!needed.has(g)) err(`the Role allows ${g}, which the coordinator never needs`);
  return errors;
}

// ---------- consistency ----------

/** Every consistency problem in a set of rendered objects (empty = consistent). */
function consistencyErrors(objects: Obj[]): string[] {
  const errors: string[] = [];
  const err = (m: string) => errors.push(m);

  const seen = new Set<string>();
  for (const o of objects) {
    if (seen.has(id(o))) err(`${id(o)} appears twice`);
    seen.add(id(o));
  }

  const sets = workloads(objects);
  const cache = find(objects, "StatefulSet", STATEFULSET);
  if (cache === undefined) err(`no StatefulSet ${STATEFULSET}`);
  if (sets.length !== 1) err(`one workload expected (every pod a candidate), found ${sets.map(id).join(", ")}`);
  if (cache !== undefined && (cache.spec?.replicas ?? 1) < MIN_PODS) err(`StatefulSet/${STATEFULSET}: replicas should be at least ${MIN_PODS}, is ${cache.spec?.replicas}`);

  // Workload selectors select their own pods and no other workload's.
  for (const w of sets) {
    if (!selects(w.spec?.selector, podLabels(w))) err(`${id(w)}: spec.selector does not match its pod template labels`);
    for (const other of sets) {
      if (other !== w && selects(w.spec?.selector, podLabels(other))) err(`${id(w)}: spec.selector also selects the pods of ${id(other)}`);
    }
  }

  // Services select some workload's pods (with the role label the coordinator sets at run time,
  // or before it has), and their target ports exist there.
  const withRole = (w: Obj, role: string | undefined) => (role === undefined ? podLabels(w) : { ...podLabels(w), [ROLE_LABEL]: role });
  const selectedAs = (s: Obj | undefined, role: string | undefined) => sets.filter((w) => selects(s?.spec?.selector, withRole(w, role), true));
  const services = byKind(objects, "Service");
  for (const s of services) {
    const targets = [...new Set([undefined, "primary", "replica"].flatMap((role) => selectedAs(s, role)))];
    if (targets.length === 0) {
      err(`${id(s)}: selector ${JSON.stringify(s.spec?.selector)} matches the pod template labels of no workload`);
      continue;
    }
    for (const p of s.spec?.ports ?? []) {
      const target = p.targetPort ?? p.port;
      for (const w of targets) {
        if (resolvePort(w, target) === undefined) err(`${id(s)}: port ${p.name ?? p.port} targets ${JSON.stringify(target)}, which ${id(w)} does not declare`);
      }
    }
  }
  const names = (ws: Obj[]) => ws.map((w) => w.metadata.name).sort().join(",");
  const writes = find(objects, "Service", "ripplecache-primary");
  if (writes === undefined) err("no Service ripplecache-primary");
  else {
    if (writes.spec?.selector?.[ROLE_LABEL] !== "primary") err(`Service/ripplecache-primary must select ${ROLE_LABEL}: primary (the label the coordinator sets on the lease holder's pod), selects ${JSON.stringify(writes.spec?.selector)}`);
    if (names(selectedAs(writes, "primary")) !== STATEFULSET) err(`Service/ripplecache-primary must select the ${STATEFULSET} pod labelled primary, selects [${names(selectedAs(writes, "primary"))}]`);
    if (selectedAs(writes, "replica").length + selectedAs(writes, undefined).length > 0) err("Service/ripplecache-primary must not select a pod labelled replica, or not labelled yet");
  }
  for (const name of [STATEFULSET, "ripplecache-peers"]) {
    const s = find(objects, "Service", name);
    for (const role of [undefined, "primary", "replica"]) {
      if (names(selectedAs(s, role)) !== STATEFULSET) err(`Service/${name} must select every pod whatever its role (${role ?? "no role label yet"}: selects [${names(selectedAs(s, role))}])`);
    }
  }
  const peers = find(objects, "Service", "ripplecache-peers");
  if (peers?.spec?.clusterIP !== "None") err("Service/ripplecache-peers must be headless (clusterIP: None)");
  if (peers?.spec?.publishNotReadyAddresses !== true) err("Service/ripplecache-peers must publish not-ready addresses (replicas reach a primary that is starting)");
  for (const w of sets.filter((w) => w.kind === "StatefulSet")) {
    const governing = find(objects, "Service", w.spec?.serviceName);
    if (governing === undefined) err(`${id(w)}: serviceName ${w.spec?.serviceName} is no Service here`);
    else if (governing.spec?.clusterIP !== "None" || !selects(governing.spec?.selector, podLabels(w), true)) {
      err(`${id(w)}: serviceName ${w.spec?.serviceName} must be a headless Service that selects its pods (stable pod DNS names)`);
    }
  }

  // One PodDisruptionBudget per pod, matching something.
  const pdbs = byKind(objects, "PodDisruptionBudget");
  if (pdbs.length === 0) err("no PodDisruptionBudget");
  for (const b of pdbs) {
    if (!sets.some((w) => selects(b.spec?.selector, podLabels(w)))) err(`${id(b)}: selector matches the pods of no workload`);
  }
  for (const w of sets) {
    const covering = pdbs.filter((b) => selects(b.spec?.selector, podLabels(w)));
    if (covering.length !== 1) err(`${id(w)}: its pods are covered by ${covering.length} PodDisruptionBudgets (want exactly 1: the eviction API refuses pods under several)`);
  }

  // Volumes that name ConfigMaps and Secrets.
  for (const w of sets) {
    for (const v of w.spec?.template?.spec?.volumes ?? []) {
      for (const [kind, ref] of [["ConfigMap", v.configMap], ["Secret", v.secret && { name: v.secret.secretName, optional: v.secret.optional }]] as const) {
        if (ref && find(objects, kind, ref.name) === undefined && ref.optional !== true) err(`${id(w)}: volume ${v.name} names ${kind} ${ref.name}, which does not exist (and is not optional)`);
      }
    }
  }

  // Per container: settings, ports, probes, grace period, security, resources, metrics.
  const configs = new Map<string, ServerConfig>();
  for (const w of sets) {
    const pod = w.spec?.template?.spec ?? {};
    const where = id(w);
    if (pod.enableServiceLinks !== false) {
      err(`${where}: enableServiceLinks must be false: the Service "ripplecache" would inject RIPPLECACHE_PORT=tcp://IP:7420, which the server reads as --port`);
    }
    const psc = pod.securityContext ?? {};
    if (psc.runAsUser !== RUN_AS_USER) err(`${where}: pod securityContext.runAsUser must be ${RUN_AS_USER}`);
    for (const c of containers(w)) {
      const cwhere = `${where} container ${c.name}`;
      const view = containerView(objects, w, c, errors);
      const config = serverConfig(view, cwhere, errors);
      if (c.image !== IMAGE) err(`${cwhere}: image is ${c.image}, expected ${IMAGE}`);

      // Security: restricted.
      const sc = c.securityContext ?? {};
      if ((sc.runAsNonRoot ?? psc.runAsNonRoot) !== true) err(`${cwhere}: runAsNonRoot must be true`);
      if ((sc.runAsUser ?? psc.runAsUser) !== RUN_AS_USER) err(`${cwhere}: runAsUser must be ${RUN_AS_USER}`);
      if (sc.allowPrivilegeEscalation !== false) err(`${cwhere}: allowPrivilegeEscalation must be false`);
      if (sc.readOnlyRootFilesystem !== true) err(`${cwhere}: readOnlyRootFilesystem must be true`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) err(`${cwhere}: capabilities must drop ALL`);
      if ((sc.capabilities?.add ?? []).length > 0) err(`${cwhere}: capabilities must add nothing`);
      if (sc.privileged === true) err(`${cwhere}: must not be privileged`);
      if ((sc.seccompProfile ?? psc.seccompProfile)?.type !== "RuntimeDefault") err(`${cwhere}: seccompProfile must be RuntimeDefault`);

      // Probes refer to declared ports.
      for (const kind of ["livenessProbe", "readinessProbe", "startupProbe"] as const) {
        const probe = c[kind];
        if (probe === undefined) {
          err(`${cwhere}: no ${kind}`);
          continue;
        }
        const handlers = ["exec", "httpGet", "tcpSocket", "grpc"].filter((h) => probe[h] !== undefined);
        if (handlers.length !== 1) err(`${cwhere}: ${kind} must have exactly one handler (exec, httpGet, tcpSocket or grpc), has ${handlers.length}`);
        const port = probe.httpGet?.port ?? probe.tcpSocket?.port ?? probe.grpc?.port;
        if (port !== undefined && resolvePort(w, port) === undefined) err(`${cwhere}: ${kind} uses port ${JSON.stringify(port)}, which the container does not declare`);
      }
      const startup = c.startupProbe;
      if (startup !== undefined && (startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3) < MIN_STARTUP_SECONDS) {
        err(`${cwhere}: startupProbe allows ${(startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3)} s; a replica's first sync may take ${MIN_STARTUP_SECONDS} s or more`);
      }

      if (config === undefined) continue;
      configs.set(w.metadata.name, config);
      if (config.host !== "0.0.0.0") err(`${cwhere}: --host must be 0.0.0.0 (the kubelet and Services connect to the pod IP), is ${config.host}`);
      const grpcPort = resolvePort(w, "grpc");
      const adminPort = resolvePort(w, "admin");
      if (grpcPort !== config.port) err(`${cwhere}: the server listens on ${config.port} but the port named grpc is ${grpcPort}`);
      if (config.adminPort === undefined || adminPort !== config.adminPort) err(`${cwhere}: the admin port is ${config.adminPort} but the port named admin is ${adminPort}`);

      const live = c.livenessProbe;
      if (live?.grpc === undefined || live.grpc.port !== config.port || live.grpc.service !== "liveness") {
        err(`${cwhere}: livenessProbe must be the gRPC health check on the main port ${config.port}, service "liveness"`);
      }
      for (const kind of ["readinessProbe", "startupProbe"] as const) {
        const get = c[kind]?.httpGet;
        if (get === undefined || get.path !== "/readyz" || resolvePort(w, get.port) !== config.adminPort) {
          err(`${cwhere}: ${kind} must be httpGet /readyz on the admin port ${config.adminPort}`);
        }
      }

      // Grace period covers preStop + the primary's switchover on SIGTERM (its wait for the replica,
      // then the hand-over and the release, one API call each, bounded by half the renew deadline)
      // + drain + shutdown.
      const grace = pod.terminationGracePeriodSeconds ?? 30;
      const switchoverMs = config.coordinator === "static" ? 0 : STOP_SWITCHOVER_MS + 2 * Math.floor(config.renewDeadlineMs / 2);
      const needed = preStopSeconds(c) + (switchoverMs + config.drainPeriodMs + config.shutdownTimeoutMs) / 1000;
      if (config.drainPeriodMs <= 0) err(`${cwhere}: RIPPLECACHE_DRAIN_PERIOD should be set (> 0) so Services move traffic before the node stops`);
      if (!(grace > needed)) err(`${where}: terminationGracePeriodSeconds ${grace} must exceed preStop ${preStopSeconds(c)} s + switchover ${switchoverMs} ms + drain ${config.drainPeriodMs} ms + shutdown ${config.shutdownTimeoutMs} ms = ${needed} s`);

      // Memory: the limit covers the store bound, the change log, the baseline and headroom.
      const limit = c.resources?.limits?.memory;
      if (limit === undefined) err(`${cwhere}: no memory limit`);
      else {
        const want = (config.maxMemoryBytes + config.changeLogBytes + BASELINE_BYTES) * HEADROOM;
        if (quantity(limit) < want) err(`${cwhere}: memory limit ${limit} < (max-memory + change-log-bytes + 100 MiB) x ${HEADROOM} = ${Math.ceil(want / 2 ** 20)} MiB`);
        const request = c.resources?.requests?.memory;
        if (request !== undefined && quantity(request) > quantity(limit)) err(`${cwhere}: memory request ${request} exceeds the limit ${limit}`);
        const heap = /--max-old-space-size=([0-9]+)/.exec(view.env.get("NODE_OPTIONS") ?? "");
        if (heap !== null && Number(heap[1]) * 2 ** 20 >= quantity(limit)) err(`${cwhere}: --max-old-space-size ${heap[1]} MiB must stay below the memory limit ${limit}`);
      }

      // Metrics and telemetry.
      const annotations = w.spec?.template?.metadata?.annotations ?? {};
      if (annotations["prometheus.io/scrape"] !== "true") err(`${where}: pod annotation prometheus.io/scrape must be "true"`);
      if (annotations["prometheus.io/port"] !== String(config.adminPort)) err(`${where}: pod annotation prometheus.io/port must be the admin port ${config.adminPort}, is ${annotations["prometheus.io/port"]}`);
      if (annotations["prometheus.io/path"] !== "/metrics") err(`${where}: pod annotation prometheus.io/path must be /metrics`);
      if ((view.env.get("OTEL_SERVICE_NAME") ?? "") === "") err(`${cwhere}: OTEL_SERVICE_NAME is not set`);
      if ((view.env.get("OTEL_EXPORTER_OTLP_ENDPOINT") ?? "") !== "") err(`${cwhere}: OTEL_EXPORTER_OTLP_ENDPOINT must be left unset by default (no collector is assumed)`);

      // The pod advertises its own stable DNS name.
      const advertised = hostPort(config.advertiseAddress);
      const podName = `${w.metadata.name}-0`;
      if (advertised === undefined || !podDnsNames(podName, w.spec?.serviceName).includes(advertised.host) || advertised.port !== config.port) {
        err(`${cwhere}: --advertise-address must be the pod's DNS name through ${w.spec?.serviceName} and port ${config.port} ($(POD_NAME).${w.spec?.serviceName}...), is ${config.advertiseAddress}`);
      }
    }

    // Spread across nodes: a hostname topology spread or anti-affinity over this workload's pods.
    const spread = (pod.topologySpreadConstraints ?? []).some((t: Obj) => t.topologyKey === "kubernetes.io/hostname" && selects(t.labelSelector, podLabels(w)));
    const anti = pod.affinity?.podAntiAffinity;
    const terms: Obj[] = [...(anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []), ...(anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((p: Obj) => p.podAffinityTerm)];
    const antiAffinity = terms.some((t) => t.topologyKey === "kubernetes.io/hostname" && selects(t.labelSelector, podLabels(w)));
    if (!spread && !antiAffinity) err(`${where}: pods are not spread across nodes (topologySpreadConstraints or podAntiAffinity on kubernetes.io/hostname)`);
  }

  // Election: every pod a candidate of the same group through the Kubernetes coordinator, each with its own node id.
  if (cache !== undefined && configs.has(STATEFULSET)) {
    const c = containers(cache)[0]!;
    const pods = podConfigs(objects, cache, c, errors);
    for (const [pod, config] of pods) {
      const where = `StatefulSet/${STATEFULSET} pod ${pod}`;
      if (config.coordinator !== "kubernetes") err(`${where}: --coordinator must be kubernetes (every pod a candidate), resolves to ${config.coordinator}`);
      if (config.replicaOf !== undefined) err(`${where}: must not set --replica-of (the Lease decides whom each pod follows), is ${config.replicaOf}`);
      if (config.nodeId !== pod) err(`${where}: --node-id must be the pod's name (stable across restarts, unique), resolves to ${config.nodeId}`);
      if (config.podName !== pod) err(`${where}: --pod-name must be the pod's name (the pod it labels), resolves to ${config.podName}`);
      if (config.kubernetesNamespace !== NAMESPACE) err(`${where}: --kubernetes-namespace must be the pod's own (the Role is granted there), resolves to ${config.kubernetesNamespace}`);
    }
    if (new Set([...pods.values()].map((p) => p.group)).size !== 1) err(`StatefulSet/${STATEFULSET}: every pod must be a candidate of the same --group`);
    errors.push(...rbacErrors(objects, cache, pods));
  }
  return errors;
}

// ---------- tests ----------

describe(`k8s/ (kubectl kustomize; checked against the Kubernetes ${MODELS_API_VERSION} API models)`, () => {
  before(rendered);

  test("renders the expected objects", () => {
    const ids = OBJECTS.map((o) => `${o.apiVersion} ${o.kind}/${o.metadata.name.replace(/-[a-z0-9]{10}$/, "-<hash>")}`).sort();
    assert.deepEqual(ids, [
      "apps/v1 StatefulSet/ripplecache",
      "policy/v1 PodDisruptionBudget/ripplecache",
      "rbac.authorization.k8s.io/v1 Role/ripplecache",
      "rbac.authorization.k8s.io/v1 RoleBinding/ripplecache",
      "v1 ConfigMap/ripplecache-config-<hash>",
      "v1 Service/ripplecache",
      "v1 Service/ripplecache-peers",
      "v1 Service/ripplecache-primary",
      "v1 ServiceAccount/ripplecache",
    ]);
  });

  test("every object passes the strict schema check (no unknown field, no wrong type)", () => {
    const errors = OBJECTS.flatMap((o) => checkManifest(o));
    assert.deepEqual(errors, []);
  });

  test("selectors, ports, probes, references, grace period, security and settings are consistent", () => {
    assert.deepEqual(consistencyErrors(OBJECTS), []);
  });

  test("API_CALLS (what the Role is checked against) lists exactly the API calls src/coordination/kubernetes.ts makes", () => {
    // Each call goes through a client-node API object: this.leases (CoordinationV1Api) or this.core (CoreV1Api).
    const source = readFileSync(join(ROOT, "src", "coordination", "kubernetes.ts"), "utf8");
    const verbOf: Record<string, string> = { read: "get", create: "create", replace: "update", patch: "patch", list: "list", delete: "delete", deleteCollection: "deletecollection", watch: "watch" };
    const resourceOf: Record<string, [string, string]> = { Lease: ["coordination.k8s.io", "leases"], Pod: ["", "pods"] };
    const calls = [...source.matchAll(/this\.(?:leases|core)\.([a-z]+)Namespaced([A-Z][A-Za-z]*)\(/g)];
    assert.ok(calls.length > 0, "no API call found in kubernetes.ts: update this test's pattern");
    const made = new Set<string>();
    for (const [, method, kind] of calls) {
      const verb = verbOf[method!];
      const resource = resourceOf[kind!];
      assert.ok(verb !== undefined && resource !== undefined, `kubernetes.ts calls ${method}Namespaced${kind}: map it to a verb and resource here and in API_CALLS`);
      made.add(`${resource[0]}/${resource[1]} ${verb}`);
    }
    assert.doesNotMatch(source, /this\.(?:leases|core)\.(?![a-z]+Namespaced)/, "an API call this test cannot map");
    assert.deepEqual([...new Set(API_CALLS.map((c) => `${c.apiGroup}/${c.resource} ${c.verb}`))].sort(), [...made].sort());
  });

  test("the ConfigMap holds only settings the server knows, and no secrets", () => {
    const config = OBJECTS.find((o) => o.kind === "ConfigMap" && o.metadata.name.startsWith("ripplecache-config"))!;
    const known = new Set(SETTINGS.map((s) => `RIPPLECACHE_${s.flag.toUpperCase().replaceAll("-", "_")}`));
    for (const key of Object.keys(config.data)) {
      if (key.startsWith("RIPPLECACHE_")) assert.ok(known.has(key), `ConfigMap key ${key} is no setting of ripplecache serve`);
      else assert.ok(key.startsWith("OTEL_") || key === "NODE_OPTIONS", `unexpected ConfigMap key ${key}`);
      assert.ok(!/TOKEN$/.test(key), `${key}: tokens belong in the Secret ripplecache-tokens`);
    }
    assert.equal(config.data.RIPPLECACHE_DRAIN_PERIOD, "5000");
  });

  test("tokens come from the optional Secret ripplecache-tokens and take effect when it exists", () => {
    const secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "ripplecache-tokens" },
      type: "Opaque",
      stringData: { "auth-token": "client-secret", "replication-token": "peer-secret", "admin-token": "admin-secret" },
    };
    assert.deepEqual(checkManifest(secret), []);
    for (const w of workloads(OBJECTS)) {
      const errors: string[] = [];
      const c = containers(w)[0]!;
      const without = serverConfig(containerView(OBJECTS, w, c, errors), id(w), errors);
      assert.deepEqual(errors, []);
      assert.equal(without?.authToken, undefined, `${id(w)}: no Secret, no auth`);
      const withSecret = serverConfig(containerView([...OBJECTS, secret], w, c, errors), id(w), errors);
      assert.deepEqual(errors, []);
      assert.equal(withSecret?.authToken, "client-secret");
      assert.equal(withSecret?.replicationToken, "peer-secret");
      assert.equal(withSecret?.adminToken, "admin-secret");
    }
  });

  test("the Role suffices at run time: three coordinators elect, label their pods, fail over and restart through an API server that enforces it", async () => {
    const set = find(OBJECTS, "StatefulSet", STATEFULSET)!;
    const errors: string[] = [];
    const pods = [...podConfigs(OBJECTS, set, containers(set)[0]!, errors).entries()];
    assert.deepEqual(errors, []);
    const rules: Obj[] = find(OBJECTS, "Role", "ripplecache")!.rules;
    const kube = new FakeKube();
    await kube.start();
    // The stand-in API server (test/helpers/fake-kube.ts) behind RBAC: each request is authorized as the API
    // server would (verb from method and path, resourceNames only for requests that name an object) against the Role.
    const denied: string[] = [];
    const used = new Set<string>();
    const authorize = (req: IncomingMessage): string | undefined => {
      const url = new URL(req.url ?? "/", "http://x");
      const m = /^\/(?:api|apis\/([^/]+))\/v1\/namespaces\/([^/]+)\/([a-z]+)(?:\/([^/]+))?$/.exec(url.pathname);
      if (m === null) return `${req.method} ${url.pathname}: not a namespaced resource request`;
      const [, apiGroup = "", namespace, resource, name] = m;
      const verb = name === undefined ? { GET: url.searchParams.get("watch") === "true" ? "watch" : "list", POST: "create", DELETE: "deletecollection" }[req.method!] : { GET: "get", PUT: "update", PATCH: "patch", DELETE: "delete" }[req.method!];
      const what = `${apiGroup === "" ? "core" : apiGroup}/${resource} ${verb} ${name ?? "*"}`;
      if (namespace !== NAMESPACE) return `${what} in namespace ${namespace}: the RoleBinding grants only ${NAMESPACE}`;
      const allowed = rules.some((r) => r.apiGroups.includes(apiGroup) && r.resources.includes(resource) && r.verbs.includes(verb) && ((r.resourceNames ?? []).length === 0 || (name !== undefined && r.resourceNames.includes(name))));
      if (!allowed) return what;
      used.add(`${apiGroup}/${resource} ${verb}`);
      return undefined;
    };
    const proxy = createServer((req: IncomingMessage, res: ServerResponse) => {
      const refusal = authorize(req);
      if (refusal !== undefined) {
        denied.push(refusal);
        res.writeHead(403, { "content-type": "application/json" });
        res.end(JSON.stringify({ apiVersion: "v1", kind: "Status", status: "Failure", code: 403, reason: "Forbidden", message: `forbidden: ${refusal}` }));
        return;
      }
      const upstream = new URL(kube.url);
      const forward = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      forward.on("error", () => res.destroy());
      req.pipe(forward);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: "rbac", server: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: "ripplecache", token: "t" }],
      contexts: [{ name: "c", cluster: "rbac", user: "ripplecache", namespace: NAMESPACE }],
      currentContext: "c",
    });

    const timings = { leaseDurationMs: 900, renewDeadlineMs: 600, retryPeriodMs: 100 };
    const start = (pod: string, config: ServerConfig) => {
      const lock = new KubernetesLock({ group: config.group, nodeId: config.nodeId, namespace: config.kubernetesNamespace, podName: config.podName, callTimeoutMs: 300, kubeConfig });
      const elector: LeaderElector = new LeaderElector(lock, {
        ...timings,
        group: config.group,
        nodeId: config.nodeId,
        address: `${pod}.ripplecache-peers.${NAMESPACE}.svc:7420`,
        rank: () => ({ term: 0, history: "", revision: 0 }),
        onStartedLeading: async () => {},
        onStoppedLeading: () => {},
        onLeader: () => {},
      });
      lock.observeRole(() => (elector.holdsValidLease() ? "primary" : "replica"));
      elector.start();
      return { pod, lock, elector };
    };
    for (const [pod] of pods) kube.addPod(NAMESPACE, pod);
    const nodes = pods.map(([pod, config]) => start(pod, config));
    const label = (pod: string) => kube.podLabel(NAMESPACE, pod, ROLE_LABEL);
    const labelled = (primary: string) => nodes.every((n) => label(n.pod) === (n.pod === primary ? "primary" : "replica"));
    try {
      const first = await waitFor("a primary, its pod labelled primary and the others replica", () => nodes.find((n) => n.elector.holdsValidLease() && labelled(n.pod)), 15_000);
      // It releases the lease (a stop): another pod takes it over and relabels.
      await first.elector.stop(true);
      await first.lock.close();
      const rest = nodes.filter((n) => n !== first);
      await waitFor("a second primary", () => rest.find((n) => n.elector.holdsValidLease() && label(n.pod) === "primary"), 15_000);
      // The first pod's process starts again: its candidate Lease exists (create conflicts, it reads and replaces it).
      nodes[nodes.indexOf(first)] = start(first.pod, new Map(pods).get(first.pod)!);
      await waitFor("the restarted pod labelled replica", () => label(first.pod) === "replica", 15_000);
      assert.ok(kube.conflicts.create > 0, "the restarted pod's create of its candidate Lease conflicted");
    } finally {
      await Promise.all(nodes.map(async (n) => {
        await n.elector.stop(false);
        await n.lock.close();
      }));
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
      await kube.stop();
    }
    assert.deepEqual(denied, [], "requests the Role refused");
    assert.deepEqual([...used].sort(), [...new Set(API_CALLS.map((c) => `${c.apiGroup}/${c.resource} ${c.verb}`))].sort(), "every call in API_CALLS was made");
  });

  test(
    "the image installs the coordinator's client library (the Dockerfile's npm ci --omit=dev installs package.json's dependencies only)",
    () => {
      assert.match(readFileSync(join(ROOT, "Dockerfile"), "utf8"), /npm ci --omit=dev/);
      const dependencies = Object.keys((JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { dependencies?: Record<string, string> }).dependencies ?? {});
      // The packages the backend the pods run imports (src/coordination/kubernetes.ts), bare specifiers only.
      const source = readFileSync(join(ROOT, "src", "coordination", "kubernetes.ts"), "utf8");
      const packages = [...source.matchAll(/^import [^;]* from "([^".][^"]*)";$/gm)].map((m) => m[1]!).filter((p) => !p.startsWith("node:"));
      assert.ok(packages.includes("@kubernetes/client-node"));
      for (const p of packages) assert.ok(dependencies.includes(p), `${p} is not in package.json's dependencies: the image lacks it`);
    },
  );

  test("the Dockerfile's entrypoint and user are the ones the manifests assume", () => {
    const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
    const lastStage = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
    // The server's V8 flags (src/cli/node-flags.ts) come before the script, as node requires.
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(lastStage);
    assert.ok(entrypoint, "the last stage has an exec-form ENTRYPOINT");
    assert.deepEqual(JSON.parse(entrypoint[1]), ["node", ...SERVER_NODE_FLAGS, "bin/ripplecache.js"]);
    assert.match(lastStage, /^CMD \["serve", ?"--host", ?"0\.0\.0\.0"\]$/m);
    assert.match(lastStage, new RegExp(`^USER ${RUN_AS_USER}(:${RUN_AS_USER})?$`, "m"));
    assert.match(lastStage, /npm ci --omit=dev/);
  });
});

describe("the checks catch mistakes (mutated copies of the rendered objects)", () => {
  before(rendered);
  const statefulSet = () => structuredClone(find(OBJECTS, "StatefulSet", STATEFULSET)!);
  const expectError = (errors: string[], pattern: RegExp) =>
    assert.ok(errors.some((e) => pattern.test(e)), `expected an error matching ${pattern}, got:\n${errors.join("\n") || "(none)"}`);

  test("an unknown field, nested or at the top, is an error", () => {
    const s = statefulSet();
    s.spec.template.spec.containers[0].livenessProbe.grpc.prot = 7420;
    s.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true; // wrong capitalisation
    s.spce = {};
    const errors = checkManifest(s);
    expectError(errors, /spec\.template\.spec\.containers\[0\]\.livenessProbe\.grpc\.prot: unknown field "prot" in V1GRPCAction/);
    expectError(errors, /securityContext\.readOnlyRootFileSystem: unknown field/);
    expectError(errors, /^StatefulSet\/ripplecache: spce: unknown field "spce" in V1StatefulSet/);
    assert.equal(errors.length, 3, errors.join("\n"));
  });

  test("RBAC objects are checked as strictly (unknown field, wrong type, missing required field)", () => {
    const role = structuredClone(find(OBJECTS, "Role", "ripplecache")!);
    role.rules[0].verb = ["get"];
    role.rules[1].resources = "leases";
    const binding = structuredClone(find(OBJECTS, "RoleBinding", "ripplecache")!);
    delete binding.roleRef.name;
    binding.roleRef.kind = "Roles";
    const account = structuredClone(find(OBJECTS, "ServiceAccount", "ripplecache")!);
    account.automountServiceAccountToken = "false";
    const errors = [...checkManifest(role), ...checkManifest(binding), ...checkManifest(account)];
    expectError(errors, /^Role\/ripplecache: rules\[0\]\.verb: unknown field "verb" in V1PolicyRule/);
    expectError(errors, /^Role\/ripplecache: rules\[1\]\.resources: expected an array of string, got string "leases"/);
    expectError(errors, /^RoleBinding\/ripplecache: roleRef\.name: required field missing in V1RoleRef/);
    expectError(errors, /^RoleBinding\/ripplecache: roleRef\.kind: "Roles" is not one of Role, ClusterRole/);
    expectError(errors, /^ServiceAccount\/ripplecache: automountServiceAccountToken: expected a boolean, got string "false"/);
    assert.equal(errors.length, 5, errors.join("\n"));
  });

  test("a wrong type (scalar, integer, IntOrString, map, array, quantity) is an error", () => {
    const s = statefulSet();
    const c = s.spec.template.spec.containers[0];
    s.spec.replicas = "3";
    c.ports[0].containerPort = 7420.5;
    c.readinessProbe.httpGet.port = true;
    s.spec.template.metadata.labels["app.kubernetes.io/name"] = 1;
    c.args = "serve";
    c.resources.limits.memory = "512MB";
    s.spec.template.spec.enableServiceLinks = "false";
    const errors = checkManifest(s);
    expectError(errors, /spec\.replicas: expected a number, got string "3"/);
    expectError(errors, /containers\[0\]\.ports\[0\]\.containerPort: expected an integer \(int32\), got 7420\.5/);
    expectError(errors, /readinessProbe\.httpGet\.port: expected an integer or a string, got boolean true/);
    expectError(errors, /template\.metadata\.labels\.app\.kubernetes\.io\/name: expected a string, got number 1/);
    expectError(errors, /containers\[0\]\.args: expected an array of string, got string "serve"/);
    expectError(errors, /resources\.limits\.memory: "512MB" is not a quantity/);
    expectError(errors, /enableServiceLinks: expected a boolean, got string "false"/);
    assert.equal(errors.length, 7, errors.join("\n"));
  });

  test("a missing required field and a value outside an enum are errors", () => {
    const s = statefulSet();
    delete s.spec.template.spec.containers[0].name;
    s.spec.template.spec.containers[0].imagePullPolicy = "Sometimes";
    const errors = checkManifest(s);
    expectError(errors, /containers\[0\]\.name: required field missing in V1Container/);
    expectError(errors, /imagePullPolicy: "Sometimes" is not one of Always, IfNotPresent, Never/);
  });

  test("inconsistencies between objects are errors", () => {
    const objects = structuredClone(OBJECTS);
    const set = find(objects, "StatefulSet", STATEFULSET)!;
    const c = set.spec.template.spec.containers[0];
    find(objects, "Service", "ripplecache-primary")!.spec.ports[0].targetPort = "grcp";
    c.readinessProbe.httpGet.port = "metrics";
    c.startupProbe.grpc = { port: 7420 };
    c.securityContext.allowPrivilegeEscalation = true;
    c.envFrom[0].configMapRef.name = "ripplecache-settings";
    find(objects, "PodDisruptionBudget", "ripplecache")!.spec.selector.matchLabels = { app: "ripplecache" };
    const errors = consistencyErrors(objects);
    expectError(errors, /Service\/ripplecache-primary: port grpc targets "grcp", which StatefulSet\/ripplecache does not declare/);
    expectError(errors, /readinessProbe uses port "metrics", which the container does not declare/);
    expectError(errors, /startupProbe must have exactly one handler \(exec, httpGet, tcpSocket or grpc\), has 2/);
    expectError(errors, /envFrom ConfigMap ripplecache-settings does not exist/);
    expectError(errors, /allowPrivilegeEscalation must be false/);
    expectError(errors, /PodDisruptionBudget\/ripplecache: selector matches the pods of no workload/);
  });

  test("the election settings: coordinator, node ids, the write Service's selector", () => {
    let objects = structuredClone(OBJECTS);
    let args: string[] = find(objects, "StatefulSet", STATEFULSET)!.spec.template.spec.containers[0].args;
    args[args.indexOf("--coordinator") + 1] = "static";
    args[args.indexOf("--node-id") + 1] = "cache";
    find(objects, "Service", "ripplecache-primary")!.spec.selector = { "app.kubernetes.io/name": "ripplecache", "app.kubernetes.io/component": "primary" };
    let errors = consistencyErrors(objects);
    expectError(errors, /pod ripplecache-0: --coordinator must be kubernetes .* resolves to static/);
    expectError(errors, /pod ripplecache-2: --node-id must be the pod's name .* resolves to cache/);
    expectError(errors, /Service\/ripplecache-primary must select ripplecache\.io\/role: primary/);

    objects = structuredClone(OBJECTS);
    find(objects, "Service", "ripplecache-primary")!.spec.selector = { "app.kubernetes.io/name": "ripplecache" };
    find(objects, "Service", "ripplecache")!.spec.selector[ROLE_LABEL] = "replica";
    errors = consistencyErrors(objects);
    expectError(errors, /Service\/ripplecache-primary must not select a pod labelled replica/);
    expectError(errors, /Service\/ripplecache must select every pod whatever its role \(primary: selects \[\]\)/);

    objects = structuredClone(OBJECTS);
    args = find(objects, "StatefulSet", STATEFULSET)!.spec.template.spec.containers[0].args;
    args.push("--replica-of", "ripplecache-0.ripplecache-peers.$(POD_NAMESPACE).svc:7420");
    errors = consistencyErrors(objects);
    expectError(errors, /ripplecache serve would refuse its flags or environment: --replica-of and --coordinator kubernetes exclude each other/);
  });

  test("RBAC: the Role grants exactly the coordinator's calls, on each pod's objects, to the pods' account", () => {
    let objects = structuredClone(OBJECTS);
    const role = () => find(objects, "Role", "ripplecache")!;
    role().rules[0].verbs = ["get"]; // update dropped
    role().rules[2].verbs.push("get"); // pods get: never called
    role().rules[1].verbs.push("delete");
    let errors = consistencyErrors(objects);
    expectError(errors, /the Role does not allow coordination\.k8s\.io\/leases update ripplecache-default \(the coordinator calls it\)/);
    expectError(errors, /the Role allows core\/pods get ripplecache-0, which the coordinator never needs/);
    expectError(errors, /the Role allows coordination\.k8s\.io\/leases delete \*, which the coordinator never needs/);

    objects = structuredClone(OBJECTS);
    delete role().rules[2].resourceNames; // pods patch on any pod
    role().rules[1].resourceNames = ["ripplecache-default"]; // create restricted by name: cannot work
    role().rules.push({ apiGroups: ["*"], resources: ["*"], verbs: ["*"] });
    errors = consistencyErrors(objects);
    expectError(errors, /the Role allows core\/pods patch on any object; restrict it with resourceNames to ripplecache-0/);
    expectError(errors, /the Role does not allow coordination\.k8s\.io\/leases create \* \(the coordinator calls it\)/);
    expectError(errors, /rules\[3\]: no wildcard in verbs/);

    objects = structuredClone(OBJECTS);
    find(objects, "StatefulSet", STATEFULSET)!.spec.replicas = 4; // a fourth pod the Role does not name
    errors = consistencyErrors(objects);
    expectError(errors, /does not allow coordination\.k8s\.io\/leases update ripplecache-default-candidate-ripplecache-3/);
    expectError(errors, /does not allow core\/pods patch ripplecache-3/);

    objects = structuredClone(OBJECTS);
    find(objects, "StatefulSet", STATEFULSET)!.spec.template.spec.serviceAccountName = "other";
    find(objects, "StatefulSet", STATEFULSET)!.spec.template.spec.automountServiceAccountToken = false;
    errors = consistencyErrors(objects);
    expectError(errors, /serviceAccountName other is no ServiceAccount here/);
    expectError(errors, /the pods need their service account token/);
    expectError(errors, /RoleBinding\/ripplecache: does not bind ServiceAccount other/);

    objects = structuredClone(OBJECTS);
    find(objects, "RoleBinding", "ripplecache")!.roleRef.kind = "ClusterRole";
    find(objects, "RoleBinding", "ripplecache")!.subjects[0].namespace = "elsewhere";
    errors = consistencyErrors(objects);
    expectError(errors, /roleRef must be a Role of rbac\.authorization\.k8s\.io/);
    expectError(errors, /does not bind ServiceAccount ripplecache of the pods' namespace/);
  });

  test("a grace period shorter than preStop + switchover + drain + shutdown, and unknown server flags, are errors", () => {
    const objects = structuredClone(OBJECTS);
    const set = find(objects, "StatefulSet", STATEFULSET)!;
    set.spec.template.spec.terminationGracePeriodSeconds = 20;
    let errors = consistencyErrors(objects);
    expectError(errors, new RegExp(`terminationGracePeriodSeconds 20 must exceed preStop 2 s \\+ switchover ${STOP_SWITCHOVER_MS + 1000} ms \\+ drain 5000 ms \\+ shutdown 10000 ms = ${17 + (STOP_SWITCHOVER_MS + 1000) / 1000} s`));
    set.spec.template.spec.containers[0].args.push("--no-such-flag", "1");
    errors = consistencyErrors(objects);
    expectError(errors, /ripplecache serve would refuse its flags or environment: .*no-such-flag/);
  });
});
