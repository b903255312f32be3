/**
 * The recorded comparison of every algorithm in three regimes, with equal
 * data, partition, model, rounds and epochs for all, and each algorithm's
 * local optimiser and learning rate from `npm run bench:tune` (read from
 * results/tuning.json; Adam 1e-3 for all when it is absent):
 *
 * - core: each dataset whole (Fashion-MNIST: a subset), three partitions;
 * - sweep: training samples per site from 25 up, iid and Dirichlet 0.5
 *   ("when does joining pay off"), with a fixed test split per site;
 * - shift: every site sees its own transformation of the input (rotation,
 *   contrast, noise), with and without label skew;
 * - pfllib (run on its own: `--regimes pfllib`): PFLlib's Fashion-MNIST cell
 *   (20 sites, Dirichlet 0.1, 75/25 split, its CNN, batch 10), scaled down;
 * - pretrained (run on its own: `--regimes pretrained`): every site starts
 *   from a body pretrained on public Fashion-MNIST rows that no site holds
 *   (`dflmoe pretrain --exclude-subset`), fine-tuned or frozen, beside the
 *   same cells from a random start.
 *
 * Every cell is a `dflmoe simulate` process per group of algorithms that
 * share optimiser settings, two at a time (one per core).
 *
 *   npm run bench                 # full matrix; updates benchmarks/README.md
 *   npm run bench -- --quick      # under a minute; writes benchmarks/results/quick/
 *   npm run bench -- --ablation   # dFLMoE variants on the ablation cells; updates benchmarks/README.md
 *   npm run bench -- --regimes sweep,shift --algorithms dflmoe,local
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ALGORITHMS, algorithmColors, getAlgorithm, type AlgorithmName, type OptimizerKind, type SimulationResults } from '@dflmoe/core/internal';
import { createProgress, renderPage, startProcess, waitExit, type Chart } from '@dflmoe/cli/internal';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    ablation: { type: 'boolean', default: false },
    jobs: { type: 'string', default: '2' },
    algorithms: { type: 'string', default: ALGORITHMS.join(',') },
    regimes: { type: 'string', default: 'core,sweep,shift' },
    seeds: { type: 'string' },
  },
});
const quick = values.quick!;
const ablation = values.ablation!;
interface Variant {
  name: string;
  args: string[];
}
/**
 * Columns that are a registered algorithm with flags: dFLMoE with shared bodies (the settings chosen on seed 3's
 * validation splits: no transforms, two epochs per round as FedRep's head and body epochs). They run, with
 * fedrep-p2p, in the low-data sweep cells (100 or fewer training samples per site) and Fashion-MNIST Dirichlet 0.1.
 */
const EXTRA: (Variant & { algorithm: AlgorithmName })[] = [
  { name: 'dflmoe+body', algorithm: 'dflmoe', args: ['--share-body', '--fst', 'none', '--epochs', '2'] },
];
const requested = values.algorithms!.split(',').map((a) => a.trim());
const extras = EXTRA.filter((v) => requested.includes(v.name) || values.algorithms === ALGORITHMS.join(','));
const algorithms = requested.filter((a) => !EXTRA.some((v) => v.name === a)).map((a) => getAlgorithm(a).name) as AlgorithmName[];
const regimes = values.regimes!.split(',').map((s) => s.trim());
const seeds = values.seeds ? values.seeds.split(',').map(Number) : quick ? [1] : [1, 2, 3];
const rounds = quick ? 3 : 20;
const epochs = 1;
// pfllib and pretrained run on their own, into their own directory and README section.
const alone = regimes.length === 1 && ['pfllib', 'pretrained'].includes(regimes[0]) ? regimes[0] : undefined;
const outDir = quick ? 'benchmarks/results/quick' : ablation ? 'benchmarks/results/ablation' : alone ? `benchmarks/results/${alone}` : 'benchmarks/results';
const runsDir = join(outDir, 'runs');
mkdirSync(runsDir, { recursive: true });

// ------------------------------------------------------------ settings per algorithm
type Setting = { optimizer: OptimizerKind; learningRate: number };
const tuningFile = 'benchmarks/results/tuning.json';
const tuned: Record<string, Setting> = existsSync(tuningFile) ? JSON.parse(readFileSync(tuningFile, 'utf8')).chosen : {};
// fedrep-p2p computes FedRep's models (a test checks it): FedRep's rate.
const settingOf = (a: AlgorithmName): Setting => tuned[a] ?? (a === 'fedrep-p2p' ? tuned.fedrep : undefined) ?? { optimizer: 'adam', learningRate: 1e-3 };
const settingKey = (s: Setting) => `${s.optimizer}-${s.learningRate}`;
// A frozen public body: only heads (and dFLMoE's gates and transforms) train, at the rates `bench:tune -- --frozen-body` chose.
const frozenTuningFile = 'benchmarks/results/tuning-frozen.json';
const frozenTuned: Record<string, Setting> = existsSync(frozenTuningFile) ? JSON.parse(readFileSync(frozenTuningFile, 'utf8')).chosen : {};
const frozenSettingOf = (a: AlgorithmName): Setting => frozenTuned[a] ?? settingOf(a);
const cellSetting = (c: CellSpec, a: AlgorithmName): Setting => c.setting ?? (c.body === 'frozen' ? frozenSettingOf(a) : settingOf(a));

