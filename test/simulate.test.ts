import { silentLogger } from '@dflmoe/core';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { simulate, type SimulationResults } from '@dflmoe/core';
import { backend, cli, cliAsync } from './helpers.js';

const quiet = silentLogger;

function strip(r: SimulationResults) {
  return Object.fromEntries(
    Object.entries(r.algorithms).map(([k, a]) => [k, { acc: a!.peers.map((p) => p.accuracy), bytes: a!.bytesSent, loss: a!.rounds.map((x) => x.loss) }]),
  );
}

describe('simulate', () => {
  before(backend);

  it('is reproducible for a seed, and differs for another seed', async () => {
    const cfg = { dataset: 'breast-cancer', peers: 3, rounds: 2, partition: 'dirichlet:0.5', seed: 5 };
    const t0 = tf.memory().numTensors;
    const a = await simulate(cfg, { logger: quiet });
    const b = await simulate(cfg, { logger: quiet });
    const c = await simulate({ ...cfg, seed: 6 }, { logger: quiet });
    assert.deepEqual(strip(a), strip(b));
    assert.notDeepEqual(strip(a), strip(c));
    assert.equal(tf.memory().numTensors, t0, 'a whole simulation frees its tensors');
  });

  it('runs dFLMoE and local-only with heterogeneous bodies (mlp and cnn)', async () => {
    const r = await simulate(
      { dataset: 'digits', peers: 2, rounds: 2, epochs: 3, partition: 'iid', algorithms: ['dflmoe', 'local'], bodies: ['mlp:64', 'cnn:8x16'], featureDim: 32 },
      { logger: quiet },
    );
    assert.deepEqual(
      r.algorithms.dflmoe!.peers.map((p) => p.body),
      ['mlp:64', 'cnn:8x16'],
    );
    for (const p of r.algorithms.dflmoe!.peers) {
      assert.ok(p.accuracy > 0.5, `peer ${p.id} accuracy ${p.accuracy}`);
      assert.equal(Object.keys(p.gateWeights!).length, 2, 'each peer mixes its own and the other head');
    }
  });

  it('counts bytes: heads for dFLMoE, whole models both ways for FedAvg, nothing for local', async () => {
    const r = await simulate({ dataset: 'breast-cancer', peers: 3, rounds: 2, partition: 'iid' }, { logger: quiet });
    const d = r.algorithms.dflmoe!;
    const f = r.algorithms.fedavg!;
    // Each head goes to the 2 other peers every round.
    const headBytes = d.peers[0].bytesSent / (2 * 2);
    assert.ok(headBytes > 64 * 2 * 4 && headBytes < 64 * 2 * 4 + 1024, `head message ${headBytes} bytes`);
    assert.equal(
      d.bytesSent,
      d.peers.reduce((a, p) => a + p.bytesSent, 0),
    );
    assert.equal(
      f.bytesSent,
      f.peers.reduce((a, p) => a + p.bytesSent + p.bytesReceived, 0),
    );
    assert.ok(f.bytesSent > 20 * d.bytesSent);
    assert.equal(r.algorithms.local!.bytesSent, 0);
  });
});

