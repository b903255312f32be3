/**
 * Site configuration: one JSON file per site. Paths inside it are relative
 * to the file. Errors name the field and say what is wrong.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { z } from 'zod';
import { ALGORITHMS, DEFAULT_ALGORITHM_OPTIONS, OPTIMIZERS, getAlgorithm, type AlgorithmName, type OptimizerKind } from '@dflmoe/core';

const addr = z.string().refine((s) => {
  try {
    multiaddr(s);
    return true;
  } catch {
    return false;
  }
}, 'not a valid multiaddr (e.g. /ip4/127.0.0.1/tcp/9001)');

const peerId = z.string().refine((s) => {
  try {
    peerIdFromString(s);
    return true;
  } catch {
    return false;
  }
}, 'not a valid peer ID (run `dflmoe keygen` to get one)');

const posInt = z.number().int().min(1);
const algorithm = z.enum(ALGORITHMS as [AlgorithmName, ...AlgorithmName[]]);

export const memberSchema = z.object({
  peerId,
  addrs: z.array(addr).default([]),
  name: z.string().optional(),
}).strict();

export const peerConfigSchema = z.object({
  name: z.string().optional(),
  key: z.string(),
  listen: z.array(addr).min(1),
  members: z.array(memberSchema).default([]),
  psk: z.string().optional(),
  algorithm: algorithm.default('dflmoe'),
  server: memberSchema.optional(),
  data: z.object({
    dataset: z.string(),
    partition: z.string().default('iid'),
    peers: posInt.default(1),
    index: z.number().int().min(0).default(0),
    seed: z.number().int().default(1),
    testFraction: z.number().gt(0).lt(1).default(0.2),
    minSize: posInt.default(10),
    maxSamples: posInt.optional(),
    dataDir: z.string().optional(),
    labelColumn: z.string().optional(),
    standardize: z.enum(['global', 'local']).default('local'),
  }).strict(),
  model: z.object({
    body: z.string().default('mlp'),
    featureDim: posInt.default(64),
    headHidden: z.array(posInt).default([]),
    /** Start from the consortium's shared initial model (seeded by data.seed and the body). */
    sharedInit: z.boolean().default(true),
  }).strict().default({ body: 'mlp', featureDim: 64, headHidden: [], sharedInit: true }),
  train: z.object({
    epochs: posInt.default(1),
    batchSize: posInt.default(32),
    learningRate: z.number().positive().default(1e-3),
    /** Local optimiser: adam, sgd, or momentum (SGD with momentum 0.9). */
    optimizer: z.enum(OPTIMIZERS as [OptimizerKind, ...OptimizerKind[]]).default('adam'),
    /** DP-SGD: per-example (or per-microbatch) clipping and Gaussian noise. */
    dp: z.object({
      clipNorm: z.number().positive(),
      noiseMultiplier: z.number().min(0),
      microbatches: posInt.optional(),
      delta: z.number().gt(0).lt(1).default(1e-5),
    }).strict().optional(),
  }).strict().default({ epochs: 1, batchSize: 32, learningRate: 1e-3, optimizer: 'adam' }),
  dflmoe: z.object({
    alpha: z.number().min(0).max(1).default(0.2),
    gateHidden: posInt.default(32),
    expertLrScale: z.number().positive().default(1),
    /** Refuse received heads scoring below this fraction of the own head's accuracy on local data. */
    admission: z.number().min(0).max(10).optional(),
    /** Form of each received expert's feature-space transform. */
    fst: z.enum(['full', 'diag', 'none']).default('full'),
    /** Weight of distilling the mixture into the own head (0: off). */
    distill: z.number().min(0).default(0),
  }).strict().default({ alpha: 0.2, gateHidden: 32, expertLrScale: 1, fst: 'full', distill: 0 }),
  /** fedavg-ft: epochs of fine-tuning the global model before evaluating. */
  finetune: z.object({ epochs: posInt.default(DEFAULT_ALGORITHM_OPTIONS.fineTuneEpochs) }).strict()
    .default({ epochs: DEFAULT_ALGORITHM_OPTIONS.fineTuneEpochs }),
  /** fedrep: head-only epochs (body frozen) before the body epochs. */
  fedrep: z.object({ headEpochs: z.number().int().min(0).default(DEFAULT_ALGORITHM_OPTIONS.headEpochs) }).strict()
    .default({ headEpochs: DEFAULT_ALGORITHM_OPTIONS.headEpochs }),
  rounds: posInt,
  round: z.object({
    deadlineMs: z.number().int().min(0).default(30000),
    quorum: z.number().int().min(0).optional(),
    maxStaleness: posInt.default(3),
  }).strict().default({ deadlineMs: 30000, maxStaleness: 3 }),
  limits: z.object({
    maxHeadBytes: posInt.default(64 * 1024 * 1024),
    maxModelBytes: posInt.default(512 * 1024 * 1024),
  }).strict().default({ maxHeadBytes: 64 * 1024 * 1024, maxModelBytes: 512 * 1024 * 1024 }),
  checkpoint: z.object({
    enabled: z.boolean().default(true),
    keep: posInt.default(2),
  }).strict().default({ enabled: true, keep: 2 }),
  /** After the last round, keep answering head requests this long. */
  lingerMs: z.number().int().min(0).default(3000),
  out: z.string(),
}).strict();

