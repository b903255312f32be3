import { silentLogger } from '@dflmoe/core';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simulate } from '@dflmoe/core';
import { gateUse, summaryTable, writeReport, writeRunReport, type GateUse } from '@dflmoe/cli/internal';
import { backend, cli } from './helpers.js';

const quiet = silentLogger;

describe('HTML report', () => {
  before(backend);

  it('holds one SVG chart per figure, built from the run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-report-'));
    const r = await simulate({ dataset: 'breast-cancer', peers: 3, rounds: 3, partition: 'iid', seed: 2 }, { logger: quiet });
    writeFileSync(join(dir, 'results.json'), JSON.stringify(r));
    const html = readFileSync(await writeRunReport(dir), 'utf8');
    const figures = [...html.matchAll(/<figure data-chart="([^"]+)">([\s\S]*?)<\/figure>/g)];
    assert.deepEqual(
      figures.map((f) => f[1]),
      ['accuracy-per-round', 'accuracy-per-peer', 'bytes-per-round', 'gate-weights'],
    );
    for (const [, id, body] of figures) {
      assert.equal((body.match(/<svg[\s>]/g) ?? []).length, 1, `${id}: one svg`);
      assert.ok(/<path|<rect|<line/.test(body), `${id}: the svg draws marks`);
    }
    const data = (id: string) =>
      JSON.parse(/<script type="application\/json" class="chart-data">([\s\S]*?)<\/script>/.exec(figures.find((f) => f[1] === id)![2])![1]);
    // Accuracy per round: every algorithm's every round, with the run's numbers.
    const rows = data('accuracy-per-round') as { algorithm: 'dflmoe' | 'fedavg' | 'local'; round: number; accuracy: number }[];
    assert.equal(rows.length, 9);
    for (const row of rows) assert.equal(row.accuracy, r.algorithms[row.algorithm]!.rounds[row.round - 1].accuracyMean);
    // Site names from the run appear on the per-site chart's axis.
    const perPeer = figures.find((f) => f[1] === 'accuracy-per-peer')![2];
    for (const p of r.algorithms.dflmoe!.peers) assert.ok(perPeer.includes(`>${p.id}<`), `axis label ${p.id}`);
    // The heatmap prints each gate weight of the run.
    const heat = figures.find((f) => f[1] === 'gate-weights')![2];
    for (const p of r.algorithms.dflmoe!.peers)
      for (const w of Object.values(p.gateWeights!)) assert.ok(heat.includes(`>${w.toFixed(2)}<`), `cell ${w.toFixed(2)}`);
    // Local-only sends no bytes, so it is absent from the bytes chart.
    assert.ok((data('bytes-per-round') as { algorithm: string }[]).every((x) => x.algorithm !== 'local'));
    assert.ok(!/https?:\/\/(?!www\.w3\.org|vega\.github\.io)/.test(html), 'nothing to fetch from the network');
  });

  it("charts what each site's gate uses by the experts' modality (sites holding the data as images and as tables), and by task (experts across tasks)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-report-modal-'));
    const r = await simulate(
      { dataset: 'digits', peers: 4, rounds: 2, partition: 'iid', siteModalities: ['image', 'table'], algorithms: ['dflmoe'], seed: 3 },
      { logger: quiet },
    );
    writeFileSync(join(dir, 'results.json'), JSON.stringify(r));
    const html = readFileSync(await writeRunReport(dir), 'utf8');
    const figure = /<figure data-chart="gate-use">([\s\S]*?)<\/figure>/.exec(html);
    assert.ok(figure, 'a gate-use heatmap');
    const cells = JSON.parse(/class="chart-data">([\s\S]*?)<\/script>/.exec(figure[1])![1]) as GateUse[];
    const peers = r.algorithms.dflmoe!.peers;
    assert.deepEqual(cells, gateUse(peers));
    for (const p of peers) {
      const mine = cells.filter((c) => c.site === p.id);
      assert.deepEqual(mine.map((c) => c.expert).sort(), ['image', 'table'], `${p.id}: a column per modality`);
      assert.ok(mine.every((c) => c.row === `${p.id} · label`));
      // Each column sums the gate weights of that form's heads (the own head's form holds it).
      for (const c of mine) {
        const heads = Object.entries(p.gateWeights!).filter(([id]) => peers.find((q) => q.id === id)!.modality === c.expert);
        assert.ok(Math.abs(c.weight - heads.reduce((a, [, w]) => a + w, 0)) < 1e-12, `${p.id} ${c.expert}`);
      }
      assert.ok(Math.abs(mine.reduce((a, c) => a + c.weight, 0) - 1) < 1e-5, 'the weights of a gate sum to 1');
    }
    for (const c of cells) assert.ok(figure[1].includes(`>${c.weight.toFixed(2)}<`), `cell ${c.row} / ${c.expert} printed`);
    // A cross-task read-out: a row per site and task, a column per other task; sites of one form and task give no heatmap.
    const cross = gateUse([{ id: 's0', tasks: {}, gateWeights: { 'high <- digit': 0.5, 'high <- parity': 0.25, 'parity <- digit': 0.75 } }]);
    assert.deepEqual(
      cross.map((c) => [c.row, c.expert, c.weight]),
      [
        ['s0 · high', 'digit', 0.5],
        ['s0 · high', 'parity', 0.25],
        ['s0 · parity', 'digit', 0.75],
      ],
    );
    assert.deepEqual(gateUse([{ id: 's0', tasks: { label: { kind: 'classification', testRows: 1 } }, gateWeights: { s0: 0.6, s1: 0.4 } }]), []);
  });

  it('a directory without results gives a clear error', async () => {
    await assert.rejects(
      writeRunReport(mkdtempSync(join(tmpdir(), 'dflmoe-empty-'))),
      /results\.json not found: report takes the directory a dflmoe simulate \(or bench\) run wrote, its --out/,
    );
    await assert.rejects(writeReport([mkdtempSync(join(tmpdir(), 'dflmoe-empty-'))]), /no results\.json of a run and no site directory/);
  });

  it("legends list only the algorithms that ran; the summary's bytes read as the console table's", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-report-'));
    const r = await simulate({ dataset: 'breast-cancer', peers: 3, rounds: 2, partition: 'iid', seed: 2, algorithms: ['dflmoe', 'local'] }, { logger: quiet });
    writeFileSync(join(dir, 'results.json'), JSON.stringify(r));
    const html = readFileSync(await writeRunReport(dir), 'utf8');
    const legends = [...html.matchAll(/aria-label="Symbol legend titled 'algorithm' [^"]* with \d+ values?: ([^"]+)"/g)].map((m) => m[1]);
    // Accuracy per round and per site: both algorithms; bytes: dflmoe only (local-only sends nothing).
    assert.deepEqual(legends, ['dflmoe, local', 'dflmoe, local', 'dflmoe']);
    const console = summaryTable(r).split('\n');
    const at = console[0].indexOf('bytes sent') + 'bytes sent'.length;
    const bytes = console
      .find((l) => l.startsWith('dflmoe'))!
      .slice(0, at)
      .trim()
      .split(/\s+/)
      .slice(-2)
      .join(' ');
    assert.match(bytes, /^[\d.]+ (B|KiB|MiB)$/);
    const summary = /<caption>Summary<\/caption>[\s\S]*?<tr><td>dflmoe<\/td>((?:<td>[^<]*<\/td>)+)<\/tr>/.exec(html);
    assert.ok(summary, 'the summary row of dflmoe');
    assert.equal([...summary[1].matchAll(/<td>([^<]*)<\/td>/g)][3][1], bytes);
  });

  it('report on a site that has not finished, or on a directory with neither a run nor sites, says what report takes (one line)', async () => {
    const site = mkdtempSync(join(tmpdir(), 'dflmoe-site-'));
    writeFileSync(join(site, 'site.json'), JSON.stringify({ format: 1, algorithm: 'local', peerId: '12D3KooW', names: {}, model: { body: 'mlp:8' } }));
    let r = cli(['report', site]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /results\.json is missing: the site has not finished its run \(report draws finished sites\)/);
    r = cli(['report', mkdtempSync(join(tmpdir(), 'dflmoe-nothing-'))]);
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /no results\.json of a run and no site directory \(with site\.json\): report takes the directory a dflmoe simulate \(or bench\) run wrote.*or the out directories of a consortium's sites/,
    );
  });
});
