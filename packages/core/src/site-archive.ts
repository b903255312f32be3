/**
 * A browser tab's download of its trained site (`dflmoe-site.zip`, holding
 * `site/...`), unpacked so that everything that reads a site directory
 * (`loadSite`, `dflmoe predict`, `evaluate`, `audit`, `report`) reads it too.
 */
// A namespace import: the browser tab's fs stand-in has no mkdtempSync, and a tab never unpacks a site.
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { unzipSync } from 'fflate';

/** Whether `path` is a zip file (by its first bytes, not its name). */
export function isZipFile(path: string): boolean {
  if (!fs.existsSync(path) || !fs.statSync(path).isFile()) return false;
  const head = fs.readFileSync(path).subarray(0, 4);
  return head.length === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

/**
 * Unpack a site's zip into a new temporary directory and return the site
 * directory inside it (`<tmp>/site`); the directory is removed when the
 * process exits, or earlier by `remove`. Entries outside `site/` or with
 * `..` are refused; so is a zip without `site/site.json`.
 */
export function unpackSiteArchive(path: string): { dir: string; remove: () => void } {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(fs.readFileSync(path));
  } catch (e) {
    throw new Error(`${path} is not a zip file (${(e as Error).message})`, { cause: e });
  }
  const root = fs.mkdtempSync(join(tmpdir(), 'dflmoe-site-'));
  const remove = () => fs.rmSync(root, { recursive: true, force: true });
  process.once('exit', remove);
  try {
    for (const [name, data] of Object.entries(entries)) {
      if (name.endsWith('/')) continue;
      if (!name.startsWith('site/') || name.split('/').some((p) => p === '..' || p === '')) {
        throw new Error(`${path}: unexpected entry ${JSON.stringify(name)} (a site's zip holds site/...)`);
      }
      fs.mkdirSync(dirname(join(root, name)), { recursive: true });
      fs.writeFileSync(join(root, name), data);
    }
    if (!fs.existsSync(join(root, 'site', 'site.json'))) throw new Error(`${path}: no site/site.json inside (download the trained site again from the tab)`);
  } catch (e) {
    remove();
    throw e;
  }
  return { dir: join(root, 'site'), remove };
}
