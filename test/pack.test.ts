/**
 * Installable, and tested so (#22): every workspace package is packed
 * (`npm pack`, as it would be published), the tarballs are installed into a
 * fresh project in a temporary directory outside the repository (no
 * workspace links, no `src/`, no development condition; third-party
 * packages come from the registry or npm's cache), and there the README's
 * library snippets, the custom-body example, `npx dflmoe web` and
 * `npx dflmoe --help` run.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = process.cwd();
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(cmd: string, args: string[], cwd: string, timeout = 180000) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn', NODE_OPTIONS: '' } });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}`, stdout: r.stdout };
}

describe('installed from npm pack tarballs, outside the repository', function () {
  this.timeout(600000);
  let dir: string;
  let app: string;

  before(function () {
    dir = realpathSync(mkdtempSync(join(tmpdir(), 'dflmoe-pack-')));
    assert.ok(relative(root, dir).startsWith('..'), 'outside the repository');
    const tarballs = join(dir, 'tarballs');
    mkdirSync(tarballs);
    const workspaces = (JSON.parse(readFileSync('package.json', 'utf8')) as { workspaces: string[] }).workspaces;
    execFileSync(npm, ['pack', '--silent', ...workspaces.flatMap((w) => ['-w', w]), '--pack-destination', tarballs], { cwd: root, stdio: 'pipe' });
    const packed = readdirSync(tarballs).filter((f) => f.endsWith('.tgz'));
    assert.equal(packed.length, workspaces.length, `one tarball per package: ${packed.join(', ')}`);
    app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
    // The host's own dependencies for the snippets (tfjs layers for a custom body, libp2p for its own node, tsx to run TypeScript),
    // in the versions the packages themselves take.
    const p2p = JSON.parse(readFileSync('packages/p2p/package.json', 'utf8')) as { dependencies: Record<string, string> };
    const core = JSON.parse(readFileSync('packages/core/package.json', 'utf8')) as { dependencies: Record<string, string> };
    const rootDev = JSON.parse(readFileSync('package.json', 'utf8')) as { devDependencies: Record<string, string> };
    const hostDeps = [
      ...[
        '@chainsafe/libp2p-noise',
        '@chainsafe/libp2p-yamux',
        '@libp2p/crypto',
        '@libp2p/gossipsub',
        '@libp2p/identify',
        '@libp2p/peer-id',
        '@libp2p/ping',
        '@libp2p/tcp',
        'libp2p',
      ].map((d) => `${d}@${p2p.dependencies[d]}`),
      `@tensorflow/tfjs-layers@${core.dependencies['@tensorflow/tfjs-layers']}`,
      `tsx@${rootDev.devDependencies.tsx}`,
    ];
    const r = run(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', ...packed.map((f) => join(tarballs, f)), ...hostDeps], app, 400000);
    assert.equal(r.status, 0, r.out.slice(-3000));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the packages are real copies with their built code, not links into the workspace', () => {
    for (const p of ['data', 'core', 'p2p', 'live', 'web', 'cli']) {
      const pkg = join(app, 'node_modules', '@dflmoe', p);
      assert.equal(realpathSync(pkg), pkg, `@dflmoe/${p} is not a link`);
      assert.ok(existsSync(join(pkg, 'dist', 'index.js')), `@dflmoe/${p} has dist/`);
    }
    // The live view's page, bundled at build time, ships with it.
    assert.ok(existsSync(join(app, 'node_modules', '@dflmoe', 'live', 'dist', 'page.json')), '@dflmoe/live has its page');
    // So does the browser app (its bundle inputs are development dependencies: none of them is installed).
    for (const f of ['index.html', 'app.js', 'wasm/tfjs-backend-wasm-simd.wasm'])
      assert.ok(existsSync(join(app, 'node_modules', '@dflmoe', 'web', 'dist', 'app', f)), `@dflmoe/web has ${f}`);
    assert.ok(!existsSync(join(app, 'node_modules', '@libp2p', 'webrtc')), 'the browser-only packages stay out of an install');
  });

  it("the README's library snippets and the custom-body example run there", () => {
    const blocks = [...readFileSync('README.md', 'utf8').matchAll(/<!-- run by test\/examples\.test\.ts -->\n```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.ok(blocks.length >= 3, 'the simulate, custom body and libp2p snippets are marked');
    const programs = [
      ...blocks.map((code, i) => ({ name: `readme-${i}.ts`, code })),
      { name: 'custom-bodies.ts', code: readFileSync('examples/custom-bodies.ts', 'utf8') },
    ];
    let ex = '';
    for (const p of programs) {
      writeFileSync(join(app, p.name), p.code);
      // Plain Node with tsx's loader: the packages' default export conditions (dist/), no development condition.
      const r = run(process.execPath, ['--import', 'tsx', p.name], app);
      assert.equal(r.status, 0, `${p.name}:\n${r.out.slice(-3000)}`);
      assert.ok(!r.out.includes(root) && !/packages\/(core|data|p2p)\/src/.test(r.out), `${p.name} ran code from the repository`);
      ex = r.stdout;
    }
    assert.equal(
      ex
        .trim()
        .split('\n')
        .filter((l) => /^round 5 lab-\w+ .*experts 2$/.test(l)).length,
      3,
      ex,
    );
  });

  it('npx dflmoe web serves the browser app from the installed package', async () => {
    // In a process group of its own, stopped as a whole: npx runs dflmoe through a shell, which does not pass SIGINT on
    // (the dflmoe web process outlived the test).
    const child = spawn('npx', ['--no-install', 'dflmoe', 'web', '--listen', '127.0.0.1:0'], {
      cwd: app,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
      detached: true,
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d;
          const m = /http:\/\/\S+\//.exec(out);
          if (m) resolve(m[0]);
        });
        child.once('exit', (code) => reject(new Error(`dflmoe web exited with ${code}: ${out}`)));
        setTimeout(() => reject(new Error(`no address printed within 60 s: ${out}`)), 60000).unref();
      });
      const page = await fetch(url);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<script type="module" src="app.js">/);
      const script = await fetch(new URL('app.js', url));
      assert.equal(script.status, 200);
      assert.ok((await script.arrayBuffer()).byteLength > 1e6, 'the bundled app');
    } finally {
      try {
        process.kill(-child.pid!, 'SIGINT');
      } catch {
        child.kill('SIGINT');
      }
    }
  });

  it('npx dflmoe --help works', () => {
    const r = run('npx', ['--no-install', 'dflmoe', '--help'], app, 60000);
    assert.equal(r.status, 0, r.out);
    assert.match(r.stdout, /Usage: dflmoe/);
    assert.match(r.stdout, /simulate/);
  });
});
