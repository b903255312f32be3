import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { DflmoePeer, disposePeerData, listCheckpoints, restoreLatestCheckpoint, saveCheckpoint, type DflmoeOptions } from '@dflmoe/core/internal';
import { backend, tinyPeers } from './helpers.js';

function probs(p: DflmoePeer): Float32Array {
  return tf.tidy(() => p.moeProbs(p.data.xTest).dataSync() as Float32Array).slice();
}

/** Equal up to float32 rounding (XNNPACK may take another kernel path for freshly loaded weights). */
function close(a: ArrayLike<number>, b: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  assert.ok(m <= tol, `${what}: max abs diff ${m}`);
}

describe('checkpoints', () => {
  before(backend);

  async function setup() {
    const { datas } = tinyPeers(3);
    const opts = (i: number): DflmoeOptions => ({
      id: `p${i}`,
      data: datas[i],
      body: { kind: 'mlp', hidden: [16] },
      featureDim: 8,
      headHidden: [],
      train: { seed: i },
    });
    const ps = datas.map((_, i) => new DflmoePeer(opts(i)));
    for (let r = 1; r <= 2; r++) {
      for (const p of ps) await p.trainRound(r);
      const heads = ps.map((p) => p.encodeHead(r));
      ps.forEach((p, i) => heads.forEach((h, j) => i !== j && p.receiveHead(h, ps[j].id, r)));
    }
    return { datas, opts, ps };
  }

  it('restore gives back the same predictions, pool and optimizer state', async () => {
    const { datas, opts, ps } = await setup();
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-ckpt-'));
    const w = await saveCheckpoint(dir, ps[0], 2, { note: 'x' });
    assert.ok(w.bytes > 1000 && w.seconds >= 0);
    const fresh = new DflmoePeer(opts(0));
    const before = tf.memory().numTensors;
    const r = await restoreLatestCheckpoint(dir, fresh);
    assert.equal(r!.round, 2);
    assert.deepEqual(r!.extra, { note: 'x' });
    assert.deepEqual(
      fresh.pool.list().map((e) => [e.peer, e.version]),
      ps[0].pool.list().map((e) => [e.peer, e.version]),
    );
    close(probs(fresh), probs(ps[0]), 'predictions after restore');
    // One more round on both: identical only if Adam's moments and step count came back too.
    await ps[0].trainRound(3);
    await fresh.trainRound(3);
    close(fresh.head[0].kernel.dataSync(), ps[0].head[0].kernel.dataSync(), 'head after one more round');
    close(probs(fresh), probs(ps[0]), 'predictions after one more round');
    assert.ok(tf.memory().numTensors > before);
    fresh.dispose();
    ps.forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });

  it('a truncated or corrupt checkpoint is reported and the previous good one is used', async () => {
    const { datas, opts, ps } = await setup();
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-ckpt-'));
    await saveCheckpoint(dir, ps[0], 1);
    await saveCheckpoint(dir, ps[0], 2);
    await saveCheckpoint(dir, ps[0], 3);
    assert.deepEqual(listCheckpoints(dir), [2, 3], 'keeps the newest two');
    truncateSync(join(dir, 'round-000003', 'state.bin'), 100);
    const errors: string[] = [];
    const fresh = new DflmoePeer(opts(0));
    const r = await restoreLatestCheckpoint(dir, fresh, { debug() {}, info() {}, warn() {}, error: (m) => errors.push(m) });
    assert.equal(r!.round, 2);
    assert.match(r!.skipped[0].reason, /state\.bin has 100 bytes.*truncated/);
    assert.match(errors[0], /round 3 is damaged/);
    // Flip a byte in the body weights of round 2: now nothing is usable.
    const wf = join(dir, 'round-000002', 'body', 'weights.bin');
    const b = readFileSync(wf);
    b[10] ^= 0xff;
    writeFileSync(wf, b);
    const again = new DflmoePeer(opts(0));
    assert.equal(await restoreLatestCheckpoint(dir, again), undefined);
    fresh.dispose();
    again.dispose();
    ps.forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });

  it('the body is stored in the tfjs layers format that other tools load', async () => {
    const { datas, ps } = await setup();
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-ckpt-'));
    const { path } = await saveCheckpoint(dir, ps[0], 2);
    const modelJson = JSON.parse(readFileSync(join(path, 'body', 'model.json'), 'utf8'));
    assert.equal(modelJson.format, 'layers-model');
    const weights = readFileSync(join(path, 'body', 'weights.bin'));
    const loaded = await tfl.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: modelJson.modelTopology,
        weightSpecs: modelJson.weightsManifest[0].weights,
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.length),
      }),
    );
    const x = tf.slice(ps[0].data.xTest, 0, 5);
    const a = (loaded.predict(x) as tf.Tensor).dataSync();
    const b = (ps[0].body.predict(x) as tf.Tensor).dataSync();
    close(a, b, 'loaded body');
    loaded.dispose();
    x.dispose();
    ps.forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });
});
