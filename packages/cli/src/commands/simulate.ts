import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  ALGORITHMS, DEFAULT_SIMULATION, OPTIMIZERS, PRECISIONS, initBackend, simulate, type AlgorithmName, type RoundResult, type SimulationConfig, type SimulationResults,
} from '@dflmoe/core';
import {
  emptyResults, getAlgorithm, networkBytes, parseBodyCombiner, parseTopology, REGISTRY, isAlgorithmName, summarize, unknownAlgorithmMessage,
} from '@dflmoe/core/internal';
import { SHIFT_KINDS, loadDatasetAsync, partition } from '@dflmoe/data';
import { collectResults, earlierRunSeconds, recordRunSeconds, runConsortium, writeConsortium, type ConsortiumFiles } from '../consortium.js';
import { stopSignal } from './network.js';
import { readJsonLines, writeJsonAtomic, type RoundLine } from '@dflmoe/p2p/internal';
import { createProgress, type Progress } from '../progress.js';
import { writeRunReport } from '../report.js';
import { pooledAccuracies } from '../pooled.js';
import { formatBytes, int, num, pct, table } from '../format.js';
import { followSites, withLiveView, withUiOptions } from '../live.js';
import type { StatusBoard } from '@dflmoe/core';

/** `--max-experts`: a positive integer, or `0` or `all` for no limit. */
const maxExperts = (v: string) => (v === 'all' || v === '0' ? 0 : int('--max-experts')(v));
/** Parse with a core parser, turning its error into commander's. */
const parsed = (parse: (v: string) => unknown) => (v: string) => {
  try {
    parse(v);
  } catch (e) {
    throw new InvalidArgumentError(`${(e as Error).message}.`);
  }
  return v;
};
const combiner = parsed(parseBodyCombiner);
const topology = parsed(parseTopology);
/** `--standardize`: federated (the site config's name) or local; `global`, its former name, still reads as federated. */
function standardizeOption(dflt: SimulationConfig['standardize']): Option {
  const how = ['federated', 'local'];
  return new Option('--standardize <how>', "feature statistics: pooled over all training splits from per-site sums (as a site config's data.standardize), or per peer")
    .choices(how).default(dflt)
    .argParser((v) => {
      if (v === 'global') return 'federated';
      if (!how.includes(v)) throw new InvalidArgumentError(`Allowed choices are ${how.join(', ')}.`);
      return v;
    });
}
const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);
const sizes = (v: string) => (v === '' || v === 'none' ? [] : v.split('x').map(int('sizes')));

function algorithms(v: string): AlgorithmName[] {
  const names = list(v);
  for (const n of names) if (!isAlgorithmName(n)) throw new InvalidArgumentError(`${unknownAlgorithmMessage(n)}.`);
  return names as AlgorithmName[];
}

/** The results table printed at the end of a simulation. */
/** What a consortium's sites moved in round `r` as the table counts it, from their metrics.jsonl (each line holds the run's bytes so far); NaN before every site has one. */
function roundBytesSent(alg: AlgorithmName, files: ConsortiumFiles, r: number): number {
  const at = (round: number) => files.sites.map((s) => readJsonLines<RoundLine>(join(s.out, 'metrics.jsonl')).findLast((l) => l.round === round));
  const [now, before] = [at(r), at(r - 1)];
  if (now.some((l) => !l)) return NaN;
  const total = (lines: (RoundLine | undefined)[]) => networkBytes(getAlgorithm(alg), lines.map((l) => ({ bytesSent: l?.bytesOut ?? 0, bytesReceived: l?.bytesIn ?? 0 })));
  return total(now) - total(before);
}

