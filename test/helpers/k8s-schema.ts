import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as generated from "@kubernetes/client-node/dist/gen/models/all.js";

/**
 * A strict check of Kubernetes objects against the API models that
 * @kubernetes/client-node generates from the Kubernetes OpenAPI spec: every
 * model class carries an `attributeTypeMap` (field name, type, format), and its
 * .d.ts marks the required fields (no `?`). The checker walks an object with
 * those tables: an unknown field, a value of the wrong type (nested objects,
 * arrays, maps, IntOrString, int32/int64), a missing required field, an
 * invalid quantity or a value outside a few known enums is an error.
 *
 * What it cannot see: cross-field rules the API server enforces in Go
 * (validation.go). Those that matter here are asserted by test/k8s.test.ts.
 */

interface Attribute {
  readonly name: string;
  readonly baseName: string;
  readonly type: string;
  readonly format: string;
}

interface ModelClass {
  readonly attributeTypeMap?: readonly Attribute[];
  getAttributeTypeMap?(): readonly Attribute[];
}

const MODELS = generated as unknown as Record<string, ModelClass | undefined>;
const MODELS_DIR = dirname(fileURLToPath(import.meta.resolve("@kubernetes/client-node/dist/gen/models/all.js")));

/** The Kubernetes release the models were generated from ("v1.34.0"). */
export const MODELS_API_VERSION: string = (() => {
  const m = /OpenAPI spec version: (v[0-9.]+)/.exec(readFileSync(join(MODELS_DIR, "V1Pod.js"), "utf8"));
  return m?.[1] ?? "unknown";
})();

/**
 * Fields whose type in the models is a plain string (or map of strings) but
 * whose API type is resource.Quantity: a number or a quantity string.
 */
const QUANTITY_FIELDS: ReadonlySet<string> = new Set([
  "V1ResourceRequirements.limits",
  "V1ResourceRequirements.requests",
  "V1EmptyDirVolumeSource.sizeLimit",
]);

/** A few closed enums the models type as string (the API server rejects other values). */
const ENUMS: Readonly<Record<string, readonly string[]>> = {
  "V1ContainerPort.protocol": ["TCP", "UDP", "SCTP"],
  "V1ServicePort.protocol": ["TCP", "UDP", "SCTP"],
  "V1Container.imagePullPolicy": ["Always", "IfNotPresent", "Never"],
  "V1Container.terminationMessagePolicy": ["File", "FallbackToLogsOnError"],
  "V1ServiceSpec.type": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
  "V1ServiceSpec.sessionAffinity": ["ClientIP", "None"],
  "V1ServiceSpec.externalTrafficPolicy": ["Cluster", "Local"],
  "V1ServiceSpec.internalTrafficPolicy": ["Cluster", "Local"],
  "V1StatefulSetSpec.podManagementPolicy": ["OrderedReady", "Parallel"],
  "V1StatefulSetUpdateStrategy.type": ["RollingUpdate", "OnDelete"],
  "V1TopologySpreadConstraint.whenUnsatisfiable": ["DoNotSchedule", "ScheduleAnyway"],
  "V1TopologySpreadConstraint.nodeAffinityPolicy": ["Honor", "Ignore"],
  "V1TopologySpreadConstraint.nodeTaintsPolicy": ["Honor", "Ignore"],
  "V1SeccompProfile.type": ["RuntimeDefault", "Localhost", "Unconfined"],
  "V1PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy": ["IfHealthyBudget", "AlwaysAllow"],
  "V1PodSpec.restartPolicy": ["Always", "OnFailure", "Never"],
  "V1PodSpec.dnsPolicy": ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
  "V1LabelSelectorRequirement.operator": ["In", "NotIn", "Exists", "DoesNotExist"],
  "V1HTTPGetAction.scheme": ["HTTP", "HTTPS"],
  "V1RoleRef.kind": ["Role", "ClusterRole"],
  "V1RoleRef.apiGroup": ["rbac.authorization.k8s.io"],
  "RbacV1Subject.kind": ["ServiceAccount", "User", "Group"],
};

/** resource.Quantity: a decimal number with an optional SI, binary SI or exponent suffix. */
const QUANTITY = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$/;

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

export function modelAttributes(model: string): readonly Attribute[] | undefined {
  const cls = MODELS[model];
  if (cls === undefined) return undefined;
  return cls.getAttributeTypeMap?.() ?? cls.attributeTypeMap;
}

const requiredCache = new Map<string, ReadonlySet<string>>();

