/**
 * The browser tab's round time with dflmoe's wasm kernels and with tfjs's
 * own (`?kernels=stock`), side by side in one run: Debian's chromium driven
 * by puppeteer-core (as the browser tests do), the app served from this
 * machine (`dflmoe web`'s server; nothing fetched from elsewhere), and in a
 * tab a dFLMoE site that is a consortium of one (the tab alone: no other
 * process, so only the tab's training and round loop are timed). Two
 * workloads on Fashion-MNIST (Debian's dataset-fashion-mnist): a CSV of
 * pixels with an MLP body 256x128 (dense layers, the transposed products of
 * their gradients), and an image folder with a CNN body 16x32 (convolution
 * and max-pooling gradients). Each repeat runs every configuration once, the
 * order turned around on every other repeat: wasm with dflmoe's kernels,
 * wasm with tfjs's, and WebGL (forced where the tab does not pick it: it
 * skips WebGL drawn by the CPU, as here, with no GPU). A run's round time is
 * the median of its rounds after the first (the first also warms up the
 * backend); training samples/s are the training rows over the training
 * part of those rounds.
 *
 *   npm run bench:tab -- [--repeats 3] [--rounds 4] [--rows 3000] [--images 600] [--workloads dense,cnn] [--skip-webgl]
 *                        [--out benchmarks/results/tab.json]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import type { Browser } from 'puppeteer-core';
import { loadDataset, type Dataset } from '@dflmoe/data';
import { serveWebApp } from '@dflmoe/web';
import { fillJoin, launchChromium, openTab, runEnd } from '../test/browser.js';

const { values } = parseArgs({
  options: {
    repeats: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '4' },
    rows: { type: 'string', default: '3000' },
    images: { type: 'string', default: '600' },
    workloads: { type: 'string', default: 'dense,cnn' },
    'skip-webgl': { type: 'boolean', default: false },
    out: { type: 'string', default: 'benchmarks/results/tab.json' },
  },
});
const repeats = Number(values.repeats);
const rounds = Number(values.rounds);
type Workload = 'dense' | 'cnn';
const workloads = values.workloads!.split(',') as Workload[];
const BODY: Record<Workload, string> = { dense: 'mlp:256x128', cnn: 'cnn:16x32' };
const BATCH: Record<Workload, number> = { dense: 64, cnn: 32 };

/** A configuration of the tab: its page parameters. */
interface Config {
  name: string;
  query: string;
}

