/**
 * The one interface every algorithm implements, so that the simulator,
 * `dflmoe peer`, the CLI, reports and benchmarks handle them alike. An
 * algorithm is a factory of sites plus a few facts about its network use;
 * a site trains, talks through a `SiteNetwork` and evaluates itself.
 * Adding one is a file exporting an `Algorithm` and a line in `registry.ts`.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { ExchangeStats, HeadExchange } from '../exchange.js';
import type { NamedArray } from '../codec.js';
import type { Logger } from '../log.js';
import type { PeerData } from '../train.js';
import type { CheckpointWrite } from '../checkpoint.js';
import type { PeerEval, PeerModelOptions } from './common.js';
import type { SettingsGroup } from '../settings.js';
import type { BodyShare, MixedBody } from '../body-share.js';
import type { TaskResult } from '../tasks/index.js';

/** Client side of an aggregation server (FedAvg and its relatives). */
export interface ServerLink {
  /** Send this round's update (an encoded bundle) with the site's number of training samples. */
  upload(round: number, payload: Uint8Array, samples: number): Promise<void>;
  /** The server's aggregate of `round` (or of a newer round); untrusted bytes. */
  download(round: number): Promise<Uint8Array>;
  stats(): ExchangeStats;
}

/** What a site sees of the network; an algorithm uses the part its `network` names. */
export interface SiteNetwork {
  /** `peers` algorithms: broadcast to the other members. */
  exchange?: HeadExchange;
  /** Sites that share bodies (dFLMoE with `shareBody`, fedrep-p2p): the body exchange, on its own channel. */
  bodies?: HeadExchange;
  /** `server` algorithms: the aggregation server. */
  server?: ServerLink;
  /** After publishing, wait for this many fresh messages from other sites... */
  quorum: number;
  /** ...but no longer than this (ms; 0: do not wait). */
  deadlineMs: number;
  /** The number of other members, when known: members that left are not waited for beyond what the quorum allows. */
  others?: number;
  /**
   * The other members a round waits for, when the site knows them (`dflmoe
   * peer`: those it agreed on the data with, `others` of them): only those
   * connected now are waited for, so a member that left before the wait, or
   * never came, costs no deadline. Default: the exchange's members, those
   * seen leaving not counted.
   */
  awaited?: readonly string[];
  /**
   * Multi-task sites whose tasks exchange heads (dFLMoE): one network per
   * task the site learns, among the sites that learn that task.
   */
  tasks?: Record<string, SiteNetwork>;
  /** Multi-task dFLMoE with `crossTask`: every site's heads of every task, among all the members... */
  crossTask?: HeadExchange;
  /** ...of which there are this many others. */
  crossOthers?: number;
  /** The tasks the consortium agreed on (`dflmoe peer`): a bundle on `crossTask` naming any other is dropped (`cross:mismatch`). */
  crossTaskNames?: readonly string[];
  /** A member's name for messages; with it, a wait says every few seconds whom it is still waiting for. */
  memberName?(peer: string): string;
  logger: Logger;
  /** Seconds spent moving bytes so far, where the transport measures it. */
  transferSeconds?(): number;
}

/** What one round of a site did (the loop adds evaluation, bytes and timing). */
export interface SiteRound {
  loss: number;
  trainSeconds: number;
  waitSeconds: number;
  /** Messages from other sites taken in this round (heads, models). */
  fresh: number;
  /** dFLMoE: experts dropped as stale at the start of the round. */
  expired?: string[];
  /** Sites that share bodies: the members' bodies combined into this site's body this round. */
  bodies?: MixedBody[];
}

/** An expert a dFLMoE site held in a round: the member whose head it is, the head's version and its gate weight. */
export interface ExpertInfo {
  /** The member whose head this expert is. */
  peer: string;
  /** The round of that member's head in use. */
  version: number;
  /** Mean gate weight on the local test split. */
  gateWeight: number;
  /** A multi-task site: the task whose head it is. */
  task?: string;
}

/** Per-site fields an algorithm adds to results.json. */
export interface SiteResultExtras {
  gateWeights?: Record<string, number>;
  rejectedHeads?: Record<string, number>;
}

/** Crash safety: save after each round, restore before the first. */
export interface SiteCheckpointing {
  save(dir: string, round: number, extra: Record<string, unknown>, keep: number): Promise<CheckpointWrite>;
  /** Restore the newest good checkpoint; undefined when there is none. */
  restore(dir: string, logger: Logger): Promise<{ round: number; path: string; extra: Record<string, unknown>; summary: string } | undefined>;
}

