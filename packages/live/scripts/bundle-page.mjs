// Bundle the live view's page (page/main.ts and its style) into dist/page.json:
// one self-contained HTML document (script and style inline, nothing fetched
// from elsewhere) and the CSP hashes of its script and style.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('../', import.meta.url);
const at = (p) => new URL(p, root);
const result = await build({
  entryPoints: [at('page/main.ts').pathname],
  bundle: true,
  format: 'iife',
  minify: true,
  target: ['chrome109', 'firefox115', 'safari16'],
  write: false,
  logLevel: 'warning',
  legalComments: 'none',
});
// "</script" inside the script would end it early: esbuild escapes it in strings, and the check makes sure.
const script = result.outputFiles[0].text.trim();
if (/<\/script/i.test(script)) throw new Error('the bundled script contains </script');
const style = readFileSync(at('page/style.css'), 'utf8').trim();
const html = readFileSync(at('page/index.html'), 'utf8')
  .replace('/*STYLE*/', () => style)
  .replace('/*SCRIPT*/', () => script);
const hash = (s) => `sha256-${createHash('sha256').update(s).digest('base64')}`;
mkdirSync(at('dist'), { recursive: true });
writeFileSync(at('dist/page.json'), JSON.stringify({ html, scriptHash: hash(script), styleHash: hash(style) }));
console.log(`live view page: ${(html.length / 1024).toFixed(1)} KiB -> dist/page.json`);
