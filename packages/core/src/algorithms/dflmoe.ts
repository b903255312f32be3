/**
 * A dFLMoE peer (Xie et al., CVPR 2025): trains its body and head on local
 * data, shares only the head, keeps received heads as frozen experts, and
 * trains a gate (plus one feature-space transform per expert) to mix them.
 */
import * as tf from '@tensorflow/tfjs-core';
import { deriveSeed } from '@dflmoe/data/internal';
import { CodecError, decodeHead, encodeHead, type CodecReason, type NamedArray, type Precision } from '../codec.js';
import { KeyedAdam } from '../keyed-adam.js';
import { ExpertStacks } from './expert-stacks.js';
import {
  Gate,
  applyFst,
  createFst,
  stopGradient,
  type FstKind,
  headLogits,
  headParamCount,
  moeForward,
  moeForwardPerExpert,
  moeForwardStacked,
  moeLoss,
  type DenseLayer,
  type Expert,
} from '../model.js';
import { ExpertSelection, defaultExploration, type ExpertSelectionState } from '../selection.js';
import { evaluateTask, rowsOf, trainEpochs, type ParamGroup } from '../train.js';
import { SupervisedModel, peerEval, type PeerEval, type PeerModelOptions } from './common.js';
import { DEFAULT_LIMITS } from '../limits.js';
import { dflmoeSettings, type DflmoeSettings } from './dflmoe-settings.js';
import { ExpertPool, stalenessSettings, type StalenessSettings } from '../experts.js';
import { resolveSettings } from '../settings.js';
import { LoraBody, LoraError, decodeLoraHead, encodeLoraHead, loraMixture, type LoraReason } from './lora.js';

/**
 * A dFLMoE peer's options: the model, dFLMoE's settings (`dflmoeSettings`:
 * alpha, gate size, transforms, admission, distillation, head precision,
 * bounded mixture; defaults there) and a few that only code sets.
 */
export interface DflmoeOptions extends PeerModelOptions, Partial<DflmoeSettings>, Partial<StalenessSettings> {
  /** Largest head message accepted, in bytes (default: `DEFAULT_LIMITS`). */
  maxHeadBytes?: number;
  /** Bounded mixture: slots per round for experts not held now (default: k/4, at least 1). */
  exploreExperts?: number;
  /** `batched` (default): every expert in batched tensor ops; `per-expert`: the reference path, one kernel chain per expert. */
  mixture?: 'batched' | 'per-expert';
}

/** Local training samples on which a bounded mixture scores its experts. */
const EVIDENCE_SAMPLES = 256;

export interface DflmoeStateMeta {
  headLayers: number;
  slots: string[];
  fsts: string[];
  pool: { peer: string; version: number; receivedRound: number; bytes: number; layers: number }[];
  optimizers: Record<string, number>;
  counters: ReceiveCounters;
  accountant?: { orders: number[]; rdp: number[]; steps: number };
  /** Bounded mixture: the experts chosen, what is remembered of others, and the experts whose state is kept while out. */
  selection?: ExpertSelectionState;
  /** With `loraRank`: the rank of the own adapters (`lora/<i>/a|b`) and of the pool's (`pool/<peer>/lora/<i>/a|b`). */
  lora?: number;
}

/**
 * What became of a received head: taken in (`added`, `replaced`) or why it was
 * refused (a codec check's reason included).
 */
export type ReceiveResult = 'added' | 'replaced' | 'stale-version' | 'self' | 'sender-mismatch' | 'admission' | 'not-selected' | CodecReason | LoraReason;

export interface ReceiveCounters {
  accepted: number;
  rejected: Partial<Record<ReceiveResult, number>>;
}

