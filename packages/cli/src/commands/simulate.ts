import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  ALGORITHMS,
  DEFAULT_SIMULATION,
  OPTIMIZERS,
  initBackend,
  simulate,
  type AlgorithmName,
  type RoundResult,
  type SimulationConfig,
  type SimulationResults,
} from '@dflmoe/core';
import {
  emptyResults,
  REGISTRY,
  isAlgorithmName,
  siteBodies,
  siteModality,
  oneClassification,
  simulationSettings,
  summarize,
  taskKind,
  TASK_KINDS,
  unknownAlgorithmMessage,
  type TaskKindName,
} from '@dflmoe/core/internal';
import { addSettingsOptions, givenSettings } from '../settings-options.js';
import { MODALITIES, SHIFT_KINDS, loadDatasetAsync, partition, type Modality } from '@dflmoe/data';
import { collectResults, consortiumRound, earlierRunSeconds, recordRunSeconds, runConsortium, writeConsortium } from '../consortium.js';
import { stopSignal } from './network.js';
import { writeJsonAtomic } from '@dflmoe/p2p/internal';
import { createProgress, type Progress } from '../progress.js';
import { writeRunReport } from '../report.js';
import { pooledAccuracies } from '../pooled.js';
import { formatBytes, int, num, pct, table } from '../format.js';
import { followSites, withLiveView, withUiOptions } from '../live.js';
import type { StatusBoard } from '@dflmoe/core';
import type { RoundLine } from '@dflmoe/p2p';

/** `--standardize`: federated (the site config's name) or local; `global`, its former name, still reads as federated. */
function standardizeOption(dflt: SimulationConfig['standardize']): Option {
  const how = ['federated', 'local'];
  return new Option(
    '--standardize <how>',
    "feature statistics: pooled over all training splits from per-site sums (as a site config's data.standardize), or per peer",
  )
    .choices(how)
    .default(dflt)
    .argParser((v) => {
      if (v === 'global') return 'federated';
      if (!how.includes(v)) throw new InvalidArgumentError(`Allowed choices are ${how.join(', ')}.`);
      return v;
    });
}
const list = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const sizes = (v: string) => (v === '' || v === 'none' ? [] : v.split('x').map(int('sizes')));

function algorithms(v: string): AlgorithmName[] {
  const names = list(v);
  for (const n of names) if (!isAlgorithmName(n)) throw new InvalidArgumentError(`${unknownAlgorithmMessage(n)}.`);
  return names as AlgorithmName[];
}

/** The results table printed at the end of a simulation. */
export function summaryTable(r: SimulationResults): string {
  const withPooled = Object.values(r.algorithms).some((a) => a?.pooledAccuracy);
  const withBodies = Object.values(r.algorithms).some((a) => a?.bodyBytesSent !== undefined);
  const plain = Object.values(r.algorithms).every((a) => !a || oneClassification(a.tasks));
  const head = plain
    ? ['mean acc', 'std', 'min', 'weighted', ...(withPooled ? ['pooled test'] : [])]
    : ['task', 'metric', 'mean', 'std', 'worst', 'others (mean)'];
  const rows = [['algorithm', ...head, 'bytes sent', ...(withBodies ? ['of which bodies'] : []), 'per site/round', 'seconds']];
  for (const [name, a] of Object.entries(r.algorithms)) {
    if (!a) continue;
    const label = name === 'dflmoe' && r.config.shareBody ? 'dflmoe (shared bodies)' : name;
    const tail = [
      formatBytes(a.bytesSent),
      ...(withBodies ? [a.bodyBytesSent !== undefined ? formatBytes(a.bodyBytesSent) : '-'] : []),
      formatBytes(a.bytesSent / (r.config.peers * r.config.rounds)),
      a.wallSeconds.toFixed(1),
    ];
    if (plain) {
      rows.push([
        label,
        pct(a.accuracy.mean),
        pct(a.accuracy.std),
        pct(a.accuracy.min),
        pct(a.accuracy.weightedMean),
        ...(withPooled ? [a.pooledAccuracy ? pct(a.pooledAccuracy.mean) : '-'] : []),
        ...tail,
      ]);
      continue;
    }
    // One row per task: its headline metric over the sites that learn it, then the others' means.
    Object.entries(a.tasks).forEach(([task, t], k) => {
      const kind = taskKind(t.kind);
      const h = kind.headline;
      const m = t.metrics[h.metric];
      const fmt = (metric: string, v: number) => (Number.isNaN(v) ? '-' : kind.shareMetrics.includes(metric) ? pct(v) : v.toPrecision(4));
      const others = kind.metricNames
        .filter((x) => x !== h.metric)
        .map((x) => `${x} ${fmt(x, t.metrics[x].mean)}`)
        .join(', ');
      rows.push([
        k === 0 ? label : '',
        task,
        h.metric,
        fmt(h.metric, m.mean),
        fmt(h.metric, m.std),
        fmt(h.metric, h.higherIsBetter ? m.min : m.max),
        others,
        ...(k === 0 ? tail : tail.map(() => '')),
      ]);
    });
  }
  const skipped = Object.entries(r.skipped ?? {})
    .map(([name, why]) => `\nskipped ${name}: ${why}`)
    .join('');
  return table(rows) + skipped;
}

