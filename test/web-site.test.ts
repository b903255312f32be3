/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * A site in a browser tab (`dflmoe web`), in Debian's chromium driven by
 * puppeteer-core: two node sites (processes, TCP and WebSockets on
 * 127.0.0.1) and the tab form a consortium; the tab reads its CSV in the
 * page, takes part in federated preprocessing, trains 3 rounds and trades
 * heads with both node sites; its download is a site `dflmoe evaluate`
 * reads. Bad input gives a message that says what to fix. Every wait is
 * bounded; processes are killed at the end.
 *
 * `DFLMOE_SCREENSHOT=docs/browser-site.png npx mocha test/web-site.test.ts`
 * also writes the screenshot in docs/browser.md.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Page } from 'puppeteer-core';
import { freePort, startProcess, waitExit } from '@dflmoe/cli/internal';
import { generateIdentity, parsePeerConfig, saveIdentity, type PeerRunResult } from '@dflmoe/p2p';
import { serveWebApp, type WebAppServer } from '@dflmoe/web';
import { loadSite } from '@dflmoe/core';
import { cli, majorityRate, until } from './helpers.js';
import { fillJoin, openTab, runEnd, sharedChromium } from './browser.js';
import { imageFolder, patientsCsv, tmpDir, writeText } from './fixtures/sites.js';

const message = (page: Page) => page.$eval('#message', (m) => m.textContent ?? '');
/** The model, training and waits of the node sites that train 3 rounds with tabs. */
const NODE_SITE = {
  model: { body: 'mlp:32', featureDim: 16 },
  train: { learningRate: 0.01 },
  rounds: 3,
  round: { deadlineMs: 30000 },
  preprocess: { deadlineMs: 120000 },
  lingerMs: 5000,
};