export class DflmoePeer extends SupervisedModel {
  readonly alpha: number;
  readonly gate: Gate;
  readonly pool: ExpertPool;
  private fsts = new Map<string, DenseLayer<tf.Variable>>();
  /**
   * Adam state per received expert (its gate slot and FST), so experts can
   * come and go; all experts are updated in one batched step.
   */
  private readonly expertAdam: KeyedAdam;
  private readonly maxHeadBytes: number;
  private readonly expertLrScale: number;
  private readonly admission?: number;
  readonly counters: ReceiveCounters = { accepted: 0, rejected: {} };
  readonly fstKind: FstKind;
  readonly distill: number;
  readonly headPrecision: Precision;
  /** Bounded mixture: at most this many received experts (0: every one). */
  readonly maxExperts: number;
  /** Bounded mixture: which experts are pulled, and whose state is kept while out. */
  private readonly selection: ExpertSelection;
  private readonly mixture: 'batched' | 'per-expert';
  /** The received experts as stacked tensors, for training and inference. */
  private readonly stacks: ExpertStacks;
  /**
   * Whether the gate has had a gradient (or was restored): until then its
   * optimizer state is zero, and a round without received experts can leave
   * it out of the loss (see `trainRound`).
   */
  private gateTouched = false;
  /** With `loraRank`: the frozen body split for adapters, and the own adapters (see `lora.ts`). */
  readonly lora?: LoraBody;

  constructor(o: DflmoeOptions) {
    super(o);
    // Unset settings take dFLMoE's defaults; a bad value is a SettingError naming it.
    const s = resolveSettings([dflmoeSettings, stalenessSettings], [], o, { freezeBody: o.freezeBody }).values as DflmoeSettings & StalenessSettings;
    this.alpha = s.alpha;
    this.gate = new Gate(o.featureDim, s.gateHidden, deriveSeed(this.train.seed, 'gate'), this.id, s.ownGateBias);
    this.pool = new ExpertPool({ maxStaleness: s.maxStaleness });
    this.maxHeadBytes = o.maxHeadBytes ?? DEFAULT_LIMITS.maxHeadBytes;
    this.expertLrScale = s.expertLrScale;
    this.expertAdam = new KeyedAdam(this.train.learningRate * this.expertLrScale);
    this.admission = s.admission;
    this.fstKind = s.fst;
    this.distill = s.distill;
    this.headPrecision = s.headPrecision;
    this.maxExperts = s.maxExperts;
    this.selection = new ExpertSelection(this.maxExperts, o.exploreExperts ?? defaultExploration(this.maxExperts), this.train.seed);
    this.mixture = o.mixture ?? 'batched';
    if (s.loraRank > 0) this.lora = new LoraBody(this.body, s.loraRank, s.loraScale, deriveSeed(this.train.seed, 'lora'));
    this.stacks = new ExpertStacks({
      pool: this.pool,
      gate: this.gate,
      expertAdam: this.expertAdam,
      withFst: this.fstKind !== 'none',
      fstOf: (peer) => this.fsts.get(peer),
      expertVariables: (peer) => this.expertVariables(peer),
    });
  }

  /** The experts present now: own head first, then received heads by peer id. */
  experts(): Expert[] {
    return [{ id: this.id, head: this.head }, ...this.pool.list().map((e) => ({ id: e.peer, head: e.head, fst: this.fsts.get(e.peer) }))];
  }

  /** With `loraRank`: the body's features through the own adapters. */
  override features(x: tf.Tensor, training: boolean): tf.Tensor2D {
    return this.lora ? this.lora.features(x) : super.features(x, training);
  }

  /** With `loraRank`: the own adapters train with the head. */
  override trainableVariables(): tf.Variable[] {
    return this.lora ? [...super.trainableVariables(), ...this.lora.variables()] : super.trainableVariables();
  }

