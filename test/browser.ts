/**
 * Debian's chromium (`apt-get install chromium`; .ci/run installs it)
 * driven by puppeteer-core, for the tests that open what a person sees.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser } from 'puppeteer-core';

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
