/**
 * Does tfjs-wasm's threaded SIMD build pay on this machine? Training
 * throughput of bench:backend's dense net (batch 64) and CNN (batch 32) with
 * the plain SIMD build (one thread, dflmoe's speed kernels) and with the
 * threaded SIMD build at 2 threads (the same kernels), each in a process of
 * its own, alternating, `--reps` times; and whether the two give the same
 * weights after the same steps.
 *
 *   npm run bench:threads [-- --seconds 4 --reps 3 --out benchmarks/results/wasm-threads.json]
 *
 * tfjs does not offer threads in Node, and its loader hands the pthread
 * workers the module as a `blob:` URL, which Node's worker threads refuse.
 * The child below loads the threaded build itself: the pthread worker's
 * script written to a file, the module's own file as the workers' main
 * script, and tfjs's BackendWasm registered as `wasm` on that module.
 * tfjs sizes its thread pool at half the logical cores (it assumes two
 * hyperthreads a core), which is one thread on this two-vCPU machine, so the
 * child reports twice the cores while the module starts.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os, { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { registerWasmAdamKernel, registerWasmConvKernels, registerWasmMatMulKernels, registerWasmPoolKernels } from '@dflmoe/core/internal';
import { measure, type ModelKind, type Throughput } from './throughput-models.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    reps: { type: 'string', default: '3' },
    out: { type: 'string', default: 'benchmarks/results/wasm-threads.json' },
    child: { type: 'string' },
  },
});
const MODELS: [ModelKind, number][] = [
  ['dense', 64],
  ['cnn', 32],
];
/** Steps after which the weights' checksums are compared. */
const CHECK_STEPS = 20;

/** The threaded SIMD build of tfjs-backend-wasm as the `wasm` backend, with `threads` threads; the threads XNNPACK got. */
async function threadedBackend(threads: number): Promise<number> {
  const require = createRequire(import.meta.url);
  const wasmPkg = require('@tensorflow/tfjs-backend-wasm') as typeof import('@tensorflow/tfjs-backend-wasm');
  const main = require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js');
  const dir = dirname(main);
  const { wasmWorkerContents } = require(join(dir, 'tfjs-backend-wasm-threaded-simd.worker.js')) as { wasmWorkerContents: string };
  const worker = join(tmpdir(), `dflmoe-wasm-pthread-${process.pid}.js`);
  // As tfjs does for its blob: newlines in the script's strings stay escaped.
  writeFileSync(worker, wasmWorkerContents.replace(/\n/g, '\\n'));
  const factory = require(main) as (cfg: object) => Promise<Record<string, unknown> & { cwrap: (...a: unknown[]) => unknown }>;
  const realCpus = os.cpus;
  os.cpus = () => [...realCpus(), ...realCpus()];
  try {
    const mod = await factory({
      locateFile: (p: string, prefix: string) => (p.endsWith('.worker.js') ? worker : p.endsWith('.wasm') ? join(dir, p) : prefix + p),
      mainScriptUrlOrBlob: main,
    });
    mod.tfjs = {
      init: mod.cwrap('init', null, []),
      initWithThreadsCount: mod.cwrap('init_with_threads_count', null, ['number']),
      getThreadsCount: mod.cwrap('get_threads_count', 'number', []),
      registerTensor: mod.cwrap('register_tensor', null, ['number', 'number', 'number']),
      disposeData: mod.cwrap('dispose_data', null, ['number']),
      dispose: mod.cwrap('dispose', null, []),
    };
    wasmPkg.setThreadsCount(threads);
    tf.removeBackend('wasm');
    tf.registerBackend('wasm', () => new wasmPkg.BackendWasm(mod as never), 3);
    if (!(await tf.setBackend('wasm'))) throw new Error('the threaded wasm backend did not start');
    await tf.ready();
    return wasmPkg.getThreadsCount();
  } finally {
    os.cpus = realCpus;
  }
}

/** One process: the backend, then each model timed and checksummed; JSON on stdout. */
async function child(threads: number): Promise<void> {
  let got = 1;
  if (threads > 1) got = await threadedBackend(threads);
  else {
    await import('@tensorflow/tfjs-backend-wasm');
    await tf.setBackend('wasm');
    await tf.ready();
  }
  registerWasmConvKernels();
  registerWasmMatMulKernels();
  registerWasmPoolKernels();
  registerWasmAdamKernel();
  tf.enableProdMode();
  const out: Record<string, Throughput> = {};
  for (const [kind, batch] of MODELS) {
    const speed = await measure(kind, batch, Number(values.seconds) * 1000);
    const check = await measure(kind, batch, 0, CHECK_STEPS);
    out[kind] = { ...speed, checksum: check.checksum };
  }
  process.stdout.write(JSON.stringify({ threads: got, models: out }) + '\n');
  process.exit(0);
}

if (values.child) await child(Number(values.child));
else {
  const runs: { setting: string; threads: number; load: number; models: Record<string, Throughput> }[] = [];
  for (let r = 0; r < Number(values.reps); r++) {
    for (const threads of [1, 2]) {
      const load = loadavg()[0];
      const p = spawnSync(process.execPath, [...process.execArgv, process.argv[1], '--child', String(threads), '--seconds', values.seconds!], {
        encoding: 'utf8',
      });
      const line = p.stdout.trim().split('\n').at(-1) ?? '';
      if (p.status !== 0 || !line.startsWith('{')) throw new Error(`the ${threads}-thread child failed: ${p.stderr.slice(-500)}`);
      const res = JSON.parse(line) as { threads: number; models: Record<string, Throughput> };
      const setting = threads === 1 ? 'SIMD, 1 thread' : `threaded SIMD, ${res.threads} threads`;
      runs.push({ setting, threads: res.threads, load, models: res.models });
      console.log(
        `${setting.padEnd(26)} ${MODELS.map(([k, b]) => `${k} batch ${b}: ${res.models[k].samplesPerSec.toFixed(0).padStart(6)} samples/s`).join('  ')}  (load ${load.toFixed(1)})`,
      );
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const summary = Object.fromEntries(
    MODELS.map(([k]) => {
      const of = (t: number) => median(runs.filter((r) => (t === 1 ? r.threads === 1 : r.threads > 1)).map((r) => r.models[k].samplesPerSec));
      const sums = new Set(runs.map((r) => r.models[k].checksum));
      return [k, { oneThread: of(1), twoThreads: of(2), ratio: of(2) / of(1), sameWeights: sums.size === 1 }];
    }),
  );
  for (const [k, s] of Object.entries(summary))
    console.log(
      `${k}: 2 threads / 1 thread = ${s.ratio.toFixed(2)} (medians ${s.twoThreads.toFixed(0)} / ${s.oneThread.toFixed(0)}); same weights after ${CHECK_STEPS} steps: ${s.sameWeights}`,
    );
  mkdirSync(dirname(values.out!), { recursive: true });
  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`;
  writeFileSync(values.out!, JSON.stringify({ date: new Date().toISOString(), machine, seconds: Number(values.seconds), runs, summary }, null, 2) + '\n');
  console.log(`wrote ${values.out}`);
}