  /** Serialize the own head (with `loraRank`, and its adapters) for publishing. */
  encodeHead(version: number): Uint8Array {
    const layers = this.head.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array }));
    const lora = this.lora;
    if (lora) return tf.tidy(() => encodeLoraHead({ spec: this.headSpec, version, peer: this.id }, layers, lora.effective(), this.headPrecision));
    return encodeHead({ spec: this.headSpec, version, peer: this.id }, layers, this.headPrecision);
  }

  /**
   * Take in a head received from `from` (the sender as the transport
   * authenticated it). Invalid input is counted and dropped, never thrown.
   */
  receiveHead(payload: Uint8Array, from: string, round: number): ReceiveResult {
    let result: ReceiveResult;
    try {
      const limits = { maxBytes: this.maxHeadBytes, maxParams: headParamCount(this.headSpec) + (this.lora?.paramCount() ?? 0) };
      const head = this.lora ? decodeLoraHead(payload, this.headSpec, this.lora.dims(), this.lora.rank, limits) : decodeHead(payload, this.headSpec, limits);
      if (head.peer !== from) result = 'sender-mismatch';
      else if (from === this.id) result = 'self';
      else if (head.version <= (this.pool.get(from)?.version ?? -1)) result = 'stale-version';
      else if (this.selection.refuses(from)) result = 'not-selected';
      else if (this.admission !== undefined && !this.admits(head.layers, from)) result = 'admission';
      else {
        result = this.pool.offer(head, round, payload.length);
        if (result !== 'stale-version') {
          this.gate.ensureSlot(from);
          this.ensureFst(from);
          this.selection.returned(from);
        }
      }
    } catch (e) {
      if (!(e instanceof CodecError) && !(e instanceof LoraError)) throw e;
      result = e.reason;
    }
    if (result === 'added' || result === 'replaced') this.counters.accepted++;
    else this.counters.rejected[result] = (this.counters.rejected[result] ?? 0) + 1;
    return result;
  }

  private ensureFst(peer: string): void {
    if (this.fstKind !== 'none' && !this.fsts.has(peer)) this.fsts.set(peer, createFst(this.headSpec.inputDim, this.fstKind));
  }

  /** Score (accuracy; a regression's `rowScores`) of a candidate head versus the own head on local training samples. */
  scoreHead(layers: { kernel: Float32Array; bias: Float32Array }[], from: string): { expert: number; own: number } {
    return tf.tidy(() => {
      const n = Math.min(512, this.data.trainSamples);
      const x = rowsOf(this.data.xTrain, 0, n);
      const y = rowsOf(this.data.yTrain, 0, n);
      const z = this.features(x, false);
      const dims = [this.headSpec.inputDim, ...this.headSpec.hidden, this.headSpec.outputDim];
      const head = layers.map((l, i) => ({ kernel: tf.tensor2d(l.kernel, [dims[i], dims[i + 1]]), bias: tf.tensor1d(l.bias) }));
      const f = this.fsts.get(from);
      const acc = (logits: tf.Tensor2D) => tf.mean(this.task.rowScores(tf.expandDims(logits, 1) as tf.Tensor3D, y as tf.Tensor1D)).dataSync()[0];
      return { expert: acc(headLogits(head, f ? applyFst(f, z) : z)), own: acc(headLogits(this.head, z)) };
    });
  }

  private admits(layers: { kernel: Float32Array; bias: Float32Array }[], from: string): boolean {
    const s = this.scoreHead(layers, from);
    return s.expert >= this.admission! * s.own;
  }

  /** Start of a round: drop experts that went stale. Returns the dropped peer ids. */
  startRound(round: number): string[] {
    const dropped = this.pool.expire(round);
    if (this.maxExperts > 0) this.retire(dropped);
    return dropped;
  }

  /**
   * Each expert's utility on up to 256 local training samples: its accuracy
   * (through its FST) plus the mean gate weight the mixture gives it, both
   * from one batched forward pass.
   */
  expertUtilities(): Map<string, number> {
    const experts = this.experts();
    if (experts.length < 2) return new Map();
    const { acc, gate } = tf.tidy(() => {
      const n = Math.min(EVIDENCE_SAMPLES, this.data.trainSamples);
      const x = rowsOf(this.data.xTrain, 0, n);
      const { logits, gates } = this.lora ? this.loraMixtureOf(x) : this.mixtureOf(this.features(x, false));
      const hit = this.task.rowScores(logits, rowsOf(this.data.yTrain, 0, n) as tf.Tensor1D);
      return { acc: tf.mean(hit, 0).dataSync(), gate: tf.mean(gates, 0).dataSync() };
    });
    return new Map(experts.slice(1).map((e, j) => [e.id, acc[j + 1] + gate[j + 1]]));
  }

  /**
   * Bounded mixture: choose the experts to pull next round among
   * `candidates` (members that announced a head, or are connected), from
   * evidence on the experts held (`expertUtilities`) with some exploration
   * (`chooseExperts`), and drop the held experts not chosen. Returns the
   * choice, or undefined when the mixture is not bounded (`maxExperts` 0,
   * or no more candidates than `maxExperts` so far: then every head is taken).
   */
  selectExperts(round: number, candidates: readonly string[]): string[] | undefined {
    const all = new Set([...candidates, ...this.pool.list().map((e) => e.peer)]);
    all.delete(this.id);
    const c = this.selection.choose(round, all, () => this.expertUtilities());
    if (!c) return undefined;
    for (const id of c.dropped) this.pool.remove(id);
    this.retire(c.dropped);
    return c.chosen;
  }

  /** The experts chosen for the next round (bounded mixture), or undefined. */
  get chosenExperts(): string[] | undefined {
    return this.selection.current;
  }

  /** Experts that left the pool keep their state (see `ExpertSelection.retire`); the state of those it forgets is freed. */
  private retire(ids: string[]): void {
    for (const id of this.selection.retire(ids)) {
      this.gate.removeSlot(id);
      const f = this.fsts.get(id);
      if (f) tf.dispose([f.kernel, f.bias]);
      this.fsts.delete(id);
      this.expertAdam.remove(id);
    }
  }

  override paramGroups(): ParamGroup[] {
    const groups: ParamGroup[] = [{ optimizer: this.optimizer, vars: [...this.trainableVariables(), ...this.gate.sharedVariables(this.id)] }];
    for (const e of this.pool.list()) {
      const f = this.fsts.get(e.peer);
      const vars = [...this.gate.slotVariables(e.peer), ...(f ? [f.kernel, f.bias] : [])];
      this.expertAdam.register(e.peer, vars);
      groups.push({ optimizer: this.expertAdam, vars });
    }
    return groups;
  }

  /**
   * One round of local training. With received experts, the batched
   * mixture trains on packed copies of their transforms and gate slots
   * (one stacked variable each, packed once per round and written back
   * after it, with a `RowAdam` that continues each expert's own Adam state),
   * so that a training step costs the same number of kernels whatever the
   * number of experts. `mixture: 'per-expert'` trains through the reference path.
   */
  async trainRound(round: number): Promise<number> {
    this.account();
    const pool = this.pool.list();
    const loss = (own: tf.Tensor2D, probs: tf.Tensor2D, y: tf.Tensor2D, mixed: boolean): tf.Scalar => {
      const l = moeLoss(own, probs, y, this.alpha, this.task);
      if (this.distill === 0 || !mixed) return l;
      return tf.add(l, tf.mul(this.distill, this.task.distill(own, stopGradient(probs) as tf.Tensor2D))) as tf.Scalar;
    };
    const dp = this.train.dp !== undefined;
    if (this.mixture === 'batched' && pool.length === 0 && !this.gateTouched && !dp && (this.train.optimizer ?? 'adam') === 'adam') {
      // No received expert yet: the mixture is the own head alone, with gate weight exactly 1, so its
      // probabilities are the head's softmax and the gate's gradient is exactly 0. Adam leaves a variable
      // whose moments are 0 unchanged by a zero gradient as by none, so the gate is left out of the loss.
      // (A second head pass keeps the two loss terms' gradients apart, as the mixture computes them.)
      return trainEpochs(
        this.data,
        this.train,
        round,
        () => this.paramGroups(),
        (x, y) => {
          const z = this.features(x, true);
          return loss(headLogits(this.head, z), this.task.activate(headLogits(this.head, z)) as tf.Tensor2D, y, false);
        },
      );
    }
    this.gateTouched = true;
    // With adapters, every expert reads the body through its own (see `loraMixtureOf`).
    if (this.mixture === 'per-expert' || pool.length === 0 || this.lora) {
      return trainEpochs(
        this.data,
        this.train,
        round,
        () => this.paramGroups(),
        (x, y) => {
          if (this.lora && pool.length > 0) {
            const out = this.loraMixtureOf(x);
            return loss(tf.reshape(tf.slice(out.logits, [0, 0, 0], [-1, 1, -1]), [out.z.shape[0], this.headSpec.outputDim]), out.probs, y, true);
          }
          const z = this.features(x, true);
          const experts = this.experts();
          if (this.mixture === 'per-expert')
            return loss(headLogits(this.head, z), moeForwardPerExpert(z, experts, this.gate, this.task.activate).probs, y, experts.length > 1);
          const out = moeForward(z, experts, this.gate, 'auto', this.task.activate);
          return loss(headLogits(this.head, z), out.probs, y, experts.length > 1);
        },
      );
    }
    const packed = this.stacks.pack(pool.map((e) => e.peer));
    try {
      const groups = [
        { optimizer: this.optimizer, vars: [...this.trainableVariables(), ...this.gate.sharedVariables(this.id)] },
        { optimizer: packed.adam, vars: packed.adam.vars },
      ];
      return await trainEpochs(
        this.data,
        this.train,
        round,
        () => groups,
        (x, y) => {
          const z = this.features(x, true);
          const out = moeForwardStacked(z, this.head, packed.experts, this.gate, packed.slots, 'auto', this.task.activate);
          // The own head is expert 0 of the mixture.
          const own = tf.reshape(tf.slice(out.logits, [0, 0, 0], [-1, 1, -1]), [z.shape[0], this.headSpec.outputDim]) as tf.Tensor2D;
          return loss(own, out.probs, y, true);
        },
      );
    } finally {
      this.stacks.unpack(packed);
    }
  }

  /** The received experts' variables of one peer, in the order their Adam state follows. */
  private expertVariables(peer: string): tf.Variable[] {
    const f = this.fsts.get(peer);
    return [...this.gate.slotVariables(peer), ...(f ? [f.kernel, f.bias] : [])];
  }

  /**
   * The mixture over the own head and the received experts, through their
   * stacked copies when there are any (equal to `moeForward` over `experts()`:
   * the same kernels on the same values).
   */
  private mixtureOf(z: tf.Tensor2D): { probs: tf.Tensor2D; gates: tf.Tensor2D; logits: tf.Tensor3D } {
    const s = this.stacks.inference();
    return s
      ? moeForwardStacked(z, this.head, s.experts, this.gate, s.slots, 'auto', this.task.activate)
      : moeForward(z, this.experts(), this.gate, 'auto', this.task.activate);
  }

  /** With `loraRank`: the mixture in which every expert reads the body through its own adapters (see `loraMixture`). */
  loraMixtureOf(x: tf.Tensor): ReturnType<typeof loraMixture> {
    const experts = this.pool.list().map((e) => ({ id: e.peer, head: e.head, adapters: e.adapters!, fst: this.fsts.get(e.peer) }));
    return loraMixture(this.lora!, x, this.id, this.head, experts, this.gate, this.task.activate);
  }

  moeProbs(x: tf.Tensor): tf.Tensor2D {
    return this.lora ? this.loraMixtureOf(x).probs : this.mixtureOf(this.features(x, false)).probs;
  }

  override evaluate(): PeerEval {
    return peerEval(
      evaluateTask(this.data.task, this.data.xTest, this.data.yTest, (xb) => this.moeProbs(xb)),
      this.evaluateOwn(),
    );
  }

  /** Mean gate weight given to each expert present, over the local test split. */
  meanGateWeights(): Record<string, number> {
    const ids = this.experts().map((e) => e.id);
    const means = tf.tidy(() => {
      const z = this.features(this.data.xTest, false);
      // The stacked slots, when current, are the received experts' slots in this order.
      const s = ids.length > 1 ? this.stacks.inference() : undefined;
      return Array.from(tf.mean(s ? this.gate.weightsWith(z, s.slots) : this.gate.weights(z, ids), 0).dataSync());
    });
    return Object.fromEntries(ids.map((id, i) => [id, means[i]]));
  }

  /** Features after the FST of `peer` (for tests and inspection). */
  transformed(peer: string, z: tf.Tensor2D): tf.Tensor2D {
    const f = this.fsts.get(peer);
    if (!f) throw new Error(`no transform for ${peer}`);
    return applyFst(f, z);
  }

  /**
   * Everything but the body, as named float arrays plus metadata, for a
   * checkpoint: own head, gate, FSTs, the expert pool and optimizer state.
   */
  async exportState(): Promise<{ meta: DflmoeStateMeta; tensors: NamedArray[] }> {
    const tensors: NamedArray[] = [];
    const add = (name: string, t: tf.Tensor) => tensors.push({ name, shape: t.shape, data: Float32Array.from(t.dataSync()) });
    this.head.forEach((l, i) => (add(`head/${i}/kernel`, l.kernel), add(`head/${i}/bias`, l.bias)));
    add('gate/hidden/kernel', this.gate.hidden.kernel);
    add('gate/hidden/bias', this.gate.hidden.bias);
    for (const id of this.gate.slotIds) this.gate.slotVariables(id).forEach((v, k) => add(`gate/slot/${id}/${k}`, v));
    for (const [id, f] of this.fsts) {
      add(`fst/${id}/kernel`, f.kernel);
      add(`fst/${id}/bias`, f.bias);
    }
    const pool = this.pool.list();
    for (const e of pool) e.head.forEach((l, i) => (add(`pool/${e.peer}/${i}/kernel`, l.kernel), add(`pool/${e.peer}/${i}/bias`, l.bias)));
    this.lora?.own.forEach((l, i) => (add(`lora/${i}/a`, l.a), add(`lora/${i}/b`, l.b)));
    for (const e of pool) e.adapters?.forEach((l, i) => (add(`pool/${e.peer}/lora/${i}/a`, l.a), add(`pool/${e.peer}/lora/${i}/b`, l.b)));
    const optimizers: Record<string, number> = {};
    const base = await this.optimizer.getWeights();
    optimizers.base = base.length;
    base.forEach((w, k) => add(`opt/base/${k}`, w.tensor));
    // The first entry (iteration count) is a fresh tensor; the rest are the optimizer's own variables.
    base[0]?.tensor.dispose();
    for (const key of this.expertAdam.keys()) {
      const ws = this.expertAdam.keyWeights(key);
      optimizers[key] = ws.length;
      ws.forEach((w, k) => add(`opt/${key}/${k}`, w.tensor));
      tf.dispose(ws.map((w) => w.tensor));
    }
    return {
      meta: {
        headLayers: this.head.length,
        slots: this.gate.slotIds,
        fsts: [...this.fsts.keys()],
        pool: pool.map((e) => ({ peer: e.peer, version: e.version, receivedRound: e.receivedRound, bytes: e.bytes, layers: e.head.length })),
        optimizers,
        counters: this.counters,
        accountant: this.accountant.state(),
        ...(this.maxExperts > 0 ? { selection: this.selection.state() } : {}),
        ...(this.lora ? { lora: this.lora.rank } : {}),
      },
      tensors,
    };
  }

  /** Restore what `exportState` saved (into a freshly built peer with the same spec). */
  async importState(meta: DflmoeStateMeta, tensors: NamedArray[]): Promise<void> {
    const byName = new Map(tensors.map((t) => [t.name, t]));
    const get = (name: string, shape?: number[]): tf.Tensor => {
      const t = byName.get(name);
      if (!t) throw new Error(`checkpoint lacks tensor ${name}`);
      if (shape && t.shape.join() !== shape.join()) throw new Error(`checkpoint tensor ${name} has shape [${t.shape}], expected [${shape}]`);
      return tf.tensor(t.data.slice(), t.shape);
    };
    const assign = (v: tf.Variable, name: string) => {
      const t = get(name, v.shape);
      v.assign(t);
      t.dispose();
    };
    if ((meta.lora ?? 0) !== (this.lora?.rank ?? 0))
      throw new Error(`checkpoint was written with loraRank ${meta.lora ?? 0}; this site uses ${this.lora?.rank ?? 0}`);
    this.head.forEach((l, i) => (assign(l.kernel, `head/${i}/kernel`), assign(l.bias, `head/${i}/bias`)));
    this.lora?.own.forEach((l, i) => (assign(l.a, `lora/${i}/a`), assign(l.b, `lora/${i}/b`)));
    assign(this.gate.hidden.kernel, 'gate/hidden/kernel');
    assign(this.gate.hidden.bias, 'gate/hidden/bias');
    for (const id of meta.slots) {
      this.gate.ensureSlot(id);
      this.gate.slotVariables(id).forEach((v, k) => assign(v, `gate/slot/${id}/${k}`));
    }
    for (const id of meta.fsts) {
      this.ensureFst(id);
      const f = this.fsts.get(id);
      if (!f) throw new Error(`checkpoint holds a transform for ${id}, but this site uses fst "none"`);
      assign(f.kernel, `fst/${id}/kernel`);
      assign(f.bias, `fst/${id}/bias`);
    }
    for (const e of meta.pool) {
      const head = Array.from({ length: e.layers }, (_, i) => ({ kernel: get(`pool/${e.peer}/${i}/kernel`), bias: get(`pool/${e.peer}/${i}/bias`) }));
      const adapters = this.lora?.own.map((_, i) => ({ a: get(`pool/${e.peer}/lora/${i}/a`), b: get(`pool/${e.peer}/lora/${i}/b`) }));
      this.pool.restore({ peer: e.peer, version: e.version, receivedRound: e.receivedRound, bytes: e.bytes, head, ...(adapters ? { adapters } : {}) });
    }
    for (const [key, n] of Object.entries(meta.optimizers)) {
      const ws = Array.from({ length: n }, (_, k) => ({ name: `opt/${key}/${k}`, tensor: get(`opt/${key}/${k}`) }));
      try {
        if (key === 'base') await this.optimizer.setWeights(ws);
        else {
          const f = this.fsts.get(key);
          this.expertAdam.setKeyWeights(key, [...this.gate.slotVariables(key), ...(f ? [f.kernel, f.bias] : [])], ws);
        }
      } finally {
        tf.dispose(ws.map((w) => w.tensor));
      }
    }
    Object.assign(this.counters, meta.counters);
    if (meta.selection) this.selection.restore(meta.selection);
    if (meta.accountant) this.accountant.restore(meta.accountant);
    this.gateTouched = true;
  }

  override dispose(): void {
    super.dispose();
    this.stacks.dispose();
    this.lora?.dispose();
    this.gate.dispose();
    this.pool.dispose();
    for (const f of this.fsts.values()) tf.dispose([f.kernel, f.bias]);
    this.fsts.clear();
    this.expertAdam.dispose();
  }
}