export function summaryTable(r: SimulationResults): string {
  const withPooled = Object.values(r.algorithms).some((a) => a?.pooledAccuracy);
  const withBodies = Object.values(r.algorithms).some((a) => a?.bodyBytesSent !== undefined);
  const rows = [['algorithm', 'mean acc', 'std', 'min', 'weighted', ...(withPooled ? ['pooled test'] : []), 'bytes sent', ...(withBodies ? ['of which bodies'] : []), 'per peer/round', 'seconds']];
  for (const [name, a] of Object.entries(r.algorithms)) {
    if (!a) continue;
    rows.push([
      name === 'dflmoe' && r.config.shareBody ? 'dflmoe (shared bodies)' : name, pct(a.accuracy.mean), pct(a.accuracy.std), pct(a.accuracy.min), pct(a.accuracy.weightedMean),
      ...(withPooled ? [a.pooledAccuracy ? pct(a.pooledAccuracy.mean) : '-'] : []),
      formatBytes(a.bytesSent), ...(withBodies ? [a.bodyBytesSent !== undefined ? formatBytes(a.bodyBytesSent) : '-'] : []),
      formatBytes(a.bytesSent / (r.config.peers * r.config.rounds)), a.wallSeconds.toFixed(1),
    ]);
  }
  const skipped = Object.entries(r.skipped ?? {}).map(([name, why]) => `\nskipped ${name}: ${why}`).join('');
  return table(rows) + skipped;
}


