/** Number formatting and plain-text tables for the bench report. */

export const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "-");
export const fmtMs = (n: number) => (Number.isFinite(n) ? (Math.abs(n) < 10 ? n.toFixed(2) : n.toFixed(1)) : "-");
export const fmtPct = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "-" : `${Math.round(n * 100)}%`);
export const fmtSec = (ms: number | undefined) => (ms === undefined || !Number.isFinite(ms) ? "-" : `${(ms / 1000).toFixed(1)} s`);
export const fmtKiB = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? "-" : `${(bytes / 1024).toFixed(1)} KiB`);
export const fmtMiB = (bytes: number | undefined) => (bytes === undefined || !Number.isFinite(bytes) ? "-" : `${fmtInt(bytes / 1048576)} MiB`);

/** Columns padded to their widest cell; the first `alignLeft` columns left-aligned, the rest right-aligned. */
export function table(header: string[], body: string[][], alignLeft: number): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < alignLeft ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
