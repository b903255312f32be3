import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { parseBackendName, selectBackend, type BackendLoader } from '@dflmoe/core/internal';

const fail: BackendLoader = async () => {
  throw new Error('not installed here');
};

function tfjsNodeInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node');
    return true;
  } catch {
    return false;
  }
}

/** Run a tiny program in a fresh process, where the backend has not been chosen yet. */
function childBackend(env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const code = `
    import { initBackend, tf } from '@dflmoe/core/internal';
    const a = await initBackend();
    const b = await initBackend();
    process.stdout.write(JSON.stringify({ name: a.name, same: a === b, active: tf.getBackend(), sum: tf.add(tf.scalar(2), tf.scalar(3)).dataSync()[0] }));
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=development', '--input-type=module', '-e', code], {
    env: { ...process.env, DFLMOE_LOG_LEVEL: 'info', ...env },
    encoding: 'utf8',
    timeout: 60000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('compute backend', () => {
  before(() => tf.enableProdMode());
  after(async () => {
    await tf.setBackend('cpu');
  });

  it('prefers tensorflow, then wasm, then cpu', async () => {
    let info = await selectBackend({ force: '', loaders: { tensorflow: fail } });
    assert.equal(info.name, 'wasm');
    assert.equal(info.simd, true);
    assert.deepEqual(
      info.skipped.map((s) => s.name),
      ['tensorflow'],
    );
    info = await selectBackend({ force: '', loaders: { tensorflow: fail, wasm: fail } });
    assert.equal(info.name, 'cpu');
    assert.equal(tf.getBackend(), 'cpu');
    await assert.rejects(selectBackend({ force: '', loaders: { tensorflow: fail, wasm: fail, cpu: fail } }), /No compute backend could load/);
  });

  it('a forced backend wins over the priority order', async () => {
    const info = await selectBackend({ force: 'cpu' });
    assert.equal(info.name, 'cpu');
    assert.equal(info.forced, true);
    assert.deepEqual(info.skipped, []);
  });

  it('forcing a backend that cannot load is an error that says what to do, not a silent fallback', async () => {
    await assert.rejects(selectBackend({ force: 'tensorflow', loaders: { tensorflow: fail } }), /DFLMOE_BACKEND=tensorflow.*Install @tensorflow\/tfjs-node/);
    assert.throws(() => parseBackendName('gpu'), /Unknown compute backend "gpu".*tensorflow, wasm, cpu/);
    assert.equal(parseBackendName('tfjs-node'), 'tensorflow');
  });

  it('in a fresh process: picks the best available, once, and logs it once', () => {
    const r = childBackend({ DFLMOE_BACKEND: '' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.name, tfjsNodeInstalled() ? 'tensorflow' : 'wasm');
    assert.equal(out.active, out.name);
    assert.equal(out.same, true);
    assert.equal(out.sum, 5);
    assert.equal(r.stderr.match(/compute backend:/g)?.length, 1, r.stderr);
  });

  it('in a fresh process: DFLMOE_BACKEND=cpu forces cpu', () => {
    const r = childBackend({ DFLMOE_BACKEND: 'cpu' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).name, 'cpu');
    assert.match(r.stderr, /compute backend: cpu \(forced by DFLMOE_BACKEND\)/);
  });

  it('in a fresh process: DFLMOE_BACKEND=tensorflow works only where tfjs-node is installed', () => {
    const r = childBackend({ DFLMOE_BACKEND: 'tensorflow' });
    if (tfjsNodeInstalled()) {
      assert.equal(r.status, 0, r.stderr);
    } else {
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /cannot load/);
    }
  });
});
