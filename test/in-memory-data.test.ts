/**
 * In-memory data in the library (#22): a site's rows or samples, with the
 * federated preprocessing over a statement exchange (in memory, or the
 * libp2p service), into createLearner.
 */
import assert from 'node:assert/strict';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { gossipsub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import { tcp } from '@libp2p/tcp';
import type { PrivateKey } from '@libp2p/interface';
import { createLibp2p } from 'libp2p';
import { MemoryHub, MemoryStatementHub, agreeOnData, createLearner, initBackend } from '@dflmoe/core';
import { DataError, Rng, encodeRows, siteDataFromRows, siteDataFromSamples, type Row } from '@dflmoe/data/internal';
import { generateIdentity, statementExchange } from '@dflmoe/p2p';

/** Rows of one site: `dose` separates the classes, `clinic` from the site's own vocabulary, some doses missing. */
function clinicRows(seed: number, clinics: string[], n: number, missingEvery: number): Row[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const sick = i % 2 === 0;
    return {
      dose: i % missingEvery === 0 ? null : (sick ? 3 : -3) + rng.normal(),
      weight: 70 + 10 * rng.normal() + (sick ? 5 : 0),
      clinic: clinics[i % clinics.length],
      outcome: sick ? 'sick' : 'well',
    };
  });
}

