/**
 * Compute backend selection: tfjs-node (native) > wasm (SIMD) > cpu.
 *
 * The choice is made once per process, before any tensor exists, and logged
 * once. `DFLMOE_BACKEND=tensorflow|wasm|cpu` forces a backend; forcing one
 * that cannot load is an error (a silent fallback would make benchmark
 * numbers lie).
 */
import * as tf from '@tensorflow/tfjs-core';
import { createLogger, type Logger } from './log.js';
import { registerWasmConvKernels } from './wasm-conv.js';
import { registerWasmMatMulKernels } from './wasm-matmul.js';
import { registerWasmPoolKernels } from './wasm-pool.js';
import { registerWasmAdamKernel } from './fused-adam.js';

/** Backends in the order Node tries them. */
export const BACKENDS = ['tensorflow', 'wasm', 'cpu'] as const;
/** The order a browser tab tries them in (tfjs-node does not run there; WebGL does). */
export const BROWSER_BACKENDS = ['webgl', 'wasm', 'cpu'] as const;
/**
 * A tfjs compute backend dflmoe knows: Node's (`tensorflow`, `wasm`, `cpu`)
 * and a browser's (`webgl`, `wasm`, `cpu`).
 */
export type BackendName = (typeof BACKENDS)[number] | (typeof BROWSER_BACKENDS)[number];

/** The backend `initBackend` chose, and why the ones before it were skipped. */
export interface BackendInfo {
  /** The backend in use (`wasm`, `cpu`, `webgl`, ...). */
  name: BackendName;
  /** Whether the backend was forced through DFLMOE_BACKEND (or an option). */
  forced: boolean;
  /** wasm only: whether the SIMD binary is in use. */
  simd?: boolean;
  /** Backends that were tried and failed, with the reason. */
  skipped: { name: BackendName; reason: string }[];
}

/** Makes a backend available to tfjs (imports its package); rejects where it cannot run. */
export type BackendLoader = () => Promise<void>;

/** How each backend is made available. Tests replace these. */
export const defaultLoaders: Record<BackendName, BackendLoader> = {
  async tensorflow() {
    // Optional dependency: absent wherever its native download failed.
    const mod = '@tensorflow/tfjs-node';
    await import(mod);
    if (tf.findBackendFactory('tensorflow') == null) {
      throw new Error('@tensorflow/tfjs-node loaded but registered no backend with this copy of tfjs-core (version mismatch?)');
    }
  },
  async wasm() {
    await import('@tensorflow/tfjs-backend-wasm');
  },
  async cpu() {
    await import('@tensorflow/tfjs-backend-cpu');
  },
  async webgl() {
    // The browser app brings its own loader (its bundle holds the WebGL backend).
    throw new Error('the webgl backend is for browsers; give a loader for it');
  },
};

export function parseBackendName(value: string): BackendName {
  const v = value.trim().toLowerCase();
  const alias: Record<string, BackendName> = { node: 'tensorflow', native: 'tensorflow', 'tfjs-node': 'tensorflow' };
  const name = (alias[v] ?? v) as BackendName;
  if (!(BACKENDS as readonly string[]).includes(name) && !(BROWSER_BACKENDS as readonly string[]).includes(name)) {
    throw new Error(`Unknown compute backend "${value}". Use one of: ${BACKENDS.join(', ')} (DFLMOE_BACKEND).`);
  }
  return name;
}

/** How `initBackend` chooses: a forced backend, the order to try, the loaders, where to log the choice. */
export interface SelectOptions {
  /** Force a backend; defaults to process.env.DFLMOE_BACKEND. */
  force?: string;
  /** Loaders to use instead of the built-in ones, by backend (tests, or a host that bundles its own). */
  loaders?: Partial<Record<BackendName, BackendLoader>>;
  /** The order to try backends in (default `BACKENDS`; a browser tab: `BROWSER_BACKENDS`). */
  order?: readonly BackendName[];
  /** Where to say which backend was chosen and why others were skipped (default none). */
  logger?: Logger;
}

/**
 * Try backends in priority order and activate the first that loads and
 * initialises. Exported for tests; applications call `initBackend()`.
 */
export async function selectBackend(opts: SelectOptions = {}): Promise<BackendInfo> {
  const loaders = { ...defaultLoaders, ...opts.loaders };
  const forcedRaw = opts.force ?? process.env.DFLMOE_BACKEND;
  const forced = forcedRaw != null && forcedRaw !== '' ? parseBackendName(forcedRaw) : undefined;
  const order: BackendName[] = forced ? [forced] : [...(opts.order ?? BACKENDS)];
  const skipped: BackendInfo['skipped'] = [];
  for (const name of order) {
    try {
      await loaders[name]();
      const ok = await withoutNewProcessHandlers(() => tf.setBackend(name));
      if (!ok) throw new Error(`tf.setBackend('${name}') returned false`);
      await tf.ready();
      const info: BackendInfo = { name, forced: forced != null, skipped };
      if (name === 'wasm') {
        info.simd = Boolean(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'));
        registerWasmConvKernels();
        registerWasmMatMulKernels();
        registerWasmPoolKernels();
        registerWasmAdamKernel();
      }
      if (name === 'cpu') tf.enableProdMode();
      return info;
    } catch (err) {
      const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
      skipped.push({ name, reason });
      if (forced) {
        throw new Error(
          `DFLMOE_BACKEND=${forcedRaw} was requested but the "${name}" backend cannot load: ${reason}. ` +
            (name === 'tensorflow'
              ? 'Install @tensorflow/tfjs-node (needs internet access for its native library) or unset DFLMOE_BACKEND.'
              : 'Reinstall dependencies (npm ci) or unset DFLMOE_BACKEND.'),
          { cause: err },
        );
      }
    }
  }
  throw new Error(`No compute backend could load: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/**
 * The Emscripten glue of tfjs-backend-wasm installs process-wide
 * `uncaughtException`/`unhandledRejection` handlers that rethrow, which makes
 * Node print the whole minified wasm glue instead of the real error. Remove
 * whatever handlers appear while `fn` runs.
 */
async function withoutNewProcessHandlers<T>(fn: () => Promise<T>): Promise<T> {
  const events = ['uncaughtException', 'unhandledRejection'];
  const proc = process as unknown as NodeJS.EventEmitter;
  const before = events.map((e) => new Set(proc.listeners(e)));
  try {
    return await fn();
  } finally {
    events.forEach((e, i) => {
      for (const l of proc.listeners(e)) if (!before[i].has(l)) proc.removeListener(e, l as (...a: unknown[]) => void);
    });
  }
}

let selected: Promise<BackendInfo> | undefined;

/**
 * Pick and activate the compute backend once per process. Safe to call many
 * times; every call returns the same result.
 */
export async function initBackend(opts: SelectOptions = {}): Promise<BackendInfo> {
  if (!selected) {
    const logger = opts.logger ?? createLogger('backend');
    selected = selectBackend(opts).then((info) => {
      const extra = info.name === 'wasm' ? ` (SIMD ${info.simd ? 'on' : 'off'})` : '';
      const why = info.forced ? (opts.force ? ' (forced)' : ' (forced by DFLMOE_BACKEND)') : '';
      logger.info(`compute backend: ${info.name}${extra}${why}`);
      for (const s of info.skipped) logger.debug(`backend ${s.name} unavailable: ${s.reason}`);
      return info;
    });
    selected.catch(() => {
      selected = undefined;
    });
  }
  const info = await selected;
  // Someone (a test, a host program) may have switched backends since: switch back.
  if (tf.getBackend() !== info.name) await tf.setBackend(info.name);
  return info;
}

export { tf };
