/**
 * Low-rank adapters on a frozen public body (issue #28 item 4, `loraRank`):
 * dFLMoE on the frozen cells of the matrix's pretrained regime, with heads
 * only (rank 0) against heads plus adapters of rank 4 and 8. The cells,
 * the public bodies and the rates are the pretrained regime's (`npm run
 * bench -- --regimes pretrained`): Fashion-MNIST, 10 sites, 100 training
 * images per site, iid and Dirichlet 0.5, 20 rounds of one epoch, Adam
 * 3e-3 (what `bench:tune -- --frozen-body` chose for dFLMoE), every site
 * starting from one body pretrained on 9000 images that no site holds.
 * Target: every rank >= heads only.
 *
 *   npm run bench:lora                       # seeds 1-3, ranks 0, 4, 8; updates benchmarks/README.md
 *   npm run bench:lora -- --seeds 1 --ranks 0,4
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DflmoePeer, disposePeerData, preparePeerData, type SimulationResults } from '@dflmoe/core/internal';
import { makeSynthetic } from '@dflmoe/data/internal';
import { createProgress, startProcess, waitExit } from '@dflmoe/cli/internal';
import { initBackend, silentLogger } from '@dflmoe/core/internal';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '1,2,3' },
    ranks: { type: 'string', default: '0,4,8' },
    jobs: { type: 'string', default: '2' },
    out: { type: 'string', default: 'benchmarks/results/lora' },
  },
});
const seeds = values.seeds!.split(',').map(Number);
const ranks = values.ranks!.split(',').map(Number);
const outDir = values.out!;
const PARTITIONS = ['iid', 'dirichlet:0.5'];
// The pretrained regime's cell and public body (benchmarks/matrix.ts).
const SUBSET = 12000;
const PRETRAIN_ROWS = 10000;
const PRETRAIN_EPOCHS = 3;
const ROUNDS = 20;
const bodyDir = (seed: number) => join(outDir, 'bodies', `s${seed}`);
const runDir = (partition: string, seed: number, rank: number) => join(outDir, 'runs', `${partition.replace(':', '')}-s${seed}-r${rank}`);

for (const seed of seeds) {
  if (existsSync(join(bodyDir(seed), 'model.json'))) continue;
  mkdirSync(bodyDir(seed), { recursive: true });
  const args = ['pretrain', '--dataset', 'fashion-mnist', '--exclude-subset', String(SUBSET), '--max-rows', String(PRETRAIN_ROWS)];
  args.push('--epochs', String(PRETRAIN_EPOCHS), '--seed', String(seed), '--out', bodyDir(seed));
  const code = await waitExit(startProcess(args, join(bodyDir(seed), 'log.txt'), { DFLMOE_LOG_LEVEL: 'warn' }), 3600 * 1000);
  if (code !== 0) throw new Error(`pretraining for seed ${seed} failed (exit ${code}); see ${join(bodyDir(seed), 'log.txt')}`);
}

interface Job {
  partition: string;
  seed: number;
  rank: number;
  dir: string;
}
const jobs: Job[] = PARTITIONS.flatMap((partition) =>
  seeds.flatMap((seed) => ranks.map((rank) => ({ partition, seed, rank, dir: runDir(partition, seed, rank) }))),
);
const progress = createProgress('lora', jobs.length, 'run');
let done = 0;
const queue = [...jobs];
async function worker(): Promise<void> {
  for (let j = queue.shift(); j; j = queue.shift()) {
    if (!existsSync(join(j.dir, 'results.json'))) {
      const args = ['simulate', '--dataset', 'fashion-mnist', '--max-samples', String(SUBSET), '--test-fraction', '0.25'];
      args.push('--peers', '10', '--partition', j.partition, '--train-per-site', '100', '--seed', String(j.seed), '--rounds', String(ROUNDS));
      args.push('--epochs', '1', '--algorithms', 'dflmoe', '--optimizer', 'adam', '--lr', '0.003');
      args.push('--pretrained-body', bodyDir(j.seed), '--freeze-body', ...(j.rank > 0 ? ['--lora-rank', String(j.rank)] : []));
      args.push('--quiet', '--out', j.dir);
      mkdirSync(j.dir, { recursive: true });
      const code = await waitExit(startProcess(args, join(j.dir, 'log.txt'), { DFLMOE_LOG_LEVEL: 'warn' }), 3600 * 1000);
      if (code !== 0) throw new Error(`run ${j.dir} failed (exit ${code}); see ${join(j.dir, 'log.txt')}`);
    }
    progress.update(++done, `${j.partition} seed ${j.seed} rank ${j.rank}`);
  }
}
await Promise.all(Array.from({ length: Number(values.jobs) }, worker));
progress.stop();

// ------------------------------------------------------------ head sizes (exact: a head encoded at the cells' shapes)
await initBackend({ logger: silentLogger });
function headBytes(rank: number, precision: 'float32' | 'float16' = 'float32'): number {
  const ds = makeSynthetic({ classes: 10, dim: 784, samples: 40, seed: 1 });
  const data = preparePeerData(ds, { train: Int32Array.from({ length: 30 }, (_, i) => i), test: Int32Array.from({ length: 10 }, (_, i) => 30 + i) });
  const peer = new DflmoePeer({
    id: 'x',
    data,
    body: { kind: 'mlp', hidden: [128] },
    featureDim: 64,
    headHidden: [],
    train: {},
    freezeBody: rank > 0,
    loraRank: rank,
    headPrecision: precision,
  });
  const n = peer.encodeHead(1).length;
  peer.dispose();
  disposePeerData(data);
  return n;
}

// ------------------------------------------------------------ cost of a round (one process, the sides interleaved)
/** Seconds of one training round of a site holding 9 experts (100 rows, the cells' shapes), per rank: median of 5 interleaved repeats. */
async function roundSeconds(): Promise<Record<number, number>> {
  const ds = makeSynthetic({ classes: 10, dim: 784, samples: 1000, seed: 1 });
  const sites = (rank: number) =>
    Array.from({ length: 10 }, (_, i) => {
      const rows = Int32Array.from({ length: 100 }, (_, k) => i * 100 + k);
      return new DflmoePeer({
        id: `s${i}`,
        data: preparePeerData(ds, { train: rows, test: rows.slice(0, 10) }),
        body: { kind: 'mlp', hidden: [128] },
        featureDim: 64,
        headHidden: [],
        initSeed: 1,
        train: { seed: i, learningRate: 3e-3 },
        freezeBody: true,
        loraRank: rank,
      });
    });
  const consortia = new Map(ranks.map((r) => [r, sites(r)]));
  for (const ps of consortia.values()) {
    for (const p of ps) await p.trainRound(1);
    const heads = ps.map((p) => p.encodeHead(1));
    heads.forEach((h, j) => j > 0 && ps[0].receiveHead(h, ps[j].id, 1));
  }
  // One round with the experts first (the first use of each shape costs more), then 5 timed repeats.
  for (const ps of consortia.values()) await ps[0].trainRound(2);
  const times = new Map(ranks.map((r) => [r, [] as number[]]));
  for (let rep = 0; rep < 5; rep++)
    for (const [r, ps] of consortia) {
      const t = performance.now();
      await ps[0].trainRound(3 + rep);
      times.get(r)!.push((performance.now() - t) / 1000);
    }
  for (const ps of consortia.values()) ps.forEach((p) => (disposePeerData(p.data), p.dispose()));
  return Object.fromEntries([...times].map(([r, ts]) => [r, ts.sort((a, b) => a - b)[2]]));
}
const cost = await roundSeconds();

