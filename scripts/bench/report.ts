import { median, type Measured } from './measure.ts';

/** Prints rows as a table: the first column left-aligned, the others right-aligned. */
export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
}

/**
 * The threads that used at least 0.01 CPU seconds (median over `runs`), busiest first, each as
 * `name (what it does) seconds`; undefined when no run sampled its threads.
 */
export function busiestThreads(runs: readonly Measured[], legend: Readonly<Record<string, string>>): string | undefined {
  const names = [...new Set(runs.flatMap((run) => Object.keys(run.threadCpu ?? {})))];
  const busy = names
    .map((name) => ({ name, seconds: median(runs.map((run) => run.threadCpu?.[name] ?? 0)) }))
    .filter((t) => t.seconds >= 0.01)
    .sort((a, b) => b.seconds - a.seconds);
  if (busy.length === 0) return undefined;
  return busy.map((t) => `${t.name}${legend[t.name] ? ` (${legend[t.name]})` : ''} ${t.seconds.toFixed(2)}`).join(', ');
}
