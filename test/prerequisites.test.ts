/** What `npm test` does first on a fresh machine: find or install chromium and Fashion-MNIST, or say in one line what to run. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePrerequisites, type Prerequisites } from './prerequisites.js';

function machine(o: { chromium?: boolean; fashion?: boolean; root?: boolean; aptWorks?: boolean; fromEnv?: boolean }) {
  const dir = mkdtempSync(join(tmpdir(), 'dflmoe-prereq-'));
  const chromium = join(dir, 'chromium');
  const fashionDir = join(dir, 'fashion-mnist');
  const install = () => {
    if (o.aptWorks === false) return;
    writeFileSync(chromium, '');
    mkdirSync(fashionDir, { recursive: true });
    writeFileSync(join(fashionDir, 'train-images-idx3-ubyte.gz'), '');
  };
  if (o.chromium) writeFileSync(chromium, '');
  if (o.fashion) {
    mkdirSync(fashionDir, { recursive: true });
    writeFileSync(join(fashionDir, 'train-images-idx3-ubyte'), '');
  }
  const apt: string[][] = [];
  const said: string[] = [];
  const p: Prerequisites = {
    chromium,
    chromiumFromEnv: o.fromEnv ?? false,
    fashionDir,
    canInstall: o.root ?? false,
    say: (l) => said.push(l),
    apt: (args) => {
      apt.push(args);
      if (args[0] === 'install') install();
      return o.aptWorks !== false;
    },
  };
  return { p, apt, said };
}

describe('npm test prerequisites (chromium, Fashion-MNIST)', () => {
  it('present: nothing installed, nothing said', () => {
    const m = machine({ chromium: true, fashion: true, root: true });
    assert.equal(ensurePrerequisites(m.p), undefined);
    assert.deepEqual([m.apt, m.said], [[], []]);
  });

  it('missing, as root with apt-get: installs exactly what is missing, then goes on', () => {
    const m = machine({ fashion: true, root: true });
    assert.equal(ensurePrerequisites(m.p), undefined);
    assert.deepEqual(m.apt, [
      ['update', '-qq'],
      ['install', '-y', '-qq', 'chromium'],
    ]);
    assert.deepEqual(m.said, ['npm test: installing chromium with apt-get (the browser and Fashion-MNIST tests need them)']);
  });

  it('missing and not root, or apt-get failing: one line with the command to run', () => {
    const user = machine({});
    assert.equal(
      ensurePrerequisites(user.p),
      'npm test: chromium and dataset-fashion-mnist missing, needed by the browser and Fashion-MNIST tests: run  sudo apt-get install -y chromium dataset-fashion-mnist  and then npm test again',
    );
    assert.deepEqual(user.apt, []);
    const broken = machine({ chromium: true, root: true, aptWorks: false });
    assert.match(
      ensurePrerequisites(broken.p)!,
      /^npm test: dataset-fashion-mnist missing, .*: run {2}sudo apt-get install -y dataset-fashion-mnist {2}and then npm test again$/,
    );
    assert.deepEqual(broken.apt, [['update', '-qq']]);
  });

  it('DFLMOE_CHROMIUM naming no file: says so, installs nothing; the script exits 1 with that one line', () => {
    const m = machine({ fashion: true, root: true, fromEnv: true });
    assert.match(ensurePrerequisites(m.p)!, /^npm test: DFLMOE_CHROMIUM is .*chromium, which does not exist: point it to a Chromium binary/);
    assert.deepEqual(m.apt, []);
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', 'test/prerequisites.ts'], {
      encoding: 'utf8',
      env: { ...process.env, DFLMOE_CHROMIUM: '/nonexistent/chromium' },
    });
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      "npm test: DFLMOE_CHROMIUM is /nonexistent/chromium, which does not exist: point it to a Chromium binary, or unset it to use Debian's /usr/bin/chromium\n",
    );
  });
});
