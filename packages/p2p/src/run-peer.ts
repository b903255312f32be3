/**
 * `dflmoe peer`: run one site from its config file. Writes one JSON line per
 * round to `<out>/metrics.jsonl` and `<out>/results.json` at the end.
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, isInterrupted, type AlgorithmOptions, type Logger, type SiteFeed, type StatusBoard } from '@dflmoe/core';
import {
  createMultiTaskSite, getAlgorithm, sharesBodies, networkStats, prefixKeys, listCheckpoints, disposePeerData, runSite, siteTasks, withoutMembers, type AlgorithmSite, type SiteNetwork, type SiteRoundRecord, type TaskResult,
} from '@dflmoe/core/internal';
import type { SiteData } from '@dflmoe/data';
import { checkQuorum, checkSelfMember, configSettings, otherMembers, type PeerConfig } from './config.js';
import { loadIdentity, loadPsk } from './identity.js';
import { ANNOUNCE_TOPIC, HEAD_PROTOCOL, Libp2pHeadExchange, MODEL_ANNOUNCE_TOPIC, MODEL_PROTOCOL, taskChannel } from './head-exchange.js';
import { bodyExchange, headExchange, type Libp2pExchangeService as ExchangeService } from './service.js';
import { createSiteNode, startNode, type NodeTransport, type SiteNode } from './node.js';
import { siteDiscoveryOptions, siteRelayOptions, watchConnections } from './reach.js';
import { AdaptiveDeadline } from './deadline.js';
import { Libp2pServerLink } from './fedavg-net.js';
import { PeerMetrics } from './metrics.js';
import { SiteAudit, type AuditSeal } from './audit.js';
import { readJsonFile, readJsonLines, writeJsonAtomic, writeJsonLinesAtomic } from './files.js';
import { prepareSiteData, removeEarlierRun, siteIndex, siteModelOptions, writeSiteDescription, type PreparedSite } from './site-setup.js';
import { peakRssMiB } from './process-stats.js';
import { PeerStatusWatch } from './live-status.js';

/**
 * One round of a site, as a line of `metrics.jsonl`: the round loop's record
 * (`SiteRoundRecord`: accuracy, loss, experts, bytes so far, seconds, privacy
 * spent), its members named, and what the site adds: the transport's drops,
 * the checkpoint, the deadline, the time.
 */
export interface RoundLine extends Omit<SiteRoundRecord, 'experts' | 'bodies'> {
  /** dFLMoE: the experts in the pool, with the members' names. */
  experts: (SiteRoundRecord['experts'][number] & { name?: string })[];
  /** Sites that share bodies: the members' bodies combined this round (SHA-256 of what arrived), named. */
  bodies?: (NonNullable<SiteRoundRecord['bodies']>[number] & { name?: string })[];
  /** Input dropped so far by the transports and refused by the algorithm, by reason. */
  dropped: Record<string, number>;
  /** dFLMoE: time and size of this round's checkpoint. */
  checkpointSeconds?: number;
  /** ...and its size in bytes. */
  checkpointBytes?: number;
  /** With `round.adaptive`: the deadline this round's wait for heads had (ms). */
  deadlineMs?: number;
  /** Seconds since the site's run began (with the time of the earlier parts of a resumed run). */
  wallSeconds?: number;
  /** When the round finished (ISO 8601). */
  time: string;
}

