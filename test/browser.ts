/**
 * Debian's chromium (`apt-get install chromium`; .ci/run installs it)
 * driven by puppeteer-core, for the tests that open what a person sees
 * (and for `npm run bench:tab`): one browser a test file shares, pages
 * that record their errors, and the browser app (`dflmoe web`) in a tab.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser, type BrowserContext, type ElementHandle, type Page } from 'puppeteer-core';

export const CHROMIUM = process.env.DFLMOE_CHROMIUM ?? '/usr/bin/chromium';

/** A headless chromium with a fresh profile; `close` also removes the profile. */
export async function launchChromium(): Promise<{ browser: Browser; close(): Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install -y chromium (or set DFLMOE_CHROMIUM)`);
  const profile = mkdtempSync(join(tmpdir(), 'dflmoe-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // waitForFunction is one protocol call for its whole wait: as long as the longest wait a test allows.
    protocolTimeout: 600000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--user-data-dir=${profile}`,
    ],
  });
  return {
    browser,
    close: async () => {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * One chromium for the tests of the `describe` this is called in: launched
 * on first use (a file whose tests are all skipped starts none), closed
 * after the last test. Returns the browser.
 */
export function sharedChromium(): () => Promise<Browser> {
  let launched: ReturnType<typeof launchChromium> | undefined;
  after(async () => {
    await (await launched)?.close();
    launched = undefined;
  });
  return async () => (await (launched ??= launchChromium())).browser;
}

/** A new page (in `within`, a browser or an incognito context) whose page errors, and console errors with `console`, land in `errors`. */
export async function newPage(within: Browser | BrowserContext, o: { console?: boolean } = {}): Promise<{ page: Page; errors: string[] }> {
  const page = await within.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  if (o.console) page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  return { page, errors };
}

/** The browser app opened at `url` in a new page (`setup` runs first), once it shows the tab's peer ID. */
export async function openTab(
  within: Browser | BrowserContext,
  url: string,
  setup?: (page: Page) => Promise<unknown>,
): Promise<{ page: Page; peerId: string; errors: string[] }> {
  const { page, errors } = await newPage(within);
  await setup?.(page);
  await page.goto(url);
  const peerId = await page.waitForFunction(() => document.body.dataset.peerId, { timeout: 60000 }).then((h) => h.jsonValue() as Promise<string>);
  return { page, peerId, errors };
}

/** Type `details` (join details, as text) into the tab and pick `file` (a CSV, or with `images` a folder) as its data. */
export async function fillJoin(page: Page, details: string, file?: string, o: { images?: boolean; name?: string } = {}): Promise<void> {
  await page.$eval('#join-text', (t, j) => ((t as HTMLTextAreaElement).value = j), details);
  if (file) await ((await page.$(o.images ? '#image-folder' : '#csv-file')) as ElementHandle<HTMLInputElement>).uploadFile(file);
  if (o.name) await page.type('#site-name', o.name);
}

/** Wait for the tab's run to end (`done` or `failed`); returns the phase, the message and the log's end. */
export async function runEnd(page: Page, timeout: number): Promise<{ phase: string; message: string; log: string }> {
  await page.waitForFunction(() => ['done', 'failed'].includes(document.body.dataset.phase ?? ''), { timeout, polling: 500 });
  return page.evaluate(() => ({
    phase: document.body.dataset.phase ?? '',
    message: document.getElementById('message')?.textContent ?? '',
    log: (document.getElementById('log')?.textContent ?? '').slice(-3000),
  }));
}
