/**
 * A site's data, from its config to training tensors: read its own files
 * (or its simulator share), agree with the other members on the schema and
 * standardization (federated preprocessing over libp2p, or the agreement
 * saved before a restart), encode, and save what prediction needs in the
 * site's out directory (`preprocessing.json`, `site.json`).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type AlgorithmOptions, type BodySpec, type BodyWeights, type Logger, type SiteDescription, type SitePreprocessing, type TaskInfo } from '@dflmoe/core';
import {
  PREPROCESSING_FILE,
  SITE_FILE,
  checkBodyStandardizer,
  parseBodySpec,
  prepareSiteTasks,
  readBodyWeights,
  readSiteFiles,
  resolveBody,
  sharedInitSeed,
  scaledTask,
  siteTasksData,
  takePeerData,
  type PeerData,
  type PeerModelOptions,
  type SiteTasks,
} from '@dflmoe/core/internal';
import {
  DataError,
  encodeSiteData,
  labelledRows,
  loadSiteData,
  reconcileStatements,
  siteStatement,
  taskDataset,
  type AgreedSchema,
  type EncodedSite,
  type SiteData,
  type SiteDataSpec,
  type SiteStatement,
} from '@dflmoe/data';
import { deriveSeed } from '@dflmoe/data/internal';
import type { PeerConfig } from './config.js';
import { writeJsonAtomic } from './files.js';
import type { SiteNode } from './node.js';
import { AUDIT_FILE } from './audit.js';
import { SchemaAgreement } from './preprocess.js';

const CHECKPOINT_DIR = 'checkpoints';

/** The `data` section of a config as the data package reads it. */
export function siteDataSpec(cfg: PeerConfig): SiteDataSpec {
  const d = cfg.data;
  if (d.tasks && d.tasks.length > 1) {
    // Several tasks: each names its label column (the config check makes sure).
    const { labelColumn: _l, classes: _c, tasks, ...rest } = d;
    return {
      ...rest,
      labelColumnSetting: 'data.tasks[].column in the site config',
      tasks: tasks.map((t) => ({ name: (t.name ?? t.column)!, column: t.column ?? t.name, kind: t.kind, ...(t.classes ? { classes: t.classes } : {}) })),
    };
  }
  const t = d.tasks?.[0];
  if (t?.column !== undefined && d.labelColumn !== undefined && t.column !== d.labelColumn) {
    throw new DataError(`data.labelColumn "${d.labelColumn}" and data.tasks[0].column "${t.column}" name two label columns: keep one`);
  }
  return {
    dataset: d.dataset,
    labelColumn: t?.column ?? d.labelColumn,
    labelColumnSetting: t ? 'data.tasks[0].column in the site config' : 'data.labelColumn in the site config',
    ...(t ? { task: { ...(t.name !== undefined || t.column !== undefined ? { name: t.name ?? t.column } : {}), kind: t.kind } } : {}),
    features: d.features,
    drop: d.drop,
    categorical: d.categorical,
    classes: d.classes,
    imageSize: d.imageSize,
    channels: d.channels,
    fit: d.fit,
    seed: d.seed,
    testFraction: d.testFraction,
    maxSamples: d.maxSamples,
    dataDir: d.dataDir,
    simulate: d.simulate,
  };
}

/** The site's number among the members: its simulator index, else its place in `members` (seeds and ranks derive from it). */
export function siteIndex(cfg: PeerConfig, selfId: string): number {
  return (
    cfg.data.simulate?.index ??
    Math.max(
      0,
      cfg.members.findIndex((m) => m.peerId === selfId),
    )
  );
}

export interface PreparedSite {
  data: PeerData;
  /** A multi-task agreement: the site's tasks' data (`data` is then the first task's, with `tasks`). */
  tasks?: SiteTasks;
  /** The pretrained body the config names (read before preprocessing, so a damaged file stops the site at once). */
  body?: BodyWeights;
  /** The body the config names, read (a saved tfjs model, `tfjs:<dir>`, is read before preprocessing too). */
  bodySpec: BodySpec;
  preprocessing: SitePreprocessing;
  /** Serves this site's statement to members that come later; close it with the node. */
  agreement?: SchemaAgreement;
}