// ------------------------------------------------------------ cells
interface CellSpec {
  regime: 'core' | 'sweep' | 'shift' | 'pfllib' | 'pretrained';
  /** Pretrained regime: start from the public body, fine-tuned or frozen (undefined: a random start). */
  body?: 'fine-tuned' | 'frozen';
  /** Rounds, when not the matrix's. */
  rounds?: number;
  /** Seeds, when not the matrix's (the heaviest cells run fewer). */
  seeds?: number[];
  /** One optimiser setting for every algorithm, instead of the tuned ones. */
  setting?: Setting;
  dataset: string;
  peers: number;
  partition: string;
  /** Training samples per site (sweep), or undefined: all the partition gives. */
  perSite?: number;
  shift?: string;
  /** Extra simulate flags (data subset, test fraction). */
  args: string[];
  algorithms: AlgorithmName[];
  /** Run the EXTRA columns here too. */
  extra?: boolean;
}

const FM = (n: number) => ['--max-samples', String(n)];
// Gossip averaging computes exactly FedAvg's models in synchronous in-memory rounds (a test asserts it): it
// runs in the core cells, where its bytes are shown, and is left out of the sweep and shift cells to save compute.
const noGossip = algorithms.filter((a) => a !== 'gossip' && a !== 'fedrep-p2p');
/** Cells with the shared-body columns: fedrep-p2p too. */
const withP2p = (algs: AlgorithmName[]) => [...algs, ...algorithms.filter((a) => a === 'fedrep-p2p')];
const everyButP2p = algorithms.filter((a) => a !== 'fedrep-p2p');
/**
 * Fewer seeds where a cell is heavy, to keep the matrix near an hour on two shared cores: Fashion-MNIST core cells with
 * label skew, 250 per site and the shifted cell run one seed; the other Fashion-MNIST sweep cells and the shifted digits two.
 */
const few = seeds.slice(0, 1);
const two = seeds.slice(0, 2);
function cellsFor(): CellSpec[] {
  if (quick) {
    return [
      { regime: 'core', dataset: 'breast-cancer', peers: 4, partition: 'iid', args: [], algorithms: everyButP2p },
      { regime: 'core', dataset: 'breast-cancer', peers: 4, partition: 'dirichlet:0.1', args: [], algorithms: everyButP2p },
      {
        regime: 'sweep',
        dataset: 'digits',
        peers: 10,
        partition: 'dirichlet:0.5',
        perSite: 50,
        args: ['--test-fraction', '0.5'],
        algorithms: withP2p(noGossip),
        extra: true,
      },
    ];
  }
  const out: CellSpec[] = [];
  const parts = ['iid', 'dirichlet:0.5', 'dirichlet:0.1'];
  if (regimes.includes('core')) {
    for (const partition of parts) {
      out.push({ regime: 'core', dataset: 'breast-cancer', peers: 4, partition, args: [], algorithms: everyButP2p });
      out.push({ regime: 'core', dataset: 'digits', peers: 10, partition, args: [], algorithms: everyButP2p });
      const d01 = partition === 'dirichlet:0.1';
      out.push({
        regime: 'core',
        dataset: 'fashion-mnist',
        peers: 10,
        partition,
        args: FM(5000),
        algorithms: d01 ? withP2p(everyButP2p) : everyButP2p,
        ...(partition === 'iid' ? {} : { seeds: few }),
        ...(d01 ? { extra: true } : {}),
      });
    }
  }
  for (const partition of ['iid', 'dirichlet:0.5']) {
    if (regimes.includes('sweep')) {
      // digits: 1797 images over 10 sites, half of each site's share held out for testing, so at most ~90 to train on.
      for (const n of [25, 50, 75])
        out.push({
          regime: 'sweep',
          dataset: 'digits',
          peers: 10,
          partition,
          perSite: n,
          args: ['--test-fraction', '0.5'],
          algorithms: withP2p(noGossip),
          extra: true,
        });
      for (const n of [25, 50, 100, 250]) {
        out.push({
          regime: 'sweep',
          dataset: 'fashion-mnist',
          peers: 10,
          partition,
          perSite: n,
          args: [...FM(12000), '--test-fraction', '0.25'],
          algorithms: n <= 100 ? withP2p(noGossip) : noGossip,
          seeds: n > 100 ? few : two,
          ...(n <= 100 ? { extra: true } : {}),
        });
      }
    }
    if (regimes.includes('shift')) {
      const shift = 'rotate,contrast,noise';
      out.push({ regime: 'shift', dataset: 'digits', peers: 10, partition, shift, args: [], algorithms: noGossip, seeds: two });
      out.push({
        regime: 'shift',
        dataset: 'fashion-mnist',
        peers: 10,
        partition,
        shift,
        perSite: 100,
        args: [...FM(12000), '--test-fraction', '0.25'],
        algorithms: noGossip,
        seeds: few,
      });
    }
  }
  if (regimes.includes('pfllib')) {
    // PFLlib: all 70,000 images, 2000 rounds, SGD 0.005, CNN 32-64 filters and 512 features. One round of that CNN on
    // 14,000 images took 133 s for dFLMoE here, so: 3,500 images (175 per site), 10 rounds, half the filters and a quarter
    // of the features (cnn:16x32:k5:valid, 128); every algorithm with Adam 1e-3 (the rates tuned for the MLP diverge on
    // this CNN at batch 10: FedAvg's SGD momentum 0.1 gave non-finite weights); partition, split, batch size and local
    // epochs as PFLlib's.
    out.push({
      regime: 'pfllib',
      dataset: 'fashion-mnist',
      peers: 20,
      partition: 'dirichlet:0.1',
      rounds: PFLLIB_ROUNDS,
      setting: { optimizer: 'adam', learningRate: 1e-3 },
      args: [...FM(PFLLIB_SAMPLES), '--test-fraction', '0.25', '--body', 'cnn:16x32:k5:valid', '--feature-dim', '128', '--batch-size', '10'],
      algorithms: algorithms.filter((a) => a !== 'gossip'),
    });
  }
  if (regimes.includes('pretrained')) {
    // Fashion-MNIST, 100 training images per site: the low-data cell where a public body matters most.
    for (const partition of ['iid', 'dirichlet:0.5']) {
      for (const body of [undefined, 'fine-tuned', 'frozen'] as const) {
        out.push({
          regime: 'pretrained',
          dataset: 'fashion-mnist',
          peers: 10,
          partition,
          perSite: 100,
          ...(body ? { body } : {}),
          args: [...FM(PRETRAIN_SUBSET), '--test-fraction', '0.25'],
          algorithms: noGossip,
        });
      }
    }
  }
  return out;
}
/** Pretrained regime: the sites' subset of Fashion-MNIST, and how many of the other rows the public body learns from. */
const PRETRAIN_SUBSET = 12000;
const PRETRAIN_ROWS = 10000;
const PRETRAIN_EPOCHS = 3;
const bodyDir = (seed: number) => join(outDir, 'bodies', `s${seed}`);
const PFLLIB_SAMPLES = 3500;
const PFLLIB_ROUNDS = 10;
/** PFLlib's published best-round accuracies for this cell (its README, Fashion-MNIST, Dir(0.1), 20 clients). */
const PFLLIB_PUBLISHED = 'FedAvg 85.85, FedPer 97.44, Ditto 97.47, FedRep 97.56, GPFL 97.81, FedCP 97.89';

