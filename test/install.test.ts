import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// semver has no types of its own; the test needs only satisfies().
const require = createRequire(import.meta.url);
const semver = require('semver') as { satisfies(version: string, range: string): boolean };

interface LockEntry {
  version?: string;
  engines?: { node?: string };
  optional?: boolean;
  os?: string[];
  cpu?: string[];
}

/** The oldest release of every Node line the README names ("Node 20.19+, 22.13+ or 24+"). */
function readmeNodeVersions(): string[] {
  const m = /with Node ((?:\d+(?:\.\d+)?\+(?:, | or )?)+)/.exec(readFileSync('README.md', 'utf8'));
  assert.ok(m, 'the README names the Node versions it supports');
  return [...m[1].matchAll(/(\d+)(?:\.(\d+))?\+/g)].map((v) => `${v[1]}.${v[2] ?? 0}.0`);
}

describe('install', () => {
  it('the README names the Node versions package.json accepts', () => {
    const versions = readmeNodeVersions();
    assert.ok(versions.length >= 2 && versions[0].startsWith('20.'), `README names ${versions}`);
    const engines = (JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } }).engines.node;
    for (const v of versions) assert.ok(semver.satisfies(v, engines), `package.json engines "${engines}" refuses Node ${v}, which the README names`);
  });

  it('every package npm ci installs accepts every Node version the README names (no EBADENGINE warning)', () => {
    const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, LockEntry> };
    const versions = readmeNodeVersions();
    const refused = Object.entries(lock.packages)
      // Platform builds of optional native modules (sharp's) install only where their os and cpu match.
      .filter(([, e]) => e.engines?.node && !(e.optional && (e.os || e.cpu)))
      .flatMap(([path, e]) =>
        versions.filter((v) => !semver.satisfies(v, e.engines!.node!)).map((v) => `${path}@${e.version} wants Node ${e.engines!.node}, not ${v}`),
      );
    assert.deepEqual(refused, []);
    // The two that asked for Node 22 before the overrides (libp2p's p-retry, the circuit relay's nanoid) are in the lock.
    assert.ok(lock.packages['node_modules/p-retry'] && lock.packages['node_modules/nanoid']);
  });
});