/**
 * Read the site's own rows, agree on the schema with the members (through
 * `node`, started; without one the site agrees with itself), encode and
 * standardize. `resume`: reuse the agreement saved in the out directory
 * (a restart from a checkpoint), so that the site keeps the encoding it
 * trained with. Throws a DataError when the site's data cannot join.
 */
export async function prepareSiteData(
  cfg: PeerConfig,
  o: { node?: SiteNode; selfId: string; logger: Logger; resume: boolean; signal?: AbortSignal; source?: SiteData },
): Promise<PreparedSite> {
  const log = o.logger;
  const body = cfg.model.pretrainedBody !== undefined ? readBodyWeights(cfg.model.pretrainedBody) : undefined;
  const bodySpec = await resolveBody(cfg.model.body);
  const source = o.source ?? (await loadSiteData(siteDataSpec(cfg)));
  for (const w of source.warnings) log.warn(`${cfg.data.dataset}: ${w}`);
  log.info(`own data: ${source.description}`);
  const statement = siteStatement(source, o.selfId);
  const from = { peerId: o.selfId, dataset: cfg.data.dataset, digest: statementDigest(statement) };
  const saved = join(cfg.out, PREPROCESSING_FILE);
  const earlier = o.resume && existsSync(saved) ? readSiteFiles(cfg.out) : undefined;
  if (earlier) checkSameRun(cfg.out, earlier.site.peerId, earlier.preprocessing.from, from);
  else {
    // Not resuming (no checkpoint), the run starts over, but in the audit trail of the same key only.
    const before = earlierPeerId(cfg.out);
    if (before !== undefined) checkSameRun(cfg.out, before, undefined, from);
  }
  const agreement = o.node
    ? new SchemaAgreement(o.node, {
        members: cfg.members,
        statement,
        deadlineMs: cfg.preprocess.deadlineMs,
        graceMs: cfg.preprocess.graceMs,
        quorum: cfg.round.quorum,
        maxBytes: cfg.limits.maxSummaryBytes,
        logger: log,
        signal: o.signal,
        ...(cfg.name ? { selfName: cfg.name } : {}),
      })
    : undefined;
  await agreement?.register();
  let pre: SitePreprocessing;
  let enc: EncodedSite;
  if (earlier) {
    pre = earlier.preprocessing;
    agreement?.useAgreed(pre.included);
    enc = encodeSiteData(source, pre.agreed, pre.standardize);
    log.info(`preprocessing: the agreement of ${pre.included.length} site(s) saved in ${saved}`);
  } else {
    ({ pre, enc } = await agreeAnew(cfg, agreement, statement, source, body, from, o.selfId, log));
    writeJsonAtomic(saved, pre);
  }
  // Standardized with what the site trained (or trains) with: the very numbers saved for prediction.
  const { dataset, split } = enc;
  const standardizer = { mean: Float32Array.from(pre.standardizer.mean), std: Float32Array.from(pre.standardizer.std) };
  if (pre.agreed.tasks) {
    // Several tasks: each over the site's rows that carry its label; a regression target scaled with its pooled statistics (or the site's own).
    const infos = dataset.tasks!.map((c) => {
      const view = taskDataset(dataset, c.name);
      return scaledTask(view, labelledRows(view, split.train), enc.targetScales?.[c.name]);
    });
    const tasks = prepareSiteTasks(dataset, split, standardizer, infos);
    const data = siteTasksData(tasks);
    return { data, tasks, preprocessing: pre, agreement, bodySpec, ...(body ? { body } : {}) };
  }
  // The site's rows are its own: standardized in place and handed to the backend once.
  // A regression target standardized as the features are: with the pooled statistics, or the site's own.
  return {
    data: takePeerData(dataset, split, standardizer, scaledTask(dataset, split.train, enc.targetScale)),
    preprocessing: pre,
    agreement,
    bodySpec,
    ...(body ? { body } : {}),
  };
}