/** What `runPeer` returns (and writes to `results.json`): the site's accuracy, bytes, seconds and every round. */
export interface PeerRunResult {
  /** The site's libp2p peer ID. */
  peerId: string;
  /** The site's name, when its config gives one. */
  name?: string;
  /** The algorithm the site ran. */
  algorithm: PeerConfig['algorithm'];
  /** The TensorFlow.js backend that ran it. */
  backend: string;
  /** The site's index: `data.simulate.index` for a simulated partition, else its position in the config's `members`. */
  index: number;
  /** Rows in the site's training split. */
  trainSamples: number;
  /** Rows in the site's test split. */
  testSamples: number;
  /** The site's final test accuracy (0..1; NaN for a task without one). */
  accuracy: number;
  /** The final test accuracy of the site's own head alone. */
  ownHeadAccuracy: number;
  /** Every task of the site, by name: its kind, test rows and metrics (`accuracy`, ... or `rmse`, `mae`, `r2`). */
  tasks: Record<string, TaskResult>;
  /** Bytes sent over the whole run, cumulative: every part of a resumed run, and what was served while lingering after the last round. */
  bytesSent: number;
  /** Bytes received over the whole run, cumulative as `bytesSent` is. */
  bytesReceived: number;
  /** Sites that share bodies: the part of the bytes that were bodies. */
  bodyBytesSent?: number;
  /** Of `bytesReceived`, the bytes that were bodies. */
  bodyBytesReceived?: number;
  /** Wall-clock seconds of the run (with the earlier parts of a resumed run). */
  wallSeconds: number;
  /** Peak resident set size of this process, MiB. */
  peakRssMiB: number;
  /** Every round's metrics line, as in `metrics.jsonl`. */
  rounds: RoundLine[];
  /** The audit trail's end when the run ended, signed: `dflmoe audit` checks the trail against it. */
  audit?: AuditSeal;
}

/**
 * How `runPeer` runs a site: where to log, when to stop, a callback per round,
 * the live view's status, the node's transports.
 */
export interface RunPeerOptions {
  /** Where the site's progress lines go. */
  logger: Logger;
  /** Serve Prometheus metrics on 127.0.0.1 at this port. */
  metricsPort?: number;
  /** Stop the run (SIGINT/SIGTERM): it ends with `Interrupted` after saving what it finished. */
  signal?: AbortSignal;
  /** Called with each round's metrics line as it is written. */
  onRound?: (line: RoundLine) => void;
  /** The live view's status (`--ui`): this site's, fed as it runs. */
  status?: StatusBoard;
  /** The node's transports (default TCP, and WebSockets for `/ws` listen addresses); a site in a browser tab passes its own. */
  transports?: NodeTransport[];
  /** The site's rows or samples, already read (a browser tab decodes its image folder itself); default: read what `data.dataset` names. */
  data?: SiteData;
  /** Start over: remove what an earlier run left in `out` (checkpoints, agreement, audit trail, metrics) instead of resuming it. */
  fresh?: boolean;
}

/** What the site's algorithm is made with: the settings its config resolved, the consortium's seed and the size limits. */
function siteAlgorithmOptions(cfg: PeerConfig): AlgorithmOptions {
  return { ...configSettings(cfg), seed: cfg.data.seed, maxHeadBytes: cfg.limits.maxHeadBytes, maxModelBytes: cfg.limits.maxModelBytes };
}

/**
 * Run one site from its config, as `dflmoe peer` does: start its node, agree
 * on the data, train the rounds, write metrics, checkpoints and the audit
 * trail.
 */
