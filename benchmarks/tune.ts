/**
 * Local optimiser and learning rate per algorithm, chosen by a small grid on
 * a validation split (20% held out of each site's training split; test
 * splits are never read). The matrix (`npm run bench`) runs every algorithm
 * with the setting chosen here, read from results/tuning.json.
 *
 *   npm run bench:tune                  # the grid below, one seed
 *   npm run bench:tune -- --frozen-body # the pretrained regime's frozen public body: a grid reaching higher rates
 *
 * With `--frozen-body` only heads (and dFLMoE's gates and transforms) train,
 * on a body pretrained on public Fashion-MNIST rows (as `bench --regimes
 * pretrained` makes it): a linear head from a random start wants higher
 * rates than a whole model, so the grid moves up; the choice goes to
 * results/tuning-frozen.json, which the pretrained regime's frozen cells use.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ALGORITHMS, getAlgorithm, simulate, silentLogger, type AlgorithmName, type OptimizerKind, type SimulationConfig } from '@dflmoe/core/internal';
import { createProgress } from '@dflmoe/cli/internal';

const { values } = parseArgs({
  options: { algorithms: { type: 'string', default: ALGORITHMS.filter((a) => a !== 'gossip').join(',') }, 'frozen-body': { type: 'boolean', default: false } },
});
const frozen = values['frozen-body']!;
const algorithms = values.algorithms!.split(',').map((a) => getAlgorithm(a.trim()).name) as AlgorithmName[];

/** The grid: Adam at three rates, SGD with momentum 0.9 at three rates. */
export const GRID: { optimizer: OptimizerKind; learningRate: number }[] = frozen
  ? [
      { optimizer: 'adam', learningRate: 3e-3 },
      { optimizer: 'adam', learningRate: 1e-2 },
      { optimizer: 'adam', learningRate: 3e-2 },
      { optimizer: 'momentum', learningRate: 0.1 },
      { optimizer: 'momentum', learningRate: 0.3 },
      { optimizer: 'momentum', learningRate: 1 },
    ]
  : [
      { optimizer: 'adam', learningRate: 3e-4 },
      { optimizer: 'adam', learningRate: 1e-3 },
      { optimizer: 'adam', learningRate: 3e-3 },
      { optimizer: 'momentum', learningRate: 0.01 },
      { optimizer: 'momentum', learningRate: 0.03 },
      { optimizer: 'momentum', learningRate: 0.1 },
    ];
/** The frozen public body of seed 1 (written by `bench --regimes pretrained`). */
const FROZEN_BODY = 'benchmarks/results/pretrained/bodies/s1';
if (frozen && !existsSync(FROZEN_BODY))
  throw new Error(`${FROZEN_BODY} is missing: run "npm run bench -- --regimes pretrained" first (it pretrains the public bodies)`);
const FM100 = { dataset: 'fashion-mnist', datasetOptions: { maxSamples: 12000 }, peers: 10, trainPerSite: 100, testFraction: 0.25 };
/** Two low-data cells of the matrix, one iid and one label-skewed, so the choice fits both regimes. */
const CELLS: (Partial<SimulationConfig> & { dataset: string; label: string })[] = frozen
  ? [
      { label: 'fashion-mnist, 10 sites, 100 per site, iid, frozen public body', ...FM100, partition: 'iid', pretrainedBody: FROZEN_BODY, freezeBody: true },
      {
        label: 'fashion-mnist, 10 sites, 100 per site, dirichlet:0.5, frozen public body',
        ...FM100,
        partition: 'dirichlet:0.5',
        pretrainedBody: FROZEN_BODY,
        freezeBody: true,
      },
    ]
  : [
      { label: 'digits, 10 sites, 50 per site, iid', dataset: 'digits', peers: 10, partition: 'iid', trainPerSite: 50, testFraction: 0.5 },
      { label: 'fashion-mnist, 10 sites, 100 per site, dirichlet:0.5', ...FM100, partition: 'dirichlet:0.5' },
    ];
const ROUNDS = 20;

const runs: { algorithm: AlgorithmName; optimizer: OptimizerKind; learningRate: number; cell: string; accuracy: number }[] = [];
const progress = createProgress('tune', GRID.length * CELLS.length, 'run');
let done = 0;
for (const cell of CELLS) {
  for (const g of GRID) {
    const { label, ...cfg } = cell;
    // One simulate per algorithm, so that a rate at which one diverges (TrainingDiverged) scores 0 for it alone.
    for (const a of algorithms) {
      const accuracy = await simulate({ ...cfg, ...g, rounds: ROUNDS, seed: 1, algorithms: [a], evaluateOn: 'validation' }, { logger: silentLogger }).then(
        (r) => (Number.isFinite(r.algorithms[a]!.accuracy.mean) ? r.algorithms[a]!.accuracy.mean : 0),
        (e: Error) => {
          if (e.name !== 'TrainingDiverged') throw e;
          return 0;
        },
      );
      runs.push({ algorithm: a, ...g, cell: label, accuracy });
    }
    progress.update(++done, `${label}: ${g.optimizer} ${g.learningRate}`);
  }
}
progress.stop();

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const chosen: Record<string, { optimizer: OptimizerKind; learningRate: number; validationAccuracy: number }> = {};
let md = `| algorithm | ${GRID.map((g) => `${g.optimizer} ${g.learningRate}`).join(' | ')} | chosen |\n|---|${GRID.map(() => '---|').join('')}---|\n`;
for (const a of algorithms) {
  const scores = GRID.map((g) =>
    mean(runs.filter((r) => r.algorithm === a && r.optimizer === g.optimizer && r.learningRate === g.learningRate).map((r) => r.accuracy)),
  );
  const best = scores.indexOf(Math.max(...scores));
  chosen[a] = { ...GRID[best], validationAccuracy: scores[best] };
  md += `| ${a} | ${scores.map((s) => (100 * s).toFixed(1)).join(' | ')} | ${GRID[best].optimizer} ${GRID[best].learningRate} |\n`;
}
// Gossip averaging computes FedAvg's models when every model arrives (synchronous in-memory rounds): same choice.
if (chosen.fedavg && !chosen.gossip) chosen.gossip = chosen.fedavg;
mkdirSync('benchmarks/results', { recursive: true });
const name = frozen ? 'tuning-frozen' : 'tuning';
writeFileSync(
  `benchmarks/results/${name}.json`,
  JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, cells: CELLS.map((c) => c.label), grid: GRID, runs, chosen }, null, 2) + '\n',
);
writeFileSync(`benchmarks/results/${name}.md`, md);
process.stdout.write(
  `Mean validation accuracy (%) over: ${CELLS.map((c) => c.label).join('; ')}; ${ROUNDS} rounds, seed 1\n\n${md}\nwrote benchmarks/results/${name}.json\n`,
);
