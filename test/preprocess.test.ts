/**
 * Federated preprocessing over libp2p on 127.0.0.1: members agree on one
 * schema and pooled statistics from summaries only; a member whose schema
 * does not fit is told why and the others go on; bad input is dropped and
 * counted. Every wait is bounded.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import { silentLogger, type Logger } from '@dflmoe/core';
import {
  DataError,
  encodeSiteData,
  fitStandardizer,
  loadDataset,
  loadSiteData,
  reconcileStatements,
  siteStatement,
  type SiteDataSpec,
  type SiteStatement,
} from '@dflmoe/data';
import { PREPROCESS_PROTOCOL, SchemaAgreement, createSiteNode, generateIdentity, readFrames, writeFrames, type SiteNode } from '@dflmoe/p2p/internal';
import { PATIENT_HEADER, patientsCsv, tmpDir, writeText } from './fixtures/sites.js';

interface Net {
  nodes: SiteNode[];
  ids: string[];
  members: { peerId: string; addrs: string[]; name: string }[];
}

async function network(n: number): Promise<Net> {
  const keys = await Promise.all(Array.from({ length: n }, () => generateIdentity()));
  const ids = keys.map((k) => k.peerId);
  const nodes = await Promise.all(keys.map((k) => createSiteNode({ privateKey: k.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: ids })));
  for (const node of nodes) await node.start();
  const members = nodes.map((node, i) => ({
    peerId: ids[i],
    addrs: node.getMultiaddrs().map((a) => a.decapsulateCode(421).toString()),
    name: `hospital-${i}`,
  }));
  return { nodes, ids, members };
}

/** A statement under this node's peer ID. */
const as = (st: SiteStatement, peer: string): SiteStatement => ({ ...st, summary: { ...st.summary, site: peer } });

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const add = (m: string) => lines.push(m);
  return { lines, debug() {}, info: add, warn: add, error: add };
}

