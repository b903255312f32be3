/** Shared parts of the sites built on one `SupervisedModel` (every algorithm but dFLMoE). */
import * as tf from '@tensorflow/tfjs-core';
import { restoreNewest, writeCheckpoint } from '../checkpoint.js';
import { bodyFiles } from '../pretrained.js';
import { decodeBundle, encodeBundle, type NamedArray } from '../codec.js';
import type { AlgorithmSite, SiteCheckpointing, SiteNetwork, SiteRound } from './api.js';
import type { PeerEval, SupervisedModel } from './common.js';
import { createBodyShare, type BodyShare, type BodySharingSettings, type BodyShareState } from '../body-share.js';
import { bodyVariables } from '../model.js';
import type { RoundWait } from '../exchange.js';

export const secondsSince = (t0: number) => (performance.now() - t0) / 1000;

/**
 * What a site's network adds to its round waits (`awaitRound`): the members
 * it waits for (`SiteNetwork.awaited`) and, where members have names, notices
 * of whom it is still waiting for (`what`: heads, models, bodies).
 */
export function waitOptions(net: SiteNetwork, what: string): Pick<RoundWait, 'awaited' | 'notice'> {
  const name = net.memberName;
  return {
    ...(net.awaited ? { awaited: net.awaited } : {}),
    ...(name ? { notice: { logger: net.logger, what, name: (p: string) => name.call(net, p) } } : {}),
  };
}

/** The body share of a site's model (dFLMoE with shareBody, fedrep-p2p). */
export function siteBodyShare(m: SupervisedModel, o: BodySharingSettings): BodyShare {
  return createBodyShare(
    m.id,
    {
      vars: () => bodyVariables(m.body),
      spec: m.bodySpec,
      sampleShape: m.data.sampleShape,
      featureDim: m.headSpec.inputDim,
      samples: m.data.trainSamples,
    },
    o,
  );
}

/** `r`'s counts with `prefix` before each key; zero and undefined counts left out (none for undefined `r`). */
export function prefixKeys(r: Partial<Record<string, number>> | undefined, prefix: string): Record<string, number> {
  return Object.fromEntries(
    Object.entries(r ?? {})
      .filter((e): e is [string, number] => Boolean(e[1]))
      .map(([k, v]) => [`${prefix}${k}`, v]),
  );
}

/** One body + head model's activated outputs (class probabilities: the softmax of its logits; a regression's prediction). */
export function modelProbs(model: SupervisedModel, x: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => model.task.activate(model.logits(x)) as tf.Tensor2D);
}

/** What a model site's checkpoint holds besides the files: enough to check and read `state.bin` back. */
interface ModelSiteState {
  kind: 'model-site';
  /** Variables per model, in `variables()` order. */
  variables: number[];
  /** Optimizer weights per optimizer key. */
  optimizers: Record<string, number>;
  accountants: ReturnType<SupervisedModel['accountant']['state']>[];
  counters: Record<string, number>;
  /** Sites that share bodies: the bodies held from the members. */
  bodies?: BodyShareState;
}

