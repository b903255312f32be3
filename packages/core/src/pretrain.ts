/**
 * Pretrain a body on public labelled data (`dflmoe pretrain`), for every
 * site of a consortium to start from (see `pretrained.ts`).
 */
import { featureSize, pooledStandardizer, type Dataset } from '@dflmoe/data';
import { Rng } from '@dflmoe/data/internal';
import { LocalPeer } from './algorithms/local.js';
import { initBackend } from './backend.js';
import type { Logger } from './log.js';
import { resolveBody, type BodyInput } from './custom-body.js';
import { writeBody } from './pretrained.js';
import { disposePeerData, preparePeerData, type OptimizerKind } from './train.js';

/** What `pretrainBody` takes: the body, its feature size, the training settings and the held-out share. */
export interface PretrainOptions {
  /** Body spec, as in site configs (`mlp`, `mlp:256x128`, `cnn:16x32`, `tfjs:<dir>`), or a tfjs LayersModel or a function building one. */
  body: BodyInput;
  /** Width of the feature vector the body outputs (as the sites' `featureDim`). */
  featureDim: number;
  /** Passes over the training rows. */
  epochs: number;
  /** Rows per training batch. */
  batchSize: number;
  /** The optimiser's learning rate. */
  learningRate: number;
  /** The optimiser (`adam`, `sgd`, ...). */
  optimizer: OptimizerKind;
  /** Seed of initialisation, holdout and batch order. */
  seed: number;
  /** Share of the rows held out to report accuracy (default 0.1). */
  holdout?: number;
  /** Leave out these rows (for example every row a benchmark's sites hold). */
  exclude?: ArrayLike<number>;
  /** Use at most this many rows (after `exclude`). */
  maxRows?: number;
  /** Where the compute backend reports which one it picked (default: the library's logger). */
  logger?: Logger;
  /** Called after every epoch with the held-out accuracy. */
  onEpoch?: (epoch: number, loss: number, accuracy: number) => void;
}

/** What `pretrainBody` did: the rows it trained and held out, the held-out accuracy and where it wrote the body. */
export interface PretrainResult {
  /** Rows the body was trained on. */
  trainRows: number;
  /** Rows held out to report `accuracy`. */
  holdoutRows: number;
  /** Held-out accuracy after the last epoch (of the body with a linear head). */
  accuracy: number;
}

/** The rows a public set keeps: all but `exclude`, in a seeded order, at most `maxRows`. */
export function publicRows(numSamples: number, seed: number, exclude?: ArrayLike<number>, maxRows?: number): Int32Array {
  const out = new Set<number>(Array.from({ length: numSamples }, (_, i) => i));
  for (const r of Array.from(exclude ?? [])) out.delete(r);
  const rows = new Rng(seed).shuffle(Int32Array.from(out)) as Int32Array;
  return maxRows !== undefined ? rows.slice(0, maxRows) : rows;
}

/**
 * Train a body and a linear head on `ds` (picks the compute backend on first use) and write the body to `outDir`
 * (model.json + weights.bin). The head is thrown away: each site trains its
 * own.
 */
export async function pretrainBody(ds: Dataset, outDir: string, o: PretrainOptions): Promise<PretrainResult> {
  await initBackend({ logger: o.logger });
  const rows = publicRows(ds.numSamples, o.seed, o.exclude, o.maxRows);
  const nHold = Math.max(1, Math.round(rows.length * (o.holdout ?? 0.1)));
  if (rows.length - nHold < o.batchSize) throw new Error(`only ${rows.length} public rows: too few to pretrain a body (need more than ${nHold + o.batchSize})`);
  const split = { train: rows.slice(nHold), test: rows.slice(0, nHold) };
  const st = pooledStandardizer(ds.features, featureSize(ds), [split]);
  const body = await resolveBody(o.body);
  const data = preparePeerData(ds, split, st);
  const peer = new LocalPeer({
    id: 'pretrain',
    data,
    body,
    featureDim: o.featureDim,
    headHidden: [],
    train: { epochs: 1, batchSize: o.batchSize, learningRate: o.learningRate, optimizer: o.optimizer, seed: o.seed },
  });
  try {
    let acc = 0;
    for (let e = 1; e <= o.epochs; e++) {
      const loss = await peer.trainRound(e);
      acc = peer.evaluateOwn().accuracy;
      o.onEpoch?.(e, loss, acc);
    }
    await writeBody(outDir, peer.body, { ...st, ...(ds.featureNames ? { featureNames: ds.featureNames } : {}) });
    return { trainRows: split.train.length, holdoutRows: nHold, accuracy: acc };
  } finally {
    peer.dispose();
    disposePeerData(data);
  }
}