describe('federated preprocessing over libp2p', function () {
  this.timeout(60000);
  let nets: SiteNode[] = [];
  afterEach(async () => {
    for (const n of nets) await Promise.resolve(n.stop()).catch(() => {});
    nets = [];
  });

  it('a site that agreed keeps serving until a member it merged has fetched its statement; a member that came late owes nobody; one that disconnected without its statement is not waited for', async () => {
    const net = await network(3);
    nets = net.nodes;
    const spec = (i: number): SiteDataSpec => ({
      dataset: 'digits',
      seed: 4,
      testFraction: 0.2,
      simulate: { peers: 2, index: i, partition: 'iid', minSize: 10 },
    });
    const statements = await Promise.all([0, 1].map(async (i) => siteStatement(await loadSiteData(spec(i)), net.ids[i])));
    const logA = recorder();
    const DEADLINE_MS = 20000;
    const [a, b] = net.nodes.slice(0, 2).map(
      (node, i) =>
        new SchemaAgreement(node, {
          members: net.members,
          statement: statements[i],
          deadlineMs: DEADLINE_MS,
          graceMs: 500,
          maxBytes: 1 << 20,
          logger: i === 0 ? logA : silentLogger,
        }),
    );
    await a.register();
    await b.register();
    // hospital-2 connects to A and stops before it serves a statement (its data failed to load, say): A does not wait for it.
    await net.nodes[2].dial(multiaddr(`${net.members[0].addrs[0]}/p2p/${net.ids[0]}`));
    await net.nodes[2].stop();
    // B serves its statement but has not agreed yet: A merges it, so A owes B its own.
    const ra = await a.agree();
    assert.deepEqual(ra.included, net.ids.slice(0, 2).sort());
    assert.deepEqual(ra.missing, [net.ids[2]]);
    assert.ok(ra.seconds < DEADLINE_MS / 1000 / 4, `agreed after ${ra.seconds.toFixed(1)} s, not at the ${DEADLINE_MS / 1000} s deadline`);
    assert.ok(
      logA.lines.includes(
        'preprocessing: hospital-2 disconnected before sending its statement: not waiting for it (it takes the agreement when it comes back, if its data fits)',
      ),
      logA.lines.join('\n'),
    );
    assert.deepEqual(a.unserved(), [net.ids[1]]);
    let waited = false;
    const wait = a.waitServed(20000).then(() => (waited = true));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(waited, false, 'still waiting for B');
    const rb = await b.agree();
    await wait;
    assert.deepEqual(a.unserved(), []);
    assert.deepEqual(rb.included, ra.included);
    assert.deepEqual(b.unserved(), [], 'A had agreed already: B owes it nothing');
    await a.close();
    await b.close();
  });

  it("pooled statistics equal those of every site's training rows within 1e-6, and every member agrees on the same schema", async () => {
    const net = await network(3);
    nets = net.nodes;
    const spec = (i: number): SiteDataSpec => ({
      dataset: 'digits',
      seed: 4,
      testFraction: 0.2,
      simulate: { peers: 3, index: i, partition: 'dirichlet:0.5', minSize: 10 },
    });
    const datas = await Promise.all([0, 1, 2].map((i) => loadSiteData(spec(i))));
    const statements = datas.map((d, i) => siteStatement(d, net.ids[i]));
    const agreements = net.nodes.map(
      (node, i) =>
        new SchemaAgreement(node, {
          members: net.members,
          statement: statements[i],
          deadlineMs: 20000,
          maxBytes: 1 << 20,
          logger: silentLogger,
        }),
    );
    for (const a of agreements) await a.register();
    const results = await Promise.all(agreements.map((a) => a.agree()));
    for (const r of results) {
      assert.deepEqual(r.included, [...net.ids].sort());
      assert.deepEqual(r.excluded, []);
      assert.deepEqual(r.missing, []);
      assert.equal(r.adopted, false);
      assert.deepEqual(r.agreed, results[0].agreed, 'every member computes the same agreement');
    }
    assert.deepEqual(results[0].agreed, reconcileStatements(statements).agreed, 'the same as merging the statements in one place');
    // Pooled over the network = statistics of the concatenated training rows.
    const ds = loadDataset('digits');
    const { partition } = await import('@dflmoe/data');
    const splits = partition(ds.labels, 10, 3, 'dirichlet:0.5', { seed: 4, testFraction: 0.2, minSize: 10 });
    const ref = fitStandardizer(ds.features, 64, Int32Array.from(splits.flatMap((s) => [...s.train])));
    for (let j = 0; j < 64; j++) {
      assert.ok(Math.abs(results[0].agreed.mean[j] - ref.mean[j]) <= 1e-6, `pixel ${j} mean`);
      assert.ok(Math.abs(results[0].agreed.std[j] - ref.std[j]) <= 1e-6, `pixel ${j} std`);
    }
    // The built-in dataset's label set and order are kept.
    assert.deepEqual(results[0].agreed.schema.classNames, ds.classNames);
    for (const a of agreements) assert.deepEqual(a.dropped, {});
  });

  it('sites holding the digits as images and as tables agree in two groups, each on its own schema and pooled statistics, and set the other form apart (not left out)', async () => {
    const net = await network(4);
    nets = net.nodes;
    // The same digits as a table of their 64 pixels, one CSV per table site.
    const ds = loadDataset('digits');
    const header = [...Array.from({ length: 64 }, (_, j) => `pixel_${Math.floor(j / 8)}_${j % 8}`), 'label'].join(',');
    const csv = (rows: number[]) =>
      writeText(
        join(tmpDir(), 'digits.csv'),
        [header, ...rows.map((r) => [...ds.features.subarray(r * 64, (r + 1) * 64), ds.labels[r]].join(','))].join('\n') + '\n',
      );
    const specs: SiteDataSpec[] = [0, 1, 2, 3].map((i) =>
      i % 2 === 0
        ? { dataset: 'digits', seed: 4, testFraction: 0.2, simulate: { peers: 4, index: i, partition: 'iid', minSize: 10 } }
        : { dataset: `csv:${csv(Array.from({ length: 300 }, (_, k) => k * 5 + i))}`, labelColumn: 'label', seed: 4, testFraction: 0.2 },
    );
    const datas = await Promise.all(specs.map((sp) => loadSiteData(sp)));
    const statements = datas.map((d, i) => siteStatement(d, net.ids[i]));
    const logs = net.nodes.map(() => recorder());
    const agreements = net.nodes.map(
      (node, i) =>
        new SchemaAgreement(node, {
          members: net.members,
          statement: statements[i],
          deadlineMs: 20000,
          maxBytes: 1 << 20,
          logger: logs[i],
        }),
    );
    for (const a of agreements) await a.register();
    const results = await Promise.all(agreements.map((a) => a.agree()));
    const images = [net.ids[0], net.ids[2]].sort();
    const tables = [net.ids[1], net.ids[3]].sort();
    results.forEach((r, i) => {
      const [mine, theirs] = i % 2 === 0 ? [images, tables] : [tables, images];
      assert.deepEqual(r.included, mine, `site ${i}: its own form's sites`);
      assert.deepEqual(r.otherForms, theirs, `site ${i}: the other form set apart`);
      assert.deepEqual(r.excluded, []);
      assert.equal(r.agreed.schema.kind, i % 2 === 0 ? 'tensor' : 'table');
      assert.deepEqual(r.agreed, reconcileStatements(statements.filter((_, k) => k % 2 === i % 2)).agreed, "the agreement of its form's sites alone");
      assert.ok(
        logs[i].lines.some((l) => l.includes(`hold the data as ${i % 2 === 0 ? 'tables (this site: images)' : 'images (this site: tables)'}`)),
        logs[i].lines.join('\n'),
      );
    });
    assert.deepEqual(results[0].agreed, results[2].agreed);
    assert.deepEqual(results[1].agreed, results[3].agreed);
    assert.notDeepEqual(results[0].agreed.mean, results[1].agreed.mean, 'each form pools its own rows');
    for (const a of agreements) assert.deepEqual(a.dropped, {});
  });

  it('a member whose schema cannot be reconciled gets an error naming the column; the others go on without it; a member lacking a column joins', async () => {
    const net = await network(4);
    nets = net.nodes;
    const dir = tmpDir();
    const csv = (i: number, text = patientsCsv({ seed: i + 1, rows: 60, missing: 0.1 })) => `csv:${writeText(join(dir, `${i}.csv`), text)}`;
    // hospital-2 writes ages as words (numeric elsewhere); hospital-3 has no bmi column.
    const words = patientsCsv({ seed: 3, rows: 60 }).replace(/^(p3-\d+),[\d.]+/gm, '$1,old');
    const specs: SiteDataSpec[] = [
      csv(0),
      csv(1),
      csv(2, words),
      csv(3, patientsCsv({ seed: 4, rows: 60, header: PATIENT_HEADER.filter((h) => h !== 'bmi') })),
    ].map((dataset) => ({ dataset, labelColumn: 'diagnosis', drop: ['id'], seed: 1, testFraction: 0.2 }));
    const datas = await Promise.all(specs.map(loadSiteData));
    const logs = [recorder(), recorder(), recorder(), recorder()];
    const agreements = net.nodes.map(
      (node, i) =>
        new SchemaAgreement(node, {
          members: net.members,
          statement: siteStatement(datas[i], net.ids[i]),
          deadlineMs: 20000,
          maxBytes: 1 << 20,
          logger: logs[i],
        }),
    );
    for (const a of agreements) await a.register();
    const settled = await Promise.allSettled(agreements.map((a) => a.agree()));
    const odd = settled[2];
    assert.equal(odd.status, 'rejected');
    assert.match(
      (odd as PromiseRejectedResult).reason.message,
      /^this site's data cannot join the consortium: site "hospital-2" cannot join sites "hospital-\d", "hospital-\d", "hospital-\d": column "age" is numeric at .* but categorical at "hospital-2"/,
    );
    for (const i of [0, 1, 3]) {
      const r = (settled[i] as PromiseFulfilledResult<Awaited<ReturnType<SchemaAgreement['agree']>>>).value;
      assert.deepEqual(r.included, [net.ids[0], net.ids[1], net.ids[3]].sort());
      assert.deepEqual(
        r.excluded.map((x) => x.peer),
        [net.ids[2]],
      );
      assert.ok(r.agreed.featureNames.includes('bmi') && r.agreed.featureNames.includes('bmi_missing'));
      assert.ok(
        logs[i].lines.some((l) => /left out hospital-2: .*column "age" is numeric/.test(l)),
        logs[i].lines.join('\n'),
      );
      assert.ok(
        logs[i].lines.some((l) => /preprocessing: site "hospital-3" lacks column "bmi": its rows read as missing there/.test(l)),
        logs[i].lines.join('\n'),
      );
    }
  });

  it('a site that comes after the others agreed without it stops when the agreement leaves out its classes or categories, naming them and the fix; one whose data fits takes the agreement and says the statistics are not its own', async () => {
    const net = await network(3);
    nets = net.nodes;
    const dir = tmpDir();
    const site = (i: number, text: string) =>
      loadSiteData({ dataset: `csv:${writeText(join(dir, `${i}.csv`), text)}`, labelColumn: 'diagnosis', drop: ['id'], seed: 1, testFraction: 0.2 });
    const datas = await Promise.all([
      site(0, patientsCsv({ seed: 1, rows: 80, wards: ['north', 'south'] })),
      // Comes late with a ward and a class the first site never saw.
      site(1, patientsCsv({ seed: 2, rows: 80, wards: ['south', 'east'] }).replace(/benign$/gm, 'cyst')),
      // Comes late with data the agreement holds entirely (a ward the first site has; no bmi column, which reads as missing).
      site(2, patientsCsv({ seed: 3, rows: 50, wards: ['north'], header: PATIENT_HEADER.filter((h) => h !== 'bmi') })),
    ]);
    const logs = [recorder(), recorder(), recorder()];
    const make = (i: number, deadlineMs: number) =>
      new SchemaAgreement(net.nodes[i], {
        members: net.members,
        statement: siteStatement(datas[i], net.ids[i]),
        deadlineMs,
        maxBytes: 1 << 20,
        logger: logs[i],
        retryMs: 100,
      });
    // hospital-0 is alone until its deadline: it agrees with itself.
    const first = make(0, 1500);
    await first.register();
    const r0 = await first.agree();
    assert.deepEqual(r0.included, [net.ids[0]]);
    assert.deepEqual(r0.missing, [net.ids[1], net.ids[2]]);
    assert.ok(
      logs[0].lines.some((l) => /agreeing without them \(when they come, they take the agreement if their data fits it, else they stop\)/.test(l)),
      logs[0].lines.join('\n'),
    );

    const late = make(1, 10000);
    await late.register();
    await assert.rejects(
      late.agree(),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          'this site came after hospital-0 had agreed on the data without it, and the agreement leaves out its class "cyst" (the agreed classes are "benign", "malignant"); ' +
            'category "east" of column "ward". Stop every site and start them over together (each with --fresh), within preprocess.deadlineMs of each other ' +
            '(raise it at every site), with every class declared in data.classes at every site',
    );

    const fits = make(2, 10000);
    await fits.register();
    const r2 = await fits.agree();
    assert.equal(r2.adopted, true);
    assert.deepEqual(r2.included, [net.ids[0]]);
    assert.deepEqual(r2.agreed, r0.agreed, 'the agreement the first site trains on');
    const said = logs[2].lines.find((l) => l.startsWith('preprocessing: this site came after hospital-0 had agreed and takes their agreement: '));
    assert.ok(said, logs[2].lines.join('\n'));
    assert.match(said, /this site lacks column "bmi": its rows read as missing there/);
    assert.match(
      said,
      new RegExp(
        `inputs are standardized with the statistics of "hospital-0" \\(${r0.agreed.numRows} training rows\\), without this site's own ${datas[2].split.train.length}$`,
      ),
    );
    // It encodes with the agreed layout: bmi read as missing at every row.
    const enc = encodeSiteData(datas[2], r2.agreed, 'federated').dataset;
    assert.deepEqual(enc.featureNames, r0.agreed.featureNames);
    for (const a of [first, late, fits]) await a.close();
  });

  it("a site's own summary that cannot be shared is its own error, named by the site's name, before it serves anything", async () => {
    const net = await network(1);
    nets = net.nodes;
    const d = await loadSiteData({ dataset: 'breast-cancer', seed: 1, testFraction: 0.2 });
    const st = siteStatement(d, net.ids[0]);
    st.summary.stats.sumSq[4] = Infinity;
    assert.throws(
      () => new SchemaAgreement(net.nodes[0], { members: net.members, statement: st, deadlineMs: 1000, maxBytes: 1 << 20, logger: silentLogger }),
      (e: Error) =>
        e instanceof DataError &&
        e.message ===
          'this site\'s own data cannot be summarized for the others: summary from site "hospital-0" is invalid: stats.sumSq holds a value that is not a finite number',
    );
    // Named by selfName when the members do not name it.
    assert.throws(
      () =>
        new SchemaAgreement(net.nodes[0], {
          members: [{ peerId: net.ids[0], addrs: [] }],
          selfName: 'clinic',
          statement: st,
          deadlineMs: 1000,
          maxBytes: 1 << 20,
          logger: silentLogger,
        }),
      /summary from site "clinic" is invalid/,
    );
  });

  it('bad responses (not JSON, too large, wrong shape, inconsistent, another sender) are dropped with a log line and counted', async () => {
    const net = await network(2);
    nets = net.nodes;
    const [honest, evil] = net.nodes;
    const d = await loadSiteData({ dataset: 'breast-cancer', seed: 1, testFraction: 0.2 });
    const good = siteStatement(d, net.ids[1]);
    const answers: (Uint8Array | string)[] = [
      'not json {',
      JSON.stringify({ format: 1, statement: good, padding: 'x'.repeat(70000) }),
      JSON.stringify({ format: 1, statement: { ...good, summary: { ...good.summary, stats: { ...good.summary.stats, sum: ['a'] } } } }),
      JSON.stringify({ format: 1, statement: { ...good, summary: { ...good.summary, numRows: good.summary.numRows + 1 } } }),
      JSON.stringify({ format: 1, statement: as(good, net.ids[0]) }),
    ];
    let k = 0;
    await evil.handle(PREPROCESS_PROTOCOL, async (stream) => {
      await readFrames(stream, 1, 1024, AbortSignal.timeout(5000));
      const a = answers[k++ % answers.length];
      await writeFrames(stream, [typeof a === 'string' ? Buffer.from(a) : a]).catch(() => {});
    });
    const log = recorder();
    const agreement = new SchemaAgreement(honest, {
      members: net.members,
      statement: siteStatement(d, net.ids[0]),
      deadlineMs: 4000,
      maxBytes: 64 * 1024,
      logger: log,
      retryMs: 100,
    });
    await agreement.register();
    const t0 = Date.now();
    const r = await agreement.agree();
    assert.ok(Date.now() - t0 < 15000, 'bounded by the deadline');
    for (const reason of ['bad-json', 'too-large', 'bad-schema', 'invalid-summary', 'sender-mismatch'] as const) {
      assert.ok((agreement.dropped[reason] ?? 0) >= 1, `${reason}: ${JSON.stringify(agreement.dropped)}`);
      assert.equal(log.lines.filter((l) => l.includes(`: ${reason} (`)).length, 1, `one log line for ${reason}`);
    }
    assert.deepEqual(r.included, [net.ids[0]]);
    assert.deepEqual(r.missing, [net.ids[1]]);
    assert.ok(log.lines.some((l) => /no statement from hospital-1 within 4 s; agreeing without them/.test(l)));
  });
});