/** dFLMoE variants of the ablation; each runs on every ablation cell beside local-only. */
const VARIANTS: Variant[] = [
  { name: 'dflmoe (default: full FST, alpha 0.2)', args: [] },
  { name: 'fst diag', args: ['--fst', 'diag'] },
  { name: 'fst none', args: ['--fst', 'none'] },
  { name: 'distill 1', args: ['--distill', '1'] },
  { name: 'alpha 0.5', args: ['--alpha', '0.5'] },
];
function ablationCells(): CellSpec[] {
  const a: AlgorithmName[] = ['dflmoe'];
  return [
    { regime: 'sweep', dataset: 'digits', peers: 10, partition: 'iid', perSite: 50, args: ['--test-fraction', '0.5'], algorithms: a },
    { regime: 'sweep', dataset: 'digits', peers: 10, partition: 'dirichlet:0.5', perSite: 50, args: ['--test-fraction', '0.5'], algorithms: a },
    { regime: 'sweep', dataset: 'fashion-mnist', peers: 10, partition: 'iid', perSite: 100, args: [...FM(12000), '--test-fraction', '0.25'], algorithms: a },
    {
      regime: 'sweep',
      dataset: 'fashion-mnist',
      peers: 10,
      partition: 'dirichlet:0.5',
      perSite: 100,
      args: [...FM(12000), '--test-fraction', '0.25'],
      algorithms: a,
    },
    { regime: 'core', dataset: 'breast-cancer', peers: 4, partition: 'dirichlet:0.5', args: [], algorithms: a },
    { regime: 'core', dataset: 'digits', peers: 10, partition: 'dirichlet:0.1', args: [], algorithms: a },
  ];
}

const cells = ablation ? ablationCells() : cellsFor();
const cellKey = (c: CellSpec) =>
  [c.regime, c.dataset, c.partition.replace(':', ''), c.perSite ? `n${c.perSite}` : '', c.shift ? 'shift' : '', c.body ?? ''].filter(Boolean).join('-');
const cellLabel = (c: CellSpec) =>
  `${c.dataset} ${c.partition}${c.perSite ? `, ${c.perSite}/site` : ''}${c.shift ? ', shifted' : ''}${c.regime === 'pretrained' ? `, ${c.body ? `public body ${c.body}` : 'random start'}` : ''}`;

