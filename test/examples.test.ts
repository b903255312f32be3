import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

describe('examples', () => {
  it('three-sites.ts runs and every site ends up with both other experts', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', 'examples/three-sites.ts'], {
      encoding: 'utf8', timeout: 120000, env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
    });
    assert.equal(r.status, 0, r.stderr);
    const last = r.stdout.trim().split('\n').filter((l) => l.startsWith('round 6'));
    assert.equal(last.length, 3);
    for (const l of last) {
      assert.equal((l.match(/hospital-[abc]@v\d/g) ?? []).length, 2, l);
      const acc = Number(/accuracy ([\d.]+)%/.exec(l)![1]);
      assert.ok(acc > 80, l);
    }
  });
});
