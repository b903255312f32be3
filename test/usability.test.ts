/**
 * What a new user meets at the command line (issue #21): help text, option
 * values, config errors, data errors at prediction. Each test spawns the CLI
 * the way a user runs it, or calls the function behind it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { ConfigError, createSiteNode, generateIdentity, parsePeerConfig, prepareSiteData, runPeer, saveIdentity, watchConnections } from '@dflmoe/p2p/internal';
import { loadSite, silentLogger, type SimulationResults } from '@dflmoe/core';
import { loadDataset } from '@dflmoe/data';
import { cli, cliAsync, majorityRate, simulateHelp, until, cliCommand, type CliResult } from './helpers.js';
import { imageFolder, patientsCsv, tmpDir, writeText } from './fixtures/sites.js';

/** A one-site, one-round local-only site trained by `dflmoe peer` on a patient table; returns its out directory. */
function trainedSite(dir: string): string {
  writeText(join(dir, 'a.csv'), patientsCsv({ seed: 3, rows: 120, missing: 0.1 }));
  const key = cli(['keygen', '--out', join(dir, 'a.key')]);
  assert.equal(key.status, 0, key.stderr);
  writeFileSync(
    join(dir, 'a.json'),
    JSON.stringify({
      name: 'hospital-a',
      key: 'a.key',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      members: [],
      algorithm: 'local',
      data: { dataset: 'csv:a.csv', labelColumn: 'diagnosis', drop: ['id'] },
      model: { body: 'mlp:8', featureDim: 8 },
      rounds: 1,
      lingerMs: 0,
      out: 'site-a',
    }),
  );
  const r = cli(['peer', '--config', join(dir, 'a.json')]);
  assert.equal(r.status, 0, r.stderr);
  return join(dir, 'site-a');
}

/** The one-line error a failed command printed. */
function oneLineError(r: CliResult): string {
  assert.equal(r.status, 1, `exit code; stdout ${r.stdout}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, no stack trace:\n${r.stderr}`);
  assert.match(lines[0], /^dflmoe: error: /);
  return lines[0];
}

const TINY = ['--dataset', 'synthetic:classes=3,dim=4,samples=150', '--peers', '2', '--rounds', '1', '--body', 'mlp:4', '--feature-dim', '4', '--quiet'];

