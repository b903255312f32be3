import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import {
  DflmoePeer,
  Gate,
  KeyedAdam,
  createFst,
  createHead,
  disposePeerData,
  moeForward,
  moeForwardPerExpert,
  moeLoss,
  type DenseLayer,
  type Expert,
  type FstKind,
  type HeadSpec,
  type MoeFusion,
} from '@dflmoe/core/internal';
import { backend, tinyPeers } from './helpers.js';

const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

/** An own head (variables) and received heads (constants) with transforms moved away from the identity. */
function mixture(spec: HeadSpec, forms: FstKind[], seed: number) {
  const d = spec.inputDim;
  const gate = new Gate(d, 6, seed, 'me');
  const own: Expert = { id: 'me', head: createHead(spec, seed) };
  const fsts: DenseLayer<tf.Variable>[] = [];
  const received: Expert[] = forms.map((form, k) => {
    const id = `peer-${k}`;
    gate.ensureSlot(id);
    // Received heads are plain tensors, as in the expert pool.
    const vars = createHead(spec, seed + 10 + k);
    const head = vars.map((l) => ({ kernel: tf.clone(l.kernel), bias: tf.tidy(() => tf.randomNormal(l.bias.shape, 0, 0.3, 'float32', seed + k)) }));
    vars.forEach((l) => tf.dispose([l.kernel, l.bias]));
    if (form === 'none') return { id, head };
    const f = createFst(d, form);
    tf.tidy(() => {
      f.kernel.assign(tf.add(f.kernel, tf.randomNormal(f.kernel.shape, 0, 0.2, 'float32', seed + 100 + k)));
      f.bias.assign(tf.randomNormal([d], 0, 0.2, 'float32', seed + 200 + k));
    });
    fsts.push(f);
    return { id, head, fst: f };
  });
  // Gate slots away from zero, so that every expert's weight matters.
  for (const e of received) for (const v of gate.slotVariables(e.id)) tf.tidy(() => v.assign(tf.randomNormal(v.shape, 0, 0.5, 'float32', seed + 300)));
  const experts = [own, ...received];
  const vars = [
    ...own.head.flatMap((l) => [l.kernel, l.bias] as tf.Variable[]),
    ...fsts.flatMap((f) => [f.kernel, f.bias]),
    ...gate.sharedVariables(),
    ...received.flatMap((e) => gate.slotVariables(e.id)),
  ];
  const dispose = () => {
    gate.dispose();
    for (const e of experts) e.head.forEach((l) => tf.dispose([l.kernel, l.bias]));
    fsts.forEach((f) => tf.dispose([f.kernel, f.bias]));
  };
  return { gate, experts, vars, dispose };
}

