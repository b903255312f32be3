import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Refuse, in one line, a file to write whose directory does not exist (or
 * is not a directory), before any work is done: `flag` names the option.
 */
export function checkOutputPath(path: string, flag: string): string {
  const file = resolve(path);
  const dir = dirname(file);
  if (!existsSync(dir)) throw new Error(`${flag} ${path}: the directory ${dir} does not exist (create it first: mkdir -p ${dir})`);
  if (!statSync(dir).isDirectory()) throw new Error(`${flag} ${path}: ${dir} is not a directory`);
  if (existsSync(file) && statSync(file).isDirectory()) throw new Error(`${flag} ${path} is a directory; give a file name`);
  return file;
}