/** A round's progress: the mean and worst accuracy, or each task's headline metric. */
export function roundProgress(r: RoundResult): string {
  if (oneClassification(r.tasks)) return `accuracy ${pct(r.accuracyMean)} (min ${pct(r.accuracyMin)})`;
  return Object.entries(r.tasks)
    .map(([name, t]) => `${name} ${t.metric} ${t.mean.toPrecision(4)} (worst ${t.worst.toPrecision(4)})`)
    .join(', ');
}

export function simulateCommand(): Command {
  const cmd = withUiOptions(
    simulateOptions(
      new Command('simulate')
        .description('Run algorithms side by side on one dataset and partition, with the same model, rounds, epochs and optimiser.')
        .addHelpText('after', `\nAlgorithms:\n${REGISTRY.map((a) => `  ${a.name.padEnd(10)} ${a.description}`).join('\n')}\n`),
    ),
    'every site of the run',
  );
  // Every algorithm's settings, from their schemas.
  addSettingsOptions(cmd);
  return cmd.action(
    withLiveView(async (o, board) => {
      const out = resolve(o.out);
      mkdirSync(out, { recursive: true });
      const cfg: SimulationConfig = {
        dataset: o.dataset,
        datasetOptions: {
          maxSamples: o.maxSamples,
          dataDir: o.dataDir,
          labelColumn: o.labelColumn,
          ...(o.labelKind ? { taskKind: o.labelKind as TaskKindName } : {}),
        },
        peers: o.peers,
        partition: o.partition,
        rounds: o.rounds,
        algorithms: o.algorithms,
        seed: o.seed,
        bodies: o.body,
        ...(o.modalities ? { siteModalities: o.modalities } : {}),
        featureDim: o.featureDim,
        headHidden: o.headHidden,
        epochs: o.epochs,
        batchSize: o.batchSize,
        learningRate: o.lr,
        optimizer: o.optimizer,
        testFraction: o.testFraction,
        minSize: o.minSize,
        standardize: o.standardize,
        sharedInit: o.sharedInit,
        freezeBody: o.freezeBody,
        ...(o.pretrainedBody !== undefined ? { pretrainedBody: resolve(o.pretrainedBody) } : {}),
        poisoned: o.poisoned,
        poisonKind: o.poisonKind,
        ...givenSettings(cmd),
        trainPerSite: o.trainPerSite,
        featureShift: o.featureShift,
        evaluateOn: o.evaluateOn,
        ...(o.siteTasks ? { siteTasks: o.siteTasks } : {}),
        ...(o.dpNoise !== undefined ? { dp: { noiseMultiplier: o.dpNoise, clipNorm: o.dpClip, microbatches: o.dpMicrobatches, delta: o.dpDelta } } : {}),
      };
      // One progress bar per algorithm (plain lines when stderr is not a terminal).
      const bars = new Map<string, Progress>();
      const onRound = o.quiet
        ? undefined
        : (alg: string, r: RoundResult, total: number) => {
            if (!bars.has(alg)) {
              for (const b of bars.values()) b.stop();
              bars.set(alg, createProgress(alg, total));
            }
            bars.get(alg)!.update(r.round, `${roundProgress(r)}  ${formatBytes(r.bytesSent)}  ${r.seconds.toFixed(2)} s/round`);
            if (r.round === total) bars.get(alg)!.stop();
          };
      const results =
        o.transport === 'tcp'
          ? await simulateOverTcp(
              tcpBodies(cfg, cmd.getOptionValueSource('body') === 'default'),
              out,
              { deadlineMs: o.deadline, fresh: Boolean(o.fresh), signal: stopSignal(), board },
              onRound,
            )
          : await simulate(modalityBodies(cfg, cmd.getOptionValueSource('body') === 'default'), { onRound, status: board });
      const file = join(out, 'results.json');
      writeJsonAtomic(file, results);
      process.stdout.write(`\n${results.dataset.name}, ${o.peers} sites, ${o.partition}, ${o.rounds} rounds, backend ${results.backend}\n`);
      process.stdout.write(summaryTable(results) + '\n');
      const report = await writeRunReport(out);
      process.stdout.write(`\nResults written to ${file}\nReport (open in a browser, works offline): ${report}\n`);
    }),
  );
}