export async function runPeer(cfg: PeerConfig, o: RunPeerOptions): Promise<PeerRunResult> {
  const t0 = performance.now();
  const log = o.logger;
  const alg = getAlgorithm(cfg.algorithm);
  const id = loadIdentity(cfg.key);
  checkSelfMember(cfg, id.peerId);
  checkQuorum(cfg, id.peerId);
  const backend = await initBackend({ logger: log });
  mkdirSync(cfg.out, { recursive: true });
  if (o.fresh) log.info(`--fresh: removed ${removeEarlierRun(cfg.out).join(', ') || 'nothing'} from ${cfg.out}`);
  const metricsFile = join(cfg.out, 'metrics.jsonl');
  const ckptDir = join(cfg.out, 'checkpoints');
  const names = new Map(cfg.members.map((m) => [m.peerId, m.name]));
  const index = siteIndex(cfg, id.peerId);
  const rounds: RoundLine[] = [];
  const prom = o.metricsPort !== undefined ? new PeerMetrics() : undefined;
  let node: SiteNode | undefined;
  let exchange: ExchangeService | undefined;
  /** Sites that share bodies: the body exchange, beside the head exchange. */
  let bodies: ExchangeService | undefined;
  let server: Libp2pServerLink | undefined;
  let prepared: PreparedSite | undefined;
  let site: AlgorithmSite | undefined;
  /** dFLMoE at a multi-task site: each task's head channel. */
  let taskExchanges: Record<string, Libp2pHeadExchange> = {};
  const selfName = names.get(id.peerId) ?? cfg.name ?? id.peerId;
  const memberId = (peer: string) => names.get(peer) ?? peer;
  const feed: SiteFeed | undefined = o.status?.site({
    id: selfName, peerId: id.peerId, algorithm: alg.name, rounds: cfg.rounds,
    members: [...otherMembers(cfg, id.peerId), ...(cfg.server ? [cfg.server] : [])].map((m) => ({ id: m.name ?? m.peerId, peerId: m.peerId })),
  });
  let watch: PeerStatusWatch | undefined;
  try {
    if (prom) log.info(`Prometheus metrics on http://127.0.0.1:${await prom.listen(o.metricsPort!)}/metrics`);
    // Every member serves federated preprocessing: a local-only site with members starts a node too.
    if (alg.network !== 'none' || otherMembers(cfg, id.peerId).length > 0) {
      const allow = [...cfg.members.map((m) => m.peerId), ...(cfg.server ? [cfg.server.peerId] : [])];
      // The exchanges are libp2p services on the node (the same ones a host adds to its own node: service.ts).
      const heads = alg.message === 'head';
      const services = {
        ...(alg.network === 'peers' && alg.message !== 'body' ? {
          heads: headExchange({
            members: cfg.members, logger: log, signal: o.signal,
            maxHeadBytes: heads ? cfg.limits.maxHeadBytes : cfg.limits.maxModelBytes,
            protocol: heads ? HEAD_PROTOCOL : MODEL_PROTOCOL, topic: heads ? ANNOUNCE_TOPIC : MODEL_ANNOUNCE_TOPIC,
          }),
        } : {}),
        // Bodies travel like heads (signed announcements, pulls, checks, strikes) on their own protocol and topic.
        // Under secure aggregation a round is four messages per member, each needed: every version is delivered, not only the newest.
        ...(sharesBodies(alg, siteAlgorithmOptions(cfg)) ? {
          bodies: bodyExchange({
            members: cfg.members, logger: log, signal: o.signal, maxHeadBytes: cfg.limits.maxModelBytes, ...(cfg.bodies.secureAggregation ? { everyVersion: true } : {}),
          }),
        } : {}),
      };
      node = await createSiteNode({
        services,
        ...(o.transports ? { transports: o.transports } : {}),
        privateKey: id.privateKey,
        listen: cfg.listen,
        announce: cfg.announce,
        allow,
        psk: cfg.psk ? loadPsk(cfg.psk) : undefined,
        onRefused: (peer, dir) => log.warn(`refused ${dir} connection from non-member ${peer}`),
        metricsRegistry: prom?.registry,
        isBlocked: (peer) => (exchange?.isBlocked(peer) ?? false) || (bodies?.isBlocked(peer) ?? false),
        relay: siteRelayOptions(cfg),
        discovery: siteDiscoveryOptions(cfg, id.peerId, log),
        onRelayRefused: (peer, what) => log.warn(`refused to relay a ${what} for non-member ${peer}`),
        onRelayStatus: (s) => (s.state === 'reserved'
          ? log.info(`reserved a slot on relay ${s.relay}; members reach this site at ${s.addrs.join(', ')}`)
          : log.warn(`no reservation on relay ${s.relay} yet (retrying): ${s.error}`)),
      });
      watchConnections(node, log, names);
      ({ heads: exchange, bodies } = node.services as { heads?: ExchangeService; bodies?: ExchangeService });
      // Starting the node starts the exchanges: protocols registered, announcements subscribed, members dialled.
      await startNode(node, cfg.listen);
      log.info(`peer ${id.peerId} (${cfg.name ?? 'unnamed'}, ${alg.name}) listening on ${node.getMultiaddrs().map(String).join(', ')}`);
      if (alg.network === 'server') {
        server = new Libp2pServerLink(node, { server: cfg.server!, maxModelBytes: cfg.limits.maxModelBytes, logger: log, deadlineMs: cfg.round.deadlineMs, signal: o.signal });
      }
    }
    if (feed) {
      watch = new PeerStatusWatch(feed, {
        members: [...otherMembers(cfg, id.peerId), ...(cfg.server ? [cfg.server] : [])], node, auditFile: join(cfg.out, 'audit.jsonl'),
        exchanges: [exchange, bodies].filter((x) => x !== undefined),
        ...(server && cfg.server ? { server: { peerId: cfg.server.peerId, lastRound: () => server?.lastGlobal?.round } } : {}),
      });
      feed.state('preprocessing');
    }
    // Federated preprocessing (or, resuming, the agreement saved before), then the site's own tensors.
    const resume = cfg.checkpoint.enabled && listCheckpoints(ckptDir).length > 0;
    prepared = await prepareSiteData(cfg, { node, selfId: id.peerId, logger: log, resume, signal: o.signal, ...(o.data ? { source: o.data } : {}) });
    const data = prepared.data;
    const model = siteModelOptions(cfg, id.peerId, index, data, prepared.body, prepared.bodySpec);
    const algorithmOptions = siteAlgorithmOptions(cfg);
    // Several tasks (or one task of a multi-task agreement): every task a site of its own over the one body.
    site = prepared.tasks ? createMultiTaskSite(alg, model, prepared.tasks, algorithmOptions) : alg.createSite(model, algorithmOptions);
    writeSiteDescription(cfg, model, algorithmOptions, prepared.tasks?.tasks.map((t) => t.task));
    const checkpoint = cfg.checkpoint.enabled ? site.checkpoint : undefined;
    // Resume from the newest good checkpoint, keeping the metrics of the rounds it covers.
    let startRound = 1;
    // A resumed run reports the whole run: what its earlier parts moved, and their time, are added to this part's.
    let before: EarlierParts = { bytesSent: 0, bytesReceived: 0, bodyBytesSent: 0, bodyBytesReceived: 0, seconds: 0 };
    const restored = checkpoint && resume ? await checkpoint.restore(ckptDir, log) : undefined;
    if (restored) {
      startRound = restored.round + 1;
      const kept = readJsonLines<RoundLine>(metricsFile).filter((l) => l.round <= restored.round);
      // Put back the checkpoint's own round if the crash lost its line.
      if (!kept.some((l) => l.round === restored.round) && restored.extra.line) kept.push(restored.extra.line as RoundLine);
      writeJsonLinesAtomic(metricsFile, kept);
      rounds.push(...kept);
      before = earlierParts(cfg.out, kept, restored.round);
      for (const l of kept) feed?.record(l, memberId, Date.parse(l.time));
      log.info(`resumed from round ${restored.round} (its checkpoint, with ${restored.summary}: ${restored.path})`);
    } else {
      if (checkpoint && resume) log.warn('no usable checkpoint: starting from round 1');
      writeFileSync(metricsFile, '');
    }
    // Rounds wait for the members the site agreed on the data with (or that agreed apart, holding it in another form), and only while connected: not for one
    // left out (its data does not fit), never heard from (it came late, or never) or gone (it stopped, or crashed).
    const agreed = new Set([...prepared.preprocessing.included, ...(prepared.preprocessing.otherForms ?? [])]);
    const awaited = otherMembers(cfg, id.peerId).map((m) => m.peerId).filter((p) => agreed.has(p));
    const others = awaited.length;
    // With round.adaptive the deadline follows what the link delivers (measured on the exchange's waits).
    const adaptive = cfg.round.adaptive ? new AdaptiveDeadline({ maxMs: cfg.round.deadlineMs, minMs: Math.min(cfg.round.minDeadlineMs, cfg.round.deadlineMs) }) : undefined;
    // Members left out by preprocessing: their heads are not experts here (they learn another task, or their data does not fit ours).
    const left = new Set(prepared.preprocessing.excluded.map((x) => x.peer));
    const agreedExchange = exchange && left.size > 0 ? withoutMembers(exchange, left, log) : exchange;
    const net: SiteNetwork = {
      exchange: agreedExchange && adaptive ? adaptive.wrap(agreedExchange) : agreedExchange, ...(bodies ? { bodies } : {}), server, logger: log,
      quorum: Math.min(cfg.round.quorum ?? others, others),
      others,
      awaited,
      memberName: memberId,
      deadlineMs: cfg.round.deadlineMs,
      transferSeconds: () => (exchange?.transferSeconds ?? server?.transferSeconds ?? 0) + (bodies?.transferSeconds ?? 0),
    };
    if (adaptive) Object.defineProperty(net, 'deadlineMs', { get: () => adaptive.current, enumerable: true });
    // dFLMoE's tasks: each exchanges heads on a channel of its own, among the members that learn it.
    if (node && site.headTasks?.length) {
      taskExchanges = await openTaskChannels(node, site.headTasks, prepared.preprocessing, cfg, id.peerId, log, o.signal);
      net.tasks = taskNetworks(taskExchanges, prepared.preprocessing, cfg, id.peerId, log, memberId);
    }
    const agreement = prepared.agreement;
    const dropped = () => ({
      ...(exchange?.dropped ?? {}), ...prefixKeys(bodies?.dropped ?? {}, 'body-transfer:'), ...prefixKeys(agreement?.dropped ?? {}, 'preprocess:'),
      ...Object.fromEntries(Object.entries(taskExchanges).flatMap(([t, ex]) => Object.entries(prefixKeys(ex.dropped, `task:${t}:`)))),
    }) as Record<string, number>;
    // The audit trail: one signed, hash-chained entry per round (and one per start).
    const audit = await SiteAudit.open(cfg.out, id.privateKey, id.peerId, alg.name, startRound, {
      exchange, server, serverPeer: cfg.server?.peerId,
      // Under secure aggregation what the body channel carries is masked: the trail keeps the digest of the body itself, which never left.
      ...(bodies ? { bodies: cfg.bodies.secureAggregation ? { published: () => site!.bodyShare?.lastPublished ?? bodies!.published() } : bodies } : {}),
    });
    await runSite(site, net, {
      from: startRound, rounds: cfg.rounds, signal: o.signal,
      onRound: async (m) => {
        const line = roundLine(m, names, { ...dropped(), ...prefixKeys(m.rejected, `${alg.message ?? 'input'}:`) });
        if (adaptive?.history.length) line.deadlineMs = adaptive.history.at(-1)!.deadlineMs;
        line.bytesReceived += before.bytesReceived;
        line.bytesSent += before.bytesSent;
        if (line.bodyBytesReceived !== undefined && line.bodyBytesSent !== undefined) {
          line.bodyBytesReceived += before.bodyBytesReceived;
          line.bodyBytesSent += before.bodyBytesSent;
        }
        line.wallSeconds = before.seconds + (performance.now() - t0) / 1000;
        const w = checkpoint ? await checkpoint.save(ckptDir, m.round, { line }, cfg.checkpoint.keep) : undefined;
        if (w) {
          line.checkpointSeconds = w.seconds;
          line.checkpointBytes = w.bytes;
        }
        await audit.round(m, w);
        rounds.push(line);
        appendFileSync(metricsFile, JSON.stringify(line) + '\n');
        if (prom) exportRound(prom, line);
        if (feed) {
          feed.record(line, memberId, Date.parse(line.time));
          watch!.refresh();
          await watch!.checkAudit();
        }
        o.onRound?.(line);
      },
    });
    // Without per-round checkpoints, one of the final model, so that `dflmoe predict` can load it.
    if (!checkpoint && site.checkpoint && rounds.length > 0) await site.checkpoint.save(ckptDir, rounds.at(-1)!.round, { final: true }, 1);
    const ev = site.evaluate();
    const traffic = networkStats(net);
    const result: PeerRunResult = {
      peerId: id.peerId, name: cfg.name, algorithm: cfg.algorithm, backend: backend.name, index,
      trainSamples: data.trainSamples, testSamples: data.testSamples, accuracy: ev.accuracy, ownHeadAccuracy: ev.ownHeadAccuracy,
      tasks: site.taskResults?.() ?? siteTasks(data, ev), bytesSent: traffic.bytesSent, bytesReceived: traffic.bytesReceived,
      ...(bodies ? { bodyBytesSent: bodies.stats().bytesSent, bodyBytesReceived: bodies.stats().bytesReceived } : {}),
      wallSeconds: 0, peakRssMiB: 0, rounds,
    };
    // Stay a little so that slower peers can fetch our last head or model.
    if (exchange || bodies || Object.keys(taskExchanges).length > 0) await sleep(cfg.lingerMs, o.signal);
    // A member whose statement we merged may still be asking for ours (it started later, or a
    // short run ended here before it asked): keep serving until it has it, within the preprocessing deadline.
    if (agreement && agreement.unserved().length > 0) {
      log.info(`waiting (at most preprocess.deadlineMs) for ${agreement.unserved().map((p) => agreement.label(p)).join(', ')} to fetch this site's preprocessing statement`);
      await agreement.waitServed(cfg.preprocess.deadlineMs, o.signal);
    }
    // What it served while lingering counts too (the others' last pulls of our head or model).
    const served = networkStats(net);
    result.bytesSent = served.bytesSent;
    result.bytesReceived = served.bytesReceived;
    if (bodies) {
      Object.assign(result, { bodyBytesSent: bodies.stats().bytesSent + before.bodyBytesSent, bodyBytesReceived: bodies.stats().bytesReceived + before.bodyBytesReceived });
    }
    result.bytesSent += before.bytesSent;
    result.bytesReceived += before.bytesReceived;
    result.wallSeconds = before.seconds + (performance.now() - t0) / 1000;
    result.peakRssMiB = peakRssMiB();
    result.audit = await audit.seal();
    writeJsonAtomic(join(cfg.out, 'results.json'), result);
    feed?.bytes({ bytesSent: result.bytesSent, bytesReceived: result.bytesReceived });
    feed?.state('done');
    return result;
  } catch (e) {
    feed?.state(isInterrupted(e) ? 'interrupted' : 'failed', e instanceof Error ? e.message : String(e));
    throw e;
  } finally {
    watch?.stop();
    site?.dispose();
    if (prepared) disposePeerData(prepared.data);
    await prepared?.agreement?.close();
    await exchange?.close();
    for (const ex of Object.values(taskExchanges)) await ex.close();
    await bodies?.close();
    await node?.stop();
    await prom?.close();
  }
}

