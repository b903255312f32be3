/**
 * The expert pool: heads received from other peers, kept as frozen tensors,
 * one (the newest) version per peer. Old versions are replaced, and a head
 * that has not been refreshed for `maxStaleness` local rounds ages out.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DecodedHead } from './codec.js';
import type { DenseLayer, HeadWeights } from './model.js';
import { z } from 'zod';
import { defineSettings, settingDefault, type SettingsOf } from './settings.js';

export interface PoolEntry {
  peer: string;
  version: number;
  /** Local round in which this version arrived. */
  receivedRound: number;
  head: HeadWeights;
  bytes: number;
  /** With `loraRank`: the expert's low-rank adapters on the shared frozen body, `a` `[in, r]` and `b` `[r, out]` per adapted layer. */
  adapters?: { a: tf.Tensor; b: tf.Tensor }[];
}

/** A decoded head, with its adapters when it carries them. */
type OfferedHead = DecodedHead & { adapters?: { a: Float32Array; aShape: number[]; b: Float32Array; bShape: number[] }[] };

export type OfferResult = 'added' | 'replaced' | 'stale-version';

/** How long a received head (dFLMoE), body or model (gossip) stays usable: the site config's `round` section. */
export const stalenessSettings = defineSettings({
  section: 'round',
  usedBy: 'dflmoe, gossip and body sharing',
  shape: {
    maxStaleness: z.number().int().min(1).default(3).describe('rounds a received head, body or model stays usable without an update'),
  },
});

/** The staleness bound, resolved. */
export type StalenessSettings = SettingsOf<typeof stalenessSettings>;

export interface ExpertPoolOptions {
  /** Rounds an expert may go without a new version before it is dropped (`stalenessSettings`). */
  maxStaleness?: number;
}

export class ExpertPool {
  private entries = new Map<string, PoolEntry>();
  readonly maxStaleness: number;

  constructor(opts: ExpertPoolOptions = {}) {
    this.maxStaleness = opts.maxStaleness ?? (settingDefault(stalenessSettings.shape.maxStaleness) as number);
  }

  /**
   * Take in a decoded head. Versions only move forward: a head whose version
   * is not newer than the one held is refused (and nothing is allocated).
   */
  offer(head: OfferedHead, round: number, bytes: number): OfferResult {
    const old = this.entries.get(head.peer);
    if (old && head.version <= old.version) return 'stale-version';
    const weights: DenseLayer[] = head.layers.map((l, i) => ({
      // Copy: on the cpu backend a tensor may share memory with its source array.
      kernel: tf.tensor2d(l.kernel.slice(), kernelShape(head, i)),
      bias: tf.tensor1d(l.bias.slice()),
    }));
    const adapters = head.adapters?.map((l) => ({ a: tf.tensor(l.a.slice(), l.aShape), b: tf.tensor(l.b.slice(), l.bShape) }));
    if (old) disposeEntry(old);
    this.entries.set(head.peer, { peer: head.peer, version: head.version, receivedRound: round, head: weights, bytes, ...(adapters ? { adapters } : {}) });
    return old ? 'replaced' : 'added';
  }

  /** Put back an entry saved in a checkpoint (takes ownership of `head`). */
  restore(e: PoolEntry): void {
    const old = this.entries.get(e.peer);
    if (old) disposeEntry(old);
    this.entries.set(e.peer, e);
  }

  /** Drop experts not refreshed within `maxStaleness` rounds of `round`; returns the dropped peer ids. */
  expire(round: number): string[] {
    const dropped: string[] = [];
    for (const [peer, e] of this.entries) {
      if (round - e.receivedRound > this.maxStaleness) {
        disposeEntry(e);
        this.entries.delete(peer);
        dropped.push(peer);
      }
    }
    return dropped;
  }

  /** Drop `peer`'s head (a bounded mixture deselected it); false when not held. */
  remove(peer: string): boolean {
    const e = this.entries.get(peer);
    if (!e) return false;
    disposeEntry(e);
    this.entries.delete(peer);
    return true;
  }

  get(peer: string): PoolEntry | undefined {
    return this.entries.get(peer);
  }

  /** Entries sorted by peer id, so iteration order does not depend on arrival order. */
  list(): PoolEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0));
  }

  get size(): number {
    return this.entries.size;
  }

  dispose(): void {
    for (const e of this.entries.values()) disposeEntry(e);
    this.entries.clear();
  }
}

function kernelShape(head: DecodedHead, i: number): [number, number] {
  const dims = [head.spec.inputDim, ...head.spec.hidden, head.spec.outputDim];
  return [dims[i], dims[i + 1]];
}

function disposeEntry(e: PoolEntry): void {
  disposeHead(e.head);
  for (const l of e.adapters ?? []) tf.dispose([l.a, l.b]);
}

export function disposeHead(h: HeadWeights): void {
  for (const l of h) {
    l.kernel.dispose();
    l.bias.dispose();
  }
}
