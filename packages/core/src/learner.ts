/**
 * The embedding API: one dFLMoE site as an object. Give it data, a model
 * spec and a `HeadExchange`; call `runRound()` as often as you like; read
 * the metrics it returns. `dflmoe peer` is this plus libp2p and a config file.
 */
import { parsePartition, partition, type Dataset, type PeerSplit, type Standardizer } from '@dflmoe/data';
import { DflmoePeer, type ReceiveResult } from './algorithms/dflmoe.js';
import { initBackend } from './backend.js';
import type { HeadExchange } from './exchange.js';
import { createLogger, type Logger } from './log.js';
import { parseBodySpec, type BodySpec } from './model.js';
import { disposePeerData, preparePeerData, type TrainOptions } from './train.js';

export interface LearnerOptions {
  /** This site's id; must equal `exchange.selfId`. */
  id: string;
  dataset: Dataset;
  /** Rows of `dataset` this site trains and tests on (default: all, 80/20 split). */
  split?: PeerSplit;
  standardizer?: Standardizer;
  model?: { body?: BodySpec | string; featureDim?: number; headHidden?: number[] };
  train?: Partial<TrainOptions>;
  alpha?: number;
  gateHidden?: number;
  maxStaleness?: number;
  maxHeadBytes?: number;
  exchange: HeadExchange;
  /** Before a round, wait for at least this many fresh heads... (default 0) */
  quorum?: number;
  /** ...but no longer than this (default 0: do not wait). */
  roundDeadlineMs?: number;
  logger?: Logger;
}

export interface ExpertInfo {
  peer: string;
  version: number;
  /** Mean gate weight on the local test split. */
  gateWeight: number;
}

export interface LearnerRoundMetrics {
  round: number;
  /** Personalized accuracy of the MoE on the local test split. */
  accuracy: number;
  ownHeadAccuracy: number;
  loss: number;
  experts: ExpertInfo[];
  /** Heads that arrived before the round started (fresh heads used for the quorum). */
  freshHeads: number;
  dropped: string[];
  rejected: Partial<Record<ReceiveResult, number>>;
  bytesSent: number;
  bytesReceived: number;
  trainSeconds: number;
  waitSeconds: number;
  seconds: number;
}

export interface LearnerLoopOptions {
  exchange: HeadExchange;
  quorum?: number;
  roundDeadlineMs?: number;
  logger?: Logger;
}

export class DflmoeLearner {
  round = 0;
  private log: Logger;

  constructor(readonly peer: DflmoePeer, private readonly o: LearnerLoopOptions) {
    this.log = o.logger ?? createLogger(`learner:${peer.id}`);
  }

  /** Take in every head waiting in the exchange; returns how many were accepted. */
  absorb(): number {
    let accepted = 0;
    for (const m of this.o.exchange.drain()) {
      const r = this.peer.receiveHead(m.payload, m.from, this.round);
      if (r === 'added' || r === 'replaced') accepted++;
      else if (r !== 'stale-version') {
        this.log.warn(`dropped a head from ${m.from}: ${r}`);
        this.o.exchange.reportBad?.(m.from, r);
      }
    }
    return accepted;
  }

  /** One round: wait for the quorum (bounded), train, publish the head, take in heads, evaluate. */
  async runRound(): Promise<LearnerRoundMetrics> {
    const t0 = performance.now();
    this.round++;
    const r = this.round;
    const quorum = this.o.quorum ?? 0;
    const deadline = this.o.roundDeadlineMs ?? 0;
    if (r === 1 && deadline > 0) await this.o.exchange.settle?.(deadline);
    if (r > 1 && quorum > 0 && deadline > 0) await this.o.exchange.waitForHeads(quorum, deadline);
    const waitSeconds = (performance.now() - t0) / 1000;
    const fresh = this.absorb();
    const dropped = this.peer.startRound(r);
    const tt = performance.now();
    const loss = this.peer.trainRound(r);
    const trainSeconds = (performance.now() - tt) / 1000;
    await this.o.exchange.publish(this.peer.encodeHead(r), r);
    this.absorb();
    const ev = this.peer.evaluate();
    const gw = this.peer.meanGateWeights();
    const stats = this.o.exchange.stats();
    return {
      round: r,
      accuracy: ev.accuracy,
      ownHeadAccuracy: ev.ownHeadAccuracy,
      loss,
      experts: this.peer.pool.list().map((e) => ({ peer: e.peer, version: e.version, gateWeight: gw[e.peer] ?? 0 })),
      freshHeads: fresh,
      dropped,
      rejected: { ...this.peer.counters.rejected },
      bytesSent: stats.bytesSent,
      bytesReceived: stats.bytesReceived,
      trainSeconds,
      waitSeconds,
      seconds: (performance.now() - t0) / 1000,
    };
  }

  dispose(): void {
    this.peer.dispose();
    disposePeerData(this.peer.data);
  }
}

/** Create a dFLMoE site. Picks the compute backend on first use. */
export async function createLearner(o: LearnerOptions): Promise<DflmoeLearner> {
  if (o.exchange.selfId !== o.id) throw new Error(`learner id "${o.id}" differs from the exchange's "${o.exchange.selfId}"`);
  await initBackend({ logger: o.logger });
  const split = o.split ?? partition(o.dataset.labels, o.dataset.classNames.length, 1, parsePartition('iid'), { seed: o.train?.seed ?? 0 })[0];
  const data = preparePeerData(o.dataset, split, o.standardizer);
  const body = typeof o.model?.body === 'string' ? parseBodySpec(o.model.body) : o.model?.body ?? { kind: 'mlp' as const };
  const peer = new DflmoePeer({
    id: o.id, data, body, featureDim: o.model?.featureDim ?? 64, headHidden: o.model?.headHidden ?? [], train: o.train ?? {},
    alpha: o.alpha, gateHidden: o.gateHidden, maxStaleness: o.maxStaleness, maxHeadBytes: o.maxHeadBytes,
  });
  return new DflmoeLearner(peer, o);
}
