/**
 * A trained site, loaded from its directory (the `out` of `dflmoe peer`):
 * `site.json` (algorithm, model and peer ID), `preprocessing.json` (the
 * consortium's agreed schema and the standardizer the site trained with)
 * and the newest good checkpoint in `checkpoints/` (body, own head and, for
 * dFLMoE, the received heads it held, their transforms and the gate). The
 * site is rebuilt through the algorithm registry and restored by its own
 * checkpoint code, so it predicts exactly as it did at the end of training.
 * A multi-task site (`site.json`'s `model.tasks`: each task's kind, classes
 * or target scale, and label column) is rebuilt as one body with a head per
 * task, restored from its checkpoint's `task-<i>/` parts, and predicts and
 * evaluates per task.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { TASK_KINDS, classificationTask, taskKind, type TaskInfo } from './tasks/index.js';
import { readInputs, type AgreedSchema, type EncodedInputs, type InputSpec, type InputTask } from '@dflmoe/data';
import { readCsvTable } from '@dflmoe/data/internal';
import type { AlgorithmSite } from './algorithms/api.js';
import type { AlgorithmOptions } from './algorithms/registry.js';
import { getAlgorithm, type AlgorithmName } from './algorithms/registry.js';
import { initBackend } from './backend.js';
import { silentLogger, type Logger } from './log.js';
import { parseBodySpec, type BodySpec } from './model.js';
import { listCheckpoints } from './checkpoint.js';
import { loadBodyModel, resolveBody } from './custom-body.js';
import { createMultiTaskSite } from './algorithms/multi-task.js';
import {
  SitePredictor,
  evaluateLabelled,
  evaluatePredictions,
  type Evaluation,
  type Predictions,
  type SampleInput,
  type TaskEvaluations,
  type TaskPredictions,
} from './predict.js';
import { disposePeerData, siteTasksData, type PeerData, type TrainOptions } from './train.js';
import { isZipFile, unpackSiteArchive } from './site-archive.js';

export const SITE_FILE = 'site.json';
export const PREPROCESSING_FILE = 'preprocessing.json';
export const CHECKPOINT_DIR = 'checkpoints';

/** One task of a multi-task site as `site.json` records it: the task (kind, classes or target scale) and the column its labels are read from. */
export interface SiteTaskInfo extends TaskInfo {
  /** A table: the label column of the task (sites written before it was recorded: the task's name). */
  column?: string;
}

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
    /** A multi-task site (several tasks, or one task under a multi-task agreement): every task it learns. */
    tasks?: SiteTaskInfo[];
    train: Partial<TrainOptions>;
    initSeed?: number;
    /** The body never trained (`model.freezeBody`); written only when true. */
    freezeBody?: boolean;
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
  const bad = (file: string, why: string) =>
    new Error(`${join(root, file)} is not a dflmoe ${file === SITE_FILE ? 'site description' : 'preprocessing file'}: ${why}`);
  if (site?.format !== 1) throw bad(SITE_FILE, `format ${String(site?.format)} (this version reads 1)`);
  if (typeof site.peerId !== 'string' || typeof site.model?.body !== 'string' || !Array.isArray(site.model.sampleShape)) throw bad(SITE_FILE, 'fields missing');
  if (pre?.format !== 1) throw bad(PREPROCESSING_FILE, `format ${String(pre?.format)} (this version reads 1)`);
  const d = site.model.sampleShape.reduce((a, b) => a * b, 1);
  if (!Array.isArray(pre.standardizer?.mean) || pre.standardizer.mean.length !== d || pre.standardizer.std?.length !== d) {
    throw bad(PREPROCESSING_FILE, `the standardizer does not have ${d} features`);
  }
  if (site.model.tasks !== undefined) checkSiteTasks(site.model.tasks, pre, bad);
  else if (pre.agreed?.schema?.classNames?.length !== site.model.numClasses) {
    throw bad(PREPROCESSING_FILE, `the agreed classes do not match the model's ${site.model.numClasses} outputs`);
  }
  return { site, preprocessing: pre };
}

/**
 * A multi-task site's tasks in `site.json`: each named once, of a known
 * kind, with its classes (or a finite target scale), and agreed in
 * `preprocessing.json` under that name, kind and classes.
 */
