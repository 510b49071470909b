/**
 * Summarises a V8 .cpuprofile (as written by `node --cpu-prof`): where the
 * samples landed, by function (self time) and by package/area.
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly hitCount?: number;
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples?: readonly number[];
}

export interface ProfileLine {
  readonly name: string;
  readonly percent: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly totalSamples: number;
  readonly durationMs: number;
  /** Share of samples not idle. */
  readonly busyPercent: number;
  /** Self time by function, percent of busy samples. */
  readonly topSelf: ProfileLine[];
  /** Self time by area (package, node internal module, GC, ...), percent of busy samples. */
  readonly byArea: ProfileLine[];
  /** Inclusive time of this project's functions (src/), percent of busy samples. */
  readonly topInclusiveSrc: ProfileLine[];
}

/** Where a frame's code lives: a package, a Node internal module, the project, or a V8 pseudo-frame. */
export function area(url: string, functionName: string): string {
  if (url === "") {
    if (functionName.startsWith("(")) return functionName; // (garbage collector), (program), (idle), (root)
    return "(native)";
  }
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  const internal = /^node:(?:internal\/)?([^/]+(?:\/[^/]+)?)/.exec(url);
  if (internal) return `node:${internal[1].replace(/\.js$/, "")}`;
  const src = /\/dist\/(src\/.+?)\.js$/.exec(url);
  if (src) return `ripplecache ${src[1]}`;
  return url.replace(/^file:\/\//, "");
}

function shortUrl(url: string): string {
  const pkg = /node_modules\/(.+)$/.exec(url);
  if (pkg) return pkg[1];
  const dist = /\/dist\/(.+)$/.exec(url);
  if (dist) return dist[1];
  return url.replace(/^file:\/\//, "");
}

export function summarizeProfile(file: string, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  const total = profile.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0);
  const idle = profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").reduce((s, n) => s + (n.hitCount ?? 0), 0);
  const busy = Math.max(1, total - idle);

  const self = new Map<string, number>();
  const areas = new Map<string, number>();
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0 || n.callFrame.functionName === "(idle)") continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const name = url === "" ? functionName || "(anonymous)" : `${functionName || "(anonymous)"} ${shortUrl(url)}:${lineNumber + 1}`;
    self.set(name, (self.get(name) ?? 0) + hits);
    const a = area(url, functionName);
    areas.set(a, (areas.get(a) ?? 0) + hits);
  }

  // Inclusive time per src/ function: count each sample once per function even under recursion.
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map<string, number>();
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0;
    if (hits === 0) continue;
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!.callFrame;
      if (!/\/dist\/src\//.test(f.url)) continue;
      const name = `${f.functionName || "(anonymous)"} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
      if (seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + hits);
    }
  }

  const lines = (m: Map<string, number>, n: number): ProfileLine[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, hits]) => ({ name, percent: (hits / busy) * 100 }));
  return {
    file,
    totalSamples: total,
    durationMs: (profile.endTime - profile.startTime) / 1000,
    busyPercent: (busy / Math.max(1, total)) * 100,
    topSelf: lines(self, top),
    byArea: lines(areas, top),
    topInclusiveSrc: lines(inclusive, 12),
  };
}

export function formatProfile(s: ProfileSummary): string {
  const out: string[] = [];
  out.push(`CPU profile ${s.file}`);
  out.push(`  ${s.totalSamples} samples over ${(s.durationMs / 1000).toFixed(1)} s, busy ${s.busyPercent.toFixed(1)}% (percentages below are of busy samples)`);
  const block = (title: string, lines: ProfileLine[]) => {
    out.push(`  ${title}`);
    for (const l of lines) out.push(`    ${l.percent.toFixed(1).padStart(5)}%  ${l.name}`);
  };
  block("self time by area:", s.byArea);
  block("self time by function:", s.topSelf);
  block("inclusive time, ripplecache src/ functions:", s.topInclusiveSrc);
  return out.join("\n");
}
