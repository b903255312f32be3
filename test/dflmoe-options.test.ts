import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { DflmoePeer, disposePeerData, simulate, type DflmoeOptions, type FstKind } from '@dflmoe/core/internal';
import { parsePeerConfig } from '@dflmoe/p2p/internal';
import { backend, tinyPeers } from './helpers.js';

/** Two peers on the tiny dataset; `b` holds `a`'s head. */
async function pair(extra: Partial<DflmoeOptions>) {
  const { datas } = tinyPeers(2, 5);
  const opts = (i: number): DflmoeOptions => ({
    id: `p${i}`,
    data: datas[i],
    body: { kind: 'mlp', hidden: [8] },
    featureDim: 8,
    headHidden: [],
    train: { seed: 7 + i },
    initSeed: 3,
    ...extra,
  });
  const a = new DflmoePeer(opts(0));
  const b = new DflmoePeer(opts(1));
  await a.trainRound(1); // so that its head differs from the shared initial head
  assert.equal(b.receiveHead(a.encodeHead(1), 'p0', 1), 'added');
  const done = () => {
    a.dispose();
    b.dispose();
    datas.forEach(disposePeerData);
  };
  return { a, b, done };
}

const headValues = (p: DflmoePeer) => p.head.flatMap((l) => [...l.kernel.dataSync(), ...l.bias.dataSync()]);

describe('dFLMoE options: transform form and distillation', () => {
  before(backend);

  const varsPerExpert: Record<FstKind, number> = { full: 4, diag: 4, none: 2 };
  for (const fst of ['full', 'diag', 'none'] as FstKind[]) {
    it(`fst ${fst}: the received expert trains ${varsPerExpert[fst]} variables and starts as the identity`, async () => {
      const { b, done } = await pair({ fst });
      const groups = b.paramGroups();
      assert.equal(groups.length, 2, 'base group plus one group for the received expert');
      assert.equal(groups[1].vars.length, varsPerExpert[fst]);
      tf.tidy(() => {
        const z = tf.randomNormal([5, 8], 0, 1, 'float32', 9) as tf.Tensor2D;
        if (fst === 'none') assert.throws(() => b.transformed('p0', z), /no transform/);
        else assert.ok(tf.max(tf.abs(tf.sub(b.transformed('p0', z), z))).dataSync()[0] < 1e-6);
      });
      if (fst === 'diag') assert.equal(groups[1].vars[2].rank, 1);
      await b.trainRound(1); // creates the optimizers' state
      const before = tf.memory().numTensors;
      await b.trainRound(2);
      assert.equal(tf.memory().numTensors, before, 'a round leaves no tensors behind');
      done();
    });
  }

  it('distillation changes the own head only when there is a mixture to distil', async () => {
    const run = async (distill: number, withExpert: boolean) => {
      const { a, b, done } = await pair({ distill });
      const p = withExpert ? b : a; // a holds no expert
      await p.trainRound(2);
      const v = headValues(p);
      done();
      return v;
    };
    const diff = (x: number[], y: number[]) => Math.max(...x.map((v, i) => Math.abs(v - y[i])));
    assert.ok(diff(await run(0, true), await run(2, true)) > 1e-6, 'with an expert, distillation moves the own head');
    assert.equal(diff(await run(0, false), await run(2, false)), 0, 'without experts it is a no-op');
  });

  it("ownGateBias: the own head's initial gate logit, from the peer's options or a site config (and, like every setting, a flag: settings.test), checked by its schema", async () => {
    // b has not trained yet: its own slot holds the initial bias.
    const bias = (o: Partial<DflmoeOptions>) =>
      pair(o).then(({ b, done }) => {
        const v = b.gate.slotVariables(b.id)[1].dataSync()[0];
        done();
        return v;
      });
    assert.equal(await bias({}), 1, 'default');
    assert.equal(await bias({ ownGateBias: 4 }), 4);
    await assert.rejects(pair({ ownGateBias: 99 }), /ownGateBias: Too big/);
    assert.equal(
      parsePeerConfig({ key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], rounds: 1, out: 'o', data: { dataset: 'digits' }, dflmoe: { ownGateBias: 2 } }).dflmoe
        .ownGateBias,
      2,
    );
  });

  it('simulate refuses an unknown transform form and a negative distillation weight', async () => {
    await assert.rejects(
      simulate({ dataset: 'breast-cancer', rounds: 1, fst: 'wide' as FstKind }),
      /fst: Invalid option: expected one of "full"\|"diag"\|"none"/,
    );
    await assert.rejects(simulate({ dataset: 'breast-cancer', rounds: 1, distill: -1 }), /distill: Too small: expected number to be >=0/);
  });
});

describe('CNN body options (kernel size, padding)', () => {
  before(backend);

  it('parses and formats kernel size and padding, and refuses unknown options', async () => {
    const { parseBodySpec, formatBodySpec } = await import('@dflmoe/core/internal');
    assert.deepEqual(parseBodySpec('cnn:32x64:k5:valid'), { kind: 'cnn', filters: [32, 64], kernelSize: 5, padding: 'valid' });
    for (const s of ['cnn:32x64:k5:valid', 'cnn:8x16', 'cnn:16x32:k5', 'mlp:64']) assert.equal(formatBodySpec(parseBodySpec(s)), s);
    assert.deepEqual(parseBodySpec(formatBodySpec({ kind: 'cnn', kernelSize: 5 })), { kind: 'cnn', filters: [16, 32], kernelSize: 5 });
    assert.throws(() => parseBodySpec('cnn:32x64:k5:wide'), /neither a kernel size/);
    assert.throws(() => parseBodySpec('mlp:64:k5'), /Unknown body/);
  });

  it("builds PFLlib's FedAvgCNN body: 28x28 -> conv 32 5x5 -> pool -> conv 64 5x5 -> pool -> 512 features", async () => {
    const { buildBody, parseBodySpec } = await import('@dflmoe/core/internal');
    const body = buildBody(parseBodySpec('cnn:32x64:k5:valid'), [28, 28, 1], 512, 1);
    assert.deepEqual(body.outputs[0].shape, [null, 512]);
    // conv1 5*5*1*32+32, conv2 5*5*32*64+64, dense 1024*512+512 (as in PFLlib).
    assert.equal(body.countParams(), 832 + 51264 + 524800);
    body.dispose();
  });
});

describe('gate weights of a TCP site include its own head', () => {
  it('the own head gets the weight the received experts leave', async () => {
    const { gateWeightsOf } = await import('@dflmoe/cli/internal');
    const w = gateWeightsOf({
      name: 'site-0',
      peerId: '12D3KooWx',
      rounds: [
        {
          experts: [
            { peer: 'p1', name: 'site-1', version: 3, gateWeight: 0.25 },
            { peer: 'p2', version: 3, gateWeight: 0.15 },
          ],
        },
      ] as never,
    });
    assert.deepEqual(Object.keys(w), ['site-0', 'site-1', 'p2']);
    assert.ok(Math.abs(w['site-0'] - 0.6) < 1e-12);
    assert.ok(Math.abs(Object.values(w).reduce((a, b) => a + b, 0) - 1) < 1e-12);
  });
});
