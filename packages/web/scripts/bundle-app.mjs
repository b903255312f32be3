// Bundle the browser app (app/main.ts) into dist/app/: the shared packages
// (@dflmoe/core, data, p2p, live's view) are imported, never copied; the Node
// built-ins they import are replaced by the shims in app/shims/.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const at = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const shim = (name) => at(`app/shims/${name}.ts`);
/** Built-ins the shared code uses in a browser site, and what stands in for them. */
const SHIMS = {
  fs: shim('fs'),
  crypto: shim('crypto'),
  zlib: shim('zlib'),
  url: shim('url'),
  process: shim('process'),
  path: 'path-browserify',
  buffer: 'buffer',
  stream: 'readable-stream',
};
/** Built-ins replaced by the stub (printed with DFLMOE_WEB_DEBUG). */
const stubbed = new Set();
const builtins = new Set(builtinModules.filter((m) => !m.startsWith('_')));

const nodeBuiltins = {
  name: 'node-builtins',
  setup(b) {
    b.onResolve({ filter: /^(node:)?[a-z0-9_/]+$/ }, async (args) => {
      // Our own resolve calls below come back through this hook: let esbuild resolve those.
      if (args.pluginData?.inner) return undefined;
      const name = args.path.replace(/^node:/, '');
      if (!builtins.has(name)) return undefined;
      const to = SHIMS[name] ?? name;
      if (to.startsWith('/')) return { path: to };
      // An npm package of that name or the one SHIMS names (buffer, events, util, readable-stream: browser versions), found from the
      // importer or from this package (whose development dependencies they are), else the stub.
      for (const resolveDir of [args.resolveDir, at('.')]) {
        const r = await b.resolve(to, { kind: args.kind, resolveDir, pluginData: { inner: true } });
        if (r.errors.length === 0 && r.path.startsWith('/')) return { path: r.path };
      }
      stubbed.add(`${name} (from ${args.importer.replace(/.*node_modules\//, '')})`);
      return { path: shim('unavailable') };
    });
  },
};

const result = await build({
  entryPoints: { app: at('app/main.ts'), live: at('../live/page/style.css') },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  conditions: ['development', 'browser'],
  target: ['chrome120', 'firefox121', 'safari17'],
  outdir: at('dist/app'),
  minify: !process.env.DFLMOE_WEB_DEBUG,
  sourcemap: false,
  metafile: true,
  inject: [at('app/shims/globals.ts')],
  define: { global: 'globalThis' },
  plugins: [nodeBuiltins],
  // Image folders are decoded by the page itself (app/images.ts), never by sharp.
  external: ['sharp'],
  logLevel: 'warning',
  legalComments: 'none',
});
// The page and its style; tfjs's wasm binaries (the wasm backend fetches them from ./wasm/).
copyFileSync(at('app/index.html'), at('dist/app/index.html'));
copyFileSync(at('app/app.css'), at('dist/app/app.css'));
const wasmDir = dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json'));
mkdirSync(at('dist/app/wasm'), { recursive: true });
for (const f of readdirSync(join(wasmDir, 'dist')).filter((n) => n.endsWith('.wasm'))) copyFileSync(join(wasmDir, 'dist', f), at(`dist/app/wasm/${f}`));
const js = result.metafile.outputs['dist/app/app.js'] ?? Object.values(result.metafile.outputs)[0];
if (process.env.DFLMOE_WEB_DEBUG) console.log(`stubbed: ${[...stubbed].sort().join('\n  ')}`);
console.log(`web app: ${(js.bytes / 1024 / 1024).toFixed(2)} MiB of script -> dist/app/`);
