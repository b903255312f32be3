/**
 * Multi-task sites: several tasks on one body, each task's loss over the
 * rows that carry its label; dFLMoE's experts matched by task; the body
 * combined by a server or peer to peer; the built-in multi-task cells.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  StatusBoard,
  RdpAccountant,
  algorithmSettings,
  createMultiTaskSite,
  decodeTaskHeads,
  encodeTaskHeads,
  getAlgorithm,
  CodecError,
  memoryNetworks,
  MemoryHub,
  prepareSiteTasks,
  runSite,
  silentLogger,
  simulate,
  datasetTask,
  scaledTask,
  type AlgorithmName,
  type MultiTaskSite,
  type SiteRoundRecord,
} from '@dflmoe/core/internal';
import { fitStandardizer, labelledRows, loadDataset, partition, taskDataset, featureSize, type Dataset } from '@dflmoe/data';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backend, cli } from './helpers.js';

/** digits-tasks with some labels taken away: every third row has no parity label, every fifth no value. */
function withMissingLabels(ds: Dataset): Dataset {
  return {
    ...ds,
    tasks: ds.tasks!.map((t) =>
      t.name === 'parity'
        ? { ...t, labels: t.labels.map((y, r) => (r % 3 === 0 ? -1 : y)) }
        : t.name === 'value'
          ? { ...t, values: t.values!.map((v, r) => (r % 5 === 0 ? NaN : v)) }
          : t,
    ),
  };
}

/** Four sites of `alg` on digits-tasks (site tasks: digit | parity,high | high | value,digit), in memory. */
function buildSites(
  alg: AlgorithmName,
  ds: Dataset,
  o: Record<string, unknown> = {},
  train: Record<string, unknown> = {},
): { sites: MultiTaskSite[]; dispose(): void } {
  const splits = partition(ds.labels, ds.classNames.length, 4, 'iid', { seed: 3, testFraction: 0.3, minSize: 10 }).map((s) => ({
    train: s.train.subarray(0, 60),
    test: s.test.subarray(0, 40),
  }));
  const plan = ds.siteTasks!;
  const st = fitStandardizer(ds.features, featureSize(ds), Int32Array.from(splits.flatMap((s) => [...s.train])));
  const info = (name: string) => {
    const view = taskDataset(ds, name);
    return scaledTask(view, Int32Array.from(splits.flatMap((s) => [...labelledRows(view, s.train)])));
  };
  const datas = splits.map((s, i) => prepareSiteTasks(ds, s, st, plan[i].map(info)));
  const a = getAlgorithm(alg);
  const sites = datas.map((d, i) =>
    createMultiTaskSite(
      a,
      {
        id: `site-${i}`,
        data: d.tasks[0],
        body: { kind: 'mlp', hidden: [32] },
        featureDim: 16,
        headHidden: [],
        train: { seed: 10 + i, learningRate: 1e-2, epochs: 2, ...train },
      },
      d,
      { seed: 1, maxHeadBytes: 1 << 22, maxModelBytes: 1 << 26, ...algorithmSettings(a, {}).settings, ...o } as never,
    ),
  );
  return {
    sites,
    dispose: () => {
      sites.forEach((s) => s.dispose());
      datas.forEach((d) => d.tasks.forEach((t) => tf.dispose([t.xTrain, t.yTrain, t.xTest, t.yTest])));
    },
  };
}