export function simulateCommand(): Command {
  const d = DEFAULT_SIMULATION;
  return withUiOptions(new Command('simulate')
    .description('Run algorithms side by side on one dataset and partition, with the same model, rounds, epochs and optimiser.')
    .addHelpText('after', `\nAlgorithms:\n${REGISTRY.map((a) => `  ${a.name.padEnd(10)} ${a.description}`).join('\n')}\n`)
    .requiredOption('--dataset <name>', 'breast-cancer | digits | fashion-mnist | synthetic | csv:<path> | images:<dir> (one sub-folder of PNG/JPEG files per class)')
    .option('--peers <n>', 'number of sites', int('--peers'), d.peers)
    .option('--partition <spec>', 'iid | dirichlet:<alpha> | shards:<k>', d.partition)
    .option('--rounds <n>', 'communication rounds', int('--rounds'), d.rounds)
    .option('--algorithms <list>', `comma-separated: ${ALGORITHMS.join(',')}`, algorithms, d.algorithms)
    .option('--seed <n>', 'seed for partition, initial weights and batch order', (v) => Number(v), d.seed)
    .option('--body <list>', 'body per peer, cycled: mlp[:h1xh2], cnn[:f1xf2] (e.g. mlp,cnn for heterogeneous sites)', list, d.bodies)
    .option('--feature-dim <n>', 'size of the feature vector the body produces', int('--feature-dim'), d.featureDim)
    .option('--head-hidden <sizes>', 'hidden layers of the head, e.g. 32 or 64x32; none for a linear head', sizes, d.headHidden)
    .option('--epochs <n>', 'local epochs per round', int('--epochs'), d.epochs)
    .option('--batch-size <n>', 'batch size', int('--batch-size'), d.batchSize)
    .option('--lr <x>', 'learning rate', num('--lr', 1e-8, 10), d.learningRate)
    .addOption(new Option('--optimizer <kind>', 'local optimiser of every algorithm (momentum: SGD with momentum 0.9)').choices(OPTIMIZERS).default(d.optimizer))
    .option('--finetune-epochs <n>', 'fedavg-ft: epochs of fine-tuning the global model before evaluating', int('--finetune-epochs'), d.fineTuneEpochs)
    .option('--head-epochs <n>', 'fedrep: head-only epochs (body frozen) before the body epochs', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('--head-epochs must be a non-negative integer.');
      return n;
    }, d.headEpochs)
    .option('--alpha <x>', 'dFLMoE: weight of the own-head loss (rest goes to the MoE loss)', num('--alpha', 0, 1), d.alpha)
    .option('--gate-hidden <n>', 'dFLMoE: hidden units of the gate', int('--gate-hidden'), d.gateHidden)
    .option('--max-staleness <n>', 'dFLMoE and gossip: rounds a received head or model stays usable without an update', int('--max-staleness'), d.maxStaleness)
    .option('--test-fraction <x>', "share of each peer's data held out for its test split", num('--test-fraction', 0.01, 0.99), d.testFraction)
    .option('--min-size <n>', 'minimum samples per peer', int('--min-size'), d.minSize)
    .addOption(standardizeOption(d.standardize))
    .option('--no-shared-init', 'dflmoe/local: give every site its own random initial model')
    .option('--pretrained-body <dir>', 'every site starts from this body pretrained on public data (written by "dflmoe pretrain")')
    .option('--freeze-body', 'never train the body: only heads (and dFLMoE gates and transforms) learn', false)
    .option('--expert-lr-scale <x>', "dflmoe: learning rate of received experts' gate slots and FSTs, relative to --lr", num('--expert-lr-scale', 0, 1000), d.expertLrScale)
    .option('--poisoned <n>', 'robustness: make the last n sites adversarial', (v) => Number(v), d.poisoned)
    .addOption(new Option('--poison-kind <kind>', 'what adversarial sites do: random heads (dflmoe) and bodies (where shared), flipped labels, sign-flipped bodies (where shared)').choices(['random', 'flipped', 'sign-flip']).default(d.poisonKind))
    .addOption(new Option('--fst <form>', "dflmoe: each received expert's feature-space transform: full (dim x dim), diag (scale and shift per feature), none").choices(['full', 'diag', 'none']).default(d.fst))
    .option('--distill <x>', 'dflmoe: weight of distilling the mixture into the own head (0: off)', num('--distill', 0, 100), d.distill)
    .option('--max-experts <k>', 'dflmoe: mix at most k received experts, chosen each round from announcements, local scores and gate weights, with some exploration (0 or all: no limit)', maxExperts, d.maxExperts)
    .addOption(new Option('--head-precision <p>', 'dflmoe: precision of published heads: float32, float16 (half the bytes), int8 (a quarter, a scale per tensor)').choices([...PRECISIONS]).default(d.headPrecision))
    .option('--share-body', 'dflmoe: also share bodies, combined peer to peer before each round (heads stay experts; off: heads only)', false)
    .option('--body-every <n>', 'dflmoe --share-body and fedrep-p2p: exchange bodies every n rounds', int('--body-every'), d.bodyEvery)
    .option('--body-combiner <how>', 'dflmoe --share-body and fedrep-p2p: mean (weighted by rows), median or trimmed:<fraction> (coordinate-wise)', combiner, d.bodyCombiner)
    .option('--gossip-peers <k>', 'dflmoe --share-body and fedrep-p2p: combine with k members drawn afresh each round (same as --topology random:k)', int('--gossip-peers'))
    .option('--topology <t>', 'dflmoe --share-body and fedrep-p2p: whose bodies a site combines: full, ring, random:<k>', topology, d.topology)
    .option('--admission <x>', "dflmoe: refuse received heads scoring below x times the own head's accuracy on local data", num('--admission', 0, 10))
    .option('--dp-noise <x>', 'DP-SGD: noise multiplier (turns DP on)', num('--dp-noise', 0, 1000))
    .option('--dp-clip <x>', 'DP-SGD: clipping norm', num('--dp-clip', 1e-9, 1e6), 1)
    .option('--dp-microbatches <n>', 'DP-SGD: microbatches per batch (default: per-example)', int('--dp-microbatches'))
    .option('--dp-delta <x>', 'DP-SGD: delta for the reported epsilon', num('--dp-delta', 1e-20, 0.5), 1e-5)
    .option('--train-per-site <n>', "cut each site's training split to n samples (same label mix), keeping its test split", int('--train-per-site'))
    .option('--feature-shift <kinds>', `every site sees its own transformation of the input: comma-separated ${SHIFT_KINDS.join(', ')} (rotate, contrast, noise: images; affine, noise: tables)`, list, d.featureShift)
    .addOption(new Option('--evaluate-on <split>', "test: each site's test split; validation: 20% held out of its training split (for tuning)").choices(['test', 'validation']).default(d.evaluateOn))
    .option('--max-samples <n>', 'use a seeded random subset of the dataset', int('--max-samples'))
    .option('--data-dir <dir>', 'fashion-mnist: directory of the idx files')
    .option('--label-column <name>', 'csv: the label column', 'label')
    .addOption(new Option('--transport <kind>', 'memory: one process; tcp: every site its own process over libp2p on 127.0.0.1').choices(['memory', 'tcp']).default('memory'))
    .option('--deadline <ms>', 'tcp: round deadline in milliseconds', int('--deadline'), 60000)
    .option('--out <dir>', 'output directory for results.json', 'runs/simulate')
    .option('--fresh', "tcp: start over, removing an earlier run's sites in --out (without it, a rerun resumes them from their checkpoints)")
    .option('--quiet', 'print only the final table'), 'every site of the run')
    .action(withLiveView(async (o, board) => {
      const out = resolve(o.out);
      mkdirSync(out, { recursive: true });
      const cfg: SimulationConfig = {
        dataset: o.dataset,
        datasetOptions: { maxSamples: o.maxSamples, dataDir: o.dataDir, labelColumn: o.labelColumn },
        peers: o.peers, partition: o.partition, rounds: o.rounds, algorithms: o.algorithms, seed: o.seed,
        bodies: o.body, featureDim: o.featureDim, headHidden: o.headHidden, epochs: o.epochs, batchSize: o.batchSize,
        learningRate: o.lr, optimizer: o.optimizer, fineTuneEpochs: o.finetuneEpochs, headEpochs: o.headEpochs, alpha: o.alpha, gateHidden: o.gateHidden, maxStaleness: o.maxStaleness,
        testFraction: o.testFraction, minSize: o.minSize, standardize: o.standardize,
        sharedInit: o.sharedInit, expertLrScale: o.expertLrScale, freezeBody: o.freezeBody,
        ...(o.pretrainedBody !== undefined ? { pretrainedBody: resolve(o.pretrainedBody) } : {}),
        poisoned: o.poisoned, poisonKind: o.poisonKind, admission: o.admission, fst: o.fst, distill: o.distill, headPrecision: o.headPrecision, maxExperts: o.maxExperts,
        shareBody: o.shareBody, bodyEvery: o.bodyEvery, bodyCombiner: o.bodyCombiner, topology: o.gossipPeers !== undefined ? `random:${o.gossipPeers}` : o.topology,
        trainPerSite: o.trainPerSite, featureShift: o.featureShift, evaluateOn: o.evaluateOn,
        ...(o.dpNoise !== undefined ? { dp: { noiseMultiplier: o.dpNoise, clipNorm: o.dpClip, microbatches: o.dpMicrobatches, delta: o.dpDelta } } : {}),
      };
      // One progress bar per algorithm (plain lines when stderr is not a terminal).
      const bars = new Map<string, Progress>();
      const onRound = o.quiet ? undefined : (alg: string, r: RoundResult, total: number) => {
        if (!bars.has(alg)) {
          for (const b of bars.values()) b.stop();
          bars.set(alg, createProgress(alg, total));
        }
        bars.get(alg)!.update(r.round, `accuracy ${pct(r.accuracyMean)} (min ${pct(r.accuracyMin)})  ${formatBytes(r.bytesSent)}  ${r.seconds.toFixed(2)} s/round`);
        if (r.round === total) bars.get(alg)!.stop();
      };
      const results = o.transport === 'tcp'
        ? await simulateOverTcp(cfg, out, { deadlineMs: o.deadline, fresh: Boolean(o.fresh), signal: stopSignal(), board }, onRound)
        : await simulate(cfg, { onRound, status: board });
      const file = join(out, 'results.json');
      writeJsonAtomic(file, results);
      process.stdout.write(`\n${results.dataset.name}, ${o.peers} peers, ${o.partition}, ${o.rounds} rounds, backend ${results.backend}\n`);
      process.stdout.write(summaryTable(results) + '\n');
      const report = await writeRunReport(out);
      process.stdout.write(`\nResults written to ${file}\nReport (open in a browser, works offline): ${report}\n`);
    }));
}

