/**
 * Rounds as events (#22): `for await (const m of site.rounds({ signal }))`
 * yields each round's metrics; an AbortSignal ends the wait under way
 * (the others' heads, their bodies) at once with `Interrupted`.
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { Interrupted, MemoryHub, createLearner, isInterrupted, type DflmoeLearner, type HeadExchange, type LearnerRoundMetrics } from '@dflmoe/core';
import { loadDataset, partition, type Dataset } from '@dflmoe/data';
import { backend } from './helpers.js';

describe('learner rounds as events', function () {
  this.timeout(60000);
  let ds: Dataset;
  const learners: DflmoeLearner[] = [];
  before(async () => {
    await backend();
    ds = loadDataset('breast-cancer');
  });
  afterEach(() => learners.splice(0).forEach((l) => l.dispose()));

  async function site(id: string, i: number, exchange: HeadExchange, extra: Record<string, unknown> = {}) {
    const splits = partition(ds.labels, 2, 2, 'iid', { seed: 5 });
    const l = await createLearner({
      id,
      dataset: ds,
      split: splits[i],
      exchange,
      model: { body: 'mlp:16', featureDim: 8, initSeed: 1 },
      train: { seed: i },
      ...extra,
    });
    learners.push(l);
    return l;
  }

  it("yields every round's metrics in order, as many as asked; no tensor leaks", async () => {
    const hub = new MemoryHub();
    const a = await site('a', 0, hub.join('a'));
    const b = await site('b', 1, hub.join('b'));
    const seen: LearnerRoundMetrics[] = [];
    let tensors = 0;
    for await (const m of a.rounds({ rounds: 4 })) {
      seen.push(m);
      await b.runRound();
      if (m.round === 2) tensors = tf.memory().numTensors;
      if (m.round > 2) assert.equal(tf.memory().numTensors, tensors, `round ${m.round}`);
    }
    assert.deepEqual(
      seen.map((m) => m.round),
      [1, 2, 3, 4],
    );
    assert.deepEqual(
      seen.at(-1)!.experts.map((e) => e.peer),
      ['b'],
    );
    // A loop may stop by itself; the next call goes on from the next round.
    for await (const m of a.rounds()) {
      assert.equal(m.round, 5);
      break;
    }
  });

  it("an abort ends the wait for the others' heads at once, with Interrupted", async () => {
    const hub = new MemoryHub();
    hub.join('silent'); // a member that never publishes
    // A deadline of 10 minutes: an abort that did not end the wait would show as a wait of that length, whatever the load.
    const deadline = 600_000;
    const a = await site('a', 0, hub.join('a'), { quorum: 1, roundDeadlineMs: deadline });
    const ac = new AbortController();
    let aborted = 0;
    setTimeout(() => {
      aborted = Date.now();
      ac.abort();
    }, 300);
    await assert.rejects(
      async () => {
        for await (const m of a.rounds({ signal: ac.signal })) assert.fail(`round ${m.round} should not end`);
      },
      (e: unknown) => e instanceof Interrupted && isInterrupted(e),
    );
    assert.ok(Date.now() - aborted < deadline / 100, `stopped ${Date.now() - aborted} ms after the abort (the deadline is ${deadline / 1000} s)`);
    // Already aborted: nothing runs.
    await assert.rejects(a.runRound({ signal: ac.signal }), Interrupted);
    assert.equal(a.round, 1);
  });

  it("an abort ends the wait for the partners' bodies too", async () => {
    const heads = new MemoryHub();
    const bodies = new MemoryHub();
    // b shares heads but never publishes a body.
    const silentBodies = bodies.join('b');
    const own = bodies.join('a');
    let bodyWaits = 0;
    const counted = Object.assign(Object.create(own) as HeadExchange, {
      waitForHeads: (n: number, ms: number) => {
        bodyWaits++;
        return own.waitForHeads(n, ms);
      },
    });
    const deadline = 600_000;
    const a = await site('a', 0, heads.join('a'), { quorum: 1, roundDeadlineMs: deadline, bodies: counted });
    const b = await site('b', 1, heads.join('b'));
    await Promise.all([a.runRound(), b.runRound()]);
    assert.ok(silentBodies);
    const ac = new AbortController();
    let aborted = 0;
    setTimeout(() => {
      aborted = Date.now();
      ac.abort();
    }, 300);
    await assert.rejects(a.runRound({ signal: ac.signal }), Interrupted);
    assert.ok(Date.now() - aborted < deadline / 100, `stopped ${Date.now() - aborted} ms after the abort (the deadline is ${deadline / 1000} s)`);
    assert.ok(bodyWaits > 0, 'it was waiting for bodies');
  });
});
