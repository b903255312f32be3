/**
 * A trained site, loaded from its directory (the `out` of `dflmoe peer`):
 * `site.json` (algorithm, model and peer ID), `preprocessing.json` (the
 * consortium's agreed schema and the standardizer the site trained with)
 * and the newest good checkpoint in `checkpoints/` (body, own head and, for
 * dFLMoE, the received heads it held, their transforms and the gate). The
 * site is rebuilt through the algorithm registry and restored by its own
 * checkpoint code, so it predicts exactly as it did at the end of training.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { classificationTask, taskKind, type TaskInfo } from './tasks/index.js';
import { readInputs, type AgreedSchema, type EncodedInputs, type InputSpec } from '@dflmoe/data';
import { readCsvTable } from '@dflmoe/data/internal';
import type { AlgorithmSite } from './algorithms/api.js';
import type { AlgorithmOptions } from './algorithms/registry.js';
import { getAlgorithm, type AlgorithmName } from './algorithms/registry.js';
import { initBackend } from './backend.js';
import { silentLogger, type Logger } from './log.js';
import { parseBodySpec, type BodySpec } from './model.js';
import { listCheckpoints } from './checkpoint.js';
import { loadBodyModel, resolveBody } from './custom-body.js';
import { SitePredictor, evaluatePredictions, type Evaluation, type Predictions, type SampleInput } from './predict.js';
import { disposePeerData, type PeerData, type TrainOptions } from './train.js';
import { isZipFile, unpackSiteArchive } from './site-archive.js';

export const SITE_FILE = 'site.json';
export const PREPROCESSING_FILE = 'preprocessing.json';
export const CHECKPOINT_DIR = 'checkpoints';

/** `site.json`: what it takes to rebuild the site's model. */
export interface SiteDescription {
  /** Version of this file's layout (1). */
  format: 1;
  /** The algorithm the site trained with. */
  algorithm: AlgorithmName;
  /** The site's own libp2p peer ID. */
  peerId: string;
  /** The site's name in the consortium, when its config gives one. */
  name?: string;
  /** Names of the members by peer ID (to name the experts). */
  names: Record<string, string>;
  /** How to rebuild the model: body architecture, feature width, head layers, input shape, classes, task, training options and initial seed. */
  model: {
    body: string;
    featureDim: number;
    headHidden: number[];
    sampleShape: number[];
    numClasses: number;
    /** What the site learned (older sites: one classification task over the agreed classes); a multi-task site: its first task. */
    task?: TaskInfo;
    /** A multi-task site: every task it learns. */
    tasks?: TaskInfo[];
    train: Partial<TrainOptions>;
    initSeed?: number;
  };
  /** The algorithm's options as the site ran it (settings, seed, limits). */
  algorithmOptions: AlgorithmOptions;
}

/** `preprocessing.json`: the agreement the site trained under. */
export interface SitePreprocessing {
  /** Version of this file's layout (1). */
  format: 1;
  /** The merged schema the site's rows were encoded with (columns, categories, classes, pooled statistics). */
  agreed: AgreedSchema;
  /** 'local'; | Whether features were standardized with the pooled statistics (`federated`) or the site's own (`local`). */
  standardize: 'federated' | 'local';
  /** What the site's features were standardized with (the pooled statistics, or its own). */
  standardizer: { mean: number[]; std: number[] };
  /** Set when the standardizer is a pretrained body's (its path), not the consortium's statistics. */
  standardizerFrom?: string;
  /** How new inputs are read (a CSV with the agreed columns, an image folder, numeric features). */
  input: InputSpec;
  /** Peer IDs whose statements were merged; left out and not heard from. */
  included: string[];
  /** Peer IDs left out of the agreement, with the reason. */
  excluded: { peer: string; reason: string }[];
  /** Peer IDs not heard from before the deadline. */
  missing: string[];
  /** The site joined after the others agreed and took their agreement. */
  adopted: boolean;
  /** Peer IDs of members that hold the data in another form (tables beside images): they agreed apart; their heads are experts here. */
  otherForms?: string[];
  /** What the agreement was made from (a resumed run checks that its key and data are the same): peer ID, `data.dataset`, digest of the site's statement. */
  from?: { peerId: string; dataset: string; digest: string };
  /** When the agreement was made (ISO 8601). */
  createdAt: string;
}