/** The fields the model's TypeScript declaration marks as required (no `?`). */
export function requiredFields(model: string): ReadonlySet<string> {
  let fields = requiredCache.get(model);
  if (fields === undefined) {
    const dts = readFileSync(join(MODELS_DIR, `${model}.d.ts`), "utf8");
    fields = new Set([...dts.matchAll(/^ {4}'([^']+)': /gm)].map((m) => m[1]!));
    requiredCache.set(model, fields);
  }
  return fields;
}

/** The model for a top-level object: apiVersion "apps/v1", kind "StatefulSet" -> "V1StatefulSet". */
export function modelFor(apiVersion: unknown, kind: unknown): string | undefined {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return undefined;
  const version = apiVersion.split("/").at(-1)!;
  const name = `${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
  return modelAttributes(name) === undefined ? undefined : name;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  return `${typeof v} ${JSON.stringify(v)}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Checks `value` against `type` (a type string from an attributeTypeMap or a
 * model name) and returns one message per problem, each with its path.
 * `field` is "Model.field" for the lookup tables above.
 */
export function checkValue(value: unknown, type: string, format: string, path: string, field = ""): string[] {
  if (type === "any") return [];
  if (value === null || value === undefined) {
    // null is how YAML spells "unset"; the API server treats it as absent.
    return [];
  }
  const array = /^Array<(.+)>$/.exec(type);
  if (array !== null) {
    if (!Array.isArray(value)) return [`${path}: expected an array of ${array[1]}, got ${describe(value)}`];
    return value.flatMap((item, i) =>
      item === null ? [`${path}[${i}]: null is not a ${array[1]}`] : checkValue(item, array[1]!, format, `${path}[${i}]`, field),
    );
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map !== null) {
    if (!isPlainObject(value)) return [`${path}: expected a map of ${map[1]}, got ${describe(value)}`];
    return Object.entries(value).flatMap(([k, v]) => checkValue(v, map[1]!, format, `${path}.${k}`, field));
  }
  if (QUANTITY_FIELDS.has(field)) {
    if (typeof value === "number") return Number.isFinite(value) ? [] : [`${path}: ${value} is not a quantity`];
    if (typeof value !== "string") return [`${path}: expected a quantity (number or string such as 512Mi), got ${describe(value)}`];
    return QUANTITY.test(value) ? [] : [`${path}: "${value}" is not a quantity (examples: 500m, 1, 512Mi, 1Gi)`];
  }
  switch (type) {
    case "string":
    case "Date": {
      if (typeof value !== "string") return [`${path}: expected a string, got ${describe(value)}`];
      const allowed = ENUMS[field];
      if (allowed !== undefined && !allowed.includes(value)) return [`${path}: "${value}" is not one of ${allowed.join(", ")}`];
      return [];
    }
    case "boolean":
      return typeof value === "boolean" ? [] : [`${path}: expected a boolean, got ${describe(value)}`];
    case "number":
      return checkNumber(value, format, path);
    case "IntOrString":
      if (typeof value === "string") return value === "" ? [`${path}: an empty string is neither a port name nor a number`] : [];
      return typeof value === "number" ? checkNumber(value, "int32", path) : [`${path}: expected an integer or a string, got ${describe(value)}`];
    default:
      return checkObject(value, type, path);
  }
}

function checkNumber(value: unknown, format: string, path: string): string[] {
  if (typeof value !== "number" || !Number.isFinite(value)) return [`${path}: expected a number, got ${describe(value)}`];
  if (format === "int32" || format === "int64") {
    if (!Number.isInteger(value)) return [`${path}: expected an integer (${format}), got ${value}`];
    if (format === "int32" && (value < INT32_MIN || value > INT32_MAX)) return [`${path}: ${value} is out of int32 range`];
  }
  return [];
}

/** Checks an object against a model: unknown fields, required fields, and each field's type. */
export function checkObject(value: unknown, model: string, path: string): string[] {
  const attributes = modelAttributes(model);
  if (attributes === undefined) return [`${path}: no model ${model} in @kubernetes/client-node`];
  if (!isPlainObject(value)) return [`${path}: expected an object (${model}), got ${describe(value)}`];
  const errors: string[] = [];
  const byName = new Map(attributes.map((a) => [a.baseName, a]));
  for (const [key, v] of Object.entries(value)) {
    const attribute = byName.get(key);
    const at = path === "" ? key : `${path}.${key}`;
    if (attribute === undefined) {
      errors.push(`${at}: unknown field "${key}" in ${model} (known: ${[...byName.keys()].join(", ")})`);
      continue;
    }
    errors.push(...checkValue(v, attribute.type, attribute.format, at, `${model}.${attribute.name}`));
  }
  for (const name of requiredFields(model)) {
    const attribute = attributes.find((a) => a.name === name);
    if (attribute !== undefined && (value[attribute.baseName] === undefined || value[attribute.baseName] === null)) {
      errors.push(`${path === "" ? "" : `${path}.`}${attribute.baseName}: required field missing in ${model}`);
    }
  }
  return errors;
}

/** Checks one top-level Kubernetes object (a document of `kubectl kustomize` output). */
export function checkManifest(object: unknown): string[] {
  if (!isPlainObject(object)) return [`expected an object, got ${describe(object)}`];
  const model = modelFor(object.apiVersion, object.kind);
  const metadata = isPlainObject(object.metadata) ? object.metadata : {};
  const name = `${String(object.kind)}/${String(metadata.name)}`;
  if (model === undefined) return [`${name}: no model for apiVersion ${String(object.apiVersion)} kind ${String(object.kind)}`];
  const errors = checkObject(object, model, "");
  if (typeof metadata.name !== "string" || metadata.name === "") errors.push("metadata.name: required");
  return errors.map((e) => `${name}: ${e}`);
}
