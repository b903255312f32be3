/**
 * `dflmoe peer`: run one site from its config file. Writes one JSON line per
 * round to `<out>/metrics.jsonl` and `<out>/results.json` at the end.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DflmoeLearner, DflmoePeer, FedAvgClient, LocalPeer, initBackend, parseBodySpec, preparePeerData, disposePeerData, sharedInitSeed,
  listCheckpoints, restoreLatestCheckpoint, saveCheckpoint,
  type HeadExchange, type Logger, type PeerData,
} from '@dflmoe/core';
import { deriveSeed, featureSize, pooledStandardizer, loadDataset, partition } from '@dflmoe/data';
import type { PeerConfig } from './config.js';
import { loadIdentity, loadPsk } from './identity.js';
import { Libp2pHeadExchange } from './head-exchange.js';
import { createSiteNode, type SiteNode } from './node.js';
import { FedAvgNetClient } from './fedavg-net.js';
import { PeerMetrics } from './metrics.js';

export interface RoundLine {
  round: number;
  accuracy: number;
  ownHeadAccuracy: number;
  loss: number;
  experts: { peer: string; name?: string; version: number; gateWeight: number }[];
  freshHeads: number;
  bytesIn: number;
  bytesOut: number;
  seconds: number;
  trainSeconds: number;
  waitSeconds: number;
  networkSeconds: number;
  dropped: Record<string, number>;
  /** With DP-SGD: privacy spent so far. */
  epsilon?: number;
  delta?: number;
  /** dFLMoE: time and size of this round's checkpoint. */
  checkpointSeconds?: number;
  checkpointBytes?: number;
  time: string;
}

export interface PeerRunResult {
  peerId: string;
  name?: string;
  algorithm: PeerConfig['algorithm'];
  backend: string;
  index: number;
  trainSamples: number;
  testSamples: number;
  accuracy: number;
  ownHeadAccuracy: number;
  bytesSent: number;
  bytesReceived: number;
  wallSeconds: number;
  /** Peak resident set size of this process, MiB. */
  peakRssMiB: number;
  rounds: RoundLine[];
}

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, path);
}

/** The data a site trains on, built exactly as the simulator builds peer `index`. */
export function sitePeerData(cfg: PeerConfig): PeerData {
  const d = cfg.data;
  const ds = loadDataset(d.dataset, { seed: d.seed, maxSamples: d.maxSamples, dataDir: d.dataDir, labelColumn: d.labelColumn });
  const splits = partition(ds.labels, ds.classNames.length, d.peers, d.partition, { seed: d.seed, testFraction: d.testFraction, minSize: d.minSize });
  const st = d.standardize === 'global'
    ? pooledStandardizer(ds.features, featureSize(ds), splits)
    : undefined;
  return preparePeerData(ds, splits[d.index], st);
}

export interface RunPeerOptions {
  logger: Logger;
  /** Serve Prometheus metrics on 127.0.0.1 at this port. */
  metricsPort?: number;
  signal?: AbortSignal;
  onRound?: (line: RoundLine) => void;
}