describe('batched mixture of experts', () => {
  before(backend);

  const cases: { forms: FstKind[]; hidden: number[] }[] = [
    { forms: ['full', 'full', 'full'], hidden: [] },
    { forms: ['diag', 'diag', 'diag', 'diag'], hidden: [] },
    { forms: ['none', 'none'], hidden: [] },
    { forms: ['full', 'full'], hidden: [5] },
    { forms: ['diag', 'none', 'full', 'diag', 'none'], hidden: [7, 3] },
  ];
  for (const { forms, hidden } of cases) {
    for (const fusion of ['fold', 'apply', 'auto'] as MoeFusion[]) {
      it(`equals the per-expert path within 1e-5 (fst ${forms.join(',')}, head hidden [${hidden}], ${fusion}): probabilities, gates, logits and every gradient`, () => {
        const spec: HeadSpec = { inputDim: 8, hidden, outputDim: 4 };
        const m = mixture(spec, forms, 3 + forms.length + hidden.length);
        const n0 = tf.memory().numTensors;
        tf.tidy(() => {
          const z = tf.randomNormal([16, 8], 0, 1, 'float32', 11) as tf.Tensor2D;
          const y = tf.oneHot(tf.tensor1d([0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0], 'int32'), 4) as tf.Tensor2D;
          const ref = moeForwardPerExpert(z, m.experts, m.gate);
          const bat = moeForward(z, m.experts, m.gate, fusion);
          assert.ok(maxDiff(bat.probs, ref.probs) < 1e-5, `probs differ by ${maxDiff(bat.probs, ref.probs)}`);
          assert.equal(maxDiff(bat.gates, ref.gates), 0, 'gate weights');
          assert.deepEqual(bat.logits.shape, [16, m.experts.length, 4]);
          m.experts.forEach((e, k) => {
            const own = tf.reshape(tf.slice(bat.logits, [0, k, 0], [-1, 1, -1]), [16, 4]);
            const zk = e.fst
              ? e.fst.kernel.rank === 1
                ? tf.add(tf.mul(z, e.fst.kernel), e.fst.bias)
                : tf.add(tf.matMul(z, e.fst.kernel as tf.Tensor2D), e.fst.bias)
              : z;
            let h = zk as tf.Tensor2D;
            e.head.forEach((l, i) => {
              h = tf.add(tf.matMul(h, l.kernel as tf.Tensor2D), l.bias) as tf.Tensor2D;
              if (i < e.head.length - 1) h = tf.relu(h);
            });
            assert.ok(maxDiff(own, h) < 1e-5, `logits of expert ${k}`);
          });
          const lossOf = (f: typeof moeForwardPerExpert) => () => {
            const { probs } = f(z, m.experts, m.gate);
            const own = moeForward(z, [m.experts[0]], m.gate).logits;
            return moeLoss(tf.reshape(own, [16, 4]) as tf.Tensor2D, probs, y, 0.3);
          };
          const gr = tf.variableGrads(lossOf(moeForwardPerExpert), m.vars);
          const gb = tf.variableGrads(
            lossOf((zz, ee, gg) => moeForward(zz, ee, gg, fusion)),
            m.vars,
          );
          assert.ok(Math.abs(gr.value.dataSync()[0] - gb.value.dataSync()[0]) < 1e-5, 'loss');
          for (const v of m.vars) {
            const scale = Math.max(1, tf.max(tf.abs(gr.grads[v.name])).dataSync()[0]);
            assert.ok(
              maxDiff(gb.grads[v.name], gr.grads[v.name]) / scale < 1e-5,
              `gradient of ${v.name} differs by ${maxDiff(gb.grads[v.name], gr.grads[v.name])}`,
            );
          }
          // Every received expert's transform gets a gradient of its own.
          for (const e of m.experts)
            if (e.fst) assert.ok(tf.max(tf.abs(gb.grads[(e.fst.kernel as tf.Variable).name])).dataSync()[0] > 0, `no gradient reaches ${e.id}'s FST`);
        });
        assert.equal(tf.memory().numTensors, n0, 'no tensors left behind');
        m.dispose();
      });
    }
  }

  it('keeps the order of the experts when forms are interleaved (gate weight k goes with expert k)', () => {
    const spec: HeadSpec = { inputDim: 8, hidden: [], outputDim: 4 };
    const m = mixture(spec, ['none', 'full', 'none', 'diag'], 5);
    tf.tidy(() => {
      const z = tf.randomNormal([9, 8], 0, 1, 'float32', 2) as tf.Tensor2D;
      // Reversed order: a different grouping of the same experts gives the same mixture.
      const a = moeForward(z, m.experts, m.gate);
      const b = moeForward(z, [...m.experts].reverse(), m.gate);
      assert.ok(maxDiff(a.probs, b.probs) < 1e-6);
      assert.ok(maxDiff(a.logits, tf.reverse(b.logits, 1)) < 1e-6);
    });
    m.dispose();
  });

  it("a dFLMoE peer with four received experts trains each expert's own FST and gate slot with its own optimizer", async () => {
    const { datas } = tinyPeers(5, 4);
    const peers = datas.map(
      (d, i) => new DflmoePeer({ id: `p${i}`, data: d, body: { kind: 'mlp', hidden: [8] }, featureDim: 8, headHidden: [], train: { seed: i }, initSeed: 1 }),
    );
    for (const p of peers.slice(1)) await p.trainRound(1);
    const a = peers[0];
    peers.slice(1).forEach((p) => assert.equal(a.receiveHead(p.encodeHead(1), p.id, 1), 'added'));
    const ids = peers.slice(1).map((p) => p.id);
    const snap = () =>
      ids.map((id) =>
        tf.tidy(() => [...a.transformed(id, tf.eye(8) as tf.Tensor2D).dataSync(), ...a.gate.slotVariables(id).flatMap((v) => [...v.dataSync()])]),
      );
    const before = snap();
    assert.equal(a.paramGroups().length, 1 + ids.length, 'one optimizer per received expert');
    await a.trainRound(2);
    const after = snap();
    ids.forEach((id, k) => assert.ok(Math.max(...after[k].map((v, i) => Math.abs(v - before[k][i]))) > 1e-6, `${id}'s transform and slot train`));
    const n0 = tf.memory().numTensors;
    await a.trainRound(3);
    assert.equal(tf.memory().numTensors, n0, 'a round leaves no tensors behind');
    peers.forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });
});

