// Bundle the browser app (app/main.ts) into dist/app/: the shared packages
// (@dflmoe/core, data, p2p, live's view) are imported, never copied; the Node
// built-ins they import are replaced by the shims in app/shims/.
import { build } from 'esbuild';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';

const at = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const shim = (name) => at(`app/shims/${name}.ts`);
/** Built-ins the shared code uses in a browser site, and what stands in for them. */
const SHIMS = { fs: shim('fs'), crypto: shim('crypto'), zlib: shim('zlib'), url: shim('url'), process: shim('process'), path: 'path-browserify', buffer: 'buffer' };
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
      // An npm package of that name (buffer, events, util: the browser versions libraries depend on), else the stub.
      const r = await b.resolve(to, { kind: args.kind, resolveDir: args.resolveDir, pluginData: { inner: true } });
      return r.errors.length === 0 && r.path.startsWith('/') ? { path: r.path } : { path: shim('unavailable') };
    });
  },
};

const entry = process.argv[2] ?? 'app/main.ts';
const result = await build({
  entryPoints: [at(entry)],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  conditions: ['development', 'browser'],
  target: ['chrome120', 'firefox121', 'safari17'],
  outdir: at('dist/app'),
  minify: false,
  sourcemap: false,
  metafile: true,
  inject: [at('app/shims/globals.ts')],
  define: { global: 'globalThis' },
  plugins: [nodeBuiltins],
  logLevel: 'warning',
  legalComments: 'none',
});
const out = Object.entries(result.metafile.outputs).filter(([f]) => f.endsWith('.js'));
for (const [f, o] of out) console.log(`web app: ${f} ${(o.bytes / 1024 / 1024).toFixed(2)} MiB`);
