/**
 * Why does the mixture add little over the own head? Trains a dFLMoE
 * consortium in one process (heads exchanged directly, synchronous rounds),
 * then looks inside every site: the gate's weight on the own head, how far
 * each transform moved from the identity, what each received expert
 * predicts on the site's test split with and without its transform, and how
 * often the mixture agrees with the own head.
 *
 *   npm run bench:diagnose      # digits (50/site) and Fashion-MNIST (100/site), iid and Dirichlet 0.5
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import {
  DflmoePeer,
  applyFst,
  headLogits,
  initBackend,
  evaluateTask,
  preparePeerData,
  silentLogger,
  sharedInitSeed,
  type PeerData,
} from '@dflmoe/core/internal';
import { capTrainPerSite, deriveSeed, federatedStandardizer, loadDataset, parsePartition, partition } from '@dflmoe/data/internal';

const ROUNDS = 20;
const cells = [
  { label: 'digits iid, 50/site', dataset: 'digits', maxSamples: undefined, partition: 'iid', perSite: 50, testFraction: 0.5 },
  { label: 'digits dirichlet:0.5, 50/site', dataset: 'digits', maxSamples: undefined, partition: 'dirichlet:0.5', perSite: 50, testFraction: 0.5 },
  { label: 'fashion-mnist iid, 100/site', dataset: 'fashion-mnist', maxSamples: 12000, partition: 'iid', perSite: 100, testFraction: 0.25 },
  { label: 'fashion-mnist dirichlet:0.5, 100/site', dataset: 'fashion-mnist', maxSamples: 12000, partition: 'dirichlet:0.5', perSite: 100, testFraction: 0.25 },
];
await initBackend({ logger: silentLogger });
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const out: Record<string, unknown>[] = [];
for (const c of cells) {
  const seed = 1;
  const ds = loadDataset(c.dataset, { seed, maxSamples: c.maxSamples });
  let splits = partition(ds.labels, ds.classNames.length, 10, parsePartition(c.partition), { seed, testFraction: c.testFraction, minSize: 10 });
  splits = capTrainPerSite(splits, ds.labels, c.perSite, deriveSeed(seed, 'cap'));
  const st = federatedStandardizer(ds, splits);
  const datas: PeerData[] = splits.map((s) => preparePeerData(ds, s, st));
  const peers = datas.map(
    (data, i) =>
      new DflmoePeer({
        id: `site-${i}`,
        data,
        body: { kind: 'mlp' },
        featureDim: 64,
        headHidden: [],
        train: { epochs: 1, batchSize: 32, learningRate: 3e-3, seed: deriveSeed(seed, 'peer', i) },
        initSeed: sharedInitSeed(seed, 'mlp'),
      }),
  );
  for (let r = 1; r <= ROUNDS; r++) {
    for (const p of peers) {
      p.startRound(r);
      await p.trainRound(r);
    }
    const heads = peers.map((p) => p.encodeHead(r));
    peers.forEach((p, i) => heads.forEach((h, j) => i !== j && p.receiveHead(h, `site-${j}`, r)));
  }
  const own = peers.map((p) => p.evaluate().ownHeadAccuracy);
  const sites = peers.map((p, i) => {
    const d = p.data;
    const acc = (f: (z: tf.Tensor2D) => tf.Tensor2D) => evaluateTask(d.task, d.xTest, d.yTest, (xb) => f(p.features(xb, false))).accuracy;
    const experts = p.experts().slice(1);
    const withFst = experts.map((e) => acc((z) => headLogits(e.head, e.fst ? applyFst(e.fst, z) : z)));
    const raw = experts.map((e) => acc((z) => headLogits(e.head, z)));
    const moved = experts.map((e) =>
      tf.tidy(() => {
        const k = e.fst!.kernel;
        const eye = k.rank === 1 ? tf.onesLike(k) : tf.eye(k.shape[0]);
        return tf.norm(tf.sub(k, eye)).dataSync()[0] / tf.norm(eye).dataSync()[0];
      }),
    );
    const agree = tf.tidy(() => {
      const z = p.features(d.xTest, false);
      const m = tf.argMax(p.moeProbs(d.xTest), 1);
      return tf.mean(tf.cast(tf.equal(m, tf.argMax(headLogits(p.head, z), 1)), 'float32')).dataSync()[0];
    });
    const gw = p.meanGateWeights();
    // A received head at its home site (through no transform: its own body).
    const home = experts.map((e) => own[Number(e.id.split('-')[1])]);
    return {
      site: p.id,
      moe: p.evaluate().accuracy,
      own: own[i],
      ownGate: gw[p.id],
      agree,
      expertWithFst: mean(withFst),
      expertRaw: mean(raw),
      expertAtHome: mean(home),
      fstMoved: mean(moved),
    };
  });
  const row = {
    cell: c.label,
    moe: mean(sites.map((s) => s.moe)),
    own: mean(sites.map((s) => s.own)),
    ownGate: mean(sites.map((s) => s.ownGate)),
    agree: mean(sites.map((s) => s.agree)),
    expertWithFst: mean(sites.map((s) => s.expertWithFst)),
    expertRaw: mean(sites.map((s) => s.expertRaw)),
    expertAtHome: mean(sites.map((s) => s.expertAtHome)),
    fstMoved: mean(sites.map((s) => s.fstMoved)),
    sites,
  };
  out.push(row);
  process.stdout.write(`${c.label}: ${JSON.stringify({ ...row, sites: undefined })}\n`);
  peers.forEach((p) => p.dispose());
  datas.forEach((d) => tf.dispose([d.xTrain, d.yTrain, d.xTest, d.yTest]));
}
const pct = (x: unknown) => (100 * (x as number)).toFixed(1);
let md =
  '| cell | mixture % | own head % | mixture agrees with own head | gate weight on own head | received expert through its FST % | received expert, no FST % | same head at its home site % | FST moved (rel. Frobenius) |\n|---|---|---|---|---|---|---|---|---|\n';
for (const r of out)
  md += `| ${r.cell} | ${pct(r.moe)} | ${pct(r.own)} | ${pct(r.agree)}% | ${(r.ownGate as number).toFixed(3)} | ${pct(r.expertWithFst)} | ${pct(r.expertRaw)} | ${pct(r.expertAtHome)} | ${(r.fstMoved as number).toFixed(3)} |\n`;
mkdirSync('benchmarks/results', { recursive: true });
writeFileSync('benchmarks/results/diagnose.json', JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, cells: out }, null, 2) + '\n');
writeFileSync('benchmarks/results/diagnose.md', md);
process.stdout.write(`\n${md}\nwrote benchmarks/results/diagnose.json\n`);