/** Bytes and seconds of a run's earlier parts. */
interface EarlierParts {
  bytesSent: number;
  bytesReceived: number;
  /** The part of those bytes that were bodies (sites that share bodies). */
  bodyBytesSent: number;
  bodyBytesReceived: number;
  seconds: number;
}

/**
 * What the earlier parts of a run resumed from the checkpoint of `round`
 * moved and took: an earlier part's results.json when it ended at that round
 * (its figures include what it served while lingering), else the round's
 * metrics line (bytes and seconds so far, including the parts before it).
 */
function earlierParts(out: string, lines: RoundLine[], round: number): EarlierParts {
  const done = readJsonFile<PeerRunResult>(join(out, 'results.json'));
  if (done?.rounds?.at(-1)?.round === round && Number.isFinite(done.bytesSent)) {
    return {
      bytesSent: done.bytesSent, bytesReceived: done.bytesReceived, bodyBytesSent: done.bodyBytesSent ?? 0, bodyBytesReceived: done.bodyBytesReceived ?? 0,
      seconds: done.wallSeconds,
    };
  }
  const l = lines.find((x) => x.round === round);
  return {
    bytesSent: l?.bytesSent ?? 0, bytesReceived: l?.bytesReceived ?? 0, bodyBytesSent: l?.bodyBytesSent ?? 0, bodyBytesReceived: l?.bodyBytesReceived ?? 0,
    seconds: l?.wallSeconds ?? 0,
  };
}