describe('command line usability', function () {
  this.timeout(120000);

  it('help shows defaults and choices as a user types them, not as JSON', () => {
    const r = simulateHelp();
    assert.equal(r.status, 0, r.stderr);
    const help = r.stdout.replace(/\s+/g, ' ');
    assert.match(help, /\(default: dflmoe,fedavg,local\)/);
    assert.match(help, /a linear head \(default: none\)/);
    assert.match(help, /\(choices: adam \| sgd \| momentum, default: adam\)/);
    assert.match(help, /csv: the label column \(default: label\)/);
    assert.doesNotMatch(help, /default: \[|default: "/, 'no JSON in the help');
  });

  it('output into a closed pipe (dflmoe simulate --help | head -2) ends the program quietly', async () => {
    const child = spawn(process.execPath, [...cliCommand(), 'simulate', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader has gone before the first write
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    assert.equal(stderr, '', 'no EPIPE stack trace');
    assert.equal(code, 0);
  });

  it('--max-experts 0 means all experts, as the README says (and all still does)', async () => {
    // Independent runs: at once.
    const outs = ['0', 'all'].map((k) => ({ k, out: tmpDir('dflmoe-k-') }));
    const [runs, bad] = await Promise.all([
      Promise.all(outs.map(({ k, out }) => cliAsync(['simulate', ...TINY, '--algorithms', 'dflmoe', '--max-experts', k, '--out', out]))),
      cliAsync(['simulate', ...TINY, '--max-experts', '-1']),
    ]);
    outs.forEach(({ out }, i) => {
      assert.equal(runs[i].status, 0, runs[i].stderr);
      assert.equal(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')).config.maxExperts, 0);
    });
    assert.match(bad.stderr, /'--max-experts <n>' argument '-1' is invalid\. Too small: expected number to be >=0/);
    assert.match(readFileSync('README.md', 'utf8'), /--max-experts <k>` \(dFLMoE; default 32, `0` or `all` for no limit\)/);
  });

  it('--standardize federated is the name the site config uses; global still reads as it', async () => {
    // Independent runs: at once.
    const outs = ['federated', 'global'].map((how) => ({ how, out: tmpDir('dflmoe-std-') }));
    const [runs, bad] = await Promise.all([
      Promise.all(outs.map(({ how, out }) => cliAsync(['simulate', ...TINY, '--algorithms', 'local', '--standardize', how, '--out', out]))),
      cliAsync(['simulate', ...TINY, '--standardize', 'pooled']),
    ]);
    outs.forEach(({ out }, i) => {
      assert.equal(runs[i].status, 0, runs[i].stderr);
      assert.equal(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')).config.standardize, 'federated');
    });
    assert.match(simulateHelp().stdout.replace(/\s+/g, ' '), /--standardize <how> .*\(choices: federated \| local, default: federated\)/);
    assert.match(bad.stderr, /Allowed choices are federated, local/);
  });

  it('a site config with a bad body spec is refused when the config is read, saying what a body looks like', () => {
    const base = { key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], data: { dataset: 'breast-cancer' }, rounds: 3, out: 'o' };
    assert.throws(
      () => parsePeerConfig({ ...base, model: { body: 'mlp:abc' } }, 'site.json'),
      (e: Error) => e instanceof ConfigError && /^config site\.json: model\.body: Bad body "mlp:abc": sizes must be positive integers/.test(e.message),
    );
    assert.throws(() => parsePeerConfig({ ...base, model: { body: 'transformer' } }, 'site.json'), /model\.body: Unknown body "transformer": use mlp/);
    assert.equal(parsePeerConfig({ ...base, model: { body: 'cnn:8x16:k5' } }, 'site.json').model.body, 'cnn:8x16:k5');
    // dflmoe peer stops at once, before any network or data.
    const dir = tmpDir('dflmoe-body-');
    writeFileSync(join(dir, 'site.json'), JSON.stringify({ ...base, model: { body: 'mlp:abc' } }));
    assert.match(oneLineError(cli(['peer', '--config', join(dir, 'site.json')])), /model\.body: Bad body "mlp:abc"/);
  });

  it('a misspelled config key says which key it meant, in one line', () => {
    const base = { key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], data: { dataset: 'breast-cancer' }, out: 'o' };
    const msg = (raw: unknown) => {
      try {
        parsePeerConfig(raw, 'site.json');
      } catch (e) {
        return (e as Error).message;
      }
      assert.fail('accepted');
    };
    assert.equal(msg({ ...base, rouds: 3 }), 'config site.json: unknown key "rouds" (did you mean "rounds"?)');
    assert.equal(msg({ ...base, rounds: 3, dflmoe: { alpah: 0.5 } }), 'config site.json: dflmoe: unknown key "alpah" (did you mean "alpha"?)');
    assert.equal(
      msg({ ...base, rounds: 3, data: { dataset: 'x', lableColumn: 'y' } }),
      'config site.json: data: unknown key "lableColumn" (did you mean "labelColumn"?)',
    );
    assert.equal(msg({ ...base, rounds: 3, members: [{ peerID: 'x' }] }), 'config site.json: members.0: unknown key "peerID" (did you mean "peerId"?)');
    assert.equal(msg({ ...base, rounds: 3, zzzzzz: 1 }), 'config site.json: unknown key "zzzzzz"', 'no suggestion when nothing is close');
    // Several problems: one line each.
    assert.equal(
      msg({ ...base, rounds: 0, rouds: 3 }),
      'config site.json is not valid:\n  rounds: Too small: expected number to be >=1\n  unknown key "rouds" (did you mean "rounds"?)',
    );
    const dir = tmpDir('dflmoe-key-');
    writeFileSync(join(dir, 'site.json'), JSON.stringify({ ...base, rouds: 3 }));
    assert.match(oneLineError(cli(['peer', '--config', join(dir, 'site.json')])), /unknown key "rouds" \(did you mean "rounds"\?\)$/);
  });

  it('a site config whose own key is not among its members stops at once, naming the peer ID to add', async () => {
    const dir = tmpDir('dflmoe-self-');
    const [self, other] = await Promise.all([generateIdentity(), generateIdentity()]);
    saveIdentity(join(dir, 'a.key'), self.privateKey, true);
    const cfg = parsePeerConfig(
      {
        key: 'a.key',
        listen: ['/ip4/127.0.0.1/tcp/0'],
        members: [{ peerId: other.peerId, addrs: ['/ip4/127.0.0.1/tcp/1'], name: 'hospital-b' }],
        data: { dataset: 'breast-cancer' },
        rounds: 1,
        out: 'o',
      },
      join(dir, 'a.json'),
      dir,
    );
    // A ConfigError: the command prints its message as its one line (see the test above), before any node starts.
    await assert.rejects(
      runPeer(cfg, { logger: silentLogger }),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message ===
          `this site's key ${join(dir, 'a.key')} is peer ${self.peerId}, which is not among "members": add {"peerId": "${self.peerId}"} ` +
            '(with the addresses the others reach it at) to "members" in every site\'s config (members refuse a site they do not list), or use the key of a member',
    );
    assert.ok(!existsSync(join(dir, 'o')), 'nothing was started or written');
  });

  it('a site config without the label column names data.labelColumn; simulate names --label-column', async () => {
    const dir = tmpDir('dflmoe-label-');
    writeText(join(dir, 'a.csv'), patientsCsv({ seed: 1, rows: 40 }));
    const cfg = parsePeerConfig(
      { key: 'a.key', listen: ['/ip4/127.0.0.1/tcp/1'], data: { dataset: 'csv:a.csv' }, rounds: 1, out: 'o' },
      join(dir, 'site.json'),
      dir,
    );
    await assert.rejects(prepareSiteData(cfg, { selfId: 'x', logger: silentLogger, resume: false }), (e: Error) => {
      assert.match(
        e.message,
        /no label column "label"\. Columns are: id, age, bmi, smoker, sex, ward, diagnosis\. Name the label column with data\.labelColumn in the site config\.$/,
      );
      return true;
    });
    const r = cli(['simulate', '--dataset', `csv:${join(dir, 'a.csv')}`, '--peers', '2', '--rounds', '1', '--quiet', '--out', join(dir, 'sim')]);
    assert.match(oneLineError(r), /Name the label column with --label-column\.$/);
  });

  describe('predict: text in a numeric column', () => {
    let dir: string;
    let site: string;
    before(() => {
      dir = tmpDir('dflmoe-invalid-');
      site = trainedSite(dir);
    });

    const fresh = (age: string) => {
      const csv = patientsCsv({ seed: 5, rows: 6, unlabelled: true }).split('\n');
      const cols = csv[0].split(',');
      const row = csv[3].split(',');
      row[cols.indexOf('age')] = age;
      csv[3] = row.join(',');
      return writeText(join(dir, `fresh-${age || 'empty'}.csv`), csv.join('\n'));
    };

    it('a cell that is not a number is refused, naming the line and the column', async () => {
      const file = fresh('sixty');
      const runs = await Promise.all(['predict', 'evaluate'].map((cmd) => cliAsync([cmd, '--site', site, '--input', file])));
      for (const r of runs) {
        const line = oneLineError(r);
        assert.match(line, /fresh-sixty\.csv, line 4: column "age" holds "sixty", which is not a number .*--invalid-as-missing/);
      }
    });

    it('--invalid-as-missing reads it as missing, as NA would be, and marks the row', async () => {
      const [sixty, naFile] = [fresh('sixty'), fresh('NA')];
      const [r, na] = await Promise.all([
        cliAsync(['predict', '--site', site, '--input', sixty, '--invalid-as-missing']),
        cliAsync(['predict', '--site', site, '--input', naFile]),
      ]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /read as missing, not numbers: 1 row: line 4 \(age="sixty"\)/);
      const rows = parse(r.stdout, { columns: true }) as Record<string, string>[];
      assert.deepEqual(
        rows.map((x) => x['read as missing']),
        ['', '', 'age="sixty"', '', '', ''],
      );
      assert.equal(na.status, 0, na.stderr);
      const naRows = parse(na.stdout, { columns: true }) as Record<string, string>[];
      assert.equal(naRows[2]['read as missing'], undefined, 'no marks column without the option');
      assert.deepEqual(
        rows.map(({ 'read as missing': _, ...rest }) => rest),
        naRows,
      );
    });

    it('rows with a ward no site trained on, or with every cell missing, are flagged in a last column and on stderr', () => {
      const csv = patientsCsv({ seed: 5, rows: 3, unlabelled: true }).trim().split('\n');
      const cols = csv[0].split(',');
      const row = csv[2].split(',');
      row[cols.indexOf('ward')] = 'Z';
      const empty = cols.map((c) => (c === 'id' ? 'q9' : 'NA'));
      const file = writeText(join(dir, 'flagged.csv'), [...csv.slice(0, 2), row.join(','), csv[3], empty.join(',')].join('\n') + '\n');
      const r = cli(['predict', '--site', site, '--input', file]);
      assert.equal(r.status, 0, r.stderr);
      const rows = parse(r.stdout, { columns: true }) as Record<string, string>[];
      assert.deepEqual(
        rows.map((x) => x.flags),
        ['', 'unseen ward="Z"', '', 'every feature missing'],
      );
      assert.match(
        r.stderr,
        /flagged \(a category no site trained on encodes as all zeros; missing cells take the pooled means\): 2 rows: line 3 \(unseen ward="Z"\), line 5 \(every feature missing\)/,
      );
    });

    it('--output and keygen --out into a directory that does not exist: one line naming it, before any work', async () => {
      const [predict, keygen] = await Promise.all([
        cliAsync(['predict', '--site', site, '--input', fresh('61'), '--output', '/no/dir/p.csv']),
        cliAsync(['keygen', '--out', '/no/dir/k']),
      ]);
      const line = oneLineError(predict);
      assert.match(line, /--output \/no\/dir\/p\.csv: the directory \/no\/dir does not exist \(create it first: mkdir -p \/no\/dir\)$/);
      assert.match(oneLineError(keygen), /--out \/no\/dir\/k: the directory \/no\/dir does not exist/);
    });
  });

  describe('simulate, in one process and over TCP', function () {
    this.timeout(240000);
    const results = (dir: string) => JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as SimulationResults;
    const pooled = (r: SimulationResults, alg: 'local' | 'dflmoe') => r.algorithms[alg]!.peers.map((p) => p.pooledAccuracy);

    it('--dataset images:<dir> runs on both transports, and --help lists it', async () => {
      const dir = tmpDir('dflmoe-simimg-');
      const images = await imageFolder(join(dir, 'images'), { seed: 4, perClass: 24 });
      const args = [
        'simulate',
        '--dataset',
        `images:${images}`,
        '--peers',
        '2',
        '--partition',
        'iid',
        '--rounds',
        '2',
        '--algorithms',
        'local',
        '--body',
        'mlp:8',
        '--feature-dim',
        '8',
        '--quiet',
      ];
      // Both transports at once (separate outs).
      const [mem, tcp] = await Promise.all([
        cliAsync([...args, '--out', join(dir, 'mem')]),
        cliAsync([...args, '--transport', 'tcp', '--deadline', '20000', '--out', join(dir, 'tcp')]),
      ]);
      assert.equal(mem.status, 0, mem.stderr);
      assert.equal(tcp.status, 0, tcp.stderr);
      const [m, t] = [results(join(dir, 'mem')), results(join(dir, 'tcp'))];
      assert.deepEqual(m.dataset.sampleShape, [12, 12, 1]);
      assert.equal(m.dataset.samples, 48);
      assert.deepEqual(
        t.algorithms.local!.peers.map((p) => p.accuracy),
        m.algorithms.local!.peers.map((p) => p.accuracy),
        'the same sites train the same models',
      );
      assert.match(simulateHelp().stdout.replace(/\s+/g, ' '), /--dataset <name> .*\| images:<dir>/);
    });

    describe('a consortium of processes (simulate --transport tcp)', () => {
      let dir: string;
      let tcp: CliResult;
      let mem: CliResult;
      const args = [
        'simulate',
        '--dataset',
        'breast-cancer',
        '--peers',
        '3',
        '--partition',
        'iid',
        '--rounds',
        '2',
        '--algorithms',
        'local,dflmoe',
        '--seed',
        '2',
        '--quiet',
      ];
      before(async () => {
        dir = tmpDir('dflmoe-simtcp-');
        // Without --quiet: the per-round progress lines too. The same run in one process (the pooled test compares them) at the same time.
        [tcp, mem] = await Promise.all([
          cliAsync([...args.filter((a) => a !== '--quiet'), '--transport', 'tcp', '--deadline', '20000', '--out', join(dir, 'tcp')]),
          cliAsync([...args, '--out', join(dir, 'mem')]),
        ]);
        assert.equal(tcp.status, 0, tcp.stderr);
      });

      it("per-round lines: the consortium's bytes of each round (not '-'), each site's bytes so far, experts only for dFLMoE", () => {
        const progress = tcp.stderr.split('\n').filter((l) => /^dflmoe round \d\/2 /.test(l));
        assert.equal(progress.length, 2, tcp.stderr);
        for (const l of progress) assert.match(l, /accuracy [\d.]+% \(min [\d.]+%\) {2}[\d.]+ (B|KiB|MiB) {2}[\d.]+ s\/round$/);
        const log = (alg: string) =>
          readFileSync(join(dir, 'tcp', 'consortium', alg, 'site-0.log'), 'utf8')
            .split('\n')
            .filter((l) => l.startsWith('round '));
        assert.match(log('dflmoe')[1], /^round 2\/2 {2}accuracy [\d.]+% {2}experts 2 {2}so far in [\d.]+ KiB out [\d.]+ KiB {2}[\d.]+ s$/);
        assert.match(log('local')[1], /^round 2\/2 {2}accuracy [\d.]+% {2}so far in 0 B out 0 B {2}[\d.]+ s$/);
      });

      it("prints the pooled test column too: each site's saved model on every site's test rows, as in memory", () => {
        assert.match(tcp.stdout, /algorithm +mean acc +std +min +weighted +pooled test +bytes sent/);
        assert.match(tcp.stdout, /\nlocal +[\d.]+% +[\d.]+% +[\d.]+% +[\d.]+% +[\d.]+% /);
        assert.equal(mem.status, 0, mem.stderr);
        const [t, m] = [results(join(dir, 'tcp')), results(join(dir, 'mem'))];
        // local-only trains the same models in both, so the pooled figures agree exactly.
        assert.deepEqual(pooled(t, 'local'), pooled(m, 'local'));
        // Above what always answering the most common class scores on breast-cancer (62.7%), not just above a coin.
        const majority = majorityRate(loadDataset('breast-cancer').labels);
        assert.ok(majority > 0.6 && majority < 0.65, `majority ${majority}`);
        assert.ok(
          pooled(t, 'local').every((p) => p! > majority && p! <= 1),
          `local pooled ${pooled(t, 'local')}`,
        );
        assert.ok(
          pooled(t, 'dflmoe').every((p) => p !== undefined && p > majority && p <= 1),
          `dflmoe pooled ${pooled(t, 'dflmoe')}`,
        );
        assert.ok(Math.abs(t.algorithms.dflmoe!.pooledAccuracy!.mean - pooled(t, 'dflmoe').reduce((a, b) => a! + b!, 0)! / 3) < 1e-12);
      });

      it("dflmoe report on the sites' directories draws the charts the run's report draws from its results.json", async () => {
        const charts = (html: string) =>
          Object.fromEntries(
            [...html.matchAll(/<figure data-chart="([^"]+)">[\s\S]*?<script type="application\/json" class="chart-data">([\s\S]*?)<\/script>/g)].map((m) => [
              m[1],
              (JSON.parse(m[2]) as { algorithm?: string }[]).filter((x) => x.algorithm === undefined || x.algorithm === 'dflmoe'),
            ]),
          );
        const [run, sites] = await Promise.all([
          cliAsync(['report', join(dir, 'tcp')]),
          cliAsync(['report', join(dir, 'tcp', 'consortium', 'dflmoe'), '--output', join(dir, 'sites.html')]),
        ]);
        assert.equal(run.status, 0, run.stderr);
        assert.equal(sites.status, 0, sites.stderr);
        const [a, b] = [charts(readFileSync(join(dir, 'tcp', 'report.html'), 'utf8')), charts(readFileSync(join(dir, 'sites.html'), 'utf8'))];
        assert.deepEqual(Object.keys(b), ['accuracy-per-round', 'accuracy-per-peer', 'bytes-per-round', 'gate-weights']);
        // Per site and per round the same numbers (the run's seconds include starting the processes, so the wall time is left out).
        for (const id of Object.keys(b)) assert.deepEqual(b[id], a[id], id);
        assert.match(readFileSync(join(dir, 'sites.html'), 'utf8'), /<caption>Sites<\/caption>[\s\S]*<td>site-0<\/td><td>dflmoe<\/td>/);
      });

      it('dflmoe audit and predictFile name the experts as site.json does, as dflmoe predict does', async () => {
        const site = join(dir, 'tcp', 'consortium', 'dflmoe', 'site-0');
        const desc = JSON.parse(readFileSync(join(site, 'site.json'), 'utf8')) as { peerId: string; names: Record<string, string> };
        // The same site with the last line of its trail removed (made first, so that both audits run at once).
        const cut = join(dir, 'cut-site');
        cpSync(site, cut, { recursive: true });
        const lines = readFileSync(join(cut, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean);
        writeFileSync(join(cut, 'audit.jsonl'), lines.slice(0, -1).join('\n') + '\n');
        const [audit, cutAudit] = await Promise.all([cliAsync(['audit', site]), cliAsync(['audit', cut, '--quiet'])]);
        assert.equal(audit.status, 0, audit.stderr);
        assert.match(audit.stdout, /round 2 +mixed \[site-[12] v\d [0-9a-f]{8}, site-[12] v\d [0-9a-f]{8}\]/);
        assert.match(audit.stdout, new RegExp(`audit trail of site-0 \\(${desc.peerId}\\): 3 entries \\(2 rounds\\); hash chain and signatures verified`));
        assert.match(audit.stdout, /its end matches the checkpoint and results\.json/);
        // The cut trail: the chain still holds, the end does not.
        assert.equal(cutAudit.status, 1, cutAudit.stdout);
        assert.match(cutAudit.stderr, /TAMPERED line 2 \(round 1\): the trail ends at round 1 but the newest checkpoint .* is of round 2/);
        assert.match(cutAudit.stderr, /results\.json seals 3 lines, the trail has 2/);
        const trained = await loadSite(site);
        try {
          const { predictions: p } = await trained.predictFile('packages/data/datasets/breast-cancer.csv');
          assert.deepEqual([...p.experts].sort(), ['site-0', 'site-1', 'site-2']);
          assert.equal(p.experts[0], 'site-0', 'own head first');
          assert.deepEqual(
            p.expertIds!.map((id) => desc.names[id]),
            p.experts,
          );
        } finally {
          trained.dispose();
        }
      });
    });
  });

  it('a member is logged "connected to" once, though both sites dialled (an inbound and an outbound connection)', async () => {
    const ids = await Promise.all([generateIdentity(), generateIdentity()]);
    const allow = ids.map((i) => i.peerId);
    const [a, b] = await Promise.all(ids.map((i) => createSiteNode({ privateKey: i.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow })));
    const logs = [[], []] as { level: string; msg: string }[][];
    const logger = (k: number) => ({
      debug: (msg: string) => logs[k].push({ level: 'debug', msg }),
      info: (msg: string) => logs[k].push({ level: 'info', msg }),
      warn: (msg: string) => logs[k].push({ level: 'warn', msg }),
      error: (msg: string) => logs[k].push({ level: 'error', msg }),
    });
    try {
      await Promise.all([a.start(), b.start()]);
      watchConnections(a, logger(0), new Map([[ids[1].peerId, 'site-b']]));
      watchConnections(b, logger(1), new Map([[ids[0].peerId, 'site-a']]));
      await a.dial(b.getMultiaddrs()[0]);
      await b.dial(a.getMultiaddrs()[0], { force: true });
      await until('two connections each way', () => a.getConnections(b.peerId).length === 2 && b.getConnections(a.peerId).length === 2, 20000);
      const connected = (k: number, level: string) => logs[k].filter((l) => l.level === level && l.msg.startsWith('connected to ')).length;
      assert.deepEqual([connected(0, 'info'), connected(1, 'info')], [1, 1], JSON.stringify(logs));
      assert.deepEqual([connected(0, 'debug'), connected(1, 'debug')], [1, 1], 'the second connection, at debug level');
      assert.match(logs[0].find((l) => l.level === 'info')!.msg, /^connected to site-b \(.*\) direct outbound at /);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