// ------------------------------------------------------------ jobs
interface Job {
  cell: CellSpec;
  seed: number;
  algorithms: AlgorithmName[];
  setting?: Setting;
  variant?: Variant;
  dir: string;
}
const jobs: Job[] = [];
for (const cell of cells) {
  for (const seed of cell.seeds ?? seeds) {
    if (ablation) {
      const local = settingOf('local');
      jobs.push({ cell, seed, algorithms: ['local'], setting: local, dir: join(runsDir, `${cellKey(cell)}-s${seed}-local`) });
      VARIANTS.forEach((v, i) =>
        jobs.push({ cell, seed, algorithms: ['dflmoe'], setting: settingOf('dflmoe'), variant: v, dir: join(runsDir, `${cellKey(cell)}-s${seed}-v${i}`) }),
      );
      continue;
    }
    const setting = (a: AlgorithmName) => cellSetting(cell, a);
    const groups = new Map<string, AlgorithmName[]>();
    for (const a of cell.algorithms) groups.set(settingKey(setting(a)), [...(groups.get(settingKey(setting(a))) ?? []), a]);
    for (const [key, algs] of groups)
      jobs.push({ cell, seed, algorithms: algs, setting: setting(algs[0]), dir: join(runsDir, `${cellKey(cell)}-s${seed}-${key}`) });
    if (cell.extra)
      for (const v of extras)
        jobs.push({
          cell,
          seed,
          algorithms: [v.algorithm],
          setting: setting(v.algorithm),
          variant: v,
          dir: join(runsDir, `${cellKey(cell)}-s${seed}-${v.name.replace(/\W+/g, '_')}`),
        });
  }
}

const t0 = performance.now();
// The pretrained regime's public body, one per seed: the rows a seed's sites hold differ from seed to seed.
if (cells.some((c) => c.body)) {
  for (const seed of seeds) {
    if (existsSync(join(bodyDir(seed), 'model.json'))) continue;
    const args = [
      'pretrain',
      '--dataset',
      'fashion-mnist',
      '--exclude-subset',
      String(PRETRAIN_SUBSET),
      '--max-rows',
      String(PRETRAIN_ROWS),
      '--epochs',
      String(PRETRAIN_EPOCHS),
      '--seed',
      String(seed),
      '--out',
      bodyDir(seed),
    ];
    mkdirSync(bodyDir(seed), { recursive: true });
    const code = await waitExit(startProcess(args, join(bodyDir(seed), 'log.txt'), { DFLMOE_LOG_LEVEL: 'warn' }), 3600 * 1000);
    if (code !== 0) throw new Error(`pretraining for seed ${seed} failed (exit ${code}); see ${join(bodyDir(seed), 'log.txt')}`);
  }
}
const progress = createProgress(ablation ? 'ablation' : 'bench', jobs.length, 'run');
let done = 0;
/** Runs found finished from an earlier, interrupted matrix (their time is not in this run's wall time). */
let kept = 0;
const queue = [...jobs];
async function worker(): Promise<void> {
  for (let j = queue.shift(); j; j = queue.shift()) {
    const c = j.cell;
    // A run that finished before (an interrupted matrix started again) is kept, not repeated.
    if (existsSync(join(j.dir, 'results.json'))) {
      kept++;
      progress.update(++done, `${cellLabel(c)} seed ${j.seed}: kept from an earlier run`);
      continue;
    }
    const args = [
      'simulate',
      '--dataset',
      c.dataset,
      '--peers',
      String(c.peers),
      '--partition',
      c.partition,
      '--seed',
      String(j.seed),
      '--rounds',
      String(c.rounds ?? rounds),
      '--epochs',
      String(epochs),
      '--algorithms',
      j.algorithms.join(','),
      ...(j.setting ? ['--optimizer', j.setting.optimizer, '--lr', String(j.setting.learningRate)] : []),
      ...(c.perSite ? ['--train-per-site', String(c.perSite)] : []),
      ...(c.shift ? ['--feature-shift', c.shift] : []),
      ...(c.body ? ['--pretrained-body', bodyDir(j.seed), ...(c.body === 'frozen' ? ['--freeze-body'] : [])] : []),
      ...c.args,
      ...(j.variant?.args ?? []),
      '--quiet',
      '--out',
      j.dir,
    ];
    mkdirSync(j.dir, { recursive: true });
    const code = await waitExit(startProcess(args, join(j.dir, 'log.txt'), { DFLMOE_LOG_LEVEL: 'warn' }), 3 * 3600 * 1000);
    if (code !== 0) throw new Error(`run ${j.dir} failed (exit ${code}); see ${join(j.dir, 'log.txt')}`);
    done++;
    const el = (performance.now() - t0) / 1000;
    progress.update(
      done,
      `${cellLabel(c)} seed ${j.seed} ${j.variant?.name ?? j.algorithms.join(',')}  (${el.toFixed(0)} s so far, ~${((el / done) * (jobs.length - done)).toFixed(0)} s left)`,
    );
  }
}
await Promise.all(Array.from({ length: Number(values.jobs) }, worker));
progress.stop();
const wallSeconds = (performance.now() - t0) / 1000;

