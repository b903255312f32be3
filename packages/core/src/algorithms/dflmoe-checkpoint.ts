/**
 * dFLMoE's checkpoint: its body in the tfjs layers format, and in `state.bin`
 * its own head, gate, FSTs, expert pool and optimizer state (with shared
 * bodies, the members' bodies it holds), written and verified by
 * `checkpoint.ts` like every algorithm's.
 */
import { decodeBundle, encodeBundle } from '../codec.js';
import type { Logger } from '../log.js';
import type { BodyShare, BodyShareState } from '../body-share.js';
import { applyBodyWeights, bodyFiles } from '../pretrained.js';
import { restoreNewest, writeCheckpoint, type CheckpointWrite, type RestoredCheckpoint } from '../checkpoint.js';
import type { DflmoePeer, DflmoeStateMeta } from './dflmoe.js';

/** Write the checkpoint of `round` and keep the newest `keep` checkpoints (default 2). */
export async function saveCheckpoint(
  dir: string,
  peer: DflmoePeer,
  round: number,
  extra: Record<string, unknown> = {},
  keep = 2,
  share?: BodyShare,
): Promise<CheckpointWrite> {
  const t0 = performance.now();
  const files = await bodyFiles(peer.body);
  const { meta, tensors } = await peer.exportState();
  // With shareBody: the bodies held from the members, so that a resumed site combines what it had.
  const bodies = share?.exportState();
  files['state.bin'] = encodeBundle('model', { kind: 'dflmoe-state' }, bodies ? [...tensors, ...bodies.tensors] : tensors);
  const w = writeCheckpoint(dir, round, files, bodies ? { ...meta, bodies: bodies.meta } : meta, extra, keep);
  return { ...w, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Restore the newest good checkpoint in `dir` into `peer` (built fresh from
 * the same config). Returns undefined when there is none.
 */
export async function restoreLatestCheckpoint(dir: string, peer: DflmoePeer, logger?: Logger, share?: BodyShare): Promise<RestoredCheckpoint | undefined> {
  const r = await restoreNewest(
    dir,
    async (v) => {
      const model = JSON.parse(Buffer.from(v.read('body/model.json')).toString('utf8'));
      const data = v.read('body/weights.bin');
      applyBodyWeights(peer.body, { source: v.path, specs: model.weightsManifest[0].weights, data: data.slice().buffer as ArrayBuffer });
      const state = decodeBundle(v.read('state.bin'), { maxBytes: 2 ** 31 });
      const meta = v.state as DflmoeStateMeta & { bodies?: BodyShareState };
      await peer.importState(meta, state.tensors);
      if (share && meta.bodies) share.importState(meta.bodies, state.tensors);
    },
    logger,
  );
  return r && { round: r.checkpoint.round, path: r.checkpoint.path, extra: r.checkpoint.extra, skipped: r.skipped };
}
