/** Small file helpers shared by `dflmoe peer` and `dflmoe server`. */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, path);
}

export function writeJsonLinesAtomic(path: string, lines: unknown[]): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, lines.map((l) => JSON.stringify(l) + '\n').join(''));
  renameSync(tmp, path);
}

/** The JSON value in `file`, or undefined when it is missing or not JSON. */
export function readJsonFile<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** The JSON lines of `file` (none when it is missing); a line cut by a crash is dropped. */
export function readJsonLines<T>(file: string): T[] {
  if (!existsSync(file)) return [];
  const out: T[] = [];
  for (const l of readFileSync(file, 'utf8').split('\n')) {
    if (!l.trim()) continue;
    try {
      out.push(JSON.parse(l) as T);
    } catch {
      // A line cut by the crash: drop it.
    }
  }
  return out;
}