// ------------------------------------------------------------ aggregate
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const std = (xs: number[]) => Math.sqrt(mean(xs.map((x) => (x - mean(xs)) ** 2)));
const load = (j: Job) => JSON.parse(readFileSync(join(j.dir, 'results.json'), 'utf8')) as SimulationResults;
const backend = load(jobs[0]).backend;

interface Row {
  regime: string;
  cell: string;
  dataset: string;
  partition: string;
  perSite: number | null;
  shift: boolean;
  algorithm: string;
  accMean: number;
  accStd: number;
  worstPeer: number;
  bestRound: number;
  pooled: number | null;
  bytesPerPeerRound: number;
  seconds: number;
  trainPerSite: number;
  /** Seeds this row averages. */
  seeds: number;
}
const rows: Row[] = [];
const names = ablation ? ['local', ...VARIANTS.map((v) => v.name)] : [...algorithms, ...extras.map((v) => v.name)];
for (const cell of cells) {
  for (const name of names) {
    const rs = (cell.seeds ?? seeds).flatMap((seed) => {
      const j = jobs.find(
        (x) =>
          x.cell === cell &&
          x.seed === seed &&
          (ablation ? (x.variant?.name ?? 'local') === name : x.variant ? x.variant.name === name : x.algorithms.includes(name as AlgorithmName)),
      );
      if (!j) return [];
      return [load(j).algorithms[(ablation || j.variant ? j.algorithms[0] : name) as AlgorithmName]!];
    });
    if (rs.length === 0) continue;
    rows.push({
      regime: cell.regime,
      cell: cellLabel(cell),
      dataset: cell.dataset,
      partition: cell.partition,
      perSite: cell.perSite ?? null,
      shift: !!cell.shift,
      algorithm: name,
      accMean: mean(rs.map((r) => r.accuracy.mean)),
      accStd: std(rs.map((r) => r.accuracy.mean)),
      worstPeer: mean(rs.map((r) => r.accuracy.min)),
      bestRound: mean(rs.map((r) => Math.max(...r.rounds.map((x) => x.accuracyMean)))),
      pooled: rs.every((r) => r.pooledAccuracy) ? mean(rs.map((r) => r.pooledAccuracy!.mean)) : null,
      bytesPerPeerRound: mean(rs.map((r) => r.bytesSent / (cell.peers * (cell.rounds ?? rounds)))),
      seconds: mean(rs.map((r) => r.wallSeconds)),
      trainPerSite: mean(rs.map((r) => mean(r.peers.map((p) => p.trainSamples)))),
      seeds: rs.length,
    });
  }
}
const get = (cell: string, alg: string) => rows.find((r) => r.cell === cell && r.algorithm === alg);

