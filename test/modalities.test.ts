import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { loadDataset, modalityView, partition } from '@dflmoe/data';
import { agreedStandardizer, federatedAgreement } from '@dflmoe/data/internal';
import { silentLogger, simulate, type SimulationResults, type SitePreprocessing } from '@dflmoe/core';
import { siteBodies, siteViews } from '@dflmoe/core/internal';
import { backend, cli, cliAsync } from './helpers.js';
import type { PeerRunResult } from '@dflmoe/p2p';

describe('modalities: the same data held as images at some sites and as tables at others (issue #28)', () => {
  before(backend);

  it('reads images as a table of their pixels, the same values in the same order; never a table as images', () => {
    const ds = loadDataset('digits');
    const t = modalityView(ds, 'table');
    assert.deepEqual(t.sampleShape, [64]);
    assert.equal(t.features, ds.features, 'the same values, not a copy');
    assert.equal(t.featureNames!.length, 64);
    assert.equal(t.featureNames![9], 'pixel_1_1');
    assert.equal(modalityView(ds, 'image'), ds);
    assert.throws(() => modalityView(loadDataset('breast-cancer'), 'image'), /can be held as table only/);
  });

  it("gives each modality's sites its body and the standardization agreed among them alone; a cnn on a table is refused", () => {
    assert.deepEqual(siteBodies(4, ['mlp'], false, ['image', 'table']), ['cnn', 'mlp', 'cnn', 'mlp']);
    assert.deepEqual(siteBodies(3, ['mlp:32'], true, ['image', 'table']), ['mlp:32', 'mlp:32', 'mlp:32'], 'bodies given win');
    assert.throws(() => siteBodies(2, ['cnn'], true, ['image', 'table']), /^Error: site 1 holds the data as a table, but its body "cnn" is a cnn/);
    const ds = loadDataset('digits');
    const splits = partition(ds.labels, 10, 4, 'dirichlet:0.3', { seed: 1 });
    const views = siteViews(ds, splits, ['image', 'table'], true, undefined);
    assert.deepEqual(
      views.map((v) => v.modality),
      ['image', 'table', 'image', 'table'],
    );
    assert.deepEqual(
      views.map((v) => v.ds.sampleShape.length),
      [3, 1, 3, 1],
    );
    const tables = agreedStandardizer(federatedAgreement(modalityView(ds, 'table'), [splits[1], splits[3]]));
    assert.deepEqual(views[3].st, tables, "the table sites' own agreement");
    assert.equal(views[1].st, views[3].st);
    assert.notDeepEqual(views[0].st!.mean, tables.mean, 'the image sites agree apart');
  });

  it('digits at 2 image sites (cnn) and 2 table sites (mlp): dFLMoE mixes heads across them, beats local-only, FedAvg is skipped with why; tensors steady', async () => {
    const t0 = tf.memory().numTensors;
    const counts: number[] = [];
    const r = await simulate(
      {
        dataset: 'digits',
        peers: 4,
        rounds: 6,
        partition: 'dirichlet:0.5',
        siteModalities: ['image', 'table'],
        algorithms: ['dflmoe', 'local', 'fedavg'],
        seed: 1,
      },
      { logger: silentLogger, onRound: (alg) => alg === 'dflmoe' && counts.push(tf.memory().numTensors) },
    );
    const d = r.algorithms.dflmoe!;
    const l = r.algorithms.local!;
    assert.deepEqual(
      d.peers.map((p) => [p.modality, p.body]),
      [
        ['image', 'cnn'],
        ['table', 'mlp'],
        ['image', 'cnn'],
        ['table', 'mlp'],
      ],
    );
    assert.match(r.skipped!.fedavg!, /FedAvg needs the same model at every site, but site-0 has "cnn\|in=8x8x1/);
    for (const p of d.peers) {
      const others = d.peers.filter((q) => q.modality !== p.modality).map((q) => q.id);
      const pool = Object.keys(p.gateWeights!);
      assert.ok(
        others.every((o) => pool.includes(o)),
        `${p.id} (${p.modality}) mixes the other modality's heads: pool ${pool}`,
      );
    }
    assert.ok(d.accuracy.mean > l.accuracy.mean, `dflmoe ${d.accuracy.mean} against local-only ${l.accuracy.mean}`);
    assert.ok(
      d.peers.every((p) => p.pooledAccuracy! > 0),
      'pooled test in each form of the data',
    );
    assert.equal(counts.length, 6);
    assert.deepEqual(
      counts.slice(2),
      counts.slice(2).map(() => counts[1]),
      `tensor counts per round: ${counts}`,
    );
    assert.equal(tf.memory().numTensors, t0, 'the run frees its tensors');
  });

  it('over libp2p (simulate --transport tcp): each form agrees apart, the other form set apart, and every site mixes the heads of both forms', async function () {
    this.timeout(240000);
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-modal-tcp-'));
    const r = await cliAsync([
      'simulate',
      '--dataset',
      'digits',
      '--peers',
      '4',
      '--rounds',
      '2',
      '--modalities',
      'image,table',
      '--algorithms',
      'dflmoe',
      '--transport',
      'tcp',
      '--quiet',
      '--out',
      out,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SimulationResults;
    const peers = res.algorithms.dflmoe!.peers;
    assert.deepEqual(
      peers.map((p) => [p.modality, p.body]),
      [
        ['image', 'cnn'],
        ['table', 'mlp'],
        ['image', 'cnn'],
        ['table', 'mlp'],
      ],
    );
    const pre = [0, 1, 2, 3].map(
      (i) => JSON.parse(readFileSync(join(out, 'consortium', 'dflmoe', `site-${i}`, 'preprocessing.json'), 'utf8')) as SitePreprocessing,
    );
    const ids = [0, 1, 2, 3].map(
      (i) => (JSON.parse(readFileSync(join(out, 'consortium', 'dflmoe', `site-${i}`, 'results.json'), 'utf8')) as { peerId: string }).peerId,
    );
    pre.forEach((p, i) => {
      const same = ids.filter((_, k) => k % 2 === i % 2).sort();
      assert.deepEqual(p.included, same, `site-${i} agreed with its form`);
      assert.deepEqual(p.otherForms, ids.filter((_, k) => k % 2 !== i % 2).sort(), `site-${i} set the other form apart`);
      assert.deepEqual(p.agreed.schema.kind === 'tensor' && p.agreed.schema.shape, i % 2 === 0 ? [8, 8, 1] : [64]);
    });
    // Each site process names its own form (its results, and its card in the live view), from what the agreement found.
    const own = [0, 1, 2, 3].map(
      (i) => (JSON.parse(readFileSync(join(out, 'consortium', 'dflmoe', `site-${i}`, 'results.json'), 'utf8')) as PeerRunResult).modality,
    );
    assert.deepEqual(own, ['image', 'table', 'image', 'table']);
    for (const p of peers) assert.deepEqual(Object.keys(p.gateWeights!).sort(), ['site-0', 'site-1', 'site-2', 'site-3'], `${p.id} mixes every head`);
  });

  it('the CLI takes --modalities and refuses an unknown one in one line', () => {
    const bad = cli(['simulate', '--dataset', 'digits', '--modalities', 'image,audio', '--quiet']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /"audio" is not a modality; choose from image, table/);
    assert.doesNotMatch(bad.stderr, /at .*\.js/);
  });
});
