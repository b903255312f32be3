/// <reference lib="dom" />
/**
 * The run report (report.html) as a person sees it: opened in Debian's
 * chromium from disk with the network cut off, so that it must render from
 * what the file holds (no CDN): every chart drawn at a visible size, the
 * summary table with shared-body dFLMoE and its body bytes, no page errors.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Page } from 'puppeteer-core';
import { cli } from './helpers.js';
import { newPage, sharedChromium } from './browser.js';

/** `dflmoe simulate <args> --quiet` into a fresh directory, which it returns. */
function simulateInto(args: string, prefix: string): string {
  const out = mkdtempSync(join(tmpdir(), prefix));
  const r = cli(['simulate', ...args.split(' '), '--quiet', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  return out;
}

describe('run report in a browser', function () {
  this.timeout(180000);
  const browser = sharedChromium();

  /**
   * Open `out`/report.html offline: its charts (size and marks), its first table, and what `more` reads from the page;
   * no page errors, no request that left the file.
   */
  async function openReport<T>(out: string, more?: (page: Page) => Promise<T>) {
    const { page, errors } = await newPage(await browser());
    try {
      const outside: string[] = [];
      await page.setRequestInterception(true);
      page.on('request', (req) => {
        if (req.url().startsWith('file:')) void req.continue();
        else {
          outside.push(req.url());
          void req.abort();
        }
      });
      await page.goto(pathToFileURL(join(out, 'report.html')).href, { waitUntil: 'load' });
      const charts = await page.$$eval('figure[data-chart]', (fs) =>
        fs.map((f) => {
          const svg = f.querySelector('svg');
          const box = svg?.getBoundingClientRect();
          return {
            id: (f as HTMLElement).dataset.chart!,
            width: box?.width ?? 0,
            height: box?.height ?? 0,
            marks: svg?.querySelectorAll('path, rect, line').length ?? 0,
          };
        }),
      );
      const table = await page.$$eval(
        'table',
        (ts) =>
          ts.map((t) => ({
            head: [...t.querySelectorAll('th')].map((th) => th.textContent),
            rows: [...t.querySelectorAll('tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)),
          }))[0],
      );
      for (const c of charts) assert.ok(c.width > 100 && c.height > 50 && c.marks > 5, `chart ${c.id} is not drawn: ${JSON.stringify(c)}`);
      assert.deepEqual(errors, []);
      assert.deepEqual(outside, [], 'the report asks for nothing outside its file');
      const extra = await more?.(page);
      return { charts, table, extra };
    } finally {
      await page.close();
    }
  }

  it('report.html of a shared-body run renders offline: charts drawn, the table names dFLMoE with shared bodies and its body bytes', async () => {
    const out = simulateInto(
      '--dataset breast-cancer --peers 3 --rounds 3 --partition iid --algorithms dflmoe,fedrep-p2p,local --share-body',
      'dflmoe-report-browser-',
    );
    const { charts, table } = await openReport(out);
    assert.ok(charts.length >= 2, `charts: ${JSON.stringify(charts)}`);
    assert.ok(table.head.includes('of which bodies'), `header ${table.head}`);
    const shared = table.rows.find((row) => row[0] === 'dflmoe (shared bodies)');
    assert.ok(shared, `rows ${JSON.stringify(table.rows)}`);
    const bodiesCol = table.head.indexOf('of which bodies');
    assert.match(shared[bodiesCol]!, /KiB|MiB/);
    assert.equal(table.rows.find((row) => row[0] === 'local')![bodiesCol], '-', 'local-only shares no body');
  });

  it("report.html of a run whose sites hold the digits as images and as tables: the heatmap of what each site's gate uses draws a cell per site and modality", async () => {
    const out = simulateInto('--dataset digits --peers 4 --rounds 2 --modalities image,table --algorithms dflmoe,local', 'dflmoe-report-browser-modal-');
    // Vega draws each cell as a path in the rect mark's group; the text layer prints each weight.
    const { charts, extra } = await openReport(out, (page) =>
      page.$eval('figure[data-chart="gate-use"] svg', (svg) => ({
        cells: svg.querySelectorAll('g.mark-rect.role-mark path').length,
        labels: [...svg.querySelectorAll('g.mark-text.role-mark text')].map((t) => t.textContent),
      })),
    );
    assert.ok(
      charts.some((c) => c.id === 'gate-use'),
      `charts ${charts.map((c) => c.id)}`,
    );
    const { cells, labels } = extra!;
    assert.equal(cells, 4 * 2, 'a cell per site and modality');
    assert.equal(labels.length, 4 * 2);
    assert.ok(
      labels.every((l) => /^[01]\.\d\d$/.test(l ?? '')),
      `weights printed: ${labels}`,
    );
  });

  it("report.html of a multi-task run: each task's charts drawn, a table row per task", async () => {
    const out = simulateInto(
      '--dataset digits-tasks --peers 3 --rounds 2 --algorithms dflmoe,local --site-tasks digit;value,digit --train-per-site 40',
      'dflmoe-report-browser-mt-',
    );
    const { charts, table } = await openReport(out);
    const ids = charts.map((c) => c.id);
    for (const id of ['accuracy-per-round', 'accuracy-per-peer', 'accuracy-per-round:value', 'accuracy-per-peer:value'])
      assert.ok(ids.includes(id), `charts ${ids}`);
    assert.deepEqual(table.head.slice(0, 4), ['algorithm', 'task', 'metric', 'mean']);
    assert.deepEqual(
      table.rows.map((row) => row.slice(1, 3)),
      [
        ['digit', 'accuracy'],
        ['value', 'rmse'],
        ['digit', 'accuracy'],
        ['value', 'rmse'],
      ],
    );
  });
});