function checkSiteTasks(tasks: unknown, pre: SitePreprocessing, bad: (file: string, why: string) => Error): void {
  if (!Array.isArray(tasks) || tasks.length === 0) throw bad(SITE_FILE, 'model.tasks is not a list of tasks');
  const seen = new Set<string>();
  for (const [i, t] of (tasks as Partial<SiteTaskInfo>[]).entries()) {
    const what = `model.tasks[${i}]`;
    if (typeof t?.name !== 'string' || seen.has(t.name)) throw bad(SITE_FILE, `${what} has no name, or the name of another task`);
    seen.add(t.name);
    if (!(TASK_KINDS as readonly unknown[]).includes(t.kind))
      throw bad(SITE_FILE, `${what} ("${t.name}") is of kind ${JSON.stringify(t.kind)}; this version knows ${TASK_KINDS.join(', ')}`);
    if (!Array.isArray(t.classNames) || t.classNames.some((c) => typeof c !== 'string') || (t.column !== undefined && typeof t.column !== 'string')) {
      throw bad(SITE_FILE, `${what} ("${t.name}") has no list of classes, or a column that is not a name`);
    }
    if (t.scale !== undefined && !(Number.isFinite(t.scale?.mean) && Number.isFinite(t.scale?.std) && t.scale.std > 0)) {
      throw bad(SITE_FILE, `${what} ("${t.name}"): its target scale is not a finite mean and a positive standard deviation`);
    }
    const a = pre.agreed?.tasks?.find((x) => x.name === t.name);
    if (!a || a.kind !== t.kind || !Array.isArray(a.classNames) || a.classNames.join('\u0000') !== t.classNames.join('\u0000')) {
      throw bad(PREPROCESSING_FILE, `the agreement has no ${t.kind} task "${t.name}" with the model's ${t.classNames.length} classes`);
    }
  }
}