describe('a site in a browser tab (dflmoe web)', function () {
  this.timeout(300000);
  let procs: ChildProcess[] = [];
  let web: WebAppServer | undefined;
  const browser = sharedChromium();
  after(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    procs = [];
    await web?.close();
  });

  it('joins two node sites from a tab: CSV read in the page, 3 rounds, heads both ways, no row sent, a download that dflmoe evaluate reads', async () => {
    const dir = tmpDir('dflmoe-web-');
    web = await serveWebApp({ listen: '127.0.0.1:0' });
    // Every HTTP request the page makes, with its body: it may fetch the app's files, nothing else.
    const requests: { url: string; method: string; body?: string }[] = [];
    const sockets: string[] = [];
    // The page says so when no member can be reached after 3 s (15 s by default).
    const {
      page,
      peerId: tabId,
      errors,
    } = await openTab(await browser(), `${web.url}?unreachable=3000`, async (page) => {
      page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), body: r.postData() }));
      const cdp = await page.createCDPSession();
      await cdp.send('Network.enable');
      cdp.on('Network.webSocketCreated', (e: { url: string }) => sockets.push(e.url));
      await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: dir });
    });
    assert.match(tabId, /^12D3KooW/);
    const backend = await page.waitForFunction(() => document.body.dataset.backend, { timeout: 60000 }).then((h) => h.jsonValue());
    assert.ok(['webgl', 'wasm', 'cpu'].includes(String(backend)), String(backend));
    // Software WebGL (SwiftShader, as on a machine without a GPU) is skipped for wasm, and the log says why.
    if (backend !== 'webgl') assert.match(await page.$eval('#log', (l) => l.textContent ?? ''), /webgl not used: /);

    // Two node sites that list the tab among their members, each with its own CSV.
    const nodes = await Promise.all(
      ['hospital-a', 'hospital-b'].map(async (name, i) => {
        const id = await generateIdentity();
        saveIdentity(join(dir, `${name}.key`), id.privateKey, true);
        writeText(join(dir, `${name}.csv`), patientsCsv({ seed: 21 + i, rows: 150, missing: 0.1, wards: i ? ['south', 'east'] : ['north', 'south'] }));
        return { name, peerId: id.peerId, tcp: await freePort(), ws: await freePort(), config: join(dir, `${name}.json`), out: join(dir, name) };
      }),
    );
    const members = [
      ...nodes.map((n) => ({ name: n.name, peerId: n.peerId, addrs: [`/ip4/127.0.0.1/tcp/${n.tcp}`, `/ip4/127.0.0.1/tcp/${n.ws}/ws`] })),
      { name: 'clinic-tab', peerId: tabId },
    ];
    for (const n of nodes) {
      const cfg = {
        name: n.name,
        key: `${n.name}.key`,
        listen: [`/ip4/127.0.0.1/tcp/${n.tcp}`, `/ip4/127.0.0.1/tcp/${n.ws}/ws`],
        members,
        data: { dataset: `csv:${n.name}.csv`, labelColumn: 'diagnosis', drop: ['id'] },
        ...NODE_SITE,
        out: n.name,
      };
      parsePeerConfig(cfg, n.config, dir);
      writeFileSync(n.config, JSON.stringify(cfg, null, 2));
    }
    const joinRun = cli(['peer', '--config', nodes[0].config, '--print-join']);
    assert.equal(joinRun.status, 0, joinRun.stderr);
    const details = JSON.parse(joinRun.stdout) as { members: { peerId: string; addrs: string[] }[] };
    assert.ok(details.members.find((m) => m.peerId === nodes[0].peerId)!.addrs.includes(`/ip4/127.0.0.1/tcp/${nodes[0].ws}/ws`), joinRun.stdout);

    // Bad input first: each says what to fix, and nothing starts.
    await fillJoin(page, '{"format": "dflmoe-join/1", "members": [');
    await page.click('#join');
    assert.match(await message(page), /not JSON.*--print-join/);
    await fillJoin(page, joinRun.stdout);
    await page.click('#join');
    assert.match(await message(page), /pick this site's data: a CSV file/);
    const notMember = JSON.stringify({ ...details, members: details.members.filter((m) => m.peerId !== tabId) });
    const csv = writeText(join(dir, 'clinic.csv'), patientsCsv({ seed: 23, rows: 130, missing: 0.1, wards: ['north', 'east'], ageShift: 4 }));
    await fillJoin(page, notMember, csv);
    await page.click('#join');
    await page.waitForFunction(() => document.body.dataset.phase === 'failed', { timeout: 60000 });
    assert.match(await message(page), new RegExp(`this site \\(${tabId}\\) is not among the consortium's members yet`));
    // A CSV without the consortium's label column: the message names the setting.
    const noLabel = writeText(join(dir, 'no-label.csv'), patientsCsv({ seed: 5, rows: 40, unlabelled: true }));
    await fillJoin(page, joinRun.stdout, noLabel);
    await page.evaluate(() => delete document.body.dataset.phase);
    await page.click('#join');
    await page.waitForFunction(() => document.body.dataset.phase === 'failed', { timeout: 60000 });
    assert.match(await message(page), /diagnosis.*data\.labelColumn|data\.labelColumn.*diagnosis/);
    // A member nobody answers for: the page says what to check, and Stop ends the run.
    const closed = await freePort();
    const unreachable = JSON.stringify({
      ...details,
      members: [{ peerId: nodes[0].peerId, name: 'gone', addrs: [`/ip4/127.0.0.1/tcp/${closed}/ws/p2p/${nodes[0].peerId}`] }, { peerId: tabId }],
    });
    await fillJoin(page, unreachable, csv);
    await page.click('#join');
    await page.waitForFunction(() => document.body.dataset.unreachable === 'true', { timeout: 60000 });
    assert.match(await message(page), new RegExp(`no member can be reached yet \\(tried /ip4/127.0.0.1/tcp/${closed}/ws/.*WebSockets address`));
    await page.click('#stop');
    await page.waitForFunction(() => document.body.dataset.phase === 'stopped', { timeout: 30000 });

    // The real run.
    const ps = nodes.map((n) => startProcess(['peer', '--config', n.config], `${n.out}.log`));
    procs.push(...ps);
    await fillJoin(page, joinRun.stdout, undefined, { name: 'clinic-tab' });
    await page.click('#join');
    const end = await runEnd(page, 240000);
    assert.equal(end.phase, 'done', `${end.message}\n${end.log}`);
    assert.deepEqual(
      await Promise.all(ps.map((p) => waitExit(p, 120000))),
      [0, 0],
      nodes.map((n) => readFileSync(`${n.out}.log`, 'utf8').slice(-1500)).join('\n'),
    );

    // The tab: a number for its accuracy, 3 rounds, both node sites' heads mixed in.
    // Above what always answering the tab's most common diagnosis would score.
    const majority = majorityRate(
      readFileSync(csv, 'utf8')
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(',').at(-1)!),
    );
    const acc = Number(await page.evaluate(() => document.body.dataset.accuracy));
    assert.ok(Number.isFinite(acc) && acc > majority && acc <= 1, `tab accuracy ${acc}, majority class ${majority}`);
    assert.equal(await page.evaluate(() => document.body.dataset.rounds), '3');
    const tabExperts = String(await page.evaluate(() => document.body.dataset.experts))
      .split(' ')
      .sort();
    assert.deepEqual(tabExperts, nodes.map((n) => n.peerId).sort());
    // The node sites: the tab's statement merged in preprocessing, its head mixed in.
    for (const n of nodes) {
      const pre = JSON.parse(readFileSync(join(n.out, 'preprocessing.json'), 'utf8')) as { included: string[] };
      assert.ok(pre.included.includes(tabId), `${n.name} agreed with the tab`);
      const r = JSON.parse(readFileSync(join(n.out, 'results.json'), 'utf8')) as PeerRunResult;
      assert.ok(
        r.rounds.at(-1)!.experts.some((e) => e.peer === tabId),
        `${n.name} holds the tab's head`,
      );
    }
    // `DFLMOE_SCREENSHOT=docs/browser-site.png npx mocha test/web-site.test.ts` also writes docs/browser.md's screenshot.
    if (process.env.DFLMOE_SCREENSHOT) {
      await page.setViewport({ width: 1280, height: 900 });
      await page.screenshot({ path: process.env.DFLMOE_SCREENSHOT as `${string}.png`, fullPage: true });
    }
    // The live view in the tab drew its rounds.
    assert.equal(await page.$eval('#overview tbody tr[data-site]', (tr) => (tr as HTMLElement).dataset.round), '3');

    // Nothing the page sent over HTTP carried data: GETs of the app's own files only. Its other traffic is
    // libp2p (Noise-encrypted) on WebSockets to the members' addresses.
    const origin = new URL(web.url).origin;
    for (const r of requests) {
      assert.ok(r.url.startsWith(origin) || r.url.startsWith('blob:') || r.url.startsWith('data:'), `the page asked ${r.url}`);
      assert.equal(r.method, 'GET', `${r.method} ${r.url}`);
      assert.equal(r.body, undefined, `${r.url} carried a body`);
    }
    const wsPorts = new Set(nodes.map((n) => String(n.ws)));
    assert.ok(sockets.length > 0, 'the tab opened WebSockets');
    for (const s of sockets) assert.ok(wsPorts.has(new URL(s).port) && new URL(s).hostname === '127.0.0.1', `a WebSocket to ${s}`);
    assert.deepEqual(
      web.requests.filter((r) => !r.startsWith('GET ')),
      [],
    );

    // The download: a zip that dflmoe evaluate reads as a site.
    await page.click('#download');
    await until('the download', () => existsSync(join(dir, 'dflmoe-site.zip')), 30000);
    const ev = cli(['evaluate', '--site', join(dir, 'dflmoe-site.zip'), '--input', csv, '--json']);
    assert.equal(ev.status, 0, ev.stderr);
    const evaluation = JSON.parse(ev.stdout) as { accuracy: number };
    assert.ok(evaluation.accuracy > majority, `evaluate: ${ev.stdout}, majority class ${majority}`);
    // The same zip is a site to dflmoe audit (its trail, checked against its checkpoint and results.json) and to loadSite.
    const audit = cli(['audit', join(dir, 'dflmoe-site.zip'), '--quiet']);
    assert.equal(audit.status, 0, audit.stderr);
    assert.match(audit.stdout, /\(3 rounds\); hash chain and signatures verified; its end matches the checkpoint and results\.json/);
    const loaded = await loadSite(join(dir, 'dflmoe-site.zip'));
    try {
      assert.equal(loaded.round, 3);
    } finally {
      loaded.dispose();
    }
    assert.deepEqual(errors, []);
  });

  it("two tabs reach each other over WebRTC through a member's relay: each mixes the other's head", async () => {
    const dir = tmpDir('dflmoe-web2-');
    web ??= await serveWebApp({ listen: '127.0.0.1:0' });
    const chromium = await browser();
    // Two browser profiles (incognito contexts): two keys, two sites.
    const tabs = await Promise.all(
      [0, 1].map(async (i) => {
        const context = await chromium.createBrowserContext();
        // wasm: two tabs training at once on software WebGL (no GPU here) would crawl.
        const { page, peerId } = await openTab(context, `${web!.url}?backend=wasm`, async (page) => {
          if (process.env.DEBUG_TABS) page.on('console', (m) => console.log(`tab-${i}:`, m.text().slice(0, 400)));
        });
        const csv = writeText(join(dir, `tab-${i}.csv`), patientsCsv({ seed: 31 + i, rows: 120, missing: 0.1, wards: ['north', 'east'] }));
        return { page, peerId, csv, name: `tab-${i}` };
      }),
    );
    assert.notEqual(tabs[0].peerId, tabs[1].peerId);
    const id = await generateIdentity();
    saveIdentity(join(dir, 'hub.key'), id.privateKey, true);
    writeText(join(dir, 'hub.csv'), patientsCsv({ seed: 30, rows: 150, missing: 0.1 }));
    const [tcp, ws] = [await freePort(), await freePort()];
    const cfg = {
      name: 'hub',
      key: 'hub.key',
      listen: [`/ip4/127.0.0.1/tcp/${tcp}`, `/ip4/127.0.0.1/tcp/${ws}/ws`],
      members: [{ name: 'hub', peerId: id.peerId }, ...tabs.map((t) => ({ name: t.name, peerId: t.peerId }))],
      relay: { serve: true },
      data: { dataset: 'csv:hub.csv', labelColumn: 'diagnosis', drop: ['id'] },
      ...NODE_SITE,
      out: 'hub',
    };
    writeFileSync(join(dir, 'hub.json'), JSON.stringify(cfg, null, 2));
    const hub = startProcess(['peer', '--config', join(dir, 'hub.json')], join(dir, 'hub.log'));
    procs.push(hub);
    const printed = cli(['peer', '--config', join(dir, 'hub.json'), '--print-join']);
    assert.equal(printed.status, 0, printed.stderr);
    assert.deepEqual((JSON.parse(printed.stdout) as { relays: string[] }).relays, [`/ip4/127.0.0.1/tcp/${ws}/ws/p2p/${id.peerId}`]);
    for (const t of tabs) {
      await fillJoin(t.page, printed.stdout, t.csv, { name: t.name });
      await t.page.click('#join');
    }
    for (const t of tabs) {
      const end = await runEnd(t.page, 240000);
      assert.equal(end.phase, 'done', `${t.name}: ${end.message}\n${end.log}`);
    }
    assert.equal(await waitExit(hub, 120000), 0, readFileSync(join(dir, 'hub.log'), 'utf8').slice(-2000));
    for (const [t, other] of [
      [tabs[0], tabs[1]],
      [tabs[1], tabs[0]],
    ]) {
      const experts = String(await t.page.evaluate(() => document.body.dataset.experts)).split(' ');
      assert.deepEqual(experts.sort(), [id.peerId, other.peerId].sort(), `${t.name} mixes the hub's and the other tab's heads`);
    }
    // Besides the relayed connection, the tabs open a direct WebRTC one (signalled through the hub's relay).
    const logs = await Promise.all(tabs.map((t) => t.page.$eval('#log', (l) => l.textContent ?? '')));
    assert.ok(
      logs.some((l) => /connected to tab-[01] \(\S+\) direct (in|out)bound at \S*\/webrtc\//.test(l)),
      logs.join('\n').slice(-3000),
    );
  });

  it('an image folder picked in the page: decoded by the browser, trained in the tab; the download predicts the same folder decoded by sharp', async () => {
    const dir = tmpDir('dflmoe-web3-');
    web ??= await serveWebApp({ listen: '127.0.0.1:0' });
    // WebGL, forced: the tab picks it by itself only where a GPU draws it; here it is software-rendered, slow but correct.
    const { page, peerId: tabId } = await openTab(await browser(), `${web.url}?backend=webgl`, (page) =>
      page.createCDPSession().then((cdp) => cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: dir })),
    );
    assert.equal(await page.waitForFunction(() => document.body.dataset.backend, { timeout: 60000 }).then((h) => h.jsonValue()), 'webgl');
    // A consortium of one (the tab): nothing to wait for, the data path is what is tested.
    const details = {
      format: 'dflmoe-join/1',
      members: [{ peerId: tabId }],
      algorithm: 'dflmoe',
      rounds: 8,
      data: {},
      model: { body: 'mlp:32', featureDim: 16 },
    };
    const images = await imageFolder(join(dir, 'images'), { seed: 3, perClass: 20 });
    await fillJoin(page, JSON.stringify(details), images, { images: true });
    await page.click('#join');
    const end = await runEnd(page, 120000);
    assert.equal(end.phase, 'done', `${end.message}\n${end.log}`);
    assert.match(end.log, /image folder: 40 images in 2 classes, 12x12x1/);
    const acc = Number(await page.evaluate(() => document.body.dataset.accuracy));
    assert.ok(acc >= 0.75, `tab accuracy ${acc}`);
    await page.click('#download');
    await until('the download', () => existsSync(join(dir, 'dflmoe-site.zip')), 30000);
    // Node reads the folder with sharp: were the browser's pixels different, the model would miss here.
    const ev = cli(['evaluate', '--site', join(dir, 'dflmoe-site.zip'), '--input', images, '--json']);
    assert.equal(ev.status, 0, ev.stderr);
    const evaluation = JSON.parse(ev.stdout) as { accuracy: number; samples: number };
    assert.equal(evaluation.samples, 40);
    assert.ok(evaluation.accuracy >= 0.9, `evaluate on the folder decoded by sharp: ${evaluation.accuracy}`);
    await page.close();
  });

  it("the tab's wasm backend runs dflmoe's kernels, ?kernels=stock tfjs's own (to compare); a bad value says what to use", async () => {
    web ??= await serveWebApp({ listen: '127.0.0.1:0' });
    const chromium = await browser();
    /** The page's kernels, its backend line and its message, at `query`. */
    const shown = async (query: string) => {
      const { page } = await openTab(chromium, `${web!.url}?${query}`);
      try {
        await page.waitForFunction(() => document.body.dataset.kernels || document.getElementById('message')!.textContent, { timeout: 60000 });
        return await page.evaluate(() => [
          document.body.dataset.kernels ?? '',
          document.getElementById('backend')!.textContent,
          document.getElementById('message')!.textContent,
        ]);
      } finally {
        await page.close();
      }
    };
    assert.deepEqual(await shown('backend=wasm'), ['dflmoe', 'compute: wasm (SIMD on)', '']);
    assert.deepEqual(await shown('backend=wasm&kernels=stock'), ['stock', "compute: wasm (SIMD on, tfjs's own kernels)", '']);
    const [kernels, , message] = await shown('backend=wasm&kernels=fast');
    assert.equal(kernels, '', 'no backend, no kernels');
    assert.match(message!, /^no compute backend could start in this browser: unknown kernels=fast in the page's address: use dflmoe or stock$/);
  });

  it('a tab closed mid-run is a site that drops out: the node site finishes its rounds', async () => {
    const dir = tmpDir('dflmoe-web4-');
    web ??= await serveWebApp({ listen: '127.0.0.1:0' });
    const context = await (await browser()).createBrowserContext();
    const { page, peerId: tabId } = await openTab(context, `${web.url}?backend=wasm`);
    const id = await generateIdentity();
    saveIdentity(join(dir, 'site.key'), id.privateKey, true);
    writeText(join(dir, 'site.csv'), patientsCsv({ seed: 40, rows: 120 }));
    const ws = await freePort();
    const cfg = {
      name: 'site',
      key: 'site.key',
      listen: [`/ip4/127.0.0.1/tcp/${ws}/ws`],
      members: [
        { name: 'site', peerId: id.peerId },
        { name: 'tab', peerId: tabId },
      ],
      data: { dataset: 'csv:site.csv', labelColumn: 'diagnosis', drop: ['id'] },
      model: { body: 'mlp:16', featureDim: 8 },
      rounds: 6,
      round: { deadlineMs: 3000 },
      preprocess: { deadlineMs: 60000 },
      lingerMs: 500,
      out: 'site',
    };
    writeFileSync(join(dir, 'site.json'), JSON.stringify(cfg));
    // Info lines: the connection going is logged at info (other suites may have turned the level down in this process's environment).
    const site = startProcess(['peer', '--config', join(dir, 'site.json')], join(dir, 'site.log'), { DFLMOE_LOG_LEVEL: 'info' });
    procs.push(site);
    const printed = cli(['peer', '--config', join(dir, 'site.json'), '--print-join']);
    assert.equal(printed.status, 0, printed.stderr);
    await fillJoin(page, printed.stdout, join(dir, 'site.csv'));
    await page.click('#join');
    // Gone once the tab has trained a round with the site.
    await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('#overview tbody tr[data-site]')?.dataset.round ?? 0) >= 1, {
      timeout: 120000,
      polling: 200,
    });
    await context.close();
    assert.equal(await waitExit(site, 120000), 0, readFileSync(join(dir, 'site.log'), 'utf8').slice(-2000));
    const r = JSON.parse(readFileSync(join(dir, 'site', 'results.json'), 'utf8')) as PeerRunResult;
    assert.equal(r.rounds.length, 6, 'every round, without the tab');
    assert.ok(
      r.rounds.some((l) => l.experts.some((e) => e.peer === tabId)),
      "the tab's head arrived before it closed",
    );
    assert.match(readFileSync(join(dir, 'site.log'), 'utf8'), new RegExp(`no connection to tab \\(${tabId}\\) any more`));
  });
});