export async function runPeer(cfg: PeerConfig, o: RunPeerOptions): Promise<PeerRunResult> {
  const t0 = performance.now();
  const log = o.logger;
  const id = loadIdentity(cfg.key);
  const backend = await initBackend({ logger: log });
  const data = sitePeerData(cfg);
  mkdirSync(cfg.out, { recursive: true });
  const metricsFile = join(cfg.out, 'metrics.jsonl');
  const ckptDir = join(cfg.out, 'checkpoints');
  const resuming = cfg.algorithm === 'dflmoe' && cfg.checkpoint.enabled && listCheckpoints(ckptDir).length > 0;
  if (!resuming) writeFileSync(metricsFile, '');
  const names = new Map(cfg.members.map((m) => [m.peerId, m.name]));
  const base = {
    id: id.peerId,
    data,
    body: parseBodySpec(cfg.model.body),
    featureDim: cfg.model.featureDim,
    headHidden: cfg.model.headHidden,
    train: { ...cfg.train, seed: deriveSeed(cfg.data.seed, 'peer', cfg.data.index) },
    ...(cfg.model.sharedInit ? { initSeed: sharedInitSeed(cfg.data.seed, cfg.model.body) } : {}),
  };
  const rounds: RoundLine[] = [];
  const prom = o.metricsPort !== undefined ? new PeerMetrics() : undefined;
  if (prom) log.info(`Prometheus metrics on http://127.0.0.1:${await prom.listen(o.metricsPort!)}/metrics`);
  const record = (line: RoundLine) => {
    rounds.push(line);
    appendFileSync(metricsFile, JSON.stringify(line) + '\n');
    if (prom) {
      prom.rounds.inc();
      prom.accuracy.set(line.accuracy);
      prom.ownHeadAccuracy.set(line.ownHeadAccuracy);
      prom.experts.set(line.experts.length);
      prom.expertVersion.reset();
      for (const e of line.experts) prom.expertVersion.set({ peer: e.name ?? e.peer }, e.version);
      prom.bytes.set({ direction: 'in' }, line.bytesIn);
      prom.bytes.set({ direction: 'out' }, line.bytesOut);
      for (const [reason, n] of Object.entries(line.dropped)) prom.dropped.set({ reason }, n);
      for (const part of ['train', 'wait', 'network'] as const) prom.roundSeconds.set({ part }, line[`${part}Seconds`]);
      prom.roundSeconds.set({ part: 'total' }, line.seconds);
    }
    o.onRound?.(line);
  };
  let node: SiteNode | undefined;
  let exchange: Libp2pHeadExchange | undefined;
  let fedavg: FedAvgNetClient | undefined;
  let final = { accuracy: NaN, ownHeadAccuracy: NaN, bytesSent: 0, bytesReceived: 0 };
  const dropped = () => ({ ...(exchange?.dropped ?? {}), ...(fedavg?.dropped ?? {}) }) as Record<string, number>;
  try {
    if (cfg.algorithm !== 'local') {
      const allow = [...cfg.members.map((m) => m.peerId), ...(cfg.server ? [cfg.server.peerId] : [])];
      node = await createSiteNode({
        privateKey: id.privateKey,
        listen: cfg.listen,
        allow,
        psk: cfg.psk ? loadPsk(cfg.psk) : undefined,
        onRefused: (peer, dir) => log.warn(`refused ${dir} connection from non-member ${peer}`),
        metricsRegistry: prom?.registry,
        isBlocked: (peer) => exchange?.isBlocked(peer) ?? false,
      });
      if (cfg.algorithm === 'dflmoe') {
        exchange = new Libp2pHeadExchange(node, { members: cfg.members, maxHeadBytes: cfg.limits.maxHeadBytes, logger: log });
        await exchange.register();
      }
      await node.start();
      log.info(`peer ${id.peerId} (${cfg.name ?? 'unnamed'}) listening on ${node.getMultiaddrs().map(String).join(', ')}`);
      exchange?.start();
    }

    if (cfg.algorithm === 'dflmoe') {
      const ex = exchange as HeadExchange & Libp2pHeadExchange;
      const peer = new DflmoePeer({ ...base, alpha: cfg.dflmoe.alpha, gateHidden: cfg.dflmoe.gateHidden, expertLrScale: cfg.dflmoe.expertLrScale, admission: cfg.dflmoe.admission, maxStaleness: cfg.round.maxStaleness, maxHeadBytes: cfg.limits.maxHeadBytes });
      let startRound = 1;
      if (resuming) {
        const restored = await restoreLatestCheckpoint(ckptDir, peer, log);
        if (restored) {
          startRound = restored.round + 1;
          // Keep the metrics of the rounds the checkpoint covers; put back the last one if the crash lost it.
          const kept = readMetrics(metricsFile).filter((l) => l.round <= restored.round);
          if (!kept.some((l) => l.round === restored.round) && restored.extra.line) kept.push(restored.extra.line as RoundLine);
          writeJsonLinesAtomic(metricsFile, kept);
          rounds.push(...kept);
          log.info(`resumed from the checkpoint of round ${restored.round} with ${peer.pool.size} experts in the pool (${restored.path})`);
        } else {
          log.warn('no usable checkpoint: starting from round 1');
          writeFileSync(metricsFile, '');
        }
      }
      const learner = new DflmoeLearner(peer, {
        exchange: ex,
        quorum: cfg.round.quorum ?? cfg.members.filter((m) => m.peerId !== id.peerId).length,
        roundDeadlineMs: cfg.round.deadlineMs,
        logger: log,
      });
      learner.round = startRound - 1;
      let prevNet = 0;
      for (let r = startRound; r <= cfg.rounds; r++) {
        if (o.signal?.aborted) throw new Error('stopped');
        const m = await learner.runRound();
        const net = ex.transferSeconds;
        const line: RoundLine = {
          round: m.round, accuracy: m.accuracy, ownHeadAccuracy: m.ownHeadAccuracy, loss: m.loss,
          experts: m.experts.map((e) => ({ ...e, name: names.get(e.peer) })), freshHeads: m.freshHeads,
          bytesIn: m.bytesReceived, bytesOut: m.bytesSent, seconds: m.seconds, trainSeconds: m.trainSeconds,
          waitSeconds: m.waitSeconds, networkSeconds: net - prevNet, dropped: { ...dropped(), ...prefixed(m.rejected) },
          ...(peer.privacySpent() ? { epsilon: peer.privacySpent()!.epsilon, delta: peer.privacySpent()!.delta } : {}),
          time: new Date().toISOString(),
        };
        if (cfg.checkpoint.enabled) {
          const w = await saveCheckpoint(ckptDir, peer, r, { line }, cfg.checkpoint.keep);
          line.checkpointSeconds = w.seconds;
          line.checkpointBytes = w.bytes;
        }
        record(line);
        prevNet = net;
      }
      const ev = peer.evaluate();
      final = { accuracy: ev.accuracy, ownHeadAccuracy: ev.ownHeadAccuracy, ...sentReceived(ex) };
      // Stay a little so that slower peers can fetch our last head.
      await sleep(cfg.lingerMs, o.signal);
      peer.dispose();
    } else if (cfg.algorithm === 'fedavg') {
      const client = new FedAvgClient({ ...base, initSeed: deriveSeed(cfg.data.seed, 'fedavg-init') });
      fedavg = new FedAvgNetClient(node!, client, { server: cfg.server!, rank: cfg.data.index, maxModelBytes: cfg.limits.maxModelBytes, logger: log, deadlineMs: cfg.round.deadlineMs });
      for (let r = 1; r <= cfg.rounds; r++) {
        if (o.signal?.aborted) throw new Error('stopped');
        const m = await fedavg.runRound(r);
        record({
          round: r, accuracy: m.accuracy, ownHeadAccuracy: m.accuracy, loss: m.loss, experts: [], freshHeads: 0,
          bytesIn: m.bytesReceived, bytesOut: m.bytesSent, seconds: m.seconds, trainSeconds: m.trainSeconds,
          waitSeconds: m.waitSeconds, networkSeconds: m.networkSeconds, dropped: dropped(), time: new Date().toISOString(),
        });
      }
      final = { accuracy: rounds.at(-1)!.accuracy, ownHeadAccuracy: rounds.at(-1)!.accuracy, bytesSent: fedavg.bytesSent, bytesReceived: fedavg.bytesReceived };
      client.dispose();
    } else {
      const peer = new LocalPeer(base);
      for (let r = 1; r <= cfg.rounds; r++) {
        const rt = performance.now();
        const loss = peer.trainRound(r);
        const trainSeconds = (performance.now() - rt) / 1000;
        const acc = peer.evaluate().accuracy;
        record({
          round: r, accuracy: acc, ownHeadAccuracy: acc, loss, experts: [], freshHeads: 0, bytesIn: 0, bytesOut: 0,
          seconds: (performance.now() - rt) / 1000, trainSeconds, waitSeconds: 0, networkSeconds: 0, dropped: {}, time: new Date().toISOString(),
        });
      }
      final = { accuracy: rounds.at(-1)!.accuracy, ownHeadAccuracy: rounds.at(-1)!.accuracy, bytesSent: 0, bytesReceived: 0 };
      peer.dispose();
    }
  } finally {
    await exchange?.close();
    await node?.stop();
    await prom?.close();
  }
  const result: PeerRunResult = {
    peerId: id.peerId, name: cfg.name, algorithm: cfg.algorithm, backend: backend.name, index: cfg.data.index,
    trainSamples: data.trainSamples, testSamples: data.testSamples, ...final,
    wallSeconds: (performance.now() - t0) / 1000, peakRssMiB: process.resourceUsage().maxRSS / 1024, rounds,
  };
  disposePeerData(data);
  writeJsonAtomic(join(cfg.out, 'results.json'), result);
  return result;
}

function readMetrics(file: string): RoundLine[] {
  if (!existsSync(file)) return [];
  const out: RoundLine[] = [];
  for (const l of readFileSync(file, 'utf8').split('\n')) {
    if (!l.trim()) continue;
    try {
      out.push(JSON.parse(l) as RoundLine);
    } catch {
      // A line cut by the crash: drop it.
    }
  }
  return out;
}

function writeJsonLinesAtomic(path: string, lines: unknown[]): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, lines.map((l) => JSON.stringify(l) + '\n').join(''));
  renameSync(tmp, path);
}

function prefixed(r: Record<string, number | undefined>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(r)) if (v) out[`head:${k}`] = v;
  return out;
}

function sentReceived(ex: HeadExchange): { bytesSent: number; bytesReceived: number } {
  const s = ex.stats();
  return { bytesSent: s.bytesSent, bytesReceived: s.bytesReceived };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
