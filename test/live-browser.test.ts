/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The live view in a real browser: Debian's chromium (`apt-get install
 * chromium`; .ci/run installs it) driven by puppeteer-core. A 3-site
 * consortium of processes over TCP with `simulate --ui`; hostile names shown
 * as text; tabs that close leave no stream open.
 *
 * `DFLMOE_SCREENSHOT=docs/live-view.png npx mocha test/live-browser.test.ts`
 * also writes the README's screenshot.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import type { ChildProcess } from 'node:child_process';
import type { Browser, Page } from 'puppeteer-core';
import { StatusBoard, gateWeights, silentLogger, simulate, type StatusSnapshot } from '@dflmoe/core/internal';
import { LiveServer } from '@dflmoe/live';
import { freePort, startProcess, waitExit } from '@dflmoe/cli/internal';
import { until } from './helpers.js';
import { newPage, sharedChromium } from './browser.js';

function getJson(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(JSON.parse(body)));
    });
    req.on('error', reject);
    req.end();
  });
}

function status(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Rows of the sites table: site key, round and state. */
const rows = (page: Page) =>
  page.$$eval('#overview tbody tr[data-site]', (trs) =>
    trs.map((tr) => ({
      site: (tr as HTMLElement).dataset.site!,
      round: Number((tr as HTMLElement).dataset.round),
      state: (tr as HTMLElement).dataset.state!,
    })),
  );

describe('live view in a browser', function () {
  this.timeout(240000);
  const shared = sharedChromium();
  let browser: Browser;
  before(async () => {
    browser = await shared();
  });

  let sim: ChildProcess | undefined;
  afterEach(async () => {
    // Ctrl-C's signal: the run stops its site processes and exits.
    if (sim && sim.exitCode === null) {
      sim.kill('SIGTERM');
      await waitExit(sim, 20000);
    }
    sim = undefined;
  });

  it('shows a 3-site consortium over TCP live: sites, rounds, accuracy, gate heatmap, members; a wrong token gets 401; the final state stays', async () => {
    const port = await freePort();
    const token = 'browser-test-token-0123456789';
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-live-tcp-'));
    sim = startProcess(
      [
        ...'simulate --dataset breast-cancer --peers 3 --rounds 12 --algorithms dflmoe --transport tcp --quiet'.split(' '),
        '--ui',
        `127.0.0.1:${port}`,
        '--ui-token',
        token,
        '--out',
        out,
      ],
      join(out, 'simulate.log'),
      { DFLMOE_LOG_LEVEL: 'warn' },
    );
    const exited = new Promise<number | null>((resolve) => sim!.once('exit', (code) => resolve(code)));
    const base = `http://127.0.0.1:${port}`;
    let up = false;
    await until(
      'the live view',
      () => {
        void status(`${base}/api/status?token=${token}`).then((s) => (up = s === 200));
        return up;
      },
      60000,
    );
    // Wrong or missing token: 401, also for the page in a browser.
    assert.equal(await status(`${base}/api/status?token=wrong-token-wrong-token`), 401);
    assert.equal(await status(`${base}/api/events`), 401);
    const denied = await browser.newPage();
    const res = await denied.goto(`${base}/?token=not-the-token-at-all`);
    assert.equal(res!.status(), 401);
    assert.equal(await denied.evaluate(() => document.body.innerText.trim()), 'unauthorized');
    await denied.close();

    const { page, errors } = await newPage(browser, { console: true });
    await page.setViewport({ width: 1400, height: 1000 });
    await page.goto(`${base}/?token=${token}`);
    // The page keeps the token and takes it out of the address bar.
    assert.equal(await page.evaluate(() => location.search), '');
    await page.waitForFunction(
      () => {
        const trs = [...document.querySelectorAll<HTMLElement>('#overview tbody tr[data-site]')];
        return trs.length === 3 && Math.max(...trs.map((tr) => Number(tr.dataset.round))) >= 2;
      },
      { timeout: 120000, polling: 200 },
    );
    const r = await rows(page);
    assert.deepEqual(r.map((x) => x.site).sort(), ['dflmoe/site-0', 'dflmoe/site-1', 'dflmoe/site-2']);
    // Live: rounds go on arriving after the first view.
    const seen = Math.max(...r.map((x) => x.round));
    await page.waitForFunction(
      (n: number) => [...document.querySelectorAll<HTMLElement>('#overview tbody tr[data-site]')].some((tr) => Number(tr.dataset.round) > n),
      { timeout: 120000, polling: 200 },
      seen,
    );
    // The accuracy chart has a line per site with a point per round; the gate heatmap has cells.
    const points = await page.$$eval('#accuracy svg.accuracy-chart g.series', (gs) => gs.map((g) => Number(g.getAttribute('data-points'))));
    assert.equal(points.length, 3);
    assert.ok(
      points.every((p) => p >= 2),
      `points per site ${points}`,
    );
    assert.ok(await page.$$eval('#accuracy path.line', (ps) => ps.every((p) => (p.getAttribute('d') ?? '').includes('L'))));
    const cells = await page.$$eval('[data-card]', (cards) => cards.map((c) => c.querySelectorAll('svg.gate-heatmap rect.cell').length));
    assert.equal(cells.length, 3);
    assert.ok(
      cells.every((n) => n >= 3 * 2),
      `heatmap cells per site ${cells}`,
    );
    // Members: each site's two others, connected.
    const members = await page.$$eval('[data-card]', (cards) => cards.map((c) => [...c.querySelectorAll('tr[data-member]')].map((tr) => tr.textContent)));
    assert.ok(
      members.every((m) => m.length === 2 && m.every((t) => t!.includes('connected'))),
      JSON.stringify(members),
    );
    assert.match(await page.$eval('#conn', (e) => e.textContent!), /^live$/);
    // Each site process serves its own view (ui.listen in its config, on loopback): one site, as dflmoe peer --ui does.
    const site0 = JSON.parse(readFileSync(join(out, 'consortium', 'dflmoe', 'site-0.json'), 'utf8')) as { ui: { listen: string } };
    const own = (await getJson(`http://${site0.ui.listen}/api/status`)) as StatusSnapshot;
    assert.deepEqual(
      own.sites.map((x) => [x.id, x.algorithm, x.members.map((m) => m.id)]),
      [['site-0', 'dflmoe', ['site-1', 'site-2']]],
    );
    if (process.env.DFLMOE_SCREENSHOT) {
      await page.waitForFunction(
        () => [...document.querySelectorAll<HTMLElement>('#overview tbody tr[data-site]')].every((tr) => Number(tr.dataset.round) >= 8),
        { timeout: 120000, polling: 200 },
      );
      await page.screenshot({ path: process.env.DFLMOE_SCREENSHOT, fullPage: true });
    }
    // The run ends and its process exits: the page still shows the final state.
    assert.equal(await exited, 0, 'simulate exits cleanly');
    await page.waitForFunction(() => /final state/.test(document.getElementById('conn')!.textContent!), { timeout: 30000, polling: 200 });
    const final = await rows(page);
    assert.equal(final.length, 3);
    assert.ok(
      final.every((x) => x.round === 12 && x.state === 'done'),
      JSON.stringify(final),
    );
    assert.deepEqual(
      errors.filter((e) => !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)),
      [],
    );
    await page.close();
  });

  it('shows hostile names as text: no markup from a site or member runs; epsilon against the budget', async () => {
    const board = new StatusBoard({ epsilonBudget: 4 });
    const evil = '<img src=x onerror="window.__pwned=1">';
    const evilMember = '</td><script>window.__pwned=2</script>';
    const feed = board.site({ id: evil, algorithm: 'dflmoe"><b>x</b>', rounds: 3, members: [{ id: evilMember }] });
    feed.members([{ id: evilMember, connected: true, strikes: 4 }]);
    feed.round({
      round: 1,
      accuracy: 0.5,
      loss: 1,
      seconds: 0.1,
      bytesSent: 1,
      bytesReceived: 1,
      gate: gateWeights(evil, [{ peer: evilMember, gateWeight: 0.3 }]),
      epsilon: 1,
      delta: 1e-5,
    });
    feed.state('failed', '<svg onload="window.__pwned=3">');
    const server = await LiveServer.start({ board, listen: '127.0.0.1:0' });
    const page = await browser.newPage();
    try {
      await page.goto(server.url);
      await page.waitForSelector('[data-card] svg.gate-heatmap rect.cell');
      assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
      assert.equal(await page.$$eval('img, b, script:not(body > script)', (es) => es.length), 0);
      const text = await page.evaluate(() => document.body.innerText);
      for (const s of [evil, evilMember, '<svg onload="window.__pwned=3">']) assert.ok(text.includes(s), `shows ${s} as text`);
      assert.equal(await page.$$eval('#overview tbody tr', (trs) => trs.length), 1);
      // Epsilon 1 of a budget of 4: a quarter of the gauge.
      assert.match(text, /ε 1\.00 of 4/);
      assert.equal(await page.$eval('svg.gauge rect.gauge-fill', (r) => r.getAttribute('width')), '50.0');
    } finally {
      await page.close();
      await server.close();
    }
  });

  it("sites holding the digits as images and as tables: each card sums its gate's weights by the experts' modality, round by round", async () => {
    const board = new StatusBoard();
    await simulate(
      { dataset: 'digits', peers: 4, rounds: 2, partition: 'iid', siteModalities: ['image', 'table'], algorithms: ['dflmoe'], seed: 2 },
      { logger: silentLogger, status: board },
    );
    // And a multi-task site with experts across tasks: what each task's read-out leans on, by round.
    const xt = board.site({ id: 'lab', algorithm: 'dflmoe-tasks', rounds: 2 });
    const reliance = [
      { 'high <- digit': 0.7, 'high <- parity': 0.3 },
      { 'high <- digit': 0.9, 'high <- parity': 0.1 },
    ];
    reliance.forEach((g, i) => xt.round({ round: i + 1, accuracy: 0.9, loss: 0.3, seconds: 0.1, bytesSent: 1, bytesReceived: 1, reliance: g }));
    const server = await LiveServer.start({ board, listen: '127.0.0.1:0' });
    const page = await browser.newPage();
    try {
      await page.goto(server.url);
      await page.waitForSelector('[data-card] svg[aria-label$="by modality"] rect.cell');
      const across = await page.$$eval('[data-card="dflmoe-tasks/lab"] svg[aria-label$="across tasks"] rect.cell title', (ts) => ts.map((t) => t.textContent!));
      assert.deepEqual(across.sort(), [
        'high <- digit, round 1: 70.0%',
        'high <- digit, round 2: 90.0%',
        'high <- parity, round 1: 30.0%',
        'high <- parity, round 2: 10.0%',
      ]);
      const drawn = await page.$$eval('[data-card^="dflmoe/"]', (cards) =>
        cards.map((c) => ({
          card: (c as HTMLElement).dataset.card!,
          cells: [...c.querySelectorAll('svg[aria-label$="by modality"] rect.cell title')].map((t) => t.textContent!),
        })),
      );
      assert.equal(drawn.length, 4);
      const statuses = board.snapshot().sites;
      for (const d of drawn) {
        const s = statuses.find((x) => `${x.algorithm}/${x.id}` === d.card)!;
        const formOf = (e: string) => statuses.find((x) => x.id === e)!.modality;
        // Two rows (image, table) by two rounds, each the sum of that form's heads' weights.
        const want = ['image', 'table'].flatMap((m) =>
          [1, 2].map((r) => {
            const w = Object.entries(s.gate[r - 1]!)
              .filter(([e]) => formOf(e) === m)
              .reduce((a, [, v]) => a + v, 0);
            return `${m}, round ${r}: ${(w * 100).toFixed(1)}%`;
          }),
        );
        assert.deepEqual([...d.cells].sort(), want.sort(), d.card);
      }
      assert.match(await page.$eval('[data-card="dflmoe/site-1"] h3 small', (e) => e.textContent!), /table/);
    } finally {
      await page.close();
      await server.close();
    }
  });

  it('two tabs hold two streams; closing them leaves none open', async () => {
    const board = new StatusBoard();
    board.site({ id: 'site-0', algorithm: 'local', rounds: 1 });
    const server = await LiveServer.start({ board, listen: '127.0.0.1:0' });
    try {
      const tabs = [await browser.newPage(), await browser.newPage()];
      for (const t of tabs) await t.goto(server.url);
      await until('two open streams', () => server.openStreams === 2, 10000);
      await tabs[0].close();
      await until('one open stream', () => server.openStreams === 1, 10000);
      // A tab that navigates away closes its stream too.
      await tabs[1].goto('about:blank');
      await until('no open stream', () => server.openStreams === 0, 10000);
      await tabs[1].close();
    } finally {
      await server.close();
    }
  });
});