function readJson<T>(file: string, what: string): T {
  if (!existsSync(file)) throw new Error(`${file} is missing: ${what}`);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

/** Read a site directory's `site.json` and `preprocessing.json`, checking what loading relies on. */
export function readSiteFiles(dir: string): { site: SiteDescription; preprocessing: SitePreprocessing } {
  const root = resolve(dir);
  if (!existsSync(join(root, SITE_FILE))) {
    throw new Error(`${root} is not a trained site's directory (no ${SITE_FILE}): pass the "out" directory of a site that ran dflmoe peer`);
  }
  const site = readJson<SiteDescription>(join(root, SITE_FILE), 'the site description');
  const pre = readJson<SitePreprocessing>(join(root, PREPROCESSING_FILE), 'the preprocessing agreement (was the site trained with this version?)');
  const bad = (file: string, why: string) => new Error(`${join(root, file)} is not a dflmoe ${file === SITE_FILE ? 'site description' : 'preprocessing file'}: ${why}`);
  if (site?.format !== 1) throw bad(SITE_FILE, `format ${String(site?.format)} (this version reads 1)`);
  if (typeof site.peerId !== 'string' || typeof site.model?.body !== 'string' || !Array.isArray(site.model.sampleShape)) throw bad(SITE_FILE, 'fields missing');
  if (site.model.tasks && site.model.tasks.length > 1) {
    throw new Error(`${root} is a multi-task site (${site.model.tasks.map((t) => t.name).join(', ')}): predict and evaluate load sites of one task only for now (its checkpoints resume it)`);
  }
  if (pre?.format !== 1) throw bad(PREPROCESSING_FILE, `format ${String(pre?.format)} (this version reads 1)`);
  const d = site.model.sampleShape.reduce((a, b) => a * b, 1);
  if (!Array.isArray(pre.standardizer?.mean) || pre.standardizer.mean.length !== d || pre.standardizer.std?.length !== d) {
    throw bad(PREPROCESSING_FILE, `the standardizer does not have ${d} features`);
  }
  if (pre.agreed?.schema?.classNames?.length !== site.model.numClasses) {
    throw bad(PREPROCESSING_FILE, `the agreed classes do not match the model's ${site.model.numClasses} outputs`);
  }
  return { site, preprocessing: pre };
}

/** Zero-row tensors in place of training data: a site rebuilt for prediction holds none. */
function noData(sampleShape: number[], task: TaskInfo): PeerData {
  const dtype = taskKind(task).labelDtype;
  return {
    xTrain: tf.zeros([0, ...sampleShape]), yTrain: tf.zeros([0], dtype) as tf.Tensor1D,
    xTest: tf.zeros([0, ...sampleShape]), yTest: tf.zeros([0], dtype) as tf.Tensor1D,
    sampleShape, task, trainSamples: 0, testSamples: 0, trainHistogram: new Array(task.classNames.length).fill(0),
  };
}

/**
 * New inputs read by a trained site: encoded with the agreed schema and, for
 * tables, `flags`: per row, what the model could not see (a category no site
 * trained on, which encodes as all zeros; every feature missing, so the row
 * is the pooled means), empty for a row without any. Absent when no row has one.
 */
export interface SiteInputs extends EncodedInputs {
  /** Per row, what the model could not see (see above); an empty string for a row without any. */
  flags?: string[];
}

/** Per row of a table to predict: its unseen categories, or that every feature is missing (undefined when no row has either). */
export function inputFlags(path: string, agreed: AgreedSchema, invalidAsMissing?: boolean): string[] | undefined {
  const schema = agreed.schema;
  if (schema.kind !== 'table') return undefined;
  const kinds = Object.fromEntries(schema.columns.map((c) => [c.name, c.kind]));
  const table = readCsvTable(path, { labelColumn: schema.labelColumn, kinds, labelsOptional: true, invalidAsMissing });
  const byName = new Map(table.columns.map((c) => [c.name, c]));
  const flags = table.labels.map(() => [] as string[]);
  const present = table.labels.map(() => false);
  for (const col of schema.columns) {
    const raw = byName.get(col.name);
    if (!raw) continue;
    const known = col.kind === 'categorical' ? new Set(col.categories) : undefined;
    for (let i = 0; i < flags.length; i++) {
      const v = raw.values[i];
      if (v === null || (typeof v === 'number' && Number.isNaN(v))) continue;
      present[i] = true;
      if (known && !known.has(v as string)) flags[i].push(`unseen ${col.name}=${JSON.stringify(v)}`);
    }
  }
  const out = flags.map((f, i) => (present[i] ? f : ['every feature missing', ...f]).join('; '));
  return out.some(Boolean) ? out : undefined;
}

/** How `TrainedSite` reads a file of new inputs. */
export interface ReadOptions {
  /** Read a cell that is not a number in a numeric column as missing (and mark its row in `inputs.invalid`) instead of refusing the file. */
  invalidAsMissing?: boolean;
}

/**
 * A site trained by `dflmoe peer` (any algorithm), loaded from its out
 * directory by `loadSite`: it predicts exactly as the site did at the end of
 * training, from raw samples or from files read with the agreed schema.
 */
export interface TrainedSite {
  /** The site's out directory. */
  readonly dir: string;
  /** `site.json`: algorithm, peer ID, member names, model and algorithm options. */
  readonly description: SiteDescription;
  /** `preprocessing.json`: the agreed schema, the standardizer and how to read new inputs. */
  readonly preprocessing: SitePreprocessing;
  /** The round of the checkpoint loaded... */
  readonly round: number;
  /** ...and its path. */
  readonly checkpointPath: string;
  /** The algorithm the site trained with. */
  readonly algorithm: AlgorithmName;
  /** The class names, in the order of the model's outputs. */
  readonly classNames: string[];
  /** The shape of one sample. */
  readonly sampleShape: number[];
  /** A member's name (or its peer ID), e.g. to label the experts of `Predictions`. */
  nameOf(peer: string): string;
  /** Predictions for raw (not standardized) samples, the experts named as site.json names them (their peer IDs in `expertIds`). */
  predict(x: SampleInput): Predictions;
  /** Evaluation on raw samples and their class indices. */
  evaluate(x: SampleInput, labels: ArrayLike<number>): Evaluation;
  /**
   * Read a CSV file or an image folder as this site's inputs (encoded with the agreed schema, not standardized).
   * A cell that is not a number in a numeric column is an error, unless `invalidAsMissing` (then `inputs.invalid` marks its row).
   */
  readInputs(path: string, labels?: 'required' | 'optional', o?: ReadOptions): Promise<SiteInputs>;
  /** Predictions for the rows of a CSV file or the images of a folder (`inputs.flags` marks rows with unseen categories or no features). */
  predictFile(path: string, o?: ReadOptions): Promise<{ inputs: SiteInputs; predictions: Predictions }>;
  /** Evaluation on a labelled CSV file or image folder (one sub-folder per class). */
  evaluateFile(path: string, o?: ReadOptions): Promise<{ inputs: SiteInputs; predictions: Predictions; evaluation: Evaluation }>;
  /** Free the site's tensors. */
  dispose(): void;
}

/** The class behind `loadSite`; the workspace reaches the algorithm's site through `site`. */
export class SavedSite extends SitePredictor implements TrainedSite {
  constructor(
    site: AlgorithmSite,
    private readonly data: PeerData,
    readonly dir: string,
    readonly description: SiteDescription,
    readonly preprocessing: SitePreprocessing,
    /** The round of the checkpoint loaded, and its path. */
    readonly round: number,
    readonly checkpointPath: string,
  ) {
    super(
      site,
      { mean: Float32Array.from(preprocessing.standardizer.mean), std: Float32Array.from(preprocessing.standardizer.std) },
      description.model.sampleShape,
      preprocessing.agreed.schema.classNames,
      site.data.task,
    );
  }

  get algorithm(): AlgorithmName {
    return this.description.algorithm;
  }

  /** A member's name (or its peer ID), e.g. to label the experts of `Predictions`. */
  nameOf(peer: string): string {
    return this.description.names[peer] ?? peer;
  }

  /** Predictions whose experts are named as site.json names them (their peer IDs in `expertIds`). */
  override predict(x: SampleInput): Predictions {
    const p = super.predict(x);
    return { ...p, experts: p.experts.map((id) => this.nameOf(id)), expertIds: p.experts };
  }

  /**
   * Read a CSV file or an image folder as this site's inputs (encoded with the agreed schema, not standardized).
   * A cell that is not a number in a numeric column is an error, unless `invalidAsMissing` (then `inputs.invalid` marks its row);
   * `flags` marks rows with a category no site trained on, or with every feature missing.
   */
  async readInputs(path: string, labels: 'required' | 'optional' = 'optional', o: ReadOptions = {}): Promise<SiteInputs> {
    const inputs = await readInputs(path, this.preprocessing.agreed, this.preprocessing.input, { labels, invalidAsMissing: o.invalidAsMissing });
    const flags = this.preprocessing.input.kind === 'table' ? inputFlags(path, this.preprocessing.agreed, o.invalidAsMissing) : undefined;
    return flags ? { ...inputs, flags } : inputs;
  }

  /** Predictions for the rows of a CSV file or the images of a folder (`inputs.flags` marks rows with unseen categories or no features). */
  async predictFile(path: string, o: ReadOptions = {}): Promise<{ inputs: SiteInputs; predictions: Predictions }> {
    const inputs = await this.readInputs(path, 'optional', o);
    return { inputs, predictions: this.predict(inputs.features) };
  }

  /** Evaluation on a labelled CSV file or image folder (one sub-folder per class). */
  async evaluateFile(path: string, o: ReadOptions = {}): Promise<{ inputs: SiteInputs; predictions: Predictions; evaluation: Evaluation }> {
    const inputs = await this.readInputs(path, 'required', o);
    const predictions = this.predict(inputs.features);
    return { inputs, predictions, evaluation: evaluatePredictions(predictions, inputs.labels!) };
  }

  dispose(): void {
    this.site.dispose();
    disposePeerData(this.data);
  }
}

/** A custom body's topology from the newest readable checkpoint (else from where site.json says it came from). */
async function checkpointedBody(root: string, spec: BodySpec): Promise<BodySpec> {
  if (spec.kind !== 'custom') return spec;
  for (const round of listCheckpoints(join(root, CHECKPOINT_DIR)).reverse()) {
    try {
      return await loadBodyModel(join(root, CHECKPOINT_DIR, `round-${String(round).padStart(6, '0')}`, 'body'));
    } catch {
      // damaged: the restore below reports it; try the one before
    }
  }
  return resolveBody(spec);
}

/**
 * Load a trained site from its directory, or from the zip a browser tab's
 * site downloads (unpacked into a temporary directory, which becomes `dir`
 * and is removed when the process exits): rebuild its model and restore
 * the newest good checkpoint. Works for every algorithm. Throws an Error
 * saying what is missing when the directory is not a trained site's.
 */
export async function loadSite(dir: string, o: { logger?: Logger } = {}): Promise<TrainedSite> {
  if (!existsSync(dir)) throw new Error(`${dir}: no such site directory or zip`);
  const unpacked = isZipFile(dir) ? unpackSiteArchive(dir) : undefined;
  try {
    return await loadSiteDir(unpacked?.dir ?? resolve(dir), o);
  } catch (e) {
    unpacked?.remove();
    throw e;
  }
}

async function loadSiteDir(root: string, o: { logger?: Logger }): Promise<TrainedSite> {
  const { site: desc, preprocessing } = readSiteFiles(root);
  const log = o.logger ?? silentLogger;
  await initBackend({ logger: log });
  const alg = getAlgorithm(desc.algorithm);
  const schema = preprocessing.agreed.schema;
  const data = noData(desc.model.sampleShape, desc.model.task ?? classificationTask('labelColumn' in schema ? schema.labelColumn : 'label', schema.classNames));
  let site: AlgorithmSite | undefined;
  try {
    // A custom body (a saved tfjs model) is rebuilt from the newest checkpoint's body/model.json, whose weights are restored below.
    const body = await checkpointedBody(root, parseBodySpec(desc.model.body));
    site = alg.createSite({
      id: desc.peerId, data, body, featureDim: desc.model.featureDim, headHidden: desc.model.headHidden,
      train: desc.model.train, ...(desc.model.initSeed !== undefined ? { initSeed: desc.model.initSeed } : {}),
    }, desc.algorithmOptions);
    if (!site.checkpoint) throw new Error(`${alg.label} sites keep no checkpoints in this version`);
    const ckpt = join(root, CHECKPOINT_DIR);
    const r = await site.checkpoint.restore(ckpt, log);
    if (!r) throw new Error(`${root} has no usable checkpoint in ${ckpt}: the site has not finished a round yet`);
    return new SavedSite(site, data, root, desc, preprocessing, r.round, r.path);
  } catch (e) {
    site?.dispose();
    disposePeerData(data);
    throw e;
  }
}
