/**
 * A site that learns several tasks on one body (multi-task: MELLODDY's
 * shared trunk with each partner's own heads). Each task is a site of its
 * own over the rows that carry its label (a row without a task's label is
 * left out of that task's loss), and every task's site trains the one body:
 * in a round the tasks take turns, in the consortium's order of task names,
 * then the site combines its body as its algorithm's multi-task form says
 * (`MultiTaskForm`): not at all, through a server that averages bodies, or
 * with the members peer to peer. Heads never leave the site, except
 * dFLMoE's, which each task exchanges with the sites that learn the same
 * task and mixes as experts (task-matched experts).
 */
import { deriveSeed } from '@dflmoe/data/internal';
import { CodecError, decodeBundle, encodeBundle, type DecodeLimits } from '../codec.js';
import { bodyVariables, formatBodySpec } from '../model.js';
import { createBodyShare, type BodySharingSettings, type BodyShare, type MixedBody } from '../body-share.js';
import type { TaskResult } from '../tasks/index.js';
import type { PeerData, SiteTasks } from '../train.js';
import type { Algorithm, AlgorithmBaseOptions, AlgorithmSite, ExpertInfo, SiteNetwork, SiteRound } from './api.js';
import { buildSiteBody, peerEval, type PeerEval, type PeerModelOptions, type SiteBody } from './common.js';
import { assignVariables, checkShapes, readVariables, sharedModelSeed } from './fedavg.js';
import { local } from './local.js';
import { secondsSince, waitOptions } from './site.js';

/**
 * How an algorithm learns several tasks at one site: each task's head is
 * the site's own (trained with the body, as local-only trains) or mixed
 * with that task's heads from the other sites (`experts`: dFLMoE); the body
 * is kept, averaged by a server (FedAvg, FedAvg-FT and FedRep alike) or
 * combined with the members' bodies peer to peer (fedrep-p2p, dFLMoE with
 * `shareBody`).
 */
export interface MultiTaskForm {
  /** Each task's head: the site's own, or mixed with the same task's heads of other sites. */
  heads: 'own' | 'experts';
  /** How the site's body is combined with the others' after each round. */
  body: 'none' | 'server' | 'peers';
}

/** One task of a multi-task site: its data and the site that trains it on the shared body. */
interface TaskPart {
  data: PeerData;
  site: AlgorithmSite;
}

/** A multi-task site (see the file's comment). */
export class MultiTaskSite implements AlgorithmSite {
  readonly data: PeerData;
  readonly bodyShare?: BodyShare;
  /** The tasks whose heads this site exchanges (`SiteNetwork.tasks`), in round order. */
  readonly headTasks: readonly string[];
  private readonly parts: TaskPart[];
  private readonly body: SiteBody;
  private readonly arch: string;
  private readonly limits: DecodeLimits;
  private readonly counters: Record<string, number> = {};