describe('packed training of the received experts', () => {
  before(backend);

  for (const fst of ['full', 'diag', 'none'] as FstKind[]) {
    it(`fst ${fst}: a round on packed experts trains like the per-expert path (own head, body, every expert's FST and gate slot, Adam state)`, async () => {
      const { datas } = tinyPeers(4, 6);
      const mk = (i: number, mixture: 'batched' | 'per-expert') =>
        new DflmoePeer({
          id: `p${i}`,
          data: datas[i],
          body: { kind: 'mlp', hidden: [8] },
          featureDim: 8,
          headHidden: [],
          train: { seed: i, batchSize: 16 },
          initSeed: 1,
          fst,
          mixture,
        });
      const senders = [1, 2, 3].map((i) => mk(i, 'batched'));
      for (const p of senders) await p.trainRound(1);
      const heads = senders.map((p) => p.encodeHead(1));
      const [a, b] = [mk(0, 'batched'), mk(0, 'per-expert')];
      for (const p of [a, b]) senders.forEach((q, k) => assert.equal(p.receiveHead(heads[k], q.id, 1), 'added'));
      const values = (p: DflmoePeer) => [
        ...p.variables(),
        ...p.gate.sharedVariables(),
        ...senders.flatMap((q) => [
          ...p.gate.slotVariables(q.id),
          ...p
            .paramGroups()
            .slice(1)
            .find((g) => g.vars.includes(p.gate.slotVariables(q.id)[0]))!
            .vars.slice(2),
        ]),
      ];
      // Two rounds: the second starts from the Adam state the first left behind.
      for (const r of [2, 3]) {
        await a.trainRound(r);
        await b.trainRound(r);
        const va = values(a);
        const vb = values(b);
        assert.equal(va.length, vb.length);
        va.forEach((v, i) => assert.ok(maxDiff(v, vb[i]) < 1e-4, `round ${r}, variable ${i} (${v.shape}) differs by ${maxDiff(v, vb[i])}`));
      }
      const n0 = tf.memory().numTensors;
      await a.trainRound(4);
      assert.equal(tf.memory().numTensors, n0, 'packing and unpacking leave no tensors behind');
      [...senders, a, b].forEach((p) => p.dispose());
      datas.forEach(disposePeerData);
    });
  }
});

describe("a dFLMoE peer's shortcuts (100 sites against local-only)", () => {
  before(backend);

  it('a round without received experts trains exactly as the mixture of the own head alone does, and leaves the gate as it was', async () => {
    const { datas } = tinyPeers(2, 8);
    const mk = (mixture: 'batched' | 'per-expert') =>
      new DflmoePeer({
        id: 'p0',
        data: datas[0],
        body: { kind: 'mlp', hidden: [8] },
        featureDim: 8,
        headHidden: [],
        train: { seed: 3, batchSize: 16 },
        initSeed: 1,
        mixture,
      });
    // The per-expert path keeps the one-expert mixture (gate included) in the loss.
    const [a, b] = [mk('batched'), mk('per-expert')];
    const gate0 = a.gate.sharedVariables().map((v) => v.dataSync().slice());
    const [la, lb] = [await a.trainRound(1), await b.trainRound(1)];
    assert.equal(la, lb, 'the same loss');
    const [va, vb] = [
      [...a.variables(), ...a.gate.sharedVariables()],
      [...b.variables(), ...b.gate.sharedVariables()],
    ];
    va.forEach((v, i) => assert.equal(maxDiff(v, vb[i]), 0, `variable ${i} (${v.shape})`));
    a.gate.sharedVariables().forEach((v, i) => assert.deepEqual(v.dataSync(), gate0[i], `gate variable ${i} unchanged`));
    [a, b].forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });

  it('inference through the stacked experts equals moeForward over experts() exactly, and follows a changed gate slot or a new head', async () => {
    const { datas } = tinyPeers(4, 9);
    const peers = datas.map(
      (d, i) => new DflmoePeer({ id: `p${i}`, data: d, body: { kind: 'mlp', hidden: [8] }, featureDim: 8, headHidden: [4], train: { seed: i }, initSeed: 1 }),
    );
    for (const p of peers) await p.trainRound(1);
    const a = peers[0];
    peers.slice(1).forEach((p) => assert.equal(a.receiveHead(p.encodeHead(1), p.id, 1), 'added'));
    const x = datas[0].xTest;
    const check = (what: string) =>
      tf.tidy(() => {
        const z = a.features(x, false);
        const ref = moeForward(z, a.experts(), a.gate);
        assert.equal(maxDiff(a.moeProbs(x), ref.probs), 0, `probabilities ${what}`);
        const gw = a.meanGateWeights();
        const means = tf.mean(ref.gates, 0).dataSync();
        a.experts().forEach((e, j) => assert.equal(gw[e.id], means[j], `gate weight of ${e.id} ${what}`));
      });
    check('before training');
    await a.trainRound(2);
    check('after a round (the packed copies)');
    tf.tidy(() => a.gate.slotVariables('p2')[1].assign(tf.fill([1], 1.5)));
    check('after a gate slot changed');
    await peers[3].trainRound(2);
    assert.equal(a.receiveHead(peers[3].encodeHead(2), 'p3', 2), 'replaced');
    check('after a new head');
    peers.forEach((p) => p.dispose());
    datas.forEach(disposePeerData);
  });
});