describe('in-memory data', function () {
  this.timeout(60000);

  it('two sites with different vocabularies and missing cells agree on one schema over a MemoryStatementHub and train', async () => {
    await initBackend();
    const a = siteDataFromRows(clinicRows(1, ['north', 'south'], 120, 7), { labelColumn: 'outcome', seed: 1 });
    // Site b: other clinics, a missing dose written as 'NA', and its doses never missing in a's way.
    const bRows = clinicRows(2, ['east', 'south'], 100, 1000).map((r, i) => (i === 5 ? { ...r, dose: 'NA' } : r));
    const b = siteDataFromRows(bRows, { labelColumn: 'outcome', seed: 2 });
    const statements = new MemoryStatementHub({ sites: ['a', 'b'] });
    const [da, db] = await Promise.all([agreeOnData(a, statements.join('a')), agreeOnData(b, statements.join('b'))]);
    const names = ['dose', 'dose_missing', 'weight', 'clinic=east', 'clinic=north', 'clinic=south'];
    assert.deepEqual(da.agreed.featureNames, names, 'the union of the vocabularies, and an indicator for the missing doses');
    assert.deepEqual(db.agreed, da.agreed, 'both sites computed the same agreement');
    assert.deepEqual(da.included, ['a', 'b']);
    assert.deepEqual(Array.from(da.standardizer.mean), Array.from(db.standardizer.mean), 'pooled statistics');
    assert.deepEqual(da.dataset.classNames, ['sick', 'well']);
    // Site b's 'NA' cell is missing: imputed with the pooled mean, its indicator set.
    const d = names.length;
    assert.equal(db.dataset.features[5 * d + 1], 1);
    assert.ok(Math.abs(db.dataset.features[5 * d] - da.agreed.mean[0]) < 1e-4);

    const hub = new MemoryHub();
    const sites = await Promise.all(
      [
        ['a', da],
        ['b', db],
      ].map(([id, data]) =>
        createLearner({
          id: id as string,
          data: data as typeof da,
          exchange: hub.join(id as string),
          model: { body: 'mlp:16', featureDim: 8 },
          train: { seed: 3, epochs: 5, learningRate: 0.01 },
        }),
      ),
    );
    let acc = 0;
    for (let r = 0; r < 3; r++) {
      const ms = await Promise.all(sites.map((s) => s.runRound()));
      acc = Math.min(...ms.map((m) => m.accuracy));
    }
    assert.ok(acc > 0.9, `accuracy ${acc}`);
    assert.equal((await sites[0].runRound()).experts.length, 1, "site a holds b's head");
    // New rows, encoded with the agreement; a clinic no site saw encodes as zeros.
    const fresh = encodeRows(
      [
        { dose: 3.2, weight: 75, clinic: 'west' },
        { dose: null, weight: 65, clinic: 'north' },
      ],
      da.agreed,
    );
    assert.equal(fresh.labels, undefined);
    assert.deepEqual(Array.from(fresh.features.subarray(3, 6)), [0, 0, 0]);
    const p = sites[0].predict(fresh.features);
    assert.equal(p.classNames[p.predicted[0]], 'sick');
    sites.forEach((s) => s.dispose());
  });

  it('refuses rows of the wrong shape, naming the row', () => {
    const rows: Row[] = [
      { x: 1, c: 'u', label: 'p' },
      { x: 2, c: 'v', label: 'q' },
      { x: 3, label: 'p' },
    ];
    assert.throws(
      () => siteDataFromRows(rows),
      (e: Error) => e instanceof DataError && /rows, row 2: lacks column "c" \(write null for a missing cell\)/.test(e.message),
    );
    assert.throws(() => siteDataFromRows([...rows.slice(0, 2), { x: 3, c: 'u', label: 'p', y: 4 }]), /rows, row 2: column "y" that row 0 does not have/);
    assert.throws(
      () =>
        siteDataFromRows(
          [
            [1, 'u', 'p'],
            [2, 'v'],
          ],
          { columns: ['x', 'c', 'label'] },
        ),
      /rows, row 1: 2 cells where there are 3 columns \(x, c, label\)/,
    );
    assert.throws(() => siteDataFromRows([[1, 'u', 'p']]), /rows are arrays of cells, so give their column names/);
    assert.throws(
      () => siteDataFromRows([{ x: 1, c: { name: 'u' } as never, label: 'p' }]),
      /row 0, column "c" holds a object; cells are numbers, strings or null/,
    );
    // The CSV rules: a column this mixed is an error naming the row (not a line of a file).
    const mixed = Array.from({ length: 10 }, (_, i) => ({ x: i < 5 ? i : `t${i}`, label: i % 2 ? 'p' : 'q' }));
    assert.throws(() => siteDataFromRows(mixed, { name: 'lab rows' }), /lab rows, row 5: column "x" holds "t5", which is not a number/);
    assert.throws(() => siteDataFromRows([{ x: 1, label: null }]), /rows: every row's label in column "label" is missing/);
  });

  it('takes samples as nested arrays or a tensor-like, refusing a sample of the wrong shape', () => {
    const nested = [
      [
        [0, 1],
        [2, 3],
      ],
      [
        [1, 1],
        [1, 1],
      ],
      [
        [4, 4],
        [4, 4],
      ],
      [
        [5, 5],
        [5, 5],
      ],
    ];
    const s = siteDataFromSamples(nested, [0, 1, 0, 1], { classNames: ['no', 'yes'], testFraction: 0.5 });
    assert.equal(s.kind, 'tensor');
    if (s.kind === 'tensor') {
      assert.deepEqual(s.dataset.sampleShape, [2, 2]);
      assert.deepEqual(Array.from(s.dataset.features.subarray(0, 4)), [0, 1, 2, 3]);
    }
    const t = siteDataFromSamples({ shape: [3, 2], dataSync: () => new Float32Array([1, 2, 3, 4, 5, 6]) }, ['b', 'a', 'b']);
    assert.deepEqual(t.kind === 'tensor' && t.dataset.classNames, ['a', 'b']);
    assert.throws(
      () =>
        siteDataFromSamples(
          [
            [
              [0, 1],
              [2, 3],
            ],
            [[1, 1], [1]],
          ],
          [0, 1],
        ),
      /samples, sample 1: 3 values where a sample of shape \[2, 2\] has 4/,
    );
    assert.throws(() => siteDataFromSamples([1, 2, 3, 4, 5], [0, 1], { sampleShape: [2] }), /5 values are not a whole number of samples of shape \[2\]/);
    assert.throws(
      () =>
        siteDataFromSamples(
          [
            [1, 2],
            [3, NaN],
          ],
          [0, 1],
        ),
      /sample 1: value 1 is NaN/,
    );
    assert.throws(
      () =>
        siteDataFromSamples(
          [
            [1, 2],
            [3, 4],
          ],
          [0],
        ),
      /1 labels for 2 samples/,
    );
    assert.throws(
      () =>
        siteDataFromSamples(
          [
            [1, 2],
            [3, 4],
          ],
          [0, 2],
          { classNames: ['a', 'b'] },
        ),
      /sample 1: label 2 is not one of the classes a, b/,
    );
  });

  it('a site whose columns cannot join the others is told which, and the others agree without it', async () => {
    const a = siteDataFromRows(clinicRows(1, ['north'], 40, 5), { labelColumn: 'outcome' });
    const b = siteDataFromRows(clinicRows(2, ['south'], 40, 5), { labelColumn: 'outcome' });
    // Site c's clinic codes are numbers: a numeric column where the others have a categorical one.
    const c = siteDataFromRows(
      clinicRows(3, ['north'], 40, 5).map((r) => ({ ...r, clinic: 7 })),
      { labelColumn: 'outcome' },
    );
    const hub = new MemoryStatementHub({ sites: 3 });
    const [ra, , rc] = await Promise.allSettled([agreeOnData(a, hub.join('a')), agreeOnData(b, hub.join('b')), agreeOnData(c, hub.join('c'))]);
    assert.equal(rc.status, 'rejected');
    assert.match(String((rc as PromiseRejectedResult).reason), /this site's data cannot join the consortium: .*"clinic"/);
    assert.equal(ra.status, 'fulfilled');
    const ok = (ra as PromiseFulfilledResult<Awaited<ReturnType<typeof agreeOnData>>>).value;
    assert.deepEqual(ok.included, ['a', 'b']);
    assert.equal(ok.excluded[0].site, 'c');
  });

  it('agrees over libp2p with the statement service on each host node', async () => {
    const ids = await Promise.all([generateIdentity(), generateIdentity()]);
    const node = (privateKey: PrivateKey, members: { peerId: string; addrs: string[] }[]) =>
      createLibp2p({
        privateKey,
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        services: { identify: identify(), pubsub: gossipsub(), statements: statementExchange({ members, deadlineMs: 20000 }) },
      });
    const first = await node(
      ids[0].privateKey,
      ids.map((i) => ({ peerId: i.peerId, addrs: [] })),
    );
    const members = [
      { peerId: ids[0].peerId, addrs: first.getMultiaddrs().map((m) => m.toString().replace(/\/p2p\/.*$/, '')) },
      { peerId: ids[1].peerId, addrs: [] },
    ];
    const second = await node(ids[1].privateKey, members);
    try {
      const a = siteDataFromRows(clinicRows(1, ['north'], 40, 5), { labelColumn: 'outcome' });
      const b = siteDataFromRows(clinicRows(2, ['south'], 40, 1000), { labelColumn: 'outcome' });
      const [da, db] = await Promise.all([agreeOnData(a, first.services.statements), agreeOnData(b, second.services.statements)]);
      assert.deepEqual(da.agreed, db.agreed);
      assert.deepEqual(da.agreed.featureNames, ['dose', 'dose_missing', 'weight', 'clinic=north', 'clinic=south']);
      assert.deepEqual(da.included, [...ids.map((i) => i.peerId)].sort());
    } finally {
      await Promise.all([first.stop(), second.stop()]);
    }
  });
});