/** One site of an algorithm. */
export interface AlgorithmSite {
  readonly id: string;
  readonly data: PeerData;
  /** Local training and this algorithm's communication for `round`. */
  runRound(round: number, net: SiteNetwork): Promise<SiteRound>;
  /** Personalized metrics on the site's own test split. */
  evaluate(): PeerEval;
  /** A multi-task site: every task's metrics on its test rows, by task name (else the round loop reports `evaluate` as the site's one task). */
  taskResults?(): Record<string, TaskResult>;
  /** A multi-task site: the tasks whose heads it exchanges, each on its own network (`SiteNetwork.tasks`). */
  readonly headTasks?: readonly string[];
  /** A multi-task dFLMoE site with `crossTask`: it also sends and takes every task's heads (`SiteNetwork.crossTask`). */
  readonly crossTask?: boolean;
  /**
   * Activated outputs (class probabilities `[batch, classes]`, or a
   * regression's predictions `[batch, 1]`) of the model this site is
   * evaluated with, for standardized samples `x` `[batch, ...sampleShape]`.
   * The caller disposes the result; `x` is left alone.
   */
  predict?(x: tf.Tensor): tf.Tensor2D;
  /** dFLMoE: the experts in the pool with their gate weights. */
  experts?(): ExpertInfo[];
  /** Received input the algorithm refused, by reason (cumulative). */
  rejected(): Record<string, number>;
  privacySpent(): { epsilon: number; delta: number; steps: number } | undefined;
  resultExtras?(): SiteResultExtras;
  /** A multi-task site with `crossTask`: how much each task's read-out leans on each other task now (`"<task> <- <other>"`); undefined before it reads any. */
  crossTaskReliance?(): Record<string, number> | undefined;
  /** Algorithms that average models: a string two sites share exactly when their models can be averaged. */
  architecture?(): string;
  checkpoint?: SiteCheckpointing;
  /** Sites that share bodies: their body share (the network builders give them a body exchange). */
  readonly bodyShare?: BodyShare;
  dispose(): void;
}

/**
 * What every algorithm's site is made with besides its settings: the
 * consortium's seed, the size limits of received messages and the
 * simulator's robustness experiments. `AlgorithmOptions` (the registry) adds
 * every algorithm's settings.
 */
export interface AlgorithmBaseOptions {
  /** The consortium's seed (shared initial models are derived from it). */
  seed: number;
  /** Largest head message accepted, in bytes. */
  maxHeadBytes: number;
  /** Largest model or body message accepted, in bytes. */
  maxModelBytes: number;
  /** Robustness experiments: this site publishes random heads (dFLMoE only; others ignore it)... */
  randomUpdates?: boolean;
  /** ...and, when it shares bodies, random (`random`) or sign-flipped (`sign-flip`) bodies. */
  poisonBody?: 'random' | 'sign-flip';
}

export { DEFAULT_LIMITS } from '../limits.js';

export interface Upload {
  weights: NamedArray[];
  samples: number;
}

export interface Algorithm<N extends string = string, O extends AlgorithmBaseOptions = AlgorithmBaseOptions> {
  readonly name: N;
  /** Name in prose and error messages (`FedAvg`). */
  readonly label: string;
  /** One line for `--help` and reports. */
  readonly description: string;
  /** Colour in charts. */
  readonly color: string;
  /** `none`: no communication; `peers`: broadcast to the members; `server`: through an aggregation server. */
  readonly network: 'none' | 'peers' | 'server';
  /** What crosses the network: heads or (whole or partial) models; sets the size limit. */
  readonly message?: 'head' | 'model' | 'body';
  /** Every site must have the same model (it averages models). */
  readonly sameModel: boolean;
  /** Shares bodies peer to peer: `always` (fedrep-p2p), `opt-in` with `shareBody` (dFLMoE); absent: never. */
  readonly bodies?: 'always' | 'opt-in';
  /** The groups of settings this algorithm takes (their variants apply to its runs). */
  readonly settings: readonly SettingsGroup[];
  createSite(base: PeerModelOptions, o: O): AlgorithmSite;
  /** How it learns several tasks at a site (`multi-task.ts`); absent: it has no multi-task form. */
  multiTask?(o: O): MultiTaskForm;
  /** `server` algorithms: combine a round's uploads (given in rank order). */
  aggregate?(uploads: Upload[]): NamedArray[];
}

/**
 * How an algorithm learns several tasks at one site: each task's head is
 * the site's own (trained with the body, as local-only trains) or mixed
 * with that task's heads from the other sites (`experts`: dFLMoE); the body
 * is kept, averaged by a server (FedAvg, FedAvg-FT and FedRep alike) or
 * combined with the members' bodies peer to peer (fedrep-p2p, dFLMoE with
 * `shareBody`).
 */
export interface MultiTaskForm {
  /** Each task's head: the site's own, or mixed with the same task's heads of other sites. */
  heads: 'own' | 'experts';
  /** How the site's body is combined with the others' after each round. */
  body: 'none' | 'server' | 'peers';
}

/** Whether sites of `alg` with options `o` share their bodies. */
export function sharesBodies(alg: Pick<Algorithm, 'bodies'>, o: { shareBody?: boolean }): boolean {
  return alg.bodies === 'always' || (alg.bodies === 'opt-in' && o.shareBody === true);
}