  constructor(
    private readonly alg: Algorithm, readonly form: MultiTaskForm, base: PeerModelOptions, site: SiteTasks,
    o: AlgorithmBaseOptions & Partial<BodySharingSettings>,
  ) {
    const tasks = site.tasks;
    if (tasks.length === 0) throw new Error(`site ${base.id} has no task to learn`);
    if (base.train.dp) throw new Error('differential privacy is not available for multi-task sites yet (one accountant would have to compose every task\'s steps over shared rows)');
    const ordered = [...tasks].sort((a, b) => (a.task.name < b.task.name ? -1 : a.task.name > b.task.name ? 1 : 0));
    // A body that is combined starts the same at every site, as FedAvg's model does.
    const initSeed = form.body === 'none' ? base.initSeed ?? base.train.seed ?? 0 : sharedModelSeed(o.seed);
    this.body = buildSiteBody({ ...base, data: ordered[0] }, initSeed);
    this.arch = `${formatBodySpec(this.body.spec)}|in=${ordered[0].sampleShape.join('x')}|features=${base.featureDim}`;
    this.limits = { maxBytes: o.maxModelBytes };
    const taskAlg = form.heads === 'experts' ? this.alg : local;
    this.parts = [];
    try {
      for (const data of ordered) {
        const seed = deriveSeed(base.train.seed ?? 0, 'task', data.task.name);
        const { initSeed: _i, ...rest } = base;
        const site = taskAlg.createSite({ ...rest, data, sharedBody: this.body, train: { ...base.train, seed } }, { ...o, shareBody: false } as never);
        this.parts.push({ data, site });
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
    this.headTasks = form.heads === 'experts' ? ordered.map((d) => d.task.name) : [];
    this.data = multiTaskData(site, ordered);
    if (form.body === 'peers') {
      this.bodyShare = createBodyShare(base.id, {
        vars: () => bodyVariables(this.body.model), spec: this.body.spec, sampleShape: this.data.sampleShape, featureDim: base.featureDim, samples: this.data.trainSamples,
      }, o as BodySharingSettings);
    }
  }

  get id(): string {
    return this.parts[0].site.id;
  }

  /** The tasks this site learns, in round order. */
  get taskNames(): string[] {
    return this.parts.map((p) => p.data.task.name);
  }

  /** Averaged bodies must have one architecture: the body's. */
  architecture(): string {
    return this.arch;
  }

  /**
   * Load the combination of the last round's bodies (the server's average,
   * or the members' bodies mixed), train every task in turn, then send the
   * body out (it is combined at the start of the next round, so that a site
   * is evaluated, like dFLMoE with shared bodies, after training its heads
   * on the combined body).
   */
  async runRound(round: number, net: SiteNetwork): Promise<SiteRound> {
    const t0 = performance.now();
    let fresh = 0;
    let bodies: MixedBody[] | undefined;
    if (round > 1 && this.form.body === 'server' && net.server) fresh += await this.loadAverage(round - 1, net);
    const share = net.bodies ? this.bodyShare : undefined;
    if (round > 1 && share?.due(round - 1)) {
      fresh += await share.gather(net.bodies!, round - 1, { quorum: net.quorum, deadlineMs: net.deadlineMs, logger: net.logger, ...waitOptions(net, 'bodies') });
      bodies = share.mix(round - 1, round, net.bodies!.members());
    }
    let waitSeconds = secondsSince(t0);
    let loss = 0;
    let trainSeconds = 0;
    const expired: string[] = [];
    const alone: SiteNetwork = { quorum: 0, deadlineMs: 0, logger: net.logger };
    for (const p of this.parts) {
      const r = await p.site.runRound(round, net.tasks?.[p.data.task.name] ?? alone);
      loss += r.loss / this.parts.length;
      trainSeconds += r.trainSeconds;
      waitSeconds += r.waitSeconds;
      fresh += r.fresh;
      expired.push(...(r.expired ?? []).map((e) => `${p.data.task.name}/${e}`));
    }
    const tw = performance.now();
    if (this.form.body === 'server' && net.server) {
      await net.server.upload(round, encodeBundle('model', { arch: this.arch, round, samples: this.data.trainSamples }, readVariables(bodyVariables(this.body.model))), this.data.trainSamples);
    }
    if (share?.due(round)) await share.publish(net.bodies!, round);
    waitSeconds += secondsSince(tw);
    return { loss, trainSeconds, waitSeconds, fresh, expired, ...(bodies ? { bodies } : {}) };
  }

  /** Load the server's average of the bodies of `round` (a bad one is counted, logged and skipped). */
  private async loadAverage(round: number, net: SiteNetwork): Promise<number> {
    const vars = bodyVariables(this.body.model);
    const global = await net.server!.download(round);
    try {
      const b = decodeBundle(global, this.limits);
      if (b.kind !== 'model') throw new CodecError('kind', `expected a model, got a ${b.kind}`);
      if (b.meta.arch !== this.arch) throw new CodecError('mismatch', `body architecture "${String(b.meta.arch).slice(0, 200)}" differs from ours`);
      checkShapes(vars, b.tensors);
      assignVariables(vars, b.tensors);
      return 1;
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      this.counters[e.reason] = (this.counters[e.reason] ?? 0) + 1;
      net.logger.warn(`dropped the averaged body of round ${round}: ${e.message}; keeping our own`);
      return 0;
    }
  }

  /** A multi-task site has no one accuracy: its tasks' metrics are in `taskResults`. */
  evaluate(): PeerEval {
    return peerEval({});
  }

  taskResults(): Record<string, TaskResult> {
    return Object.fromEntries(this.parts.map((p) => [p.data.task.name, { kind: p.data.task.kind, testRows: p.data.testSamples, ...p.site.evaluate().metrics }]));
  }

  experts(): ExpertInfo[] {
    return this.parts.flatMap((p) => (p.site.experts?.() ?? []).map((e) => ({ ...e, task: p.data.task.name })));
  }

  rejected(): Record<string, number> {
    const out: Record<string, number> = { ...this.counters };
    for (const p of this.parts) for (const [k, v] of Object.entries(p.site.rejected())) out[`${p.data.task.name}:${k}`] = v;
    for (const [k, v] of Object.entries(this.bodyShare?.counters ?? {})) if (v) out[`body:${k}`] = v;
    return out;
  }

  privacySpent(): undefined {
    return undefined;
  }

  dispose(): void {
    for (const p of this.parts) p.site.dispose();
    this.body.model.dispose();
  }
}

/** A multi-task site's data: its first task's fields, its rows (those that carry any label) and every task's data. */
function multiTaskData(s: SiteTasks, ordered: PeerData[]): PeerData {
  return { ...ordered[0], trainSamples: s.trainSamples, testSamples: s.testSamples, tasks: ordered };
}

/** Sites of `alg` that learn several tasks, or one task of a multi-task dataset; throws when `alg` has no multi-task form. */
export function createMultiTaskSite(alg: Algorithm, base: PeerModelOptions, tasks: SiteTasks, o: AlgorithmBaseOptions & Partial<BodySharingSettings>): MultiTaskSite {
  const form = alg.multiTask?.(o);
  if (!form) throw new Error(`${alg.label} has no multi-task form: ${alg.name} averages whole models, and a multi-task site's heads stay its own; use fedrep-p2p (body peer to peer) or fedavg (body through a server)`);
  return new MultiTaskSite(alg, form, base, tasks, o);
}

/** Whether `s` is a multi-task site (its records list every task). */
export function isMultiTask(s: AlgorithmSite): s is MultiTaskSite {
  return s instanceof MultiTaskSite;
}
