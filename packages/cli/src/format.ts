import { Help, InvalidArgumentError, type Command, type Option } from 'commander';
import { metricOf, oneClassification, taskKind, type TaskResult } from '@dflmoe/core/internal';
/** Small helpers for human-readable numbers and plain-text tables. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function pct(x: number): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(2)}%` : '-';
}

/** Render rows as an aligned text table; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

/** Option parser: a positive integer. */
export const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer.`);
  return n;
};

/** Option parser: a number in [lo, hi]. */
export const num = (name: string, lo: number, hi: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < lo || n > hi) throw new InvalidArgumentError(`${name} must be a number in [${lo}, ${hi}].`);
  return n;
};

/** A value as a user types it on the command line: lists comma-separated (layer sizes joined by x), an empty list `none`. */
export function typedValue(v: unknown): string {
  if (Array.isArray(v)) return v.length === 0 ? 'none' : v.join(v.every((x) => typeof x === 'number') ? 'x' : ',');
  return String(v);
}

/** An option's help with its choices and default as users type them (`adam | sgd`, `dflmoe,fedavg,local`), not as JSON. */
function optionDescription(o: Option): string {
  const extra: string[] = [];
  if (o.argChoices) extra.push(`choices: ${o.argChoices.join(' | ')}`);
  // As commander: a default is shown for options that take a value, and for booleans (negated ones default to true).
  const shown = o.required || o.optional || (o.isBoolean() && typeof o.defaultValue === 'boolean');
  if (o.defaultValue !== undefined && shown) extra.push(`default: ${o.defaultValueDescription ?? typedValue(o.defaultValue)}`);
  return extra.length ? `${o.description} (${extra.join(', ')})`.trim() : o.description;
}

/** Render every option's help of `cmd` and its subcommands with {@link optionDescription}. */
export function plainHelp(cmd: Command): Command {
  cmd.configureHelp({
    optionDescription: (o: Option) => (o.argChoices || o.defaultValue !== undefined ? optionDescription(o) : new Help().optionDescription(o)),
  });
  for (const c of cmd.commands) plainHelp(c);
  return cmd;
}

/** A site's score as a line shows it: `accuracy 95.0%` for one classification task, else each task's headline metric (`stay rmse 1.240`). */
export function siteScore(tasks: Record<string, TaskResult> | undefined, accuracy: number): string {
  const entries = Object.entries(tasks ?? {});
  if (oneClassification(tasks ?? {})) return `accuracy ${pct(accuracy)}`;
  return entries
    .map(([name, t]) => {
      const metric = taskKind(t.kind).headline.metric;
      return `${name} ${metric} ${metricOf(t, metric).toPrecision(4)}`;
    })
    .join(', ');
}
