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
import { createBodyShare, type BodySharingSettings, type BodyShare, type BodyShareState, type MixedBody } from '../body-share.js';
import type { TaskInfo, TaskResult } from '../tasks/index.js';
import { DEFAULT_TRAIN, evaluateTask, siteTasksData, type DpOptions, type PeerData, type SiteTasks } from '../train.js';
import { RdpAccountant } from '../privacy.js';
import { DepartedMembers, absorbMessages, awaitRound } from '../exchange.js';
import { resolveSettings } from '../settings.js';
import { dflmoeSettings } from './dflmoe-settings.js';
import {
  CrossTaskReadOut,
  decodeTaskHeads,
  encodeTaskHeads,
  exportCrossTask,
  importCrossTask,
  type CrossTaskHeads,
  type CrossTaskState,
  type TaskHead,
} from './cross-task.js';
import { DflmoeSite } from './dflmoe-site.js';
import * as tf from '@tensorflow/tfjs-core';
import type { Algorithm, AlgorithmBaseOptions, AlgorithmSite, ExpertInfo, MultiTaskForm, SiteCheckpointing, SiteNetwork, SiteRound } from './api.js';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { restoreNewest, writeCheckpoint, type CheckpointWrite } from '../checkpoint.js';
import type { Logger } from '../log.js';
import { buildSiteBody, peerEval, type PeerEval, type PeerModelOptions, type SiteBody, type SupervisedModel } from './common.js';
import { assignVariables, checkShapes, readVariables, sharedModelSeed } from './fedavg.js';
import { local } from './local.js';
import { ModelSite, secondsSince, waitOptions } from './site.js';

/** One task of a multi-task site: its data, the site that trains it on the shared body and, with `crossTask`, its mixer. */
interface TaskPart {
  data: PeerData;
  site: AlgorithmSite;
  cross?: CrossTaskReadOut;
}

/** What a multi-task site is made with besides the algorithm's own settings: dFLMoE's cross-task settings, when on. */
export interface MultiTaskOptions {
  /** Read other tasks' heads too (`cross-task.ts`); dFLMoE only. */
  crossTask?: boolean;
  /** The read-out's share of each task's output. */
  crossTaskWeight?: number;
}

/** A multi-task site (see the file's comment). */
export class MultiTaskSite implements AlgorithmSite {
  readonly data: PeerData;
  readonly bodyShare?: BodyShare;
  /** The tasks whose heads this site exchanges (`SiteNetwork.tasks`), in round order. */
  readonly headTasks: readonly string[];
  /** Whether it also mixes other tasks' heads, sent and received on `SiteNetwork.crossTask`. */
  readonly crossTask: boolean;
  private readonly parts: TaskPart[];
  private readonly body: SiteBody;
  private readonly arch: string;
  private readonly limits: DecodeLimits;
  private readonly counters: Record<string, number> = {};
  private readonly dp?: DpOptions;
  /** `crossTask`: the newest heads of every other site's tasks, by site. */
  private readonly received = new Map<string, { round: number; heads: TaskHead[] }>();
  /** `crossTask`: this site's own heads of the round, as constants. */
  private ownHeads: TaskHead[] = [];
  /** `crossTask`: members that left (its waits do not hold the round for them). */
  private readonly departed = new DepartedMembers();
  private readonly featureDim: number;

  /**
   * After every round: each task's site writes its own checkpoint (body,
   * head, gate, experts, optimizers, counters), and the site keeps them
   * together in one checkpoint of its own, under `task-<i>/`, with the
   * bodies held from the members (and, with `crossTask`, the read-outs and
   * the heads they read); restored into a site built from the same config.
   */
  readonly checkpoint?: SiteCheckpointing;

