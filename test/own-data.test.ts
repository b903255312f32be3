/**
 * Real sites over TCP on 127.0.0.1, one process each: every site holds its
 * own CSV file (not a share of one dataset), the members agree on the schema
 * over libp2p, train, and `dflmoe predict` / `dflmoe evaluate` use a site's
 * model afterwards. Also: local-only and FedAvg sites leave a model that
 * loads, and a simulated site process reads only its share. Every wait is
 * bounded; processes are killed in afterEach.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { DEFAULT_SIMULATION, loadSite, type SimulationConfig } from '@dflmoe/core';
import { loadSiteData, readShare } from '@dflmoe/data/internal';
import { runConsortium, startProcess, waitExit, writeConsortium } from '@dflmoe/cli/internal';
import { generateIdentity, loadIdentity, loadPeerConfig, parsePeerConfig, saveIdentity, type PeerRunResult } from '@dflmoe/p2p';
import { readJsonLines, type RoundLine } from '@dflmoe/p2p/internal';
import { waitNoticeMs } from '@dflmoe/core/internal';
import { cli, cliAsync, until } from './helpers.js';
import { PATIENT_HEADER, imageFolder, namedSites, patientsCsv, tmpDir, writeSiteConfigs, writeText } from './fixtures/sites.js';

const results = (out: string) => JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as PeerRunResult;

describe('sites with their own data over TCP (multi-process)', function () {
  this.timeout(300000);
  let procs: ChildProcess[] = [];
  afterEach(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    procs = [];
  });

  /** Three hospitals, each with its own CSV; configs written as a user would. */
  async function hospitals(dir: string, o: { rounds: number; extra?: { name: string; csv: string } }) {
    const files = [
      { name: 'hospital-a', csv: patientsCsv({ seed: 11, rows: 160, missing: 0.1, wards: ['north', 'south'] }) },
      {
        name: 'hospital-b',
        csv: patientsCsv({ seed: 12, rows: 120, missing: 0, wards: ['south', 'east'], ageShift: 6, header: [...PATIENT_HEADER].reverse() }),
      },
      { name: 'hospital-c', csv: patientsCsv({ seed: 13, rows: 200, missing: 0.2, wards: ['north', 'west', 'east'], ageShift: -6 }) },
      ...(o.extra ? [o.extra] : []),
    ];
    const sites = await namedSites(dir, files, (f) => writeText(join(dir, `${f.name}.csv`), f.csv));
    writeSiteConfigs(dir, sites, (s) => ({
      data: { dataset: `csv:${s.name}.csv`, labelColumn: 'diagnosis', drop: ['id'] },
      model: { body: 'mlp:32', featureDim: 16 },
      train: { learningRate: 0.01 },
      rounds: o.rounds,
      round: { deadlineMs: 10000 },
      preprocess: { deadlineMs: 60000 },
      lingerMs: 1500,
    }));
    return sites;
  }

  it('3 sites, 3 different CSV files: agree, train, then dflmoe predict writes one row per input matching the in-process predictions exactly', async () => {
    const dir = tmpDir('dflmoe-own-');
    const sites = await hospitals(dir, { rounds: 5 });
    const ps = sites.map((s) => startProcess(['peer', '--config', s.config], `${s.out}.log`));
    procs.push(...ps);
    assert.deepEqual(
      await Promise.all(ps.map((p) => waitExit(p, 180000))),
      [0, 0, 0],
      sites.map((s) => readFileSync(`${s.out}.log`, 'utf8').slice(-1500)).join('\n'),
    );

    // One agreement everywhere, from the three sites' summaries.
    const pre = sites.map((s) => JSON.parse(readFileSync(join(s.out, 'preprocessing.json'), 'utf8')));
    for (const p of pre) {
      assert.deepEqual(p.agreed, pre[0].agreed);
      assert.deepEqual(p.included, sites.map((s) => s.peerId).sort());
    }
    const names: string[] = pre[0].agreed.featureNames;
    for (const f of ['age', 'age_missing', 'bmi', 'smoker=current', 'ward=north', 'ward=west', 'sex=M']) assert.ok(names.includes(f), f);
    for (const s of sites) {
      const r = results(s.out);
      assert.equal(r.rounds.length, 5);
      assert.equal(r.rounds.at(-1)!.experts.length, 2, `${s.name} holds both other heads`);
      assert.ok(r.accuracy > 0.75, `${s.name}: accuracy ${r.accuracy}`);
    }

    // Fresh patients, without a diagnosis, columns in another order, an extra column.
    const freshCsv = patientsCsv({
      seed: 99,
      rows: 40,
      missing: 0.15,
      wards: ['north', 'unknown-ward'],
      unlabelled: true,
      header: ['sex', 'ward', 'id', 'bmi', 'smoker', 'age', 'diagnosis'],
    });
    const fresh = writeText(join(dir, 'fresh.csv'), freshCsv);
    const site = sites[0];
    const out = join(dir, 'predictions.csv');
    // The site's test rows, for dflmoe evaluate below.
    const data = await loadSiteData({ dataset: `csv:${join(dir, `${site.name}.csv`)}`, labelColumn: 'diagnosis', drop: ['id'], seed: 1, testFraction: 0.2 });
    assert.equal(data.kind, 'table');
    const lines = readFileSync(join(dir, `${site.name}.csv`), 'utf8').split('\n');
    const testRows = data.kind === 'table' ? Array.from(data.split.test, (row) => lines[data.table.lines[row] - 1]) : [];
    const testCsv = writeText(join(dir, 'test-rows.csv'), [lines[0], ...testRows].join('\n') + '\n');
    // The four commands read the site and write nothing it reads: at once.
    const [r, printed, ev, text] = await Promise.all([
      cliAsync(['predict', '--site', site.out, '--input', fresh, '--output', out]),
      cliAsync(['predict', '--site', site.out, '--input', fresh]),
      cliAsync(['evaluate', '--site', site.out, '--input', testCsv, '--json']),
      cliAsync(['evaluate', '--site', site.out, '--input', testCsv]),
    ]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /wrote 40 predictions to .*predictions\.csv \(hospital-a \(dflmoe\), checkpoint of round 5\)/);
    const rows = parse(readFileSync(out, 'utf8'), { columns: true }) as Record<string, string>[];
    assert.equal(rows.length, 40, 'one row per input');
    // The own head first, then the received experts.
    const columns = Object.keys(rows[0]);
    assert.deepEqual(columns.slice(0, 5), ['input', 'predicted', 'prob:benign', 'prob:malignant', 'gate:hospital-a']);
    // Then the received experts' gates, and the flags column (rows with unseen categories or no features).
    assert.deepEqual(columns.slice(5).sort(), ['flags', 'gate:hospital-b', 'gate:hospital-c']);
    for (const row of rows) {
      const p = Number(row['prob:benign']) + Number(row['prob:malignant']);
      assert.ok(Math.abs(p - 1) < 1e-5, `probabilities sum to ${p}`);
      const g = ['a', 'b', 'c'].reduce((acc, k) => acc + Number(row[`gate:hospital-${k}`]), 0);
      assert.ok(Math.abs(g - 1) < 1e-5, `gate weights sum to ${g}`);
    }
    // The same model in this process: identical numbers.
    const loaded = await loadSite(site.out);
    try {
      const { inputs, predictions: mine } = await loaded.predictFile(fresh);
      assert.deepEqual(
        rows.map((x) => x.input),
        inputs.ids,
      );
      rows.forEach((row, i) => {
        assert.equal(row.predicted, mine.classNames[mine.predicted[i]]);
        mine.classNames.forEach((c, k) => assert.equal(Number(row[`prob:${c}`]), mine.probabilities[i * 2 + k], `row ${i} ${c}`));
        mine.experts.forEach((e, k) => assert.equal(Number(row[`gate:${loaded.nameOf(e)}`]), mine.gateWeights[i * 3 + k]));
      });
      assert.equal(loaded.round, 5);
      assert.deepEqual(
        mine.experts.map((e) => `gate:${loaded.nameOf(e)}`),
        columns.slice(4).filter((c) => c !== 'flags'),
      );
    } finally {
      loaded.dispose();
    }
    // Without --output the rows are printed.
    assert.equal(printed.status, 0, printed.stderr);
    assert.equal(printed.stdout, readFileSync(out, 'utf8'));

    // evaluate on the site's own test rows gives the accuracy the site reported, exactly.
    assert.equal(ev.status, 0, ev.stderr);
    const e = JSON.parse(ev.stdout);
    assert.equal(e.samples, results(site.out).testSamples);
    assert.equal(e.accuracy, results(site.out).accuracy);
    assert.equal(
      e.confusion.flat().reduce((a: number, b: number) => a + b, 0),
      e.samples,
    );
    assert.match(text.stdout, /accuracy [\d.]+% on \d+ samples/);
    assert.match(text.stdout, /confusion matrix \(rows: true class, columns: predicted\)/);
  });

  it('a member whose CSV lacks a column joins: the column reads as missing there, every member says so, and all four train on one agreement', async () => {
    const dir = tmpDir('dflmoe-own-');
    const sites = await hospitals(dir, {
      rounds: 2,
      extra: { name: 'hospital-x', csv: patientsCsv({ seed: 14, rows: 80, header: PATIENT_HEADER.filter((h) => h !== 'bmi') }) },
    });
    const ps = sites.map((s) => startProcess(['peer', '--config', s.config], `${s.out}.log`));
    procs.push(...ps);
    const codes = await Promise.all(ps.map((p) => waitExit(p, 180000)));
    assert.deepEqual(codes, [0, 0, 0, 0], sites.map((s) => readFileSync(`${s.out}.log`, 'utf8').slice(-1500)).join('\n'));
    const pre = sites.map((s) => JSON.parse(readFileSync(join(s.out, 'preprocessing.json'), 'utf8')));
    for (const [i, s] of sites.entries()) {
      assert.deepEqual(pre[i].included, sites.map((x) => x.peerId).sort(), `${s.name} agreed with all four`);
      assert.deepEqual(pre[i].excluded, []);
      assert.equal(pre[i].adopted, false);
      assert.deepEqual(pre[i].agreed, pre[0].agreed);
      assert.match(
        readFileSync(`${s.out}.log`, 'utf8'),
        /preprocessing: site "hospital-x" lacks column "bmi": its rows read as missing there \(imputed with the others' pooled mean, with the indicator "bmi_missing"\)/,
      );
      const r = results(s.out);
      assert.equal(r.rounds.length, 2);
      assert.equal(r.rounds.at(-1)!.experts.length, 3, `${s.name} holds the three other heads`);
    }
    assert.ok(pre[0].agreed.featureNames.includes('bmi_missing'));
  });

  it('sites started after the first one agreed alone (past its preprocess.deadlineMs) stop in one line naming the wards its agreement leaves out, and how to start over; the first says whom it waits for, and its rounds wait for none of them', async () => {
    const dir = tmpDir('dflmoe-late-');
    // hospital-d is a member that never starts.
    const sites = await hospitals(dir, { rounds: 1, extra: { name: 'hospital-d', csv: patientsCsv({ seed: 14, rows: 40 }) } });
    const first = JSON.parse(readFileSync(sites[0].config, 'utf8'));
    const PREPROCESS_MS = 3000;
    // Its rounds wait for nobody: it stays (lingers) until the late sites have come and gone, then is stopped with SIGINT.
    writeFileSync(sites[0].config, JSON.stringify({ ...first, preprocess: { deadlineMs: PREPROCESS_MS }, lingerMs: 120000 }));
    // At log level info, whatever an earlier test set: the notices of whom it waits for are info lines.
    const a = startProcess(['peer', '--config', sites[0].config], `${sites[0].out}.log`, { DFLMOE_LOG_LEVEL: 'info' });
    procs.push(a);
    await until('hospital-a agreeing alone', () => existsSync(join(sites[0].out, 'preprocessing.json')), 120000);
    const late = sites.slice(1, 3).map((s) => startProcess(['peer', '--config', s.config], `${s.out}.log`));
    procs.push(...late);
    assert.deepEqual(await Promise.all(late.map((p) => waitExit(p, 120000))), [1, 1]);
    const fix = 'Stop every site and start them over together (each with --fresh), within preprocess.deadlineMs of each other (raise it at every site)';
    const wards = { 'hospital-b': 'category "east"', 'hospital-c': 'categories "east", "west"' };
    for (const s of sites.slice(1, 3)) {
      const log = readFileSync(`${s.out}.log`, 'utf8');
      assert.doesNotMatch(log, /\n\s+at /, 'no stack trace');
      assert.equal(
        log.trim().split('\n').at(-1),
        `dflmoe: error: this site came after hospital-a had agreed on the data without it, and the agreement leaves out its ${wards[s.name as keyof typeof wards]} of column "ward". ${fix}`,
      );
      assert.ok(!existsSync(join(s.out, 'results.json')), `${s.name} did not train`);
    }
    a.kill('SIGINT');
    assert.equal(await waitExit(a, 120000), 0);
    const pre = JSON.parse(readFileSync(join(sites[0].out, 'preprocessing.json'), 'utf8'));
    assert.deepEqual(pre.included, [sites[0].peerId]);
    assert.deepEqual(
      [...pre.missing].sort(),
      sites
        .slice(1)
        .map((s) => s.peerId)
        .sort(),
    );
    // While it waited it said, every second or so, for whom (by name); it agreed with nobody, so its round waited for nobody
    // (not its 10 s deadline for hospital-d, which never came, nor for the late sites until they left).
    const logA = readFileSync(`${sites[0].out}.log`, 'utf8');
    const notices = logA.split('\n').filter((l) => l.includes('preprocessing: waiting for the statements of'));
    assert.ok(notices.length >= 1 && notices.length <= Math.ceil(PREPROCESS_MS / waitNoticeMs(PREPROCESS_MS)), logA);
    for (const l of notices) assert.match(l, /preprocessing: waiting for the statements of hospital-b, hospital-c, hospital-d \([\d.]+ s of 3 s left\)$/);
    const [round] = readJsonLines<RoundLine>(join(sites[0].out, 'metrics.jsonl'));
    assert.ok(round.waitSeconds < first.round.deadlineMs / 1000 / 4, `round 1 waited ${round.waitSeconds.toFixed(1)} s`);
    assert.doesNotMatch(logA, /heads of round 1: waiting for/);
  });

  for (const alg of ['local', 'fedavg'] as const) {
    it(`${alg} sites leave a model that loads: predictions on their own test rows give their reported accuracy`, async () => {
      const sim: SimulationConfig = { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', peers: 2, rounds: 2, partition: 'iid', seed: 5, algorithms: [alg] };
      const dir = tmpDir(`dflmoe-${alg}-`);
      const f = await writeConsortium({ dir, algorithm: alg, sim, deadlineMs: 10000, lingerMs: 1000 });
      const cfg = loadPeerConfig(f.sites[0].config);
      assert.deepEqual(cfg.data.simulate, { peers: 2, index: 0, partition: 'iid', minSize: 10, share: join(dir, 'site-0.share') });
      assert.equal(cfg.data.standardize, 'federated');
      const ps = [
        ...(f.server ? [startProcess(['server', '--config', f.server.config], `${f.server.out}.log`)] : []),
        ...f.sites.map((s) => startProcess(['peer', '--config', s.config], `${s.out}.log`)),
      ];
      procs.push(...ps);
      const codes = await Promise.all(ps.map((p) => waitExit(p, 120000)));
      assert.ok(
        codes.every((c) => c === 0),
        `exit codes ${codes}: ${[...(f.server ? [f.server] : []), ...f.sites].map((s) => readFileSync(`${s.out}.log`, 'utf8').slice(-800)).join('\n')}`,
      );
      // New rows of the built-in table, by column name: dflmoe predict runs while this process loads the sites.
      const csv = readFileSync(new URL('../packages/data/datasets/breast-cancer.csv', import.meta.url), 'utf8')
        .split('\n')
        .slice(0, 11)
        .join('\n');
      const input = writeText(join(dir, 'new.csv'), csv);
      const predicting = cliAsync(['predict', '--site', f.sites[1].out, '--input', input]);
      for (const s of f.sites) {
        const share = readShare(join(dir, `${s.config.match(/site-\d+/)![0]}.share`));
        const d = share.dataset.sampleShape[0];
        const rows = share.split.test;
        const x = new Float32Array(rows.length * d);
        rows.forEach((r, i) => x.set(share.dataset.features.subarray(r * d, (r + 1) * d), i * d));
        const site = await loadSite(s.out);
        try {
          assert.equal(site.algorithm, alg);
          const e = site.evaluate(
            x,
            Array.from(rows, (r) => share.dataset.labels[r]),
          );
          assert.equal(e.accuracy, results(s.out).accuracy);
          assert.deepEqual(site.predict(x).experts, [], 'no gate');
        } finally {
          site.dispose();
        }
      }
      const r = await predicting;
      assert.equal(r.status, 0, r.stderr);
      const rows = parse(r.stdout, { columns: true }) as Record<string, string>[];
      assert.equal(rows.length, 10);
      assert.deepEqual(Object.keys(rows[0]), ['input', 'predicted', 'prob:benign', 'prob:malignant']);
    });
  }

  it('2 sites with image folders train a CNN; dflmoe predict reads a folder of new images and dflmoe evaluate a folder per class', async () => {
    const dir = tmpDir('dflmoe-img-sites-');
    const sites = await namedSites(
      dir,
      ['lab-a', 'lab-b'].map((name) => ({ name })),
      (s, i) => imageFolder(join(dir, `${s.name}-images`), { seed: 31 + i, perClass: 20, size: 12 }),
    );
    writeSiteConfigs(dir, sites, (s) => ({
      data: { dataset: `images:${s.name}-images`, testFraction: 0.25 },
      model: { body: 'cnn:4', featureDim: 8 },
      train: { learningRate: 0.01 },
      rounds: 4,
      round: { deadlineMs: 10000 },
      preprocess: { deadlineMs: 60000 },
      lingerMs: 1500,
    }));
    const ps = sites.map((s) => startProcess(['peer', '--config', s.config], `${s.out}.log`));
    procs.push(...ps);
    const codes = await Promise.all(ps.map((p) => waitExit(p, 180000)));
    assert.deepEqual(codes, [0, 0], sites.map((s) => readFileSync(`${s.out}.log`, 'utf8').slice(-1500)).join('\n'));
    // New images of another size (resized to the agreed 12x12), in a flat folder: one row each.
    const fresh = await imageFolder(join(dir, 'new'), { seed: 40, perClass: 3, size: 20 });
    const flat = join(dir, 'flat');
    mkdirSync(flat);
    for (const cls of ['blob', 'stripes']) for (const f of readdirSync(join(fresh, cls))) copyFileSync(join(fresh, cls, f), join(flat, `${cls}-${f}`));
    const [r, e] = await Promise.all([
      cliAsync(['predict', '--site', sites[0].out, '--input', flat]),
      cliAsync(['evaluate', '--site', sites[1].out, '--input', fresh, '--json']),
    ]);
    assert.equal(r.status, 0, r.stderr);
    const rows = parse(r.stdout, { columns: true }) as Record<string, string>[];
    assert.equal(rows.length, 6);
    assert.deepEqual(Object.keys(rows[0]).slice(0, 4), ['input', 'predicted', 'prob:blob', 'prob:stripes']);
    const right = rows.filter((row) => basename(row.input).startsWith(row.predicted)).length;
    assert.ok(right >= 5, `${right} of 6 new images predicted right: ${JSON.stringify(rows.map((row) => [row.input, row.predicted]))}`);
    assert.equal(e.status, 0, e.stderr);
    const ev = JSON.parse(e.stdout) as { accuracy: number; samples: number; classNames: string[] };
    assert.equal(ev.samples, 6);
    assert.deepEqual(ev.classNames, ['blob', 'stripes']);
    assert.ok(ev.accuracy >= 5 / 6, `accuracy ${ev.accuracy}`);
  });

  it("a local consortium whose site fails stops at once, with that site's error in the message (nobody waits out deadlines)", async () => {
    const sim: SimulationConfig = { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', peers: 3, rounds: 3, partition: 'iid', seed: 5, algorithms: ['fedavg'] };
    const dir = tmpDir('dflmoe-fail-');
    const f = await writeConsortium({ dir, algorithm: 'fedavg', sim, deadlineMs: 60000, lingerMs: 1000 });
    rmSync(join(dir, 'site-2.share')); // site 2 cannot read its data
    const t0 = Date.now();
    await assert.rejects(runConsortium(f, 300000), (e: Error) => {
      assert.match(e.message, /site-2 \(exit 1\): .*site-2\.share/);
      assert.doesNotMatch(e.message, /site-0|site-1|server/, 'the processes stopped because of it are not reported as failures');
      return true;
    });
    assert.ok(Date.now() - t0 < 30000, `stopped after ${Date.now() - t0} ms`);
  });

  it('a site resumed with other data or another key in the same out refuses in one line naming what changed; --fresh starts over; one class is a clear error', async () => {
    const dir = tmpDir('dflmoe-resume-');
    writeText(join(dir, 'a.csv'), patientsCsv({ seed: 21, rows: 60 }));
    writeText(join(dir, 'b.csv'), patientsCsv({ seed: 22, rows: 60 }));
    for (const k of ['a', 'b']) saveIdentity(join(dir, `${k}.key`), (await generateIdentity()).privateKey, true);
    const config = (o: { key?: string; csv?: string }) => {
      const file = join(dir, 'site.json');
      writeFileSync(
        file,
        JSON.stringify({
          name: 'clinic',
          key: o.key ?? 'a.key',
          listen: ['/ip4/127.0.0.1/tcp/0'],
          algorithm: 'local',
          rounds: 2,
          out: 'out',
          lingerMs: 0,
          data: { dataset: `csv:${o.csv ?? 'a.csv'}`, labelColumn: 'diagnosis', drop: ['id'] },
          model: { body: 'mlp:16', featureDim: 8 },
        }),
      );
      return ['peer', '--config', file, '--quiet'];
    };
    const out = join(dir, 'out');
    const first = cli(config({}));
    assert.equal(first.status, 0, first.stderr);
    const refusal = (r: ReturnType<typeof cli>) => {
      assert.equal(r.status, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      return r.stderr.trim().split('\n').at(-1);
    };
    assert.equal(
      refusal(cli(config({ csv: 'b.csv' }))),
      `dflmoe: error: ${out} holds a run made from other data (csv:${join(dir, 'a.csv')}; this config reads csv:${join(dir, 'b.csv')}): rerun with --fresh to start over there, or set another out`,
    );
    const b = loadPeerConfig(config({ key: 'b.key' })[2]);
    const aId = JSON.parse(readFileSync(join(out, 'preprocessing.json'), 'utf8')).from.peerId;
    assert.equal(
      refusal(cli(config({ key: 'b.key' }))),
      `dflmoe: error: ${out} holds a run made with another key (peer ${aId}; this config's key is peer ${loadIdentity(b.key).peerId}): rerun with --fresh to start over there, or set another out`,
    );
    // The same file with other rows.
    writeText(join(dir, 'a.csv'), patientsCsv({ seed: 23, rows: 60 }));
    assert.match(
      refusal(cli(config({})))!,
      new RegExp(`holds a run made from other rows of csv:${join(dir, 'a.csv')}, or other data settings: rerun with --fresh`),
    );
    // Unchanged data resumes (nothing left to run).
    writeText(join(dir, 'a.csv'), patientsCsv({ seed: 21, rows: 60 }));
    assert.equal(cli(config({})).status, 0);
    // --fresh starts over with the other data and key.
    const fresh = cli([...config({ key: 'b.key', csv: 'b.csv' }), '--fresh']);
    assert.equal(fresh.status, 0, fresh.stderr);
    const pre = JSON.parse(readFileSync(join(out, 'preprocessing.json'), 'utf8'));
    assert.equal(pre.from.dataset, `csv:${join(dir, 'b.csv')}`);
    assert.equal(results(out).rounds.length, 2);
    assert.equal(
      readFileSync(join(out, 'audit.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .every((l) => l.includes(pre.from.peerId)),
      true,
      "the audit trail is the new key's",
    );
    // Without a checkpoint to resume (checkpoints off) a rerun starts over, but not under another key in the same out.
    writeFileSync(
      join(dir, 'site.json'),
      JSON.stringify({ ...JSON.parse(readFileSync(join(dir, 'site.json'), 'utf8')), key: 'a.key', checkpoint: { enabled: false } }),
    );
    assert.match(
      refusal(cli(['peer', '--config', join(dir, 'site.json'), '--quiet']))!,
      /holds a run made with another key \(peer .*; this config's key is peer .*\): rerun with --fresh/,
    );
    // Every row of one class: one line, not the tensor library's oneHot error.
    writeText(join(dir, 'a.csv'), patientsCsv({ seed: 21, rows: 60 }).replace(/,malignant$/gm, ',benign'));
    assert.equal(
      refusal(cli([...config({}), '--fresh'])),
      'dflmoe: error: the label column holds only the class "benign" at this site: a classifier needs at least two classes (check data.labelColumn, or declare every class in data.classes)',
    );
  });

  it('clear errors: not a site directory, an old config (with how to migrate it)', () => {
    const r = cli(['predict', '--site', tmpDir(), '--input', 'x.csv']);
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /^dflmoe: error: .* is not a trained site's directory \(no site\.json\): pass the "out" directory of a site that ran dflmoe peer\n$/,
    );
    const old = {
      key: 'k',
      listen: ['/ip4/127.0.0.1/tcp/1'],
      rounds: 1,
      out: 'o',
      data: { dataset: 'fashion-mnist', peers: 10, index: 3, partition: 'dirichlet:0.1' },
    };
    assert.throws(
      () => parsePeerConfig(old, 'old.json'),
      /data.peers, data.index, data.partition are the simulator's partition mode and moved into data.simulate: write "data": \{"dataset": "fashion-mnist", "simulate": \{"peers":10,"index":3,"partition":"dirichlet:0.1"\}\}/,
    );
    assert.throws(
      () => parsePeerConfig({ ...old, data: { dataset: 'x', standardize: 'global' } }, 'old.json'),
      /"global" read every site's rows; write "federated"/,
    );
  });

  it('a listen port another program holds is one clear line naming the address, and ports handed out are below the ephemeral range', async () => {
    const sim: SimulationConfig = { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', peers: 2, rounds: 1, partition: 'iid', seed: 5, algorithms: ['local'] };
    const dir = tmpDir('dflmoe-port-');
    const f = await writeConsortium({ dir, algorithm: 'local', sim, deadlineMs: 5000, lingerMs: 0 });
    const lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    for (const s of f.sites) assert.ok(s.port < lo, `port ${s.port} below ${lo}`);
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(f.sites[0].port, '127.0.0.1', () => r()));
    try {
      const r = cli(['peer', '--config', f.sites[0].config]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `dflmoe: error: cannot listen on /ip4/127.0.0.1/tcp/${f.sites[0].port}: the port is in use by another program; change "listen" in the config`,
        ),
      );
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    } finally {
      holder.close();
    }
  });
});