export abstract class ModelSite<M extends SupervisedModel & { evaluate(): PeerEval }> implements AlgorithmSite {
  private readonly counters: Record<string, number> = {};
  /**
   * After every round: every variable of the site's models (the body also in
   * the tfjs layers format), optimizer state, privacy accountants and
   * counters; restored into a site built from the same config.
   */
  readonly checkpoint: SiteCheckpointing = {
    save: async (dir, round, extra, keep) => {
      const t0 = performance.now();
      const files = await bodyFiles(this.model.body);
      const tensors: NamedArray[] = [];
      const add = (name: string, t: tf.Tensor) => tensors.push({ name, shape: t.shape, data: Float32Array.from(t.dataSync()) });
      const models = this.checkpointModels();
      models.forEach((m, k) => m.variables().forEach((v, i) => add(`m${k}/${i}`, v)));
      const optimizers: Record<string, number> = {};
      for (const [key, opt] of Object.entries(this.checkpointOptimizers())) {
        const ws = await opt.getWeights();
        optimizers[key] = ws.length;
        ws.forEach((w, i) => add(`opt/${key}/${i}`, w.tensor));
        ws[0]?.tensor.dispose(); // the iteration count is a fresh tensor; the rest are the optimizer's own
      }
      const bodies = this.bodyShare?.exportState();
      if (bodies) tensors.push(...bodies.tensors);
      files['state.bin'] = encodeBundle('model', { kind: 'model-site-state' }, tensors);
      const state: ModelSiteState = {
        kind: 'model-site',
        variables: models.map((m) => m.variables().length),
        optimizers,
        accountants: models.map((m) => m.accountant.state()),
        counters: { ...this.counters },
        ...(bodies ? { bodies: bodies.meta } : {}),
      };
      const w = writeCheckpoint(dir, round, files, state, extra, keep);
      return { ...w, seconds: secondsSince(t0) };
    },
    restore: async (dir, logger) => {
      const r = await restoreNewest(
        dir,
        async (c) => {
          const st = c.state as ModelSiteState;
          const models = this.checkpointModels();
          if (st?.kind !== 'model-site' || st.variables.join() !== models.map((m) => m.variables().length).join()) {
            throw new Error(`${c.path} is not a checkpoint of this kind of site (was the algorithm or model config changed?)`);
          }
          const all = decodeBundle(c.read('state.bin'), { maxBytes: 2 ** 31 }).tensors;
          const byName = new Map(all.map((t) => [t.name, t]));
          const get = (name: string, shape?: number[]): tf.Tensor => {
            const t = byName.get(name);
            if (!t) throw new Error(`${c.path} lacks tensor ${name}`);
            if (shape && t.shape.join() !== shape.join()) throw new Error(`${c.path}: ${name} has shape [${t.shape}], this site expects [${shape}]`);
            return tf.tensor(t.data.slice(), t.shape);
          };
          models.forEach((m, k) =>
            m.variables().forEach((v, i) => {
              const t = get(`m${k}/${i}`, v.shape);
              v.assign(t);
              t.dispose();
            }),
          );
          const opts = this.checkpointOptimizers();
          for (const [key, n] of Object.entries(st.optimizers)) {
            const opt = opts[key];
            if (!opt) continue;
            const ws = Array.from({ length: n }, (_, i) => ({ name: `opt/${key}/${i}`, tensor: get(`opt/${key}/${i}`) }));
            await opt.setWeights(ws);
            tf.dispose(ws.map((w) => w.tensor));
          }
          models.forEach((m, k) => st.accountants[k] && m.accountant.restore(st.accountants[k]));
          Object.assign(this.counters, st.counters);
          if (st.bodies && this.bodyShare) this.bodyShare.importState(st.bodies, all);
        },
        logger,
      );
      return r && { round: r.checkpoint.round, path: r.checkpoint.path, extra: r.checkpoint.extra, summary: 'its model' };
    },
  };

  /** Sites that share bodies: set by the subclass. */
  readonly bodyShare?: BodyShare;

  constructor(readonly model: M) {}

  get id(): string {
    return this.model.id;
  }

  get data() {
    return this.model.data;
  }

  abstract runRound(round: number, net: SiteNetwork): Promise<SiteRound>;

  /** The site's own model's activated outputs (class probabilities, or predictions; see `modelProbs`). */
  predict(x: tf.Tensor): tf.Tensor2D {
    return modelProbs(this.model, x);
  }

  /** The models a checkpoint holds (the first one's body is also written in the layers format). */
  protected checkpointModels(): SupervisedModel[] {
    return [this.model];
  }

  /** Optimizers whose state a checkpoint holds, by a stable key. */
  protected checkpointOptimizers(): Record<string, tf.Optimizer> {
    return Object.fromEntries(this.checkpointModels().map((m, k) => [`m${k}`, m.optimizer]));
  }

  evaluate(): PeerEval {
    return this.model.evaluate();
  }

  rejected(): Record<string, number> {
    return { ...this.counters, ...prefixKeys(this.bodyShare?.counters, 'body:') };
  }

  /** Count received input refused for `reason`. */
  protected refuse(reason: string): void {
    this.counters[reason] = (this.counters[reason] ?? 0) + 1;
  }

  privacySpent() {
    return this.model.privacySpent();
  }

  dispose(): void {
    this.model.dispose();
  }
}