export type PeerConfig = z.infer<typeof peerConfigSchema>;

export const serverConfigSchema = z.object({
  name: z.string().optional(),
  /** The server algorithm whose aggregation this server runs. */
  algorithm: algorithm.default('fedavg'),
  key: z.string(),
  listen: z.array(addr).min(1),
  clients: z.array(memberSchema).min(1),
  psk: z.string().optional(),
  rounds: posInt,
  round: z.object({
    deadlineMs: z.number().int().min(0).default(120000),
    quorum: z.number().int().min(1).optional(),
  }).strict().default({ deadlineMs: 120000 }),
  limits: z.object({ maxModelBytes: posInt.default(512 * 1024 * 1024) }).strict().default({ maxModelBytes: 512 * 1024 * 1024 }),
  lingerMs: z.number().int().min(0).default(3000),
  out: z.string(),
}).strict();

export type ServerConfig = z.infer<typeof serverConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function formatIssues(file: string, err: z.ZodError): string {
  const lines = err.issues.map((i) => {
    const field = i.path.length ? i.path.join('.') : '(top level)';
    return `  ${field}: ${i.message}`;
  });
  return `config ${file} is not valid:\n${lines.join('\n')}`;
}

function readJson(file: string): unknown {
  if (!existsSync(file)) throw new ConfigError(`config file ${file} not found`);
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`config ${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Resolve paths in the config relative to the config file's directory. */
function rel(base: string, p: string | undefined): string | undefined {
  return p === undefined ? undefined : isAbsolute(p) ? p : resolve(base, p);
}

export function parsePeerConfig(raw: unknown, file = '<inline>', base = process.cwd()): PeerConfig {
  const r = peerConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(file, r.error));
  const c = r.data;
  if (c.data.index >= c.data.peers) throw new ConfigError(`config ${file}: data.index (${c.data.index}) must be below data.peers (${c.data.peers})`);
  if (getAlgorithm(c.algorithm).network === 'server' && !c.server) {
    throw new ConfigError(`config ${file}: server: required when algorithm is "${c.algorithm}" (the aggregation server's peerId and addrs)`);
  }
  if (c.round.quorum !== undefined && c.round.quorum > c.members.length) {
    throw new ConfigError(`config ${file}: round.quorum (${c.round.quorum}) exceeds the number of members (${c.members.length})`);
  }
  c.key = rel(base, c.key)!;
  c.out = rel(base, c.out)!;
  c.psk = rel(base, c.psk);
  c.data.dataDir = rel(base, c.data.dataDir);
  if (c.data.dataset.startsWith('csv:')) c.data.dataset = `csv:${rel(base, c.data.dataset.slice(4))}`;
  return c;
}

export function loadPeerConfig(file: string): PeerConfig {
  return parsePeerConfig(readJson(file), file, dirname(resolve(file)));
}

export function parseServerConfig(raw: unknown, file = '<inline>', base = process.cwd()): ServerConfig {
  const r = serverConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(file, r.error));
  const c = r.data;
  if (getAlgorithm(c.algorithm).network !== 'server') throw new ConfigError(`config ${file}: algorithm: "${c.algorithm}" does not use a server`);
  if (c.round.quorum !== undefined && c.round.quorum > c.clients.length) {
    throw new ConfigError(`config ${file}: round.quorum (${c.round.quorum}) exceeds the number of clients (${c.clients.length})`);
  }
  c.key = rel(base, c.key)!;
  c.out = rel(base, c.out)!;
  c.psk = rel(base, c.psk);
  return c;
}

export function loadServerConfig(file: string): ServerConfig {
  return parseServerConfig(readJson(file), file, dirname(resolve(file)));
}