/** The options of `simulate` (the algorithms' settings come from their schemas: `addSettingsOptions`). */
function simulateOptions(c: Command): Command {
  const d = DEFAULT_SIMULATION;
  return c
    .requiredOption(
      '--dataset <name>',
      'breast-cancer | diabetes (regression) | digits | fashion-mnist | synthetic | csv:<path> | images:<dir> (one sub-folder of PNG/JPEG files per class)',
    )
    .option('--peers <n>', 'number of sites', int('--peers'), d.peers)
    .option('--partition <spec>', 'iid | dirichlet:<alpha> | shards:<k>', d.partition)
    .option('--rounds <n>', 'communication rounds', int('--rounds'), d.rounds)
    .option('--algorithms <list>', `comma-separated: ${ALGORITHMS.join(',')}`, algorithms, d.algorithms)
    .option('--seed <n>', 'seed for partition, initial weights and batch order', (v) => Number(v), d.seed)
    .option('--body <list>', 'body per site, cycled: mlp[:h1xh2], cnn[:f1xf2] (e.g. mlp,cnn for heterogeneous sites)', list, d.bodies)
    .option('--feature-dim <n>', 'size of the feature vector the body produces', int('--feature-dim'), d.featureDim)
    .option('--head-hidden <sizes>', 'hidden layers of the head, e.g. 32 or 64x32; none for a linear head', sizes, d.headHidden)
    .option('--epochs <n>', 'local epochs per round (default: 1; 2 for dflmoe with --share-body)', int('--epochs'))
    .option('--batch-size <n>', 'batch size', int('--batch-size'), d.batchSize)
    .option('--lr <x>', 'learning rate', num('--lr', 1e-8, 10), d.learningRate)
    .addOption(
      new Option('--optimizer <kind>', 'local optimiser of every algorithm (momentum: SGD with momentum 0.9)').choices(OPTIMIZERS).default(d.optimizer),
    )
    .option('--test-fraction <x>', "share of each site's data held out for its test split", num('--test-fraction', 0.01, 0.99), d.testFraction)
    .option('--min-size <n>', 'minimum samples per site', int('--min-size'), d.minSize)
    .addOption(standardizeOption(d.standardize))
    .option('--no-shared-init', 'dflmoe/local: give every site its own random initial model')
    .option('--pretrained-body <dir>', 'every site starts from this body pretrained on public data (written by "dflmoe pretrain")')
    .option('--freeze-body', 'never train the body: only heads (and dFLMoE gates and transforms) learn', false)
    .option('--poisoned <n>', 'robustness: make the last n sites adversarial', (v) => Number(v), d.poisoned)
    .addOption(
      new Option(
        '--poison-kind <kind>',
        'what adversarial sites do: random heads (dflmoe) and bodies (where shared), flipped labels, sign-flipped bodies (where shared)',
      )
        .choices(['random', 'flipped', 'sign-flip'])
        .default(d.poisonKind),
    )
    .option('--dp-noise <x>', 'DP-SGD: noise multiplier (turns DP on)', num('--dp-noise', 0, 1000))
    .option('--dp-clip <x>', 'DP-SGD: clipping norm', num('--dp-clip', 1e-9, 1e6), 1)
    .option('--dp-microbatches <n>', 'DP-SGD: microbatches per batch (default: per-example)', int('--dp-microbatches'))
    .option('--dp-delta <x>', 'DP-SGD: delta for the reported epsilon', num('--dp-delta', 1e-20, 0.5), 1e-5)
    .option('--train-per-site <n>', "cut each site's training split to n samples (same label mix), keeping its test split", int('--train-per-site'))
    .option(
      '--feature-shift <kinds>',
      `every site sees its own transformation of the input: comma-separated ${SHIFT_KINDS.join(', ')} (rotate, contrast, noise: images; affine, noise: tables)`,
      list,
      d.featureShift,
    )
    .addOption(
      new Option('--evaluate-on <split>', "test: each site's test split; validation: 20% held out of its training split (for tuning)")
        .choices(['test', 'validation'])
        .default(d.evaluateOn),
    )
    .option(
      '--modalities <list>',
      `how each site holds the data, cycled: ${MODALITIES.join(', ')} (image datasets; e.g. image,table: images at even sites, tables of their pixels at odd ones; bodies default to cnn for images and mlp for tables)`,
      modalityList,
    )
    .option(
      '--site-tasks <plan>',
      "multi-task datasets (digits-tasks, fashion-mnist-tasks): each site's tasks, sites separated by ; and a site's tasks by commas, cycled over the sites (default: the dataset's own plan)",
      siteTaskPlan,
    )
    .option('--max-samples <n>', 'use a seeded random subset of the dataset', int('--max-samples'))
    .option('--data-dir <dir>', 'fashion-mnist: directory of the idx files')
    .option('--label-column <name>', 'csv: the label column', 'label')
    .addOption(new Option('--label-kind <kind>', 'csv: what the label column holds: classes, or a number to predict').choices([...TASK_KINDS]))
    .addOption(
      new Option('--transport <kind>', 'memory: one process; tcp: every site its own process over libp2p on 127.0.0.1')
        .choices(['memory', 'tcp'])
        .default('memory'),
    )
    .option('--deadline <ms>', 'tcp: round deadline in milliseconds', int('--deadline'), 60000)
    .option('--out <dir>', 'output directory for results.json', 'runs/simulate')
    .option('--fresh', "tcp: start over, removing an earlier run's sites in --out (without it, a rerun resumes them from their checkpoints)")
    .option('--quiet', 'print only the final table');
}