  constructor(
    private readonly alg: Algorithm,
    readonly form: MultiTaskForm,
    base: PeerModelOptions,
    site: SiteTasks,
    o: AlgorithmBaseOptions & Partial<BodySharingSettings> & MultiTaskOptions,
  ) {
    const tasks = site.tasks;
    if (tasks.length === 0) throw new Error(`site ${base.id} has no task to learn`);
    if (base.train.dp && o.crossTask) throw new Error('crossTask is not available with differential privacy: its read-outs train on the rows without DP-SGD');
    this.dp = base.train.dp;
    const ordered = [...tasks].sort((a, b) => (a.task.name < b.task.name ? -1 : a.task.name > b.task.name ? 1 : 0));
    // A body that is combined starts the same at every site, as FedAvg's model does.
    const initSeed = form.body === 'none' ? (base.initSeed ?? base.train.seed ?? 0) : sharedModelSeed(o.seed);
    this.body = buildSiteBody({ ...base, data: ordered[0] }, initSeed);
    this.arch = `${formatBodySpec(this.body.spec)}|in=${ordered[0].sampleShape.join('x')}|features=${base.featureDim}`;
    this.limits = { maxBytes: o.maxModelBytes };
    this.featureDim = base.featureDim;
    const taskAlg = form.heads === 'experts' ? this.alg : local;
    const train = { ...DEFAULT_TRAIN, ...base.train };
    // The read-out's weight as dFLMoE's settings resolve it (their default where it is not given).
    const crossWeight = o.crossTask ? (resolveSettings([dflmoeSettings], [], { crossTaskWeight: o.crossTaskWeight }).values.crossTaskWeight as number) : 0;
    this.parts = [];
    try {
      for (const data of ordered) {
        const seed = deriveSeed(base.train.seed ?? 0, 'task', data.task.name);
        const { initSeed: _i, ...rest } = base;
        const site = taskAlg.createSite({ ...rest, data, sharedBody: this.body, train: { ...base.train, seed } }, {
          ...o,
          shareBody: false,
          crossTask: false,
        } as never);
        const cross =
          form.heads === 'experts' && o.crossTask === true
            ? new CrossTaskReadOut(data.task, {
                weight: crossWeight,
                learningRate: train.learningRate,
                batchSize: train.batchSize,
                seed: deriveSeed(seed, 'cross'),
              })
            : undefined;
        this.parts.push({ data, site, ...(cross ? { cross } : {}) });
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
    this.headTasks = form.heads === 'experts' ? ordered.map((d) => d.task.name) : [];
    this.crossTask = this.parts.some((p) => p.cross);
    this.data = siteTasksData({ ...site, tasks: ordered });
    if (this.parts.every((p) => p.site.checkpoint)) this.checkpoint = { save: (...a) => this.save(...a), restore: (...a) => this.restore(...a) };
    if (form.body === 'peers') {
      this.bodyShare = createBodyShare(
        base.id,
        {
          vars: () => bodyVariables(this.body.model),
          spec: this.body.spec,
          sampleShape: this.data.sampleShape,
          featureDim: base.featureDim,
          samples: this.data.trainSamples,
        },
        o as BodySharingSettings,
      );
    }
  }

  get id(): string {
    return this.parts[0].site.id;
  }

  /** The tasks this site learns, in round order. */
  get taskNames(): string[] {
    return this.parts.map((p) => p.data.task.name);
  }

  /**
   * Each task with the site that trains and predicts it on the shared body,
   * in round order (`predict.ts` predicts with them); with `crossTask`, once
   * the read-outs have heads to read, `readOut` turns the task's mixture
   * (activated outputs) for samples `x` into the task's output.
   */
  taskSites(): { task: TaskInfo; site: AlgorithmSite; readOut?: (x: tf.Tensor, own: tf.Tensor2D) => tf.Tensor2D }[] {
    return this.parts.map((p) => ({
      task: p.data.task,
      site: p.site,
      ...(p.cross && this.ownHeads.length > 0 ? { readOut: (x: tf.Tensor, own: tf.Tensor2D) => this.readOut(p, x, own) } : {}),
    }));
  }

  /** `crossTask`: task `p`'s output for samples `x` from its mixture's `own`. */
  private readOut(p: TaskPart, x: tf.Tensor, own: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => p.cross!.predict(this.body.model.apply(x, { training: false }) as tf.Tensor2D, own, this.crossExperts(p)));
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
    if (this.crossTask && !net.crossTask) {
      throw new Error("crossTask needs a network that carries every task's heads to every site (the simulator's, or a site process's cross-task channel)");
    }
    const t0 = performance.now();
    let fresh = 0;
    let bodies: MixedBody[] | undefined;
    if (round > 1 && this.form.body === 'server' && net.server) fresh += await this.loadAverage(round - 1, net);
    const share = net.bodies ? this.bodyShare : undefined;
    if (round > 1 && share?.due(round - 1)) {
      fresh += await share.gather(net.bodies!, round - 1, {
        quorum: net.quorum,
        deadlineMs: net.deadlineMs,
        logger: net.logger,
        ...waitOptions(net, 'bodies'),
      });
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
    if (this.crossTask && net.crossTask) {
      const t = await this.crossRound(round, net);
      waitSeconds += t.waitSeconds;
      trainSeconds += t.trainSeconds;
      fresh += t.fresh;
    }
    const tw = performance.now();
    if (this.form.body === 'server' && net.server) {
      await net.server.upload(
        round,
        encodeBundle('model', { arch: this.arch, round, samples: this.data.trainSamples }, readVariables(bodyVariables(this.body.model))),
        this.data.trainSamples,
      );
    }
    if (share?.due(round)) await share.publish(net.bodies!, round);
    waitSeconds += secondsSince(tw);
    return { loss, trainSeconds, waitSeconds, fresh, expired, ...(bodies ? { bodies } : {}) };
  }

  /**
   * `crossTask`: publish every task's head, wait (bounded) for the other
   * sites' heads of the round, then train each task's mixer over the
   * heads of the other tasks (received and the site's own).
   */
  private async crossRound(round: number, net: SiteNetwork): Promise<{ waitSeconds: number; trainSeconds: number; fresh: number }> {
    const ex = net.crossTask!;
    const peers = this.parts.map((p) => (p.site as DflmoeSite).peer);
    await ex.publish(
      encodeTaskHeads(
        this.id,
        round,
        peers.map((peer) => ({ task: peer.data.task, layers: peer.head })),
      ),
      round,
    );
    const tw = performance.now();
    const others = net.crossOthers ?? 0;
    const refused = { count: 0 };
    const take = () =>
      absorbMessages(ex, net.logger, 'task heads', (m) => {
        try {
          const r = decodeTaskHeads(m.payload, m.from, this.featureDim, this.limits);
          const stranger = net.crossTaskNames && r.heads.find((h) => !net.crossTaskNames!.includes(h.task));
          if (stranger) {
            disposeHeads(r.heads);
            throw new CodecError('mismatch', `task heads from ${m.from} name task "${stranger.task.slice(0, 80)}", which the agreement does not hold`);
          }
          const old = this.received.get(m.from);
          if (old && old.round > r.round) {
            disposeHeads(r.heads);
            return 'stale-version';
          }
          if (old) disposeHeads(old.heads);
          this.received.set(m.from, r);
          return 'added';
        } catch (e) {
          if (!(e instanceof CodecError)) throw e;
          this.counters[`cross:${e.reason}`] = (this.counters[`cross:${e.reason}`] ?? 0) + 1;
          refused.count++;
          return e.reason as never;
        }
      });
    let fresh = take();
    // Bounded, as every wait of a round: members that left, or are far behind, are not waited for.
    fresh += await awaitRound(ex, this.departed, {
      round,
      quorum: others,
      candidates: others,
      deadlineMs: net.deadlineMs,
      ...waitOptions(net, 'task heads'),
      delivered: () => new Set([...this.received].filter(([, r]) => r.round >= round).map(([peer]) => peer)),
      refused: () => refused.count,
      absorb: take,
    });
    const waitSeconds = secondsSince(tw);
    const tt = performance.now();
    disposeHeads(this.ownHeads);
    this.ownHeads = peers.map((peer) => ({
      id: `${this.id}/${peer.data.task.name}`,
      task: peer.data.task.name,
      kind: peer.data.task.kind,
      layers: peer.head.map((l) => ({ kernel: tf.clone(l.kernel), bias: tf.clone(l.bias) })),
    }));
    for (const p of this.parts) {
      tf.tidy(() => {
        p.cross!.train(this.body.model.apply(p.data.xTrain, { training: false }) as tf.Tensor2D, p.data.yTrain, this.crossExperts(p), round);
      });
    }
    return { waitSeconds, trainSeconds: secondsSince(tt), fresh };
  }

  /** The heads a task's mixer mixes: every other task's, received or the site's own. */
  private crossExperts(p: TaskPart): TaskHead[] {
    const name = p.data.task.name;
    return [...this.ownHeads, ...[...this.received.values()].flatMap((r) => r.heads)].filter((h) => h.task !== name);
  }

  /** `crossTask`: the members' bundles the read-outs read now, by member and round (the audit trail's). */
  crossBundles(): { peer: string; version: number }[] {
    return [...this.received].map(([peer, r]) => ({ peer, version: r.round }));
  }

  /** `crossTask`: the heads the read-outs read (the site's own of its last round, and the members' newest bundles). */
  private crossHeads(): CrossTaskHeads {
    return { own: this.ownHeads, received: this.received };
  }

  /** `crossTask`: put back the read-outs and the heads they read from a checkpoint's `cross.bin`. */
  private restoreCross(state: CrossTaskState, bytes: Uint8Array): void {
    const restored = importCrossTask(
      state,
      decodeBundle(bytes, { maxBytes: 2 ** 31 }).tensors,
      this.parts.map((p) => p.cross!),
    );
    disposeHeads([...this.ownHeads, ...[...this.received.values()].flatMap((r) => r.heads)]);
    this.received.clear();
    this.ownHeads = restored.own;
    for (const [site, r] of restored.received) this.received.set(site, r);
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

  private async save(dir: string, round: number, extra: Record<string, unknown>, keep: number): Promise<CheckpointWrite> {
    const t0 = performance.now();
    mkdirSync(dir, { recursive: true });
    const tmp = mkdtempSync(join(dir, '..', `.multi-task-${process.pid}-`));
    try {
      const data: Record<string, Uint8Array> = {};
      const files: string[][] = [];
      for (const [i, p] of this.parts.entries()) {
        const w = await p.site.checkpoint!.save(join(tmp, `task-${i}`), round, {}, 1);
        files.push(filesUnder(w.path));
        for (const f of files[i]) data[`task-${i}/${f}`] = readFileSync(join(w.path, f));
      }
      const bodies = this.bodyShare?.exportState();
      if (bodies) data['bodies.bin'] = encodeBundle('body', { kind: 'body-share-state' }, bodies.tensors);
      const cross =
        this.crossTask && this.ownHeads.length > 0
          ? exportCrossTask(
              this.crossHeads(),
              this.parts.map((p) => p.cross!),
            )
          : undefined;
      if (cross) data['cross.bin'] = encodeBundle('model', { kind: 'cross-task-state' }, cross.tensors);
      const state: MultiTaskState = {
        kind: 'multi-task',
        tasks: this.taskNames,
        files,
        counters: { ...this.counters },
        ...(bodies ? { bodies: bodies.meta } : {}),
        ...(cross ? { cross: cross.state } : {}),
      };
      return { ...writeCheckpoint(dir, round, data, state, extra, keep), seconds: secondsSince(t0) };
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  private async restore(dir: string, logger: Logger): Promise<{ round: number; path: string; extra: Record<string, unknown>; summary: string } | undefined> {
    const r = await restoreNewest(
      dir,
      async (c) => {
        const st = c.state as MultiTaskState;
        if (st?.kind !== 'multi-task' || st.tasks.join() !== this.taskNames.join()) {
          throw new Error(`${c.path} is not a checkpoint of this site's tasks (${this.taskNames.join(', ')}): was the algorithm, the model or a task changed?`);
        }
        const tmp = mkdtempSync(join(dir, '..', `.multi-task-${process.pid}-`));
        try {
          for (const [i, p] of this.parts.entries()) {
            // The task's own checkpoint, laid out again as its site wrote it, and read back by that site.
            const into = join(tmp, `task-${i}`, basename(c.path));
            for (const f of st.files[i]) {
              mkdirSync(dirname(join(into, f)), { recursive: true });
              writeFileSync(join(into, f), c.read(`task-${i}/${f}`));
            }
            if (!(await p.site.checkpoint!.restore(join(tmp, `task-${i}`), logger)))
              throw new Error(`${c.path}: task ${p.data.task.name}'s checkpoint did not restore`);
          }
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
        Object.assign(this.counters, st.counters);
        if (st.bodies && this.bodyShare) this.bodyShare.importState(st.bodies, decodeBundle(c.read('bodies.bin'), { maxBytes: 2 ** 31 }).tensors);
        // crossTask: the read-outs and the heads they read (a checkpoint from before they were kept has none: they learn anew).
        if (st.cross && this.crossTask) this.restoreCross(st.cross, c.read('cross.bin'));
      },
      logger,
    );
    return r && { round: r.checkpoint.round, path: r.checkpoint.path, extra: r.checkpoint.extra, summary: `its ${this.parts.length} tasks` };
  }

  /** A multi-task site has no one accuracy: its tasks' metrics are in `taskResults`. */
  evaluate(): PeerEval {
    return peerEval({});
  }

  taskResults(): Record<string, TaskResult> {
    return Object.fromEntries(this.parts.map((p) => [p.data.task.name, { kind: p.data.task.kind, testRows: p.data.testSamples, ...this.taskMetrics(p) }]));
  }

  /** A task's metrics: its site's, or with `crossTask` its mixer's over the task's mixture and the other tasks' heads. */
  private taskMetrics(p: TaskPart): Record<string, number> {
    if (!p.cross || this.ownHeads.length === 0) return p.site.evaluate().metrics;
    return evaluateTask(p.data.task, p.data.xTest, p.data.yTest, (xb) => this.readOut(p, xb, p.site.predict!(xb)));
  }

  /** `crossTask`: how much each task's read-out leans on each other task (`<task> <- <other>`: the share of its map weights). */
  resultExtras() {
    const gateWeights = this.crossTaskReliance();
    return gateWeights ? { gateWeights } : {};
  }

  crossTaskReliance(): Record<string, number> | undefined {
    if (!this.crossTask || this.ownHeads.length === 0) return undefined;
    const out: Record<string, number> = {};
    for (const p of this.parts) {
      const experts = this.crossExperts(p);
      const w = p.cross!.reliance(experts);
      for (const e of experts) out[`${p.data.task.name} <- ${e.task}`] = (out[`${p.data.task.name} <- ${e.task}`] ?? 0) + w[e.id];
    }
    return out;
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

  /**
   * With DP-SGD: the privacy spent by every task's training together. Each
   * task's steps are accounted at its own sampling rate over its rows, and
   * a row may be in every task, so the site's Renyi DP is the sum of the
   * tasks' (composition); epsilon follows from that sum.
   */
  privacySpent(): { epsilon: number; delta: number; steps: number } | undefined {
    if (!this.dp) return undefined;
    const states = this.parts.map((p) => modelOf(p.site).accountant.state());
    const total = RdpAccountant.fromState({
      orders: states[0].orders,
      rdp: states[0].rdp.map((_, k) => states.reduce((a, s) => a + s.rdp[k], 0)),
      steps: states.reduce((a, s) => a + s.steps, 0),
    });
    const delta = this.dp.delta ?? 1e-5;
    return { epsilon: total.epsilon(delta), delta, steps: total.steps };
  }

  dispose(): void {
    for (const p of this.parts) {
      p.site.dispose();
      p.cross?.dispose();
    }
    disposeHeads([...this.ownHeads, ...[...this.received.values()].flatMap((r) => r.heads)]);
    this.body.model.dispose();
  }
}

/** Sites of `alg` that learn several tasks, or one task of a multi-task dataset; throws when `alg` has no multi-task form. */
export function createMultiTaskSite(
  alg: Algorithm,
  base: PeerModelOptions,
  tasks: SiteTasks,
  o: AlgorithmBaseOptions & Partial<BodySharingSettings> & MultiTaskOptions,
): MultiTaskSite {
  const form = alg.multiTask?.(o);
  if (!form)
    throw new Error(
      `${alg.label} has no multi-task form: ${alg.name} averages whole models, and a multi-task site's heads stay its own; use fedrep-p2p (body peer to peer) or fedavg (body through a server)`,
    );
  return new MultiTaskSite(alg, form, base, tasks, o);
}

/** Whether `s` is a multi-task site (its records list every task). */
export function isMultiTask(s: AlgorithmSite): s is MultiTaskSite {
  return s instanceof MultiTaskSite;
}

/** What a multi-task site's checkpoint holds besides its tasks' files. */
interface MultiTaskState {
  kind: 'multi-task';
  /** The tasks, in round order (`task-<i>/` holds the i-th's checkpoint). */
  tasks: string[];
  /** Each task's checkpoint files, relative to its directory. */
  files: string[][];
  counters: Record<string, number>;
  /** Sharing bodies: what the body share held (its tensors in `bodies.bin`). */
  bodies?: BodyShareState;
  /** `crossTask`: the read-outs and the heads they read (their tensors in `cross.bin`). */
  cross?: CrossTaskState;
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(dir, join(prefix, e.name)) : e.isFile() ? [join(prefix, e.name)] : [],
  );
}

/** The model a task's site trains (its accountant counts its DP-SGD steps). */
function modelOf(site: AlgorithmSite): SupervisedModel {
  if (site instanceof DflmoeSite) return site.peer;
  if (site instanceof ModelSite) return site.model as SupervisedModel;
  throw new Error(`a task site of unknown shape (${site.constructor.name})`);
}

/** Dispose frozen heads' layers. */
function disposeHeads(heads: TaskHead[]): void {
  tf.dispose(heads.flatMap((h) => h.layers.flatMap((l) => [l.kernel, l.bias])));
}