function roundLine(m: SiteRoundRecord, names: Map<string, string | undefined>, dropped: Record<string, number>): RoundLine {
  return {
    ...m,
    experts: m.experts.map((e) => ({ ...e, name: names.get(e.peer) })),
    ...(m.bodies ? { bodies: m.bodies.map((b) => ({ ...b, name: names.get(b.peer) })) } : {}),
    dropped,
    time: new Date().toISOString(),
  };
}

function exportRound(prom: PeerMetrics, line: RoundLine): void {
  prom.rounds.inc();
  prom.accuracy.set(line.accuracy);
  prom.ownHeadAccuracy.set(line.ownHeadAccuracy);
  prom.experts.set(line.experts.length);
  prom.expertVersion.reset();
  for (const e of line.experts) prom.expertVersion.set({ peer: e.name ?? e.peer }, e.version);
  prom.bytes.set({ direction: 'in' }, line.bytesReceived);
  prom.bytes.set({ direction: 'out' }, line.bytesSent);
  for (const [reason, n] of Object.entries(line.dropped)) prom.dropped.set({ reason }, n);
  for (const part of ['train', 'wait', 'network'] as const) prom.roundSeconds.set({ part }, line[`${part}Seconds`]);
  prom.roundSeconds.set({ part: 'total' }, line.seconds);
}