// ------------------------------------------------------------ aggregate
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs: number[]) => Math.sqrt(mean(xs.map((x) => (x - mean(xs)) ** 2)));
const load = (j: Job) => JSON.parse(readFileSync(join(j.dir, 'results.json'), 'utf8')) as SimulationResults;
const rows = PARTITIONS.flatMap((partition) =>
  ranks.map((rank) => {
    const runs = seeds.map((seed) => load(jobs.find((j) => j.partition === partition && j.seed === seed && j.rank === rank)!).algorithms.dflmoe!);
    const base = seeds.map((seed) => jobs.find((j) => j.partition === partition && j.seed === seed && j.rank === ranks[0]));
    const acc = runs.map((r) => r.accuracy.mean);
    const baseAcc = base.map((j) => load(j!).algorithms.dflmoe!.accuracy.mean);
    return {
      partition,
      rank,
      accMean: mean(acc),
      accStd: std(acc),
      perSeed: acc,
      minusHeadsOnly: mean(acc.map((a, i) => a - baseAcc[i])),
      worstSite: mean(runs.map((r) => r.accuracy.min)),
      ownHead: mean(runs.map((r) => mean(r.peers.map((p) => p.ownHeadAccuracy)))),
      bytesPerSiteRound: mean(runs.map((r) => r.bytesSent / (r.peers.length * ROUNDS))),
      secondsPerRound: mean(runs.map((r) => mean(r.rounds.map((x) => x.seconds)))),
      trainRoundSeconds: cost[rank],
      wallSeconds: mean(runs.map((r) => r.wallSeconds)),
      headBytes: headBytes(rank),
      headBytesF16: headBytes(rank, 'float16'),
    };
  }),
);
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const pc = (x: number) => (100 * x).toFixed(2);
const pts = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(2)}`;
const kib = (x: number) => `${(x / 1024).toFixed(1)} KiB`;
const label = (r: number) => (r === 0 ? 'heads only' : `LoRA rank ${r}`);
const lines = [
  `Machine: ${machine}. dFLMoE, frozen public body (mlp 784-128-64, linear head, full FST), Fashion-MNIST, 10 sites x 100 training images, 20 rounds x 1 epoch, Adam 3e-3, batch 32; seeds ${seeds.join(', ')}; adapters on both dense layers of the body. ${jobs.length} simulate runs, ${(jobs.reduce((n, j) => n + load(j).algorithms.dflmoe!.wallSeconds, 0) / 60).toFixed(1)} min of run time in all, 2 at a time.`,
  '',
  '| cell | dFLMoE | accuracy % | minus heads only (pts, paired) | worst site % | own head % | head message | head, float16 | bytes/site/round | training round of one site, 9 experts |',
  '|---|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| fashion-mnist ${r.partition} | ${label(r.rank)} | ${pc(r.accMean)} +- ${pc(r.accStd)} | ${r.rank === ranks[0] ? '-' : pts(r.minusHeadsOnly)} | ${pc(r.worstSite)} | ${pc(r.ownHead)} | ${r.headBytes} B | ${r.headBytesF16} B | ${kib(r.bytesPerSiteRound)} | ${(1000 * r.trainRoundSeconds).toFixed(0)} ms |`,
  ),
];
const md = lines.join('\n');
console.log(md);
writeFileSync(join(outDir, 'lora.json'), JSON.stringify({ machine, seeds, ranks, rows }, null, 2) + '\n');
const file = 'benchmarks/README.md';
const readme = readFileSync(file, 'utf8');
const [a, b] = ['<!-- lora:start -->', '<!-- lora:end -->'];
if (readme.includes(a) && readme.includes(b))
  writeFileSync(file, readme.slice(0, readme.indexOf(a) + a.length) + '\n' + md + '\n' + readme.slice(readme.indexOf(b)));