/** Run each algorithm as a real consortium: one process per site, libp2p over 127.0.0.1. */
async function simulateOverTcp(
  cfg: SimulationConfig,
  out: string,
  o: { deadlineMs: number; fresh: boolean; signal: AbortSignal; board?: StatusBoard },
  onRound?: (alg: string, r: RoundResult, total: number) => void,
): Promise<SimulationResults> {
  const { deadlineMs, fresh, signal } = o;
  const unsupported = [
    cfg.trainPerSite !== undefined && '--train-per-site',
    cfg.featureShift.length > 0 && '--feature-shift',
    cfg.evaluateOn !== 'test' && '--evaluate-on',
  ].filter(Boolean);
  if (unsupported.length)
    throw new Error(
      `${unsupported.join(', ')} ${unsupported.length > 1 ? 'are' : 'is'} not available with --transport tcp yet; run it in memory (the default).`,
    );
  // Image folders decode asynchronously; the sites' shares are written from this one copy.
  const ds = await loadDatasetAsync(cfg.dataset, { seed: cfg.seed, ...cfg.datasetOptions });
  const splits = partition(ds.labels, ds.classNames.length, cfg.peers, cfg.partition, { seed: cfg.seed, testFraction: cfg.testFraction, minSize: cfg.minSize });
  const backend = await initBackend();
  const results = emptyResults(cfg, backend.name, ds, splits);
  for (const alg of cfg.algorithms) {
    const t0 = performance.now();
    const dir = join(out, 'consortium', alg);
    if (fresh) rmSync(dir, { recursive: true, force: true });
    // A run in this directory that was stopped (or finished) goes on: each site resumes from its checkpoint with its key.
    const earlier = earlierRunSeconds(dir);
    const resuming = existsSync(join(dir, 'site-0', 'checkpoints'));
    const files = await writeConsortium({
      dir,
      algorithm: alg,
      sim: cfg,
      deadlineMs,
      datasetOptions: cfg.datasetOptions,
      shares: { dataset: ds, splits },
      ui: o.board !== undefined,
    });
    if (resuming) process.stderr.write(`${alg}: resuming the earlier run in ${dir} (--fresh starts over)\n`);
    const seconds = () => earlier + (performance.now() - t0) / 1000;
    // Progress per round, once every site has recorded it (in its metrics.jsonl).
    const seen = new Map<number, RoundLine[]>();
    const done: RoundResult[] = [];
    const onSiteRound = (_site: number, line: RoundLine) => {
      const lines = [...(seen.get(line.round) ?? []), line];
      seen.set(line.round, lines);
      if (lines.length < cfg.peers || line.round !== done.length + 1) return;
      for (let r = line.round; seen.get(r)?.length === cfg.peers; r++) {
        done.push(consortiumRound(alg, r, seen.get(r)!, done));
        onRound?.(alg, done.at(-1)!, cfg.rounds);
      }
    };
    // --ui: every site process serves its own status; this process shows them all.
    const remote =
      o.board &&
      followSites(
        o.board,
        files.sites.map((s) => s.uiPort!),
      );
    try {
      await runConsortium(files, cfg.rounds * deadlineMs * 3 + 120000, onRound ? onSiteRound : undefined, signal);
      await remote?.settled(3000);
      remote?.stop('done');
    } catch (e) {
      remote?.stop(signal.aborted ? 'interrupted' : 'failed', signal.aborted ? undefined : (e as Error).message);
      throw e;
    } finally {
      recordRunSeconds(dir, seconds());
    }
    const a = collectResults(alg, files, seconds(), cfg.bodies, simulationSettings(cfg, alg));
    // Pooled test accuracy where the in-memory simulator reports it (every site standardizes alike): each site's saved model on every site's test rows.
    // (Not with modalities: each site would need every test row in its own form.)
    // A site names its form where members hold the data in other forms; one form for all is the plan's.
    if (cfg.siteModalities) a.peers.forEach((p, i) => (p.modality ??= siteModality(cfg.siteModalities, i)));
    else if (!ds.tasks && (cfg.standardize === 'federated' || cfg.pretrainedBody !== undefined)) {
      const pooled = await pooledAccuracies(
        files.sites.map((s) => s.out),
        ds,
        splits,
      );
      pooled.forEach((p, i) => (a.peers[i].pooledAccuracy = p));
      a.pooledAccuracy = summarize(pooled);
    }
    results.algorithms[alg] = a;
  }
  return results;
}