describe('KeyedAdam (one Adam state per expert, updated in one batched step)', () => {
  before(backend);

  it('equals a tf.train.adam per key, also for a key that joins later and one that leaves; state round-trips; frees its state', () => {
    const mk = (seed: number, shapes: number[][]) => shapes.map((s, i) => tf.variable(tf.randomNormal(s, 0, 1, 'float32', seed + i)));
    const shapes = [[3, 4], [4], [5, 1], [1]];
    const a1 = mk(1, shapes),
      a2 = mk(1, shapes);
    const b1 = mk(9, shapes.slice(0, 2)),
      b2 = mk(9, shapes.slice(0, 2));
    const keyed = new KeyedAdam(0.05);
    const ref = { a: tf.train.adam(0.05), b: tf.train.adam(0.05) };
    const grad = (vs: tf.Variable[], step: number) => vs.map((v, i) => ({ name: v.name, tensor: tf.randomNormal(v.shape, 0, 1, 'float32', 100 * step + i) }));
    for (let step = 1; step <= 6; step++) {
      tf.tidy(() => {
        keyed.register('a', a1);
        const ga = grad(a1, step);
        const upd = [...ga];
        ref.a.applyGradients(ga.map((g, i) => ({ name: a2[i].name, tensor: g.tensor })));
        if (step >= 3) {
          // b joins in step 3, so its bias correction runs two steps behind a's.
          keyed.register('b', b1);
          const gb = grad(b1, step + 50);
          upd.push(...gb);
          ref.b.applyGradients(gb.map((g, i) => ({ name: b2[i].name, tensor: g.tensor })));
        }
        keyed.applyGradients(upd);
      });
    }
    [...a1, ...b1].forEach((v, i) => assert.ok(maxDiff(v, [...a2, ...b2][i]) < 1e-6, `variable ${i}`));
    assert.equal(keyed.steps('a'), 6);
    assert.equal(keyed.steps('b'), 4);
    // The state in tf.train.adam's layout, back into a fresh KeyedAdam: the next step agrees too.
    const ws = keyed.keyWeights('b');
    const again = new KeyedAdam(0.05);
    again.setKeyWeights('b', b2, ws);
    tf.dispose(ws.map((w) => w.tensor));
    tf.tidy(() => {
      const g = grad(b1, 99);
      keyed.applyGradients(g);
      again.applyGradients(g.map((x, i) => ({ name: b2[i].name, tensor: x.tensor })));
    });
    b1.forEach((v, i) => assert.ok(maxDiff(v, b2[i]) < 1e-6, `restored state, variable ${i}`));
    tf.tidy(() => assert.throws(() => keyed.applyGradients([{ name: 'nobody', tensor: tf.scalar(1) }]), /belongs to no registered key/));
    // Two moments per variable, freed with the key (a has 4 variables, b 2).
    const held = tf.memory().numTensors;
    keyed.remove('a');
    assert.deepEqual(keyed.keys(), ['b']);
    assert.equal(tf.memory().numTensors, held - 8);
    keyed.dispose();
    again.dispose();
    assert.equal(tf.memory().numTensors, held - 16);
    [ref.a, ref.b].forEach((o) => o.dispose());
    tf.dispose([...a1, ...a2, ...b1, ...b2]);
  });
});