describe('dflmoe simulate (CLI)', () => {
  it('prints a table and writes results.json with the documented shape', () => {
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-sim-'));
    const r = cli(['simulate', '--dataset', 'breast-cancer', '--peers', '3', '--rounds', '2', '--partition', 'dirichlet:0.3', '--seed', '1', '--out', out]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /algorithm\s+mean acc\s+std\s+min/);
    for (const a of ['dflmoe', 'fedavg', 'local']) assert.match(r.stdout, new RegExp(`^${a}\\s+\\d+\\.\\d+%`, 'm'));
    assert.match(r.stderr, /dflmoe round 1\/2/);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    assert.equal(res.config.peers, 3);
    assert.equal(typeof res.backend, 'string');
    for (const a of ['dflmoe', 'fedavg', 'local']) {
      const alg = res.algorithms[a];
      for (const k of ['mean', 'std', 'min']) assert.equal(typeof alg.accuracy[k], 'number');
      assert.equal(typeof alg.bytesSent, 'number');
      assert.equal(typeof alg.wallSeconds, 'number');
      assert.equal(alg.peers.length, 3);
      for (const p of alg.peers) for (const k of ['id', 'accuracy', 'bytesSent', 'bytesReceived', 'trainSamples', 'testSamples']) assert.ok(k in p, k);
      assert.deepEqual(
        alg.rounds.map((x: { round: number }) => x.round),
        [1, 2],
      );
      for (const x of alg.rounds) for (const k of ['accuracyMean', 'bytesSent', 'seconds']) assert.equal(typeof x[k], 'number');
    }
  });

  it('a bad dataset is one clear line, not a stack trace', () => {
    const r = cli(['simulate', '--dataset', 'mnist', '--out', mkdtempSync(join(tmpdir(), 'dflmoe-sim-'))]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /dflmoe: error: Unknown dataset "mnist"/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('a diverging run stops with a clear message that says what to change, not a codec error or a stack trace', () => {
    const r = cli([
      'simulate',
      '--dataset',
      'breast-cancer',
      '--peers',
      '2',
      '--rounds',
      '3',
      '--algorithms',
      'fedavg',
      '--optimizer',
      'sgd',
      '--lr',
      '10',
      '--quiet',
      '--out',
      mkdtempSync(join(tmpdir(), 'dflmoe-sim-')),
    ]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /dflmoe: error: training diverged in round \d+ .*lower the learning rate \(--lr/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('bad flags exit 2 and say what is wrong', async () => {
    // Independent runs: at once.
    const [peers, alg, partition] = await Promise.all([
      cliAsync(['simulate', '--dataset', 'breast-cancer', '--peers', '0']),
      cliAsync(['simulate', '--dataset', 'breast-cancer', '--algorithms', 'fedprox']),
      cliAsync(['simulate', '--dataset', 'breast-cancer', '--partition', 'dirichlet:-2', '--rounds', '1']),
    ]);
    let r = peers;
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--peers must be a positive integer/);
    r = alg;
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown algorithm "fedprox"/);
    r = partition;
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Bad partition "dirichlet:-2"/);
  });
});

describe('poisoned experts', () => {
  before(backend);

  it('the admission check refuses random heads and keeps honest ones; without it the gate gives them little weight', async () => {
    const cfg = { dataset: 'digits', peers: 4, rounds: 4, partition: 'iid', algorithms: ['dflmoe' as const], poisoned: 1, poisonKind: 'random' as const };
    const guarded = await simulate({ ...cfg, admission: 0.5 }, { logger: quiet });
    const honest = guarded.algorithms.dflmoe!.peers.slice(0, 3);
    for (const p of honest) {
      assert.equal(p.rejectedHeads?.admission, 4, `${p.id} refused the attacker's head every round`);
      assert.ok(!('site-3' in p.gateWeights!), 'attacker not in the pool');
      assert.equal(Object.keys(p.gateWeights!).length, 3, 'honest experts admitted');
    }
    assert.ok(guarded.algorithms.dflmoe!.honestAccuracy!.mean > 0.8);
    const open = await simulate(cfg, { logger: quiet });
    for (const p of open.algorithms.dflmoe!.peers.slice(0, 3))
      assert.ok(p.gateWeights!['site-3'] < 0.25, `${p.id} gives the attacker ${p.gateWeights!['site-3']}`);
  });

  it('refuses an impossible number of attackers', async () => {
    await assert.rejects(
      simulate({ dataset: 'breast-cancer', peers: 2, rounds: 1, poisoned: 2 }, { logger: quiet }),
      /poisoned must be an integer in \[0, peers\)/,
    );
  });
});