// ------------------------------------------------------------ targets (issue #9)
const p = (x: number) => `${(100 * x).toFixed(2)}`;
const pts = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(2)}`;
const kib = (x: number) => (x === 0 ? '0' : x < 1024 ? `${x.toFixed(0)} B` : `${(x / 1024).toFixed(1)} KiB`);
function targetLines(): string[] {
  const out: string[] = [];
  const cellNames = [...new Set(rows.map((r) => r.cell))];
  const gap = (c: string, a: string, b: string) => (get(c, a) && get(c, b) ? get(c, a)!.accMean - get(c, b)!.accMean : undefined);
  const has = (a: string) => rows.some((r) => r.algorithm === a);
  if (!has('dflmoe') || !has('local')) return out;
  const low = rows.filter((r) => r.algorithm === 'dflmoe' && r.regime === 'sweep' && (r.perSite ?? Infinity) <= 100).map((r) => r.cell);
  if (low.length) {
    const g = low.map((c) => gap(c, 'dflmoe', 'local')!);
    out.push(
      `Low-data cells (100 or fewer training samples per site, ${low.length} cells): dFLMoE minus local-only ${pts(mean(g))} points on average (target +5.00); per cell ${g.map(pts).join(', ')}.`,
    );
    const skewLow = low.filter((c) => !c.includes(' iid'));
    if (has('fedavg')) {
      const above = skewLow.filter((c) => gap(c, 'dflmoe', 'fedavg')! > 0);
      out.push(`Label-skewed low-data cells where dFLMoE beats FedAvg: ${above.length} of ${skewLow.length} (target: all).`);
    }
  }
  // Shared bodies (#20): the EXTRA column against local-only and FedRep where it ran.
  const shared = rows.filter((r) => r.algorithm === 'dflmoe+body').map((r) => r.cell);
  const sharedLow = shared.filter((c) => low.includes(c));
  if (sharedLow.length) {
    const g = sharedLow.map((c) => gap(c, 'dflmoe+body', 'local')!);
    out.push(
      `Low-data cells, dFLMoE with shared bodies minus local-only: ${pts(mean(g))} points on average (target +5.00; lowest ${pts(Math.min(...g))}, target >= -0.50).`,
    );
    if (has('fedrep'))
      out.push(
        `Low-data cells, dFLMoE with shared bodies minus FedRep: ${pts(mean(sharedLow.map((c) => gap(c, 'dflmoe+body', 'fedrep')!)))} points on average (target >= -1.00).`,
      );
    if (has('fedrep-p2p'))
      out.push(`Low-data cells, fedrep-p2p minus FedRep: ${pts(mean(sharedLow.map((c) => gap(c, 'fedrep-p2p', 'fedrep') ?? 0)))} points on average.`);
  }
  const below = cellNames.filter((c) => (gap(c, 'dflmoe', 'local') ?? 0) < 0);
  out.push(
    `Cells where dFLMoE is below local-only: ${below.length} of ${cellNames.length}${below.length ? ` (${below.map((c) => `${c}: ${pts(gap(c, 'dflmoe', 'local')!)}`).join('; ')})` : ''} (target: none).`,
  );
  if (has('fedavg')) {
    const iid = cellNames.filter((c) => c.includes(' iid') && gap(c, 'fedavg', 'dflmoe') !== undefined);
    const far = iid.filter((c) => gap(c, 'fedavg', 'dflmoe')! > 0.02);
    out.push(
      `iid cells where FedAvg is more than 2 points ahead of dFLMoE: ${far.length} of ${iid.length} (target: none); FedAvg minus dFLMoE on iid cells: ${iid.map((c) => pts(gap(c, 'fedavg', 'dflmoe')!)).join(', ')}.`,
    );
  }
  const skew = cellNames.filter((c) => !c.includes(' iid'));
  for (const b of ['fedrep', 'gossip', 'fedavg-ft']) {
    const cs = skew.filter((c) => gap(c, 'dflmoe', b) !== undefined);
    if (cs.length)
      out.push(`Label-skewed cells, dFLMoE minus ${b}: ${pts(mean(cs.map((c) => gap(c, 'dflmoe', b)!)))} points on average over ${cs.length} cells.`);
  }
  if (has('fedavg')) {
    for (const d of [...new Set(rows.map((r) => r.dataset))]) {
      const core = rows.filter((r) => r.dataset === d && r.regime === 'core');
      const db = mean(core.filter((r) => r.algorithm === 'dflmoe').map((r) => r.bytesPerPeerRound));
      const fb = mean(core.filter((r) => r.algorithm === 'fedavg').map((r) => r.bytesPerPeerRound));
      if (db > 0 && fb > 0)
        out.push(`${d}: dFLMoE sends ${kib(db)} per site per round, FedAvg ${kib(fb)}: ratio 1/${(fb / db).toFixed(1)} (target at most 1/20).`);
    }
  }
  return out;
}

// ------------------------------------------------------------ tables, JSON, report
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, tfjs backend ${backend}`;
const tuning = [...new Set(names.filter((a) => (ALGORITHMS as readonly string[]).includes(a)))]
  .map((a) => `${a} ${settingOf(a as AlgorithmName).optimizer} ${settingOf(a as AlgorithmName).learningRate}`)
  .join(', ');
const settings = `${rounds} rounds x ${epochs} epoch, batch 32, MLP body (128) -> 64 features, linear head, dFLMoE alpha 0.2, fedavg-ft 1 fine-tuning epoch, fedrep and fedrep-p2p 1 head epoch (2 passes over the data per round; everyone else 1, but dflmoe+body: --share-body --fst none --epochs 2, 2 passes, at dFLMoE's rate); optimiser and learning rate per algorithm (${existsSync(tuningFile) ? 'from bench:tune' : 'bench:tune not run: defaults'}): ${tuning}; seeds ${seeds.join(', ')} (the heaviest Fashion-MNIST cells fewer: see the seeds column)`;
const frozenNote = cells.some((c) => c.body === 'frozen')
  ? ` Frozen public body: ${Object.keys(frozenTuned).length ? `rates from bench:tune -- --frozen-body: ${algorithms.map((a) => `${a} ${frozenSettingOf(a).optimizer} ${frozenSettingOf(a).learningRate}`).join(', ')}` : 'bench:tune -- --frozen-body not run: the rates above'}.`
  : '';
let md = `Machine: ${machine}. Settings: ${settings}.${frozenNote} Wall time ${(wallSeconds / 60).toFixed(1)} min (${jobs.length} simulate runs${kept ? `, ${kept} of them kept from an earlier run` : ''}, ${values.jobs} at a time).\n\n`;
md +=
  'Accuracy: mean personalized accuracy over sites (each site\'s model on its own test split) after the last round, mean +- std over seeds. "best round": the best round\'s mean (as PFLlib reports). "worst site": lowest site, mean over seeds. "pooled": each site\'s final model on the test splits of all sites together, mean over sites (what a site knows beyond its own distribution).\n';