/** What one run of the tab measured. */
interface TabRun {
  workload: Workload;
  config: string;
  backend: string;
  kernels: string;
  roundSeconds: number[];
  trainSeconds: number[];
  trainSamples: number;
  accuracy: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** The workloads' data on disk: a CSV of pixels, and a folder of PNGs with one sub-folder per class. */
async function writeData(ds: Dataset, dir: string): Promise<Record<Workload, string>> {
  const px = 28 * 28;
  const csv = join(dir, 'pixels.csv');
  const lines = [[...Array.from({ length: px }, (_, i) => `p${i}`), 'label'].join(',')];
  for (let i = 0; i < Math.min(Number(values.rows), ds.numSamples); i++) {
    const row = Array.from(ds.features.subarray(i * px, (i + 1) * px), (v) => Math.round(v * 255));
    lines.push(`${row.join(',')},${ds.classNames[ds.labels[i]!]!.replace(/[^a-z]/gi, '')}`);
  }
  writeFileSync(csv, lines.join('\n') + '\n');
  const images = join(dir, 'images');
  for (let i = 0; i < Math.min(Number(values.images), ds.numSamples); i++) {
    const cls = join(images, `class-${ds.labels[i]}`);
    mkdirSync(cls, { recursive: true });
    const bytes = Buffer.from(Array.from(ds.features.subarray(i * px, (i + 1) * px), (v) => Math.round(v * 255)));
    await sharp(bytes, { raw: { width: 28, height: 28, channels: 1 } })
      .png()
      .toFile(join(cls, `${i}.png`));
  }
  return { dense: csv, cnn: images };
}

/** One run: a fresh page with `config`, the tab joins a consortium of itself and trains `rounds` rounds. */
async function runTab(browser: Browser, url: string, workload: Workload, data: string, config: Config): Promise<TabRun> {
  const { page, peerId } = await openTab(browser, `${url}?${config.query}`);
  try {
    const details = {
      format: 'dflmoe-join/1',
      members: [{ peerId }],
      algorithm: 'dflmoe',
      rounds,
      data: workload === 'dense' ? { labelColumn: 'label' } : {},
      model: { body: BODY[workload] },
      train: { batchSize: BATCH[workload] },
    };
    await fillJoin(page, JSON.stringify(details), data, { images: workload === 'cnn' });
    await page.click('#join');
    const end = await runEnd(page, 600000);
    if (end.phase !== 'done') throw new Error(`the tab's run failed: ${end.message}\n${end.log}`);
    const d = await page.evaluate(() => ({ ...document.body.dataset }));
    const nums = (s?: string) => (s ?? '').split(' ').map(Number);
    return {
      workload,
      config: config.name,
      backend: d.backend!,
      kernels: d.kernels!,
      roundSeconds: nums(d.roundSeconds),
      trainSeconds: nums(d.trainSeconds),
      trainSamples: Number(d.trainSamples),
      accuracy: Number(d.accuracy),
    };
  } finally {
    await page.close();
  }
}

/** The backend Chromium picks with no `?backend=`. */
async function pickedBackend(browser: Browser, url: string): Promise<string> {
  const { page } = await openTab(browser, url);
  try {
    return await page.waitForFunction(() => document.body.dataset.backend, { timeout: 120000 }).then((h) => h.jsonValue() as Promise<string>);
  } finally {
    await page.close();
  }
}

let fashion: Dataset;
try {
  fashion = loadDataset('fashion-mnist', { maxSamples: Math.max(Number(values.rows), Number(values.images)), seed: 1 });
} catch (e) {
  console.error(`bench:tab needs Fashion-MNIST from Debian (apt-get install -y dataset-fashion-mnist): ${(e as Error).message}`);
  process.exit(1);
}
// The page as the sources are now.
execFileSync(process.execPath, [new URL('../packages/web/scripts/bundle-app.mjs', import.meta.url).pathname], { stdio: 'inherit' });
const dir = mkdtempSync(join(tmpdir(), 'dflmoe-bench-tab-'));
const data = await writeData(fashion, dir);
const web = await serveWebApp({ listen: '127.0.0.1:0' });
const chromium = await launchChromium();
const loads: number[] = [loadavg()[0]!];
const sampler = setInterval(() => loads.push(loadavg()[0]!), 5000);
const runs: TabRun[] = [];
try {
  const picked = await pickedBackend(chromium.browser, web.url);
  console.log(`Chromium picks ${picked} by itself`);
  const configs: Config[] = [
    { name: 'wasm, dflmoe kernels', query: 'backend=wasm' },
    { name: "wasm, tfjs's kernels", query: 'backend=wasm&kernels=stock' },
    ...(picked !== 'webgl' && !values['skip-webgl'] ? [{ name: 'webgl (forced)', query: 'backend=webgl' }] : []),
    ...(picked !== 'wasm' && (picked !== 'webgl' || !values['skip-webgl']) ? [{ name: `${picked} (picked)`, query: '' }] : []),
  ];
  for (let r = 0; r < repeats; r++) {
    for (const w of workloads) {
      for (const c of r % 2 ? [...configs].reverse() : configs) {
        const run = await runTab(chromium.browser, web.url, w, data[w], c);
        runs.push(run);
        const ms = median(run.roundSeconds.slice(1)) * 1000;
        const rate = run.trainSamples / median(run.trainSeconds.slice(1));
        console.log(
          `repeat ${r + 1} ${w.padEnd(5)} ${c.name.padEnd(22)} ${run.backend}/${run.kernels}: ${ms.toFixed(0)} ms a round, ${rate.toFixed(0)} training samples/s, accuracy ${(run.accuracy * 100).toFixed(1)}%`,
        );
      }
    }
  }
  const summary = Object.fromEntries(
    workloads.map((w) => {
      const of = (c: Config) => runs.filter((x) => x.workload === w && x.config === c.name);
      const perConfig = Object.fromEntries(
        configs.map((c) => [
          c.name,
          {
            msPerRound: median(of(c).map((x) => median(x.roundSeconds.slice(1)) * 1000)),
            trainSamplesPerSecond: median(of(c).map((x) => x.trainSamples / median(x.trainSeconds.slice(1)))),
          },
        ]),
      );
      // Per repeat: stock round time over dflmoe's, then the median.
      const [fast, stock] = [of(configs[0]!), of(configs[1]!)];
      const speedup = median(fast.map((f, i) => median(stock[i]!.roundSeconds.slice(1)) / median(f.roundSeconds.slice(1))));
      return [w, { ...perConfig, speedup }];
    }),
  );
  for (const w of workloads) {
    const s = summary[w] as Record<string, { msPerRound: number; trainSamplesPerSecond: number }> & { speedup: number };
    const parts = configs.map((c) => `${c.name} ${s[c.name]!.msPerRound.toFixed(0)} ms (${s[c.name]!.trainSamplesPerSecond.toFixed(0)} samples/s)`);
    console.log(`${w.padEnd(5)} a round: ${parts.join(', ')}; tfjs's kernels / dflmoe's: ${s.speedup.toFixed(2)}x (median of per-repeat ratios)`);
  }
  console.log(`load average (1 min) during the run: ${Math.min(...loads).toFixed(1)} to ${Math.max(...loads).toFixed(1)} on ${cpus().length} cores`);
  mkdirSync(dirname(values.out!), { recursive: true });
  writeFileSync(
    values.out!,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        chromium: await chromium.browser.version(),
        cpus: cpus().length,
        load: { min: Math.min(...loads), max: Math.max(...loads) },
        picked,
        rounds,
        workloads: Object.fromEntries(
          workloads.map((w) => [w, { body: BODY[w], batch: BATCH[w], samples: w === 'dense' ? Number(values.rows) : Number(values.images) }]),
        ),
        summary,
        runs,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`wrote ${values.out}`);
} finally {
  clearInterval(sampler);
  await chromium.close();
  await web.close();
  rmSync(dir, { recursive: true, force: true });
}