/** `samples of shape 8x8x1`, or `30 encoded features`. */
function featuresLine(a: AgreedSchema): string {
  return a.schema.kind === 'table' ? `${a.featureNames.length} encoded features` : `samples of shape ${a.schema.shape.join('x')}`;
}

/** A multi-task agreement's tasks as the log line names them: classes or the target's scale, and how many sites learn each (this site's first). */
function agreedTasksLine(a: AgreedSchema, self: string): string {
  const ts = [...a.tasks!].sort((x, y) => Number(y.sites.includes(self)) - Number(x.sites.includes(self)));
  return `${ts.length} task(s): ${ts
    .map(
      (t) =>
        `"${t.name}" (${t.scale ? `target pooled mean ${t.scale.mean.toPrecision(4)}, sd ${t.scale.std.toPrecision(4)}` : `${t.classNames.length} classes`}, ` +
        `${t.sites.length} site(s)${t.sites.includes(self) ? '' : ', not learnt here'})`,
    )
    .join(', ')}`;
}

/** The digest of a site's statement without its peer ID: the same data (rows, split, columns read) gives the same digest. */
export function statementDigest(st: SiteStatement): string {
  return createHash('sha256')
    .update(JSON.stringify({ ...st, summary: { ...st.summary, site: '' } }))
    .digest('hex');
}

/**
 * A resumed run must be the run its out directory holds: the same key and
 * the same data. Throws a DataError naming what changed.
 */
export function checkSameRun(out: string, savedPeerId: string, saved: SitePreprocessing['from'], now: NonNullable<SitePreprocessing['from']>): void {
  const changed: string[] = [];
  const peerId = saved?.peerId ?? savedPeerId;
  if (peerId !== now.peerId) changed.push(`with another key (peer ${peerId}; this config's key is peer ${now.peerId})`);
  if (saved && saved.digest !== now.digest) {
    changed.push(
      saved.dataset !== now.dataset
        ? `from other data (${saved.dataset}; this config reads ${now.dataset})`
        : `from other rows of ${now.dataset}, or other data settings`,
    );
  }
  if (changed.length > 0) throw new DataError(`${out} holds a run made ${changed.join(' and ')}: rerun with --fresh to start over there, or set another out`);
}

