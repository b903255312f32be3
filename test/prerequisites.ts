/**
 * Run by `npm test` before the suite: what the browser and Fashion-MNIST
 * tests need from the system (Debian's chromium and dataset-fashion-mnist).
 * Present: nothing to do. Missing, as root with apt-get: installed (what
 * `.ci/run` did before). Otherwise one line saying exactly what to run, and
 * exit 1 before any test starts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_FASHION_MNIST_DIR } from '@dflmoe/data/internal';
import { CHROMIUM } from './browser.js';

export interface Prerequisites {
  /** The browser the tests drive, and whether it was named by DFLMOE_CHROMIUM. */
  chromium: string;
  chromiumFromEnv: boolean;
  fashionDir: string;
  /** Root with apt-get: missing packages can be installed. */
  canInstall: boolean;
  /** Run apt-get with these arguments; true when it succeeded. */
  apt(args: string[]): boolean;
  say(line: string): void;
}

/** The Debian packages missing for the tests. */
export function missingPackages(p: Pick<Prerequisites, 'chromium' | 'fashionDir'>): string[] {
  const fashion = ['', '.gz'].some((z) => existsSync(join(p.fashionDir, `train-images-idx3-ubyte${z}`)));
  return [...(existsSync(p.chromium) ? [] : ['chromium']), ...(fashion ? [] : ['dataset-fashion-mnist'])];
}

/** Install what is missing when possible; the line to fail with when something is still missing, else undefined. */
export function ensurePrerequisites(p: Prerequisites): string | undefined {
  let need = missingPackages(p);
  if (need.length === 0) return undefined;
  if (p.chromiumFromEnv && need.includes('chromium')) {
    return `npm test: DFLMOE_CHROMIUM is ${p.chromium}, which does not exist: point it to a Chromium binary, or unset it to use Debian's /usr/bin/chromium`;
  }
  if (p.canInstall) {
    p.say(`npm test: installing ${need.join(' and ')} with apt-get (the browser and Fashion-MNIST tests need them)`);
    if (p.apt(['update', '-qq'])) p.apt(['install', '-y', '-qq', ...need]);
    need = missingPackages(p);
    if (need.length === 0) return undefined;
  }
  return `npm test: ${need.join(' and ')} missing, needed by the browser and Fashion-MNIST tests: run  sudo apt-get install -y ${need.join(' ')}  and then npm test again`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = process.getuid?.() === 0 && spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
  const failure = ensurePrerequisites({
    chromium: CHROMIUM,
    chromiumFromEnv: process.env.DFLMOE_CHROMIUM !== undefined,
    fashionDir: DEFAULT_FASHION_MNIST_DIR,
    canInstall: root,
    apt: (args) =>
      spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0,
    say: (line) => process.stdout.write(`${line}\n`),
  });
  if (failure) {
    process.stderr.write(`${failure}\n`);
    process.exit(1);
  }
}