const regimeTitle: Record<string, string> = {
  core: 'Core cells',
  sweep: 'Training samples per site (sweep)',
  shift: 'Feature shift: each site its own rotation, contrast and noise',
  pretrained: `A body pretrained on public data: Fashion-MNIST, 10 sites, 100 training images per site; every site starts from one body trained for ${PRETRAIN_EPOCHS} epochs on ${PRETRAIN_ROWS * 0.9} labelled images that no site holds (dflmoe pretrain --exclude-subset ${PRETRAIN_SUBSET}, one body per seed), then trains it further (fine-tuned) or never (frozen: heads, gates and transforms learn); inputs standardized with the body's statistics`,
  pfllib: `PFLlib's cell: Fashion-MNIST, 20 sites, Dirichlet 0.1, 75/25 split, batch 10, 1 local epoch. Scaled down from PFLlib's (70,000 images, 2000 rounds, CNN conv 32 5x5 - conv 64 5x5 - dense 512) to ${PFLLIB_SAMPLES} images (175 per site), ${PFLLIB_ROUNDS} rounds and CNN conv 16 5x5 - conv 32 5x5 - dense 128 (cnn:16x32:k5:valid), for this 2-core machine; every algorithm with Adam 1e-3 (the rates tuned on the MLP diverge on this CNN). PFLlib's published best-round figures: ${PFLLIB_PUBLISHED}`,
};
for (const regime of ['core', 'sweep', 'shift', 'pfllib', 'pretrained']) {
  const rs = rows.filter((r) => r.regime === regime);
  if (!rs.length) continue;
  md += `\n#### ${regimeTitle[regime]}\n\n| cell | algorithm | accuracy % | best round % | worst site % | pooled % | train/site | seeds | bytes/site/round | seconds |\n|---|---|---|---|---|---|---|---|---|---|\n`;
  for (const r of rs) {
    md += `| ${r.cell} | ${r.algorithm} | ${p(r.accMean)} +- ${p(r.accStd)} | ${p(r.bestRound)} | ${p(r.worstPeer)} | ${r.pooled === null ? '-' : p(r.pooled)} | ${r.trainPerSite.toFixed(0)} | ${r.seeds} | ${kib(r.bytesPerPeerRound)} | ${r.seconds.toFixed(1)} |\n`;
  }
}
const targets = ablation ? [] : targetLines();
if (targets.length) md += `\n#### Against the targets\n\n${targets.map((t) => `- ${t}`).join('\n')}\n`;
if (ablation) {
  const cellNames = [...new Set(rows.map((r) => r.cell))];
  md = `Machine: ${machine}. ${rounds} rounds, seeds ${seeds.join(', ')}, wall time ${(wallSeconds / 60).toFixed(1)} min. Mean personalized accuracy % (mean over seeds); the last column is the mean gain over local-only across the cells.\n\n`;
  md += `| variant | ${cellNames.join(' | ')} | mean gain over local |\n|---|${cellNames.map(() => '---|').join('')}---|\n`;
  for (const name of names) {
    const accs = cellNames.map((c) => get(c, name)!.accMean);
    const gains = cellNames.map((c) => get(c, name)!.accMean - get(c, 'local')!.accMean);
    md += `| ${name} | ${accs.map(p).join(' | ')} | ${name === 'local' ? '-' : pts(mean(gains))} |\n`;
  }
}
const jsonName = quick ? 'matrix-quick.json' : ablation ? 'ablation.json' : 'matrix.json';
writeFileSync(join(outDir, jsonName), JSON.stringify({ date: new Date().toISOString(), machine, settings, wallSeconds, rows, targets }, null, 2) + '\n');
writeFileSync(join(outDir, quick ? 'tables-quick.md' : 'tables.md'), md);
if (!quick && existsSync('benchmarks/README.md')) {
  const marker = ablation ? 'ablation' : (alone ?? 'matrix');
  const readme = readFileSync('benchmarks/README.md', 'utf8');
  const [a, b] = [`<!-- ${marker}:start -->`, `<!-- ${marker}:end -->`];
  if (readme.includes(a) && readme.includes(b)) {
    writeFileSync('benchmarks/README.md', readme.slice(0, readme.indexOf(a) + a.length) + '\n' + md + readme.slice(readme.indexOf(b)));
  }
}

const ALG = algorithmColors(names.filter((a) => (ALGORITHMS as readonly string[]).includes(a) || extras.some((v) => v.name === a)));
const charts: Chart[] = [];
const sweep = rows
  .filter((r) => r.regime === 'sweep' && !ablation)
  .map((r) => ({ dataset: r.dataset, partition: r.partition, samples: r.perSite, algorithm: r.algorithm, accuracy: r.accMean }));