/**
 * Open a head channel (`taskChannel`) for each of `tasks` on the running
 * node, among the members the agreement says learn it: announcements,
 * requests and heads of anyone else, or naming another task, are dropped,
 * logged and counted (`task:<name>:<reason>` in a round's `dropped`).
 */
async function openTaskChannels(
  node: SiteNode, tasks: readonly string[], pre: PreparedSite['preprocessing'], cfg: PeerConfig, selfId: string, log: Logger, signal?: AbortSignal,
): Promise<Record<string, Libp2pHeadExchange>> {
  const out: Record<string, Libp2pHeadExchange> = {};
  for (const t of tasks) {
    const learners = new Set(taskLearners(pre, t, selfId));
    const ex = new Libp2pHeadExchange(node, {
      members: cfg.members.filter((m) => m.peerId === selfId || learners.has(m.peerId)), logger: log, signal, maxHeadBytes: cfg.limits.maxHeadBytes, ...taskChannel(t),
    });
    await ex.register();
    ex.start();
    // The members are connected already (preprocessing): greeted now; their heads come as they announce them.
    ex.greetConnected();
    out[t] = ex;
  }
  return out;
}

/** The other members that learn task `t`, as the data agreement says. */
function taskLearners(pre: PreparedSite['preprocessing'], t: string, selfId: string): string[] {
  return (pre.agreed.tasks?.find((a) => a.name === t)?.sites ?? []).filter((p) => p !== selfId && pre.included.includes(p));
}

/** Each task's network: its channel, waiting (up to the quorum) for the members that learn it. */
function taskNetworks(
  exchanges: Record<string, Libp2pHeadExchange>, pre: PreparedSite['preprocessing'], cfg: PeerConfig, selfId: string, log: Logger, memberName: (p: string) => string,
): Record<string, SiteNetwork> {
  return Object.fromEntries(Object.entries(exchanges).map(([t, ex]) => {
    const awaited = taskLearners(pre, t, selfId);
    const n = awaited.length;
    if (n === 0) log.info(`task "${t}": no other member learns it; its head stays here`);
    return [t, { exchange: ex, quorum: Math.min(cfg.round.quorum ?? n, n), others: n, awaited, memberName, deadlineMs: cfg.round.deadlineMs, logger: log }];
  }));
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
