import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';

/** Run an example program from source, quietly. */
function runExample(file: string) {
  return spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', file], {
    encoding: 'utf8',
    timeout: 120000,
    env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
  });
}

describe('examples', () => {
  it('three-sites.ts runs and every site ends up with both other experts', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', 'examples/three-sites.ts'], {
      encoding: 'utf8',
      timeout: 120000,
      env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
    });
    assert.equal(r.status, 0, r.stderr);
    const last = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('round 6'));
    assert.equal(last.length, 3);
    for (const l of last) {
      assert.equal((l.match(/hospital-[abc]@v\d/g) ?? []).length, 2, l);
      const acc = Number(/accuracy ([\d.]+)%/.exec(l)![1]);
      assert.ok(acc > 80, l);
    }
  });

  it('pretrained-body.ts pretrains on the public rows, and three labs with frozen bodies exchange heads and predict well', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', 'examples/pretrained-body.ts'], {
      encoding: 'utf8',
      timeout: 120000,
      env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
    });
    assert.equal(r.status, 0, r.stderr);
    const pub = /public body: (\d+) images, held-out accuracy ([\d.]+)%/.exec(r.stdout);
    assert.ok(pub, r.stdout);
    assert.equal(Number(pub[1]) + Math.round((1797 - 450) * 0.1), 1797 - 450, 'every public row but the held-out tenth, and no lab row');
    assert.ok(Number(pub[2]) > 85, pub[0]);
    const last = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('round 4'));
    assert.equal(last.length, 3);
    for (const l of last) {
      assert.match(l, /experts 2$/);
      assert.ok(Number(/accuracy ([\d.]+)%/.exec(l)![1]) > 80, l);
    }
  });

  it('custom-bodies.ts trains three sites whose bodies are user-written tfjs models of different shapes', () => {
    const r = runExample('examples/custom-bodies.ts');
    assert.equal(r.status, 0, r.stderr);
    const last = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('round 5'));
    assert.deepEqual(
      last.map((l) => /\((\d+) layers\)/.exec(l)?.[1]),
      ['4', '5', '6'],
      'three different networks',
    );
    for (const l of last) {
      assert.match(l, /experts 2$/);
      assert.ok(Number(/accuracy ([\d.]+)%/.exec(l)![1]) > 85, l);
    }
  });

  it('libp2p-service.ts runs three sites on libp2p nodes of their own that also answer pings', () => {
    const r = runExample('examples/libp2p-service.ts');
    assert.equal(r.status, 0, r.stderr);
    const last = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('round 4'));
    assert.equal(last.filter((l) => /hospital-[abc]: accuracy [\d.]+% {2}experts 2$/.test(l)).length, 3, r.stdout);
    assert.ok(
      last.some((l) => /ping hospital-a -> hospital-b: \d+ ms$/.test(l)),
      r.stdout,
    );
  });

  it("the README's snippets marked as run (the library's simulate) run as written", () => {
    const blocks = [...readFileSync('README.md', 'utf8').matchAll(/<!-- run by test\/examples\.test\.ts -->\n```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.ok(
      blocks.some((b) => b.includes('await simulate(')),
      'the simulate() snippet is marked',
    );
    assert.ok(
      blocks.some((b) => b.includes('agreeOnData(')),
      'the in-memory data snippet is marked',
    );
    blocks.forEach((code, i) => {
      // Inside the repository, so that its imports resolve as a user's project would.
      const file = `test/_tmp-readme-${process.pid}-${i}.ts`;
      writeFileSync(file, code);
      try {
        const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', file], {
          encoding: 'utf8',
          timeout: 120000,
          env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
        });
        assert.equal(r.status, 0, `README snippet ${i}:\n${code}\n${r.stderr}`);
        if (code.includes('await simulate(')) {
          const lines = r.stdout.trim().split('\n');
          assert.equal(lines.length, 2, r.stdout);
          lines.forEach((l, k) => assert.match(l, new RegExp(`^${['dflmoe', 'local'][k]}: mean accuracy \\d+\\.\\d\\d%, \\d+ bytes sent$`)));
        }
        if (code.includes('agreeOnData(')) {
          // In-memory rows: the two sites' vocabularies and the missing doses in one schema, trained, and a new row predicted.
          assert.match(r.stdout, /^agreed features: dose, dose_missing, clinic=east, clinic=north, clinic=south$/m);
          assert.match(r.stdout, /^round 3: accuracy (\d+\.\d)%, (\d+\.\d)%$/m);
          const [, x, y] = /^round 3: accuracy (\d+\.\d)%, (\d+\.\d)%$/m.exec(r.stdout)!;
          assert.ok(Number(x) > 90 && Number(y) > 90, r.stdout);
          assert.match(r.stdout, /^prediction: sick$/m);
        }
      } finally {
        rmSync(file, { force: true });
      }
    });
  });
});
