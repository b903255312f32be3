/**
 * One site in the tab: the same `runPeer` that `dflmoe peer` runs (core's
 * round loop, p2p's exchanges, preprocessing, checkpoints, audit trail),
 * with the tab's transports, its in-memory file system for the site's
 * directory, and a compute backend a browser has.
 */
import { webSockets } from '@libp2p/websockets';
import { webRTC } from '@libp2p/webrtc';
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

/**
 * WebGL where the browser has it, else wasm (its binaries served beside the
 * app), else plain JS; `force` (the page's `?backend=wasm`) picks one.
 */
export function tabBackend(logger?: Logger, force?: string): Promise<BackendInfo> {
  backend ??= initBackend({
    order: BROWSER_BACKENDS,
    ...(force ? { force } : {}),
    logger,
    loaders: {
      webgl: async () => {
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