if (sweep.length) {
  charts.push({
    id: 'sweep',
    title: 'When does joining pay off: accuracy against training samples per site',
    description: `Mean personalized accuracy (mean over seeds ${seeds.join(', ')}), 10 sites, ${rounds} rounds; the x axis is logarithmic. Each site keeps the same test split at every size.`,
    data: sweep,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      data: { values: sweep },
      facet: { row: { field: 'partition', type: 'nominal' }, column: { field: 'dataset', type: 'nominal' } },
      spec: {
        width: 260,
        height: 180,
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'samples', type: 'quantitative', scale: { type: 'log' }, title: 'training samples per site' },
          y: { field: 'accuracy', type: 'quantitative', axis: { format: '.0%' }, scale: { zero: false } },
          color: { field: 'algorithm', type: 'nominal', scale: ALG },
        },
      },
      resolve: { scale: { x: 'independent' } },
    } as unknown as Chart['spec'],
  });
}
for (const regime of ['core', 'shift', 'pfllib', 'pretrained']) {
  // The pretrained regime's cells differ by body too: label them whole.
  const data = rows
    .filter((r) => r.regime === regime && !ablation)
    .map((r) => ({
      cell: regime === 'pretrained' ? r.cell : `${r.dataset} ${r.partition}`,
      algorithm: r.algorithm,
      accuracy: r.accMean,
      lo: r.accMean - r.accStd,
      hi: r.accMean + r.accStd,
    }));
  if (!data.length) continue;
  charts.push({
    id: `accuracy-${regime}`,
    title: `${regimeTitle[regime]}: mean personalized accuracy`,
    description: 'Bars: mean over seeds; whiskers: +- one std.',
    data,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: { step: 14 },
      height: 220,
      data: { values: data },
      encoding: {
        x: { field: 'cell', type: 'nominal', title: null },
        xOffset: { field: 'algorithm', type: 'nominal' },
        color: { field: 'algorithm', type: 'nominal', scale: ALG },
      },
      layer: [
        { mark: 'bar', encoding: { y: { field: 'accuracy', type: 'quantitative', axis: { format: '.0%' }, scale: { domain: [0, 1] } } } },
        { mark: { type: 'rule', color: 'black' }, encoding: { y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
      ],
    } as Chart['spec'],
  });
}
const pooled = rows
  .filter((r) => r.pooled !== null && r.regime === 'core' && !ablation)
  .map((r) => ({ cell: `${r.dataset} ${r.partition}`, algorithm: r.algorithm, personalized: r.accMean, pooled: r.pooled }));
if (pooled.length) {
  charts.push({
    id: 'pooled',
    title: 'Beyond the own distribution: each site on the pooled test split of all sites',
    description: 'Core cells; mean over sites and seeds. Compare with the personalized accuracy above.',
    data: pooled,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: { step: 14 },
      height: 220,
      data: { values: pooled },
      mark: 'bar',
      encoding: {
        x: { field: 'cell', type: 'nominal', title: null },
        xOffset: { field: 'algorithm', type: 'nominal' },
        y: { field: 'pooled', type: 'quantitative', axis: { format: '.0%' }, scale: { domain: [0, 1] }, title: 'accuracy on the pooled test split' },
        color: { field: 'algorithm', type: 'nominal', scale: ALG },
      },
    } as Chart['spec'],
  });
}
const bytes = rows
  .filter((r) => r.bytesPerPeerRound > 0 && r.regime === 'core')
  .map((r) => ({ dataset: r.dataset, algorithm: r.algorithm, bytes: r.bytesPerPeerRound }));
if (bytes.length) {
  charts.push({
    id: 'bytes',
    title: 'Bytes per site per round',
    description: 'Core cells, mean over partitions and seeds (log scale); local-only sends nothing.',
    data: bytes,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: { step: 18 },
      height: 220,
      data: { values: bytes },
      mark: 'bar',
      encoding: {
        x: { field: 'dataset', type: 'nominal' },
        xOffset: { field: 'algorithm', type: 'nominal' },
        y: { aggregate: 'mean', field: 'bytes', type: 'quantitative', scale: { type: 'log' }, axis: { format: '~s' }, title: 'bytes' },
        color: { field: 'algorithm', type: 'nominal', scale: ALG },
      },
    } as Chart['spec'],
  });
}
const table = [['regime', 'cell', 'algorithm', 'accuracy', 'std', 'best round', 'worst site', 'pooled', 'bytes/site/round', 'seconds']].concat(
  rows.map((r) => [
    r.regime,
    r.cell,
    r.algorithm,
    p(r.accMean),
    p(r.accStd),
    p(r.bestRound),
    p(r.worstPeer),
    r.pooled === null ? '-' : p(r.pooled),
    kib(r.bytesPerPeerRound),
    r.seconds.toFixed(1),
  ]),
);
const title = `dflmoe benchmark${quick ? ' (quick)' : ablation ? ': dFLMoE ablation' : ''}`;
writeFileSync(
  join(outDir, 'report.html'),
  await renderPage({
    title,
    intro: `${machine}. ${settings}.${targets.length ? ' ' + targets.join(' ') : ''}`,
    tables: [{ caption: 'All cells', rows: table }],
    charts,
  }),
);
process.stdout.write(
  md +
    `\nwrote ${join(outDir, 'report.html')} and ${join(outDir, quick ? 'tables-quick.md' : 'tables.md')}; each run's own report is in ${runsDir}/*/report.html\n`,
);
