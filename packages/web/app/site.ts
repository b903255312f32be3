/**
 * One site in the tab: the same `runPeer` that `dflmoe peer` runs (core's
 * round loop, p2p's exchanges, preprocessing, checkpoints, audit trail),
 * with the tab's transports, its in-memory file system for the site's
 * directory, and a compute backend a browser has.
 */
import { webSockets } from '@libp2p/websockets';
import { webRTC } from '@libp2p/webrtc';
import { getKernel } from '@tensorflow/tfjs-core';
import { BROWSER_BACKENDS, initBackend, type BackendInfo, type Logger, type StatusBoard } from '@dflmoe/core';
import { runPeer, saveIdentity, siteConfigFromJoin, type JoinDetails, type PeerRunResult } from '@dflmoe/p2p';
import type { SiteData } from '@dflmoe/data';
import type { PrivateKey } from '@libp2p/interface';
import { zipSync } from 'fflate';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';

/** Where the site's files live in the tab's memory (as they would on a member's disk). */
export const SITE_ROOT = '/site';
const OUT = `${SITE_ROOT}/out`;

let backend: Promise<BackendInfo> | undefined;

/** The page's `?kernels=`: dflmoe's wasm kernels (the default), or tfjs's own (`stock`) to compare. */
export const KERNEL_SETS = ['dflmoe', 'stock'] as const;

/**
 * The renderer's name when the browser's WebGL is drawn by the CPU
 * (SwiftShader, llvmpipe: no GPU, or one the browser will not use), else
 * undefined. Training there is several times slower than on wasm
 * (`npm run bench:tab`: 8x for an MLP, 28x for a CNN on a 2-core machine).
 */
function softwareWebgl(): string | undefined {
  let renderer: string;
  try {
    const gl = new OffscreenCanvas(1, 1).getContext('webgl2');
    if (!gl) return undefined;
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    gl.getExtension('WEBGL_lose_context')?.loseContext();
  } catch {
    // A browser that cannot ask (no OffscreenCanvas WebGL): tfjs's own check decides.
    return undefined;
  }
  return /swiftshader|llvmpipe|softpipe|software/i.test(renderer) ? renderer : undefined;
}

/**
 * WebGL where the browser has it on a GPU, else wasm (its binaries served
 * beside the app), else plain JS; `force` (the page's `?backend=wasm`)
 * picks one.
 * `kernels: 'stock'` (the page's `?kernels=stock`) keeps tfjs's own wasm
 * kernels, as `DFLMOE_WASM_KERNELS=stock` does in Node: the tab's `process`
 * shim holds the same variable, which the backend's start reads.
 */
export function tabBackend(logger?: Logger, force?: string, kernels?: string): Promise<BackendInfo> {
  if (kernels !== undefined && !(KERNEL_SETS as readonly string[]).includes(kernels)) {
    return Promise.reject(new Error(`unknown kernels=${kernels} in the page's address: use ${KERNEL_SETS.join(' or ')}`));
  }
  if (backend === undefined && kernels === 'stock') process.env.DFLMOE_WASM_KERNELS = 'stock';
  backend ??= initBackend({
    order: BROWSER_BACKENDS,
    ...(force ? { force } : {}),
    logger,
    loaders: {
      webgl: async () => {
        const software = force?.trim().toLowerCase() === 'webgl' ? undefined : softwareWebgl();
        if (software) throw new Error(`WebGL is software-rendered here (${software}), slower than wasm; ?backend=webgl uses it anyway`);
        await import('@tensorflow/tfjs-backend-webgl');
      },
      wasm: async () => {
        const wasm = await import('@tensorflow/tfjs-backend-wasm');
        wasm.setWasmPaths(new URL('wasm/', location.href).href);
      },
      cpu: async () => {
        await import('@tensorflow/tfjs-backend-cpu');
      },
    },
  });
  return backend;
}

/**
 * Which wasm kernels the tab runs: `dflmoe` when the backend start registered
 * dflmoe's own (they register together; the fused Adam step is the one a
 * name shows), `stock` when it kept tfjs's, `none` on another backend.
 */
export function tabKernels(b: BackendInfo): 'dflmoe' | 'stock' | 'none' {
  if (b.name !== 'wasm') return 'none';
  return getKernel('DflmoeAdamStep', 'wasm') ? 'dflmoe' : 'stock';
}

export interface TabSiteOptions {
  join: JoinDetails;
  name?: string;
  privateKey: PrivateKey;
  peerId: string;
  /** The CSV the user picked, as text. */
  csv?: string;
  /** Or the samples of an image folder, decoded in the page. */
  samples?: SiteData;
  logger: Logger;
  status: StatusBoard;
  signal: AbortSignal;
  onRound?: (round: number, accuracy: number) => void;
}

export async function runTabSite(o: TabSiteOptions): Promise<PeerRunResult> {
  // A fresh site directory for each run: the tab holds one site at a time.
  rmSync(SITE_ROOT, { recursive: true, force: true });
  mkdirSync(SITE_ROOT, { recursive: true });
  saveIdentity(`${SITE_ROOT}/key`, o.privateKey, true);
  let dataset = 'images:/site/images';
  if (o.csv !== undefined) {
    writeFileSync(`${SITE_ROOT}/data.csv`, o.csv);
    dataset = `csv:${SITE_ROOT}/data.csv`;
  } else if (!o.samples) throw new Error('pick a CSV file or an image folder first');
  const cfg = siteConfigFromJoin(o.join, {
    ...(o.name ? { name: o.name } : {}),
    key: `${SITE_ROOT}/key`,
    dataset,
    out: OUT,
    peerId: o.peerId,
    // Reached by the others through the consortium's relays (WebRTC between tabs); members themselves are dialled over WebSockets.
    listen: ['/p2p-circuit', '/webrtc'],
  });
  await tabBackend(o.logger);
  return runPeer(cfg, {
    logger: o.logger,
    signal: o.signal,
    status: o.status,
    transports: [webSockets(), webRTC()],
    ...(o.samples ? { data: o.samples } : {}),
    onRound: (l) => o.onRound?.(l.round, l.accuracy),
  });
}

/** The site's directory as a zip: what `dflmoe predict --site <zip>` and `dflmoe evaluate` read (no key in it). */
export function siteArchive(): Uint8Array {
  const files: Record<string, Uint8Array> = {};
  const walk = (dir: string, prefix: string) => {
    for (const name of readdirSync(dir) as string[]) {
      const path = `${dir}/${name}`;
      if (statSync(path).isDirectory()) walk(path, `${prefix}${name}/`);
      else files[`${prefix}${name}`] = new Uint8Array(readFileSync(path) as Uint8Array);
    }
  };
  walk(OUT, 'site/');
  return zipSync(files);
}
