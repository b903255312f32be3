/**
 * Checkpoints of a site (every algorithm) and of the FedAvg server, written
 * after every round so that a crash loses at most the round in progress.
 *
 * Layout: `<dir>/round-000007/` holding
 * - `body/model.json` + `body/weights.bin`: the body in the tfjs layers
 *   format, loadable by `tf.loadLayersModel` (and tfjs-node, Python converters);
 * - `state.bin`: dFLMoE: own head, gate, FSTs, expert pool and optimizer
 *   state (algorithms/dflmoe-checkpoint.ts); other algorithms: every variable and optimizer state (our checked
 *   bundle format); the FedAvg server: `global.bin`, its newest global model;
 * - `manifest.json`: round, sizes and SHA-256 of every file, and the caller's
 *   extra state. Written last.
 *
 * A checkpoint is written to a temporary directory, every file fsynced, then
 * renamed into place (and the parent directory fsynced): a reader sees a
 * whole checkpoint or none. Loading checks the manifest, sizes and digests;
 * a damaged checkpoint is reported and the previous good one is used.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from './log.js';

const FORMAT = 1;
const PREFIX = 'round-';

interface Manifest {
  format: number;
  round: number;
  createdAt: string;
  files: Record<string, { bytes: number; sha256: string }>;
  /** What the writer needs to read its files back (for dFLMoE, `DflmoeStateMeta`). */
  state: unknown;
  extra: Record<string, unknown>;
}

export interface CheckpointWrite {
  path: string;
  bytes: number;
  seconds: number;
  /** SHA-256 of the manifest, which holds the SHA-256 of every file: the checkpoint's digest. */
  digest: string;
}

function writeFileSynced(path: string, data: Uint8Array | string): void {
  const fd = openSync(path, 'w');
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fsyncDir(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const roundDir = (dir: string, round: number) => join(dir, `${PREFIX}${String(round).padStart(6, '0')}`);

/**
 * Write the checkpoint of `round` from named files (`a/b.bin` makes a
 * sub-directory) and a manifest holding `state` and `extra`, atomically,
 * and keep the newest `keep` checkpoints. Every kind of site and the
 * FedAvg server write theirs through this.
 */
export function writeCheckpoint(
  dir: string,
  round: number,
  data: Record<string, Uint8Array | string>,
  state: unknown,
  extra: Record<string, unknown> = {},
  keep = 2,
): CheckpointWrite {
  const t0 = performance.now();
  mkdirSync(dir, { recursive: true });
  const final = roundDir(dir, round);
  const tmp = `${final}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const files: Manifest['files'] = {};
  const subdirs = new Set<string>();
  for (const [name, d] of Object.entries(data)) {
    const buf = typeof d === 'string' ? Buffer.from(d) : d;
    const slash = name.lastIndexOf('/');
    if (slash > 0 && !subdirs.has(name.slice(0, slash))) {
      subdirs.add(name.slice(0, slash));
      mkdirSync(join(tmp, name.slice(0, slash)), { recursive: true });
    }
    writeFileSynced(join(tmp, name), buf);
    files[name] = { bytes: buf.length, sha256: sha256(buf) };
  }
  const manifest: Manifest = { format: FORMAT, round, createdAt: new Date().toISOString(), files, state, extra };
  const manifestText = JSON.stringify(manifest, null, 1);
  writeFileSynced(join(tmp, 'manifest.json'), manifestText);
  for (const d of subdirs) fsyncDir(join(tmp, d));
  fsyncDir(tmp);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  fsyncDir(dir);
  // Prune old checkpoints (and stale temporaries from crashed writes).
  const rounds = listCheckpoints(dir);
  for (const r of rounds.slice(0, Math.max(0, rounds.length - keep))) rmSync(roundDir(dir, r), { recursive: true, force: true });
  for (const name of readdirSync(dir)) if (name.includes('.tmp-')) rmSync(join(dir, name), { recursive: true, force: true });
  const bytes = Object.values(files).reduce((a, f) => a + f.bytes, 0);
  return { path: final, bytes, seconds: (performance.now() - t0) / 1000, digest: sha256(Buffer.from(manifestText)) };
}

/** Rounds that have a checkpoint directory, oldest first. */
export function listCheckpoints(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => n.startsWith(PREFIX) && /^\d+$/.test(n.slice(PREFIX.length)))
    .map((n) => Number(n.slice(PREFIX.length)))
    .sort((a, b) => a - b);
}

/** Read and verify one checkpoint; throws an Error that says what is wrong. */
function readVerified(path: string): VerifiedCheckpoint {
  const mf = join(path, 'manifest.json');
  if (!existsSync(mf)) throw new Error(`${path}: no manifest.json (incomplete checkpoint)`);
  let manifest: Manifest;
  let text: Buffer;
  try {
    text = readFileSync(mf);
    manifest = JSON.parse(text.toString('utf8')) as Manifest;
  } catch (e) {
    throw new Error(`${mf} is not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (manifest.format !== FORMAT) throw new Error(`${path}: checkpoint format ${manifest.format} is not supported (this version reads ${FORMAT})`);
  const cache = new Map<string, Uint8Array>();
  for (const [name, f] of Object.entries(manifest.files)) {
    const p = join(path, name);
    if (!existsSync(p)) throw new Error(`${p} is missing`);
    const b = readFileSync(p);
    if (b.length !== f.bytes) throw new Error(`${p} has ${b.length} bytes, the manifest says ${f.bytes} (truncated?)`);
    if (sha256(b) !== f.sha256) throw new Error(`${p} does not match its checksum (corrupt)`);
    cache.set(name, new Uint8Array(b));
  }
  return {
    round: manifest.round,
    path,
    state: manifest.state,
    extra: manifest.extra,
    digest: sha256(text),
    read: (name) => {
      const b = cache.get(name);
      if (!b) throw new Error(`${path}: the checkpoint has no ${name}`);
      return b;
    },
  };
}

/** A checkpoint whose files match its manifest. */
export interface VerifiedCheckpoint {
  round: number;
  path: string;
  state: unknown;
  extra: Record<string, unknown>;
  /** SHA-256 of its manifest (which holds the SHA-256 of every file). */
  digest: string;
  read(name: string): Uint8Array;
}

export interface RestoredCheckpoint {
  round: number;
  path: string;
  extra: Record<string, unknown>;
  /** Checkpoints that were newer but damaged, with the reason. */
  skipped: { path: string; reason: string }[];
}

/**
 * Try the checkpoints in `dir` newest first: each one that verifies is
 * handed to `load`; the first that loads is returned. Damaged ones are
 * reported and skipped. Undefined when there is none.
 */
export async function restoreNewest<T>(
  dir: string,
  load: (c: VerifiedCheckpoint) => Promise<T> | T,
  logger?: Logger,
): Promise<{ value: T; checkpoint: VerifiedCheckpoint; skipped: RestoredCheckpoint['skipped'] } | undefined> {
  const skipped: RestoredCheckpoint['skipped'] = [];
  for (const round of listCheckpoints(dir).reverse()) {
    const path = roundDir(dir, round);
    let v: VerifiedCheckpoint;
    try {
      v = readVerified(path);
    } catch (e) {
      const reason = (e as Error).message;
      skipped.push({ path, reason });
      logger?.error(`checkpoint of round ${round} is damaged and will not be used: ${reason}`);
      continue;
    }
    return { value: await load(v), checkpoint: v, skipped };
  }
  return undefined;
}