/** With --modalities and no --body, each site's modality chooses its body (the simulator's default for a site of that form). */
function modalityBodies(cfg: SimulationConfig, defaultBody: boolean): Partial<SimulationConfig> & { dataset: string } {
  if (!cfg.siteModalities || !defaultBody) return cfg;
  const { bodies: _, ...rest } = cfg;
  return rest;
}

/** Over TCP, each site's config names its body: with --modalities and no --body, its modality's (as in memory). */
function tcpBodies(cfg: SimulationConfig, defaultBody: boolean): SimulationConfig {
  return cfg.siteModalities ? { ...cfg, bodies: siteBodies(cfg.peers, cfg.bodies, !defaultBody, cfg.siteModalities) } : cfg;
}

/** `--modalities image,table`: each site's form of the data, cycled. */
function modalityList(v: string): Modality[] {
  const ms = v.split(',').map((m) => m.trim());
  const bad = ms.find((m) => !(MODALITIES as readonly string[]).includes(m));
  if (bad !== undefined) throw new InvalidArgumentError(`"${bad}" is not a modality; choose from ${MODALITIES.join(', ')}`);
  return ms as Modality[];
}

/** `--site-tasks digit;parity,value`: each site's tasks (sites by ;, a site's tasks by commas). */
function siteTaskPlan(v: string): string[][] {
  const plan = v.split(';').map((site) =>
    site
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean),
  );
  if (plan.length === 0 || plan.some((ts) => ts.length === 0)) {
    throw new InvalidArgumentError(
      `--site-tasks "${v}": give each site at least one task, sites separated by ; and a site's tasks by commas (digit;parity,value)`,
    );
  }
  return plan;
}