/** Zero-row tensors in place of training data: a site rebuilt for prediction holds none. */
function noData(sampleShape: number[], task: TaskInfo): PeerData {
  const dtype = taskKind(task).labelDtype;
  return {
    xTrain: tf.zeros([0, ...sampleShape]),
    yTrain: tf.zeros([0], dtype) as tf.Tensor1D,
    xTest: tf.zeros([0, ...sampleShape]),
    yTest: tf.zeros([0], dtype) as tf.Tensor1D,
    sampleShape,
    task,
    trainSamples: 0,
    testSamples: 0,
    trainHistogram: new Array(task.classNames.length).fill(0),
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

/** Per row of a table to predict: its unseen categories, or that every feature is missing (undefined when no row has either); `taskColumns`: a multi-task site's label columns. */
export function inputFlags(path: string, agreed: AgreedSchema, invalidAsMissing?: boolean, taskColumns?: string[]): string[] | undefined {
  const schema = agreed.schema;
  if (schema.kind !== 'table') return undefined;
  const kinds = Object.fromEntries(schema.columns.map((c) => [c.name, c.kind]));
  const table = readCsvTable(path, { labelColumn: schema.labelColumn, ...(taskColumns ? { taskColumns } : {}), kinds, labelsOptional: true, invalidAsMissing });
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
  /** `predictFile`, `evaluateFile`: the task to answer for (a multi-task site needs it; a one-task site: its task, or none). */
  task?: string;
}

/**
 * A site trained by `dflmoe peer` (any algorithm), loaded from its out
 * directory by `loadSite`: it predicts exactly as the site did at the end of
 * training, from raw samples or from files read with the agreed schema.
 * A multi-task site answers per task: `predictTasks`, `evaluateTasks` and
 * their file forms give every task's predictions and metrics by task name,
 * and the one-task forms (`predict`, `evaluate`, `predictFile`,
 * `evaluateFile`) answer for the task they are given.
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
  /** The class names, in the order of the model's outputs (a multi-task site: its first task's; each task's are in `tasks`). */
  readonly classNames: string[];
  /** What the site predicts: its one task, or a multi-task site's tasks in round order (the order of their names), each with its kind and classes or target scale. */
  readonly tasks: TaskInfo[];
  /** The shape of one sample. */
  readonly sampleShape: number[];
  /** A member's name (or its peer ID), e.g. to label the experts of `Predictions`. */
  nameOf(peer: string): string;
  /**
   * Predictions for raw (not standardized) samples, the experts named as site.json names them (their peer IDs in `expertIds`):
   * of the site's one task, or of the task named `task` (a multi-task site needs it).
   */
  predict(x: SampleInput, task?: string): Predictions;
  /** Predictions of every task for raw samples, by task name (a one-task site: its one task). */
  predictTasks(x: SampleInput): TaskPredictions;
  /** Evaluation on raw samples and their class indices (a regression: targets in their units), of the one task or of the task named `task`. */
  evaluate(x: SampleInput, labels: ArrayLike<number>, task?: string): Evaluation;
  /**
   * Evaluation of each task labels are given for (by task name: class
   * indices with -1 where a row lacks the label, or targets with NaN), each
   * over its labelled rows (`skipped` counts the others).
   */
  evaluateTasks(x: SampleInput, labels: Readonly<Record<string, ArrayLike<number>>>): TaskEvaluations;
  /**
   * Read a CSV file or an image folder as this site's inputs (encoded with the agreed schema, not standardized).
   * A cell that is not a number in a numeric column is an error, unless `invalidAsMissing` (then `inputs.invalid` marks its row).
   * A multi-task site reads each task's labels from its column into `inputs.taskLabels`.
   */
  readInputs(path: string, labels?: 'required' | 'optional', o?: ReadOptions): Promise<SiteInputs>;
  /** Predictions for the rows of a CSV file or the images of a folder (`inputs.flags` marks rows with unseen categories or no features); `o.task` picks a multi-task site's task. */
  predictFile(path: string, o?: ReadOptions): Promise<{ inputs: SiteInputs; predictions: Predictions }>;
  /** Evaluation on a labelled CSV file or image folder (one sub-folder per class); `o.task` picks a multi-task site's task. */
  evaluateFile(path: string, o?: ReadOptions): Promise<{ inputs: SiteInputs; predictions: Predictions; evaluation: Evaluation }>;
  /** Predictions of every task for the rows of a CSV file (or the images of a folder), by task name. */
  predictTasksFile(path: string, o?: ReadOptions): Promise<{ inputs: SiteInputs; predictions: TaskPredictions }>;
  /**
   * Every task's predictions, and the evaluation of each task whose label
   * column the file has, over the rows that carry its label (a row without
   * one is skipped for that task only, as training masks it).
   */
  evaluateTasksFile(path: string, o?: ReadOptions): Promise<{ inputs: SiteInputs; predictions: TaskPredictions; evaluations: TaskEvaluations }>;
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
      description.model.tasks ? site.data.task.classNames : preprocessing.agreed.schema.classNames,
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

  /** `p` with its experts named as site.json names them (their peer IDs in `expertIds`). */
  private named(p: Predictions): Predictions {
    return { ...p, experts: p.experts.map((id) => this.nameOf(id)), expertIds: p.experts };
  }

  /** Predictions whose experts are named as site.json names them (their peer IDs in `expertIds`); `task` picks a multi-task site's task. */
  override predict(x: SampleInput, task?: string): Predictions {
    return this.named(super.predict(x, task));
  }

  /** Predictions of every task, by task name, the experts named as site.json names them. */
  override predictTasks(x: SampleInput): TaskPredictions {
    return Object.fromEntries(Object.entries(super.predictTasks(x)).map(([t, p]) => [t, this.named(p)]));
  }

  /** A multi-task site's tasks as `readInputs` reads their labels: each from its column (a one-task table site: the column it read labels from). */
  private inputTasks(): InputTask[] | undefined {
    const ts = this.description.model.tasks;
    if (!ts) return undefined;
    const input = this.preprocessing.input;
    return ts.map((t) => ({
      name: t.name,
      kind: t.kind,
      classNames: t.classNames,
      column: t.column ?? (ts.length === 1 && input.kind === 'table' ? input.labelColumn : t.name),
    }));
  }

  /**
   * Read a CSV file or an image folder as this site's inputs (encoded with the agreed schema, not standardized).
   * A cell that is not a number in a numeric column is an error, unless `invalidAsMissing` (then `inputs.invalid` marks its row);
   * `flags` marks rows with a category no site trained on, or with every feature missing; a multi-task site's labels are in `taskLabels`.
   */
  async readInputs(path: string, labels: 'required' | 'optional' = 'optional', o: ReadOptions = {}): Promise<SiteInputs> {
    const tasks = this.inputTasks();
    const inputs = await readInputs(path, this.preprocessing.agreed, this.preprocessing.input, {
      labels,
      invalidAsMissing: o.invalidAsMissing,
      ...(tasks ? { tasks } : {}),
    });
    const flags =
      this.preprocessing.input.kind === 'table'
        ? inputFlags(
            path,
            this.preprocessing.agreed,
            o.invalidAsMissing,
            tasks?.map((t) => t.column),
          )
        : undefined;
    return flags ? { ...inputs, flags } : inputs;
  }

  /** Each task's labels read from a file, by task name (a one-task site of the first format: its `labels`). */
  private fileLabels(inputs: SiteInputs): Record<string, Int32Array | Float32Array> {
    if (inputs.taskLabels) return inputs.taskLabels;
    return inputs.labels ? { [this.tasks[0].name]: inputs.labels } : {};
  }

  /** Predictions for the rows of a CSV file or the images of a folder (`inputs.flags` marks rows with unseen categories or no features). */
  async predictFile(path: string, o: ReadOptions = {}): Promise<{ inputs: SiteInputs; predictions: Predictions }> {
    const inputs = await this.readInputs(path, 'optional', o);
    return { inputs, predictions: this.predict(inputs.features, o.task) };
  }

  /** Evaluation on a labelled CSV file or image folder (one sub-folder per class); a multi-task site's task over the rows that carry its label. */
  async evaluateFile(path: string, o: ReadOptions = {}): Promise<{ inputs: SiteInputs; predictions: Predictions; evaluation: Evaluation }> {
    this.part(o.task);
    const inputs = await this.readInputs(path, 'required', o);
    const predictions = this.predict(inputs.features, o.task);
    if (!inputs.taskLabels) return { inputs, predictions, evaluation: evaluatePredictions(predictions, inputs.labels!) };
    const labels = inputs.taskLabels[predictions.task.name];
    if (!labels)
      throw new Error(
        `${path} has no label column "${this.inputTasks()!.find((t) => t.name === predictions.task.name)!.column}" of task "${predictions.task.name}"`,
      );
    return { inputs, predictions, evaluation: evaluateLabelled(predictions, labels) };
  }

  /** Predictions of every task for the rows of a CSV file (or the images of a folder), by task name. */
  async predictTasksFile(path: string, o: ReadOptions = {}): Promise<{ inputs: SiteInputs; predictions: TaskPredictions }> {
    const inputs = await this.readInputs(path, 'optional', o);
    return { inputs, predictions: this.predictTasks(inputs.features) };
  }

  /** Every task's predictions, and each labelled task's evaluation over the rows that carry its label. */
  async evaluateTasksFile(path: string, o: ReadOptions = {}): Promise<{ inputs: SiteInputs; predictions: TaskPredictions; evaluations: TaskEvaluations }> {
    const inputs = await this.readInputs(path, 'required', o);
    const predictions = this.predictTasks(inputs.features);
    const labels = this.fileLabels(inputs);
    const evaluations = Object.fromEntries(
      this.tasks.filter((t) => labels[t.name]).map((t) => [t.name, evaluateLabelled(predictions[t.name], labels[t.name])]),
    );
    return { inputs, predictions, evaluations };
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
  // A multi-task site: each task's (empty) data, for a body with a head per task, as dflmoe peer built it.
  const tasks = desc.model.tasks?.map(({ column: _column, ...t }) => noData(desc.model.sampleShape, t));
  const multi = tasks && { tasks, trainSamples: 0, testSamples: 0 };
  const data = multi
    ? siteTasksData(multi)
    : noData(desc.model.sampleShape, desc.model.task ?? classificationTask('labelColumn' in schema ? schema.labelColumn : 'label', schema.classNames));
  let site: AlgorithmSite | undefined;
  try {
    // A custom body (a saved tfjs model) is rebuilt from the newest checkpoint's body/model.json, whose weights are restored below.
    const body = await checkpointedBody(root, parseBodySpec(desc.model.body));
    const base = {
      id: desc.peerId,
      data,
      body,
      featureDim: desc.model.featureDim,
      headHidden: desc.model.headHidden,
      train: desc.model.train,
      ...(desc.model.initSeed !== undefined ? { initSeed: desc.model.initSeed } : {}),
      ...(desc.model.freezeBody ? { freezeBody: true } : {}),
    };
    site = multi ? createMultiTaskSite(alg, base, multi, desc.algorithmOptions) : alg.createSite(base, desc.algorithmOptions);
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