describe('multi-task sites', () => {
  before(backend);

  it('digits-tasks: four tasks of one image, a plan of one or two tasks per site, and labelled rows per task', () => {
    const ds = loadDataset('digits-tasks');
    assert.deepEqual(
      ds.tasks!.map((t) => [t.name, t.kind]),
      [
        ['digit', 'classification'],
        ['parity', 'classification'],
        ['high', 'classification'],
        ['value', 'regression'],
      ],
    );
    const [digit, parity, high, value] = ds.tasks!;
    for (let r = 0; r < ds.numSamples; r += 97) {
      assert.equal(digit.labels[r], ds.labels[r]);
      assert.equal(parity.labels[r], ds.labels[r] % 2);
      assert.equal(high.labels[r], ds.labels[r] >= 5 ? 1 : 0);
      assert.equal(value.values![r], ds.labels[r]);
    }
    assert.deepEqual(ds.siteTasks, [['digit'], ['parity', 'high'], ['high'], ['value', 'digit']]);
    const view = taskDataset(withMissingLabels(ds), 'parity');
    assert.equal(datasetTask(view).name, 'parity');
    assert.deepEqual(datasetTask(view).classNames, ['even', 'odd']);
    assert.equal(labelledRows(view, Int32Array.from([0, 1, 2, 3, 4, 5, 6])).join(), '1,2,4,5');
    assert.equal(labelledRows(taskDataset(withMissingLabels(ds), 'value'), Int32Array.from([0, 1, 5, 6])).join(), '1,6');
    assert.throws(() => taskDataset(ds, 'colour'), /digits-tasks has no task "colour"; its tasks are digit, parity, high, value/);
    const fm = loadDataset('fashion-mnist-tasks', { maxSamples: 300 });
    assert.deepEqual(
      fm.tasks!.map((t) => t.name),
      ['item', 'group'],
    );
    const group = fm.tasks![1];
    // Footwear is sandals (5), sneakers (7) and ankle boots (9).
    for (let r = 0; r < fm.numSamples; r++) assert.equal(group.labels[r] === 2, [5, 7, 9].includes(fm.labels[r]));
  });

  it("dFLMoE: each task mixes only the heads of that task's other sites; rows without a label stay out of its loss; no tensor leaks", async () => {
    const ds = withMissingLabels(loadDataset('digits-tasks'));
    const { sites, dispose } = buildSites('dflmoe', ds);
    try {
      // Site 1 learns parity on the rows that carry a parity label only.
      const parity = sites[1].data.tasks!.find((t) => t.task.name === 'parity')!;
      assert.ok(parity.trainSamples < 60 && parity.trainSamples > 30, `parity rows ${parity.trainSamples}`);
      assert.equal(sites[1].data.trainSamples, 60);
      const nets = memoryNetworks(getAlgorithm('dflmoe'), sites, 1 << 26, silentLogger);
      // 'high' is learnt at sites 1 and 2, 'digit' at 0 and 3; parity and value at one site each.
      assert.deepEqual(Object.keys(nets[1].tasks!).sort(), ['high', 'parity']);
      // Tensors held once every site has finished round 2, 3 and 4.
      const counts: number[] = [];
      let recs: SiteRoundRecord[][] = [];
      for (const [from, rounds] of [
        [1, 2],
        [3, 3],
        [4, 4],
      ]) {
        recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { from, rounds })));
        counts.push(tf.memory().numTensors);
      }
      assert.equal(counts[2], counts[1], `tensors after rounds 2, 3, 4: ${counts.join(', ')}`);
      const last = recs.map((r) => r.at(-1)!);
      assert.deepEqual(
        last.map((r) => Object.keys(r.tasks).sort()),
        [['digit'], ['high', 'parity'], ['high'], ['digit', 'value']],
      );
      for (const r of last) for (const t of Object.values(r.tasks)) assert.ok(t.testRows > 0);
      assert.ok((last[0].tasks.digit.accuracy as number) > 0.3, `digit accuracy ${String(last[0].tasks.digit.accuracy)}`);
      assert.ok(Number.isFinite(last[3].tasks.value.rmse as number));
      // Experts are task-matched: site 0's digit pool holds site 3's digit head, site 1's high pool site 2's; lone tasks have none.
      const experts = sites.map((s) =>
        s
          .experts()
          .map((e) => `${e.task}:${e.peer}`)
          .sort(),
      );
      assert.deepEqual(experts, [['digit:site-3'], ['high:site-2'], ['high:site-1'], ['digit:site-0']]);
      // Only heads travel: a lone task's sites send nothing for it.
      assert.equal(nets[1].tasks!.parity.exchange!.stats().bytesSent, 0);
      assert.ok(nets[1].tasks!.high.exchange!.stats().bytesSent > 0);
    } finally {
      dispose();
    }
  });

  it('a checkpoint after a round holds every task (and the bodies held): a fresh site restored from it evaluates the same', async () => {
    const ds = loadDataset('digits-tasks');
    for (const [alg, o] of [
      ['dflmoe', { shareBody: true }],
      ['fedavg', {}],
    ] as const) {
      const a = buildSites(alg, ds, o);
      const b = buildSites(alg, ds, o);
      const dir = mkdtempSync(join(tmpdir(), 'dflmoe-mt-ckpt-'));
      try {
        const nets = memoryNetworks(getAlgorithm(alg), a.sites, 1 << 26, silentLogger);
        await Promise.all(a.sites.map((s, i) => runSite(s, nets[i], { rounds: 2 })));
        const want = a.sites.map((s) => s.taskResults());
        for (const [i, s] of a.sites.entries()) await s.checkpoint!.save(join(dir, `s${i}`, 'checkpoints'), 2, { note: i }, 2);
        // Before restoring, the fresh sites differ.
        assert.notDeepEqual(
          b.sites.map((s) => s.taskResults()),
          want,
        );
        for (const [i, s] of b.sites.entries()) {
          const r = await s.checkpoint!.restore(join(dir, `s${i}`, 'checkpoints'), silentLogger);
          assert.equal(r?.round, 2);
          assert.deepEqual(r?.extra, { note: i });
        }
        assert.deepEqual(
          b.sites.map((s) => s.taskResults()),
          want,
          alg,
        );
        // Another site's checkpoint (other tasks) is refused.
        await assert.rejects(
          b.sites[1].checkpoint!.restore(join(dir, 's0', 'checkpoints'), silentLogger),
          /not a checkpoint of this site's tasks \(high, parity\)/,
        );
      } finally {
        a.dispose();
        b.dispose();
      }
    }
  });

  it("DP-SGD at a multi-task site: its epsilon composes every task's steps (each at its own sampling rate over its rows)", async () => {
    const ds = loadDataset('digits-tasks');
    const dp = { noiseMultiplier: 1.1, clipNorm: 1, microbatches: 4, delta: 1e-5 };
    const { sites, dispose } = buildSites('local', ds, {}, { dp, batchSize: 16 });
    try {
      const nets = memoryNetworks(getAlgorithm('local'), sites, 1 << 26, silentLogger);
      const recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 2 })));
      // Site 1 learns parity and high on its 60 rows: two mechanisms over the same rows.
      const want = new RdpAccountant();
      for (const t of sites[1].data.tasks!) want.compose(16 / t.trainSamples, dp.noiseMultiplier, 2 * 2 * Math.ceil(t.trainSamples / 16)); // 2 rounds of 2 epochs
      const got = recs[1][1].privacy!;
      assert.ok(Math.abs(got.epsilon - want.epsilon(1e-5)) < 1e-9, `${got.epsilon} vs ${want.epsilon(1e-5)}`);
      assert.equal(got.steps, want.steps);
      // One task over as many rows spends less.
      assert.ok(recs[2][1].privacy!.epsilon < got.epsilon, `${recs[2][1].privacy!.epsilon} < ${got.epsilon}`);
    } finally {
      dispose();
    }
  });

  it('a combined body: FedAvg (a server) and fedrep-p2p (peer to peer, the mean of every member) give the same sites to the bit', async () => {
    const ds = loadDataset('digits-tasks');
    const results: Record<string, number>[][] = [];
    for (const alg of ['fedavg', 'fedrep-p2p'] as const) {
      const { sites, dispose } = buildSites(alg, ds);
      try {
        const nets = memoryNetworks(getAlgorithm(alg), sites, 1 << 26, silentLogger);
        const recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 2 })));
        results.push(recs.map((r) => Object.fromEntries(Object.entries(r[1].tasks).map(([k, t]) => [k, (t.accuracy ?? t.rmse) as number]))));
        // The body travels once per site and round (not once per task): to the server, or to each of the 3 members.
        const sent = nets.map((n) => (n.server ?? n.bodies)!.stats().messagesSent);
        assert.deepEqual(sent, Array(4).fill(alg === 'fedavg' ? 2 : 6));
      } finally {
        dispose();
      }
    }
    assert.deepEqual(results[0], results[1]);
    // The combined body differs from learning alone.
    const { sites, dispose } = buildSites('local', ds);
    try {
      const nets = memoryNetworks(getAlgorithm('local'), sites, 1 << 26, silentLogger);
      const recs = await Promise.all(sites.map((s, i) => runSite(s, nets[i], { rounds: 2 })));
      assert.notDeepEqual(
        recs.map((r) => Object.fromEntries(Object.entries(r[1].tasks).map(([k, t]) => [k, (t.accuracy ?? t.rmse) as number]))),
        results[0],
      );
    } finally {
      dispose();
    }
  });

  it('simulate: every algorithm with a multi-task form, per-task summaries over the sites that learn each task, gossip skipped with the reason', async function () {
    this.timeout(120_000);
    const r = await simulate(
      {
        dataset: 'digits-tasks',
        peers: 5,
        rounds: 2,
        trainPerSite: 50,
        seed: 2,
        partition: 'iid',
        bodies: ['mlp:32'],
        featureDim: 16,
        algorithms: ['local', 'fedavg', 'fedavg-ft', 'fedrep', 'fedrep-p2p', 'dflmoe', 'gossip'],
        siteTasks: [['digit', 'value'], ['parity'], ['digit']],
      },
      { logger: silentLogger },
    );
    assert.deepEqual(r.dataset.siteTasks, [['digit', 'value'], ['parity'], ['digit'], ['digit', 'value'], ['parity']]);
    assert.match(r.skipped?.gossip ?? '', /Gossip has no multi-task form/i);
    for (const alg of ['local', 'fedavg', 'fedavg-ft', 'fedrep', 'fedrep-p2p', 'dflmoe'] as const) {
      const a = r.algorithms[alg]!;
      assert.deepEqual(Object.fromEntries(Object.entries(a.tasks).map(([k, t]) => [k, t.sites])), { digit: 3, parity: 2, value: 2 }, alg);
      assert.ok(Number.isNaN(a.accuracy.mean), `${alg}: a multi-task run has no one accuracy`);
      assert.ok(a.tasks.digit.metrics.accuracy.mean > 0.1, `${alg} digit ${a.tasks.digit.metrics.accuracy.mean}`);
      assert.ok(Number.isFinite(a.tasks.value.metrics.rmse.mean));
      assert.ok(a.peers[1].tasks.parity && !a.peers[1].tasks.digit);
      assert.equal(a.rounds.length, 2);
      assert.ok(a.rounds[1].tasks.value.metric === 'rmse');
    }
    assert.ok(r.algorithms.local!.bytesSent === 0 && r.algorithms.dflmoe!.bytesSent > 0 && r.algorithms.fedavg!.bytesSent > r.algorithms.dflmoe!.bytesSent);
    await assert.rejects(
      simulate({ dataset: 'digits-tasks', peers: 3, rounds: 1, algorithms: ['local'], siteTasks: [['digit', 'colour']] }, { logger: silentLogger }),
      /site 0's task "colour" is not a task of digits-tasks; its tasks are digit, parity, high, value/,
    );
    await assert.rejects(
      simulate({ dataset: 'digits', peers: 3, rounds: 1, algorithms: ['local'], siteTasks: [['digit']] }, { logger: silentLogger }),
      /siteTasks needs a multi-task dataset/,
    );
    await assert.rejects(
      simulate(
        { dataset: 'digits-tasks', peers: 3, rounds: 1, algorithms: ['dflmoe'], crossTask: true, dp: { noiseMultiplier: 1, clipNorm: 1 } },
        { logger: silentLogger },
      ),
      /crossTask is not available with differential privacy/,
    );
  });

  it('the CLI: --site-tasks, a table row per task, a report with a chart per task; a bad plan is one line', async function () {
    this.timeout(60_000);
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-mt-'));
    const r = cli([
      'simulate',
      '--dataset',
      'digits-tasks',
      '--peers',
      '3',
      '--rounds',
      '1',
      '--algorithms',
      'local,dflmoe',
      '--site-tasks',
      'digit;value,digit',
      '--train-per-site',
      '40',
      '--quiet',
      '--out',
      out,
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /dflmoe\s+digit\s+accuracy/);
    assert.match(r.stdout, /^\s+value\s+rmse/m);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.ok(html.includes('accuracy-per-round') && html.includes('accuracy-per-round:value'), 'a chart per task');
    const bad = cli(['simulate', '--dataset', 'digits-tasks', '--site-tasks', 'digit;;value', '--out', out]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--site-tasks "digit;;value": give each site at least one task/);
    assert.equal(bad.stderr.split('\n').filter(Boolean).length <= 2, true, bad.stderr);
  });

  it("experts across tasks: a site's task heads as one message, refused when they disagree with their shapes", () => {
    const task = (name: string, kind: 'classification' | 'regression', classes: number) => ({
      name,
      kind,
      classNames: kind === 'classification' ? Array.from({ length: classes }, String) : [],
    });
    const layer = (i: number, o: number, v = 0.5) => ({ kernel: tf.fill([i, o], v), bias: tf.zeros([o]) });
    const heads = [
      { task: task('digit', 'classification', 10), layers: [layer(8, 10)] },
      { task: task('value', 'regression', 0), layers: [layer(8, 4), layer(4, 1)] },
    ];
    try {
      const before = tf.memory().numTensors;
      const r = decodeTaskHeads(encodeTaskHeads('site-1', 3, heads), 'site-1', 8, { maxBytes: 1 << 20 });
      assert.equal(r.round, 3);
      assert.deepEqual(
        r.heads.map((h) => [h.id, h.task, h.kind, h.layers.length]),
        [
          ['site-1/digit', 'digit', 'classification', 1],
          ['site-1/value', 'value', 'regression', 2],
        ],
      );
      r.heads.forEach((h) => tf.dispose(h.layers.flatMap((l) => [l.kernel, l.bias])));
      assert.equal(tf.memory().numTensors, before);
      const refused = (bytes: Uint8Array, width: number, why: RegExp) =>
        assert.throws(
          () => decodeTaskHeads(bytes, 'x', width, { maxBytes: 1 << 20 }),
          (e: unknown) => e instanceof CodecError && why.test(e.message),
        );
      refused(encodeTaskHeads('s', 1, heads), 16, /layer 0 has kernel \[8,10\].*expected \[16, n\]/);
      refused(encodeTaskHeads('s', 1, [heads[0], heads[0]]), 8, /unique name/);
      refused(encodeTaskHeads('s', 1, [{ task: task('digit', 'classification', 10), layers: [layer(8, 10, NaN)] }]), 8, /non-finite/);
      refused(
        encodeTaskHeads('s', 1, [{ task: { ...task('digit', 'classification', 10), kind: 'ranking' as 'regression' }, layers: [layer(8, 10)] }]),
        8,
        /unknown kind/,
      );
    } finally {
      heads.forEach((h) => tf.dispose(h.layers.flatMap((l) => [l.kernel, l.bias])));
    }
  });

  it("experts across tasks: a member's bundle that does not decode, or names a task the agreement does not hold, is dropped and counted; the site goes on", async () => {
    const { sites, dispose } = buildSites('dflmoe', loadDataset('digits-tasks'), { crossTask: true });
    const hub = new MemoryHub();
    const evil = hub.join('evil');
    const net = {
      crossTask: hub.join('site-0'),
      crossOthers: 1,
      crossTaskNames: ['digit', 'parity', 'high'],
      tasks: { digit: { exchange: new MemoryHub().join('site-0'), quorum: 0, deadlineMs: 0, logger: silentLogger } },
      quorum: 0,
      deadlineMs: 2000,
      logger: silentLogger,
    };
    const value = { name: 'value', kind: 'regression' as const, classNames: [] };
    const head = [{ kernel: tf.fill([16, 1], 0.1), bias: tf.zeros([1]) }];
    try {
      await evil.publish(encodeTaskHeads('evil', 1, [{ task: value, layers: head }]), 1);
      await runSite(sites[0], net, { from: 1, rounds: 1 });
      const t1 = tf.memory().numTensors;
      await evil.publish(Uint8Array.from([1, 2, 3, 4]), 2);
      const [rec] = await runSite(sites[0], net, { from: 2, rounds: 2 });
      assert.equal(tf.memory().numTensors, t1, 'the refused heads were disposed');
      const refused = sites[0].rejected();
      assert.equal(refused['cross:mismatch'], 1, JSON.stringify(refused));
      assert.equal(Object.keys(refused).filter((k) => k.startsWith('cross:')).length, 2, JSON.stringify(refused));
      assert.ok(Number.isFinite(rec.tasks!.digit.accuracy), 'the site went on with its own heads');
    } finally {
      tf.dispose(head.flatMap((l) => [l.kernel, l.bias]));
      dispose();
    }
  });

  it('experts across tasks: a new task at one site reads the digit heads of the others; the bytes carry every task; nothing leaks', async function () {
    this.timeout(120_000);
    const cfg = {
      dataset: 'digits-tasks',
      peers: 4,
      rounds: 3,
      trainPerSite: 30,
      seed: 1,
      partition: 'iid',
      bodies: ['mlp:32'],
      featureDim: 16,
      learningRate: 3e-3,
      algorithms: ['dflmoe' as const],
      siteTasks: [['high'], ['digit'], ['digit', 'value'], ['parity']],
    };
    const before = tf.memory().numTensors;
    const plain = await simulate(cfg, { logger: silentLogger });
    const board = new StatusBoard();
    const cross = await simulate({ ...cfg, crossTask: true }, { logger: silentLogger, status: board });
    assert.equal(tf.memory().numTensors, before, 'every tensor of both runs disposed');
    const c = cross.algorithms.dflmoe!;
    // The lone task's read-out leans on the digit heads most (digit >= 5 is a linear read-out of a digit's class probabilities).
    const w = c.peers[0].gateWeights!;
    assert.ok(w['high <- digit'] > w['high <- parity'] && w['high <- digit'] > w['high <- value'], JSON.stringify(w));
    // The live view has that reliance round by round (the last round's is the results'), and a gate per task of a two-task site.
    const live = new Map(board.snapshot().sites.map((s) => [s.id, s]));
    const r0 = live.get('site-0')!.reliance!;
    assert.equal(r0.length, 3);
    assert.ok(r0.every((g) => g && Math.abs(Object.values(g).reduce((a, b) => a + b, 0) - 1) < 1e-5));
    assert.deepEqual(r0[2], w);
    // site-2's digit task mixes site-1's digit head; its value task has no other site's head (no gate for it).
    const g2 = live.get('site-2')!.gate[2]!;
    assert.deepEqual(Object.keys(g2).sort(), ['digit · site-1', 'digit · site-2']);
    assert.ok(Math.abs(g2['digit · site-1'] + g2['digit · site-2'] - 1) < 1e-5);
    assert.ok(c.bytesSent > plain.algorithms.dflmoe!.bytesSent, 'every task head goes to every site');
    for (const p of c.peers) for (const t of Object.values(p.tasks)) assert.ok(Number.isFinite((t.accuracy ?? t.rmse) as number));
    // Off by default: the setting's absence and false give the same run.
    const off = await simulate({ ...cfg, crossTask: false }, { logger: silentLogger });
    assert.deepEqual(off.algorithms.dflmoe!.tasks, plain.algorithms.dflmoe!.tasks);
    await assert.rejects(
      simulate({ dataset: 'digits', peers: 2, rounds: 1, algorithms: ['dflmoe'], crossTask: true }, { logger: silentLogger }),
      /crossTask reads the heads of other tasks: it needs multi-task sites/,
    );
  });
});