/** The peer ID in the `site.json` an earlier run left in `out`, if any. */
function earlierPeerId(out: string): string | undefined {
  try {
    const id: unknown = JSON.parse(readFileSync(join(out, SITE_FILE), 'utf8')).peerId;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `--fresh`: remove what an earlier run left in `out` (checkpoints, the
 * agreement, the audit trail, metrics and results), so that the site starts
 * over; nothing else in the directory is touched.
 */
export function removeEarlierRun(out: string): string[] {
  const gone: string[] = [];
  for (const f of [CHECKPOINT_DIR, PREPROCESSING_FILE, SITE_FILE, AUDIT_FILE, 'metrics.jsonl', 'results.json']) {
    const p = join(out, f);
    if (!existsSync(p)) continue;
    rmSync(p, { recursive: true, force: true });
    gone.push(f);
  }
  return gone;
}

/** What a site's config says about its model and training, as every algorithm takes it. */
export function siteModelOptions(cfg: PeerConfig, id: string, index: number, data: PeerData, body?: BodyWeights, bodySpec?: BodySpec): PeerModelOptions {
  return {
    id,
    data,
    body: bodySpec ?? parseBodySpec(cfg.model.body),
    featureDim: cfg.model.featureDim,
    headHidden: cfg.model.headHidden,
    train: { ...cfg.train, seed: deriveSeed(cfg.data.seed, 'peer', index) },
    ...(cfg.model.sharedInit ? { initSeed: sharedInitSeed(cfg.data.seed, cfg.model.body) } : {}),
    ...(body ? { initialBody: body } : {}),
    freezeBody: cfg.model.freezeBody,
  };
}

/** Write `site.json`: what `loadSite` needs to rebuild the site's model (with several tasks, each task's label column, for evaluate). */
export function writeSiteDescription(cfg: PeerConfig, model: PeerModelOptions, algorithmOptions: AlgorithmOptions, taskInfos?: TaskInfo[]): void {
  const declared = (cfg.data.tasks?.length ?? 0) > 1 ? cfg.data.tasks! : [];
  const tasks = taskInfos?.map((t) => {
    const d = declared.find((c) => (c.name ?? c.column) === t.name);
    return d ? { ...t, column: (d.column ?? d.name)! } : t;
  });
  const desc: SiteDescription = {
    format: 1,
    algorithm: cfg.algorithm,
    peerId: model.id,
    ...(cfg.name ? { name: cfg.name } : {}),
    names: Object.fromEntries([...cfg.members.filter((m) => m.name).map((m) => [m.peerId, m.name!]), ...(cfg.name ? [[model.id, cfg.name]] : [])]),
    model: {
      body: cfg.model.body,
      featureDim: model.featureDim,
      headHidden: model.headHidden,
      sampleShape: model.data.sampleShape,
      numClasses: model.data.task.classNames.length,
      task: model.data.task,
      ...(tasks ? { tasks } : {}),
      train: model.train,
      ...(model.initSeed !== undefined ? { initSeed: model.initSeed } : {}),
      // Adapters (dflmoe.loraRank) are defined on a frozen body: a loaded site is rebuilt with it.
      ...(cfg.model.freezeBody ? { freezeBody: true } : {}),
    },
    algorithmOptions,
  };
  writeJsonAtomic(join(cfg.out, SITE_FILE), desc);
}

/**
 * Agree on the data with the members (alone, without a node), encode the
 * site's own rows with the agreement, and say what was agreed.
 */
async function agreeAnew(
  cfg: PeerConfig,
  agreement: SchemaAgreement | undefined,
  statement: SiteStatement,
  source: SiteData,
  body: BodyWeights | undefined,
  from: SitePreprocessing['from'],
  selfId: string,
  log: Logger,
): Promise<{ pre: SitePreprocessing; enc: EncodedSite }> {
  const ag = agreement
    ? await agreement.agree()
    : { ...reconcileStatements([statement]), excluded: [], missing: [], adopted: false, otherForms: [], seconds: 0 };
  const enc = encodeSiteData(source, ag.agreed, cfg.data.standardize);
  // A pretrained body's own input statistics win over the pooled ones: it learnt on inputs scaled with them.
  const bodySt = body?.standardizer;
  if (body && bodySt) {
    checkBodyStandardizer(body, enc.standardizer.mean.length, ag.agreed.schema.kind === 'table' ? ag.agreed.featureNames : undefined);
    log.info(`preprocessing: inputs standardized with the statistics of the pretrained body ${body.source}`);
  }
  const st = bodySt ?? enc.standardizer;
  const pre: SitePreprocessing = {
    format: 1,
    agreed: ag.agreed,
    standardize: cfg.data.standardize,
    ...(bodySt ? { standardizerFrom: cfg.model.pretrainedBody } : {}),
    standardizer: { mean: Array.from(st.mean), std: Array.from(st.std) },
    input: source.input,
    included: ag.included,
    excluded: ag.excluded,
    missing: ag.missing,
    adopted: ag.adopted,
    ...(ag.otherForms.length ? { otherForms: ag.otherForms } : {}),
    from,
    createdAt: new Date().toISOString(),
  };
  const a = ag.agreed;
  if (a.tasks)
    log.info(`preprocessing: agreed with ${ag.included.length} site(s) on ${agreedTasksLine(a, selfId)} and ${featuresLine(a)} in ${ag.seconds.toFixed(2)} s`);
  else
    log.info(
      `preprocessing: agreed with ${ag.included.length} site(s) on ${a.task?.scale ? `the target "${a.task.name}" (pooled mean ${a.task.scale.mean.toPrecision(4)}, sd ${a.task.scale.std.toPrecision(4)})` : `${a.schema.classNames.length} classes`} and ` +
        `${featuresLine(a)} in ${ag.seconds.toFixed(2)} s`,
    );
  return { pre, enc };
}