/** Run each algorithm as a real consortium: one process per site, libp2p over 127.0.0.1. */
async function simulateOverTcp(
  cfg: SimulationConfig, out: string, o: { deadlineMs: number; fresh: boolean; signal: AbortSignal; board?: StatusBoard }, onRound?: (alg: string, r: RoundResult, total: number) => void,
): Promise<SimulationResults> {
  const { deadlineMs, fresh, signal } = o;
  const unsupported = [
    cfg.trainPerSite !== undefined && '--train-per-site', cfg.featureShift.length > 0 && '--feature-shift', cfg.evaluateOn !== 'test' && '--evaluate-on',
  ].filter(Boolean);
  if (unsupported.length) throw new Error(`${unsupported.join(', ')} ${unsupported.length > 1 ? 'are' : 'is'} not available with --transport tcp yet; run it in memory (the default).`);
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
    const files = await writeConsortium({ dir, algorithm: alg, sim: cfg, deadlineMs, datasetOptions: cfg.datasetOptions, shares: { dataset: ds, splits }, ui: o.board !== undefined });
    if (resuming) process.stderr.write(`${alg}: resuming the earlier run in ${dir} (--fresh starts over)\n`);
    const seconds = () => earlier + (performance.now() - t0) / 1000;
    // Progress per round, once every site has finished it.
    const seen = new Map<number, { accs: number[]; seconds: number[] }>();
    const onLine = (_site: string, line: string) => {
      const m = /^round (\d+)\/\d+\s+accuracy ([\d.]+)%.*\s([\d.]+) s$/.exec(line);
      if (!m) return;
      const r = Number(m[1]);
      const e = seen.get(r) ?? { accs: [], seconds: [] };
      e.accs.push(Number(m[2]) / 100);
      e.seconds.push(Number(m[3]));
      seen.set(r, e);
      if (e.accs.length === cfg.peers) {
        const s = summarize(e.accs);
        onRound?.(alg, { round: r, accuracyMean: s.mean, accuracyStd: s.std, accuracyMin: s.min, peerAccuracy: e.accs, loss: NaN, bytesSent: roundBytesSent(alg, files, r), seconds: Math.max(...e.seconds) }, cfg.rounds);
      }
    };
    // --ui: every site process serves its own status; this process shows them all.
    const remote = o.board && followSites(o.board, files.sites.map((s) => s.uiPort!));
    try {
      await runConsortium(files, cfg.rounds * deadlineMs * 3 + 120000, onRound ? onLine : undefined, signal);
      await remote?.settled(3000);
      remote?.stop('done');
    } catch (e) {
      remote?.stop(signal.aborted ? 'interrupted' : 'failed', signal.aborted ? undefined : (e as Error).message);
      throw e;
    } finally {
      recordRunSeconds(dir, seconds());
    }
    const a = collectResults(alg, files, seconds(), cfg.bodies);
    // Pooled test accuracy where the in-memory simulator reports it (every site standardizes alike): each site's saved model on every site's test rows.
    if (cfg.standardize === 'federated' || cfg.pretrainedBody !== undefined) {
      const pooled = await pooledAccuracies(files.sites.map((s) => s.out), ds, splits);
      pooled.forEach((p, i) => (a.peers[i].pooledAccuracy = p));
      a.pooledAccuracy = summarize(pooled);
    }
    results.algorithms[alg] = a;
  }
  return results;
}
