/**
 * `dflmoe peer`: run one site from its config file. Writes one JSON line per
 * round to `<out>/metrics.jsonl` and `<out>/results.json` at the end.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, isInterrupted, type AlgorithmOptions, type Logger, type SiteFeed, type StatusBoard } from '@dflmoe/core';
import {
  createMultiTaskSite,
  isMultiTask,
  getAlgorithm,
  pause,
  waitLeft,
  waitNoticeMs,
  type HeadExchange,
  sharesBodies,
  networkStats,
  prefixKeys,
  listCheckpoints,
  disposePeerData,
  siteTasks,
  withoutMembers,
  type Algorithm,
  type AlgorithmSite,
  type SiteNetwork,
  type TaskResult,
} from '@dflmoe/core/internal';
import { modalityOf, type Modality, type SiteData } from '@dflmoe/data';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { checkQuorum, checkSelfMember, configSettings, otherMembers, type PeerConfig } from './config.js';
import { loadIdentity, loadPsk } from './identity.js';
import {
  ANNOUNCE_TOPIC,
  CROSS_TASK_PROTOCOL,
  CROSS_TASK_TOPIC,
  HEAD_PROTOCOL,
  Libp2pHeadExchange,
  MODEL_ANNOUNCE_TOPIC,
  MODEL_PROTOCOL,
  taskChannel,
} from './head-exchange.js';
import { bodyExchange, headExchange, type Libp2pExchangeService as ExchangeService } from './service.js';
import { createSiteNode, startNode, type NodeTransport, type SiteNode } from './node.js';
import { siteDiscoveryOptions, siteRelayOptions, watchConnections } from './reach.js';
import { AdaptiveDeadline } from './deadline.js';
import { Libp2pServerLink } from './fedavg-net.js';
import { PeerMetrics } from './metrics.js';
import { SiteAudit, type AuditSeal } from './audit.js';
import { writeJsonAtomic } from './files.js';
import { driveSite, type EarlierParts, type RoundLine } from './site-driver.js';
import { prepareSiteData, removeEarlierRun, siteIndex, siteModelOptions, writeSiteDescription, type PreparedSite } from './site-setup.js';
import { peakRssMiB } from './process-stats.js';
import { PeerStatusWatch } from './live-status.js';

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
  /** Multi-task dFLMoE with `crossTask`: how much each task's read-out leans on each other task (`"<task> <- <other>"`), as in the simulator. */
  gateWeights?: Record<string, number>;
  /** How the site holds the data (`image`, `table`), where the agreement found members holding it in other forms. */
  modality?: Modality;
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

/** A site's links to the others: its libp2p node and the exchanges on it (none for a local-only site without members). */
interface SiteLinks {
  node?: SiteNode;
  /** The head (or model) exchange of an algorithm that sends to its peers. */
  heads?: ExchangeService;
  /** Sites that share bodies: the body exchange, beside the head exchange. */
  bodies?: ExchangeService;
  /** FedAvg-style algorithms: the link to the server. */
  server?: Libp2pServerLink;
  /** dFLMoE at a multi-task site: each task's head channel. */
  tasks: Record<string, Libp2pHeadExchange>;
  /** Multi-task dFLMoE with `crossTask`: the channel of every site's bundle of all its tasks' heads. */
  cross?: Libp2pHeadExchange;
}

/** What a run holds while it lasts, released (in this order) when it ends however it ends. */
interface PeerRunHeld {
  links: SiteLinks;
  watch?: PeerStatusWatch;
  site?: AlgorithmSite;
  prepared?: PreparedSite;
  prom?: PeerMetrics;
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
  const names = new Map(cfg.members.map((m) => [m.peerId, m.name]));
  const memberId = (peer: string) => names.get(peer) ?? peer;
  const remote = [...otherMembers(cfg, id.peerId), ...(cfg.server ? [cfg.server] : [])];
  const held: PeerRunHeld = { links: { tasks: {} }, prom: o.metricsPort !== undefined ? new PeerMetrics() : undefined };
  const feed: SiteFeed | undefined = o.status?.site({
    id: names.get(id.peerId) ?? cfg.name ?? id.peerId,
    peerId: id.peerId,
    algorithm: alg.name,
    rounds: cfg.rounds,
    members: remote.map((m) => ({ id: m.name ?? m.peerId, peerId: m.peerId })),
  });
  try {
    const prom = held.prom;
    if (prom) log.info(`Prometheus metrics on http://127.0.0.1:${await prom.listen(o.metricsPort!)}/metrics`);
    const links = (held.links = await startLinks(cfg, alg, id, o, names, prom));
    if (feed) held.watch = watchLinks(feed, cfg, remote, links);
    // Federated preprocessing (or, resuming, the agreement saved before), then the site's own tensors.
    const resume = cfg.checkpoint.enabled && listCheckpoints(join(cfg.out, 'checkpoints')).length > 0;
    const { prepared, site, index } = await buildSite(cfg, alg, id.peerId, links, resume, o, held);
    // Members hold the data in other forms: the live view groups gate weights by each card's form.
    const form = prepared.preprocessing.otherForms?.length ? modalityOf(prepared.data) : undefined;
    if (feed && form) feed.modality(form);
    const { net, adaptive } = await siteNetwork(cfg, id.peerId, links, site, prepared, memberId, o.signal, log);
    const driven = await driveSite(site, net, {
      out: cfg.out,
      rounds: cfg.rounds,
      checkpoint: cfg.checkpoint,
      resume,
      logger: log,
      signal: o.signal,
      names,
      adaptive,
      startedAt: t0,
      dropped: () => droppedSoFar(links, prepared),
      rejectedAs: alg.message ?? 'input',
      openAudit: (from) => openSiteAudit(cfg, alg, id, links, site, from),
      // Resumed, the agreement came from disk and no connection is up yet: the first round would wait for nobody.
      beforeRounds: async (from) => {
        const heads = links.heads;
        if (from > 1 && heads && net.awaited) await awaitConnected(heads, net.awaited, Math.min(cfg.round.deadlineMs, 30000), log, memberId, o.signal);
      },
      onLine: async (line, restored) => {
        feed?.record(line, memberId, Date.parse(line.time));
        if (restored) return;
        awaitLateMembers(net, links.heads, new Set(prepared.preprocessing.excluded.map((x) => x.peer)), cfg.round.quorum !== undefined, log, memberId);
        if (prom) exportRound(prom, line);
        if (held.watch) {
          held.watch.refresh();
          await held.watch.checkAudit();
        }
        o.onRound?.(line);
      },
    });
    const ev = site.evaluate();
    // Stay a little so that slower peers can fetch our last head or model.
    await linger(cfg, links, prepared, log, o.signal);
    const result: PeerRunResult = {
      peerId: id.peerId,
      name: cfg.name,
      algorithm: cfg.algorithm,
      backend: backend.name,
      index,
      trainSamples: prepared.data.trainSamples,
      testSamples: prepared.data.testSamples,
      accuracy: ev.accuracy,
      ownHeadAccuracy: ev.ownHeadAccuracy,
      tasks: site.taskResults?.() ?? siteTasks(prepared.data, ev),
      ...(site.crossTask && site.resultExtras?.().gateWeights ? { gateWeights: site.resultExtras().gateWeights } : {}),
      ...(form ? { modality: form } : {}),
      ...runTraffic(net, links, driven.before),
      wallSeconds: driven.before.seconds + (performance.now() - t0) / 1000,
      peakRssMiB: peakRssMiB(),
      rounds: driven.rounds,
      audit: await driven.audit.seal(),
    };
    writeJsonAtomic(join(cfg.out, 'results.json'), result);
    feed?.bytes({ bytesSent: result.bytesSent, bytesReceived: result.bytesReceived });
    feed?.state('done');
    return result;
  } catch (e) {
    feed?.state(isInterrupted(e) ? 'interrupted' : 'failed', e instanceof Error ? e.message : String(e));
    throw e;
  } finally {
    await release(held);
  }
}

/** The live view's watch over the site's links (members connected, their newest heads, the audit trail), from preprocessing on. */
function watchLinks(feed: SiteFeed, cfg: PeerConfig, remote: PeerConfig['members'], links: SiteLinks): PeerStatusWatch {
  const { node, heads, bodies, server } = links;
  const watch = new PeerStatusWatch(feed, {
    members: remote,
    node,
    auditFile: join(cfg.out, 'audit.jsonl'),
    exchanges: [heads, bodies].filter((x) => x !== undefined),
    ...(server && cfg.server ? { server: { peerId: cfg.server.peerId, lastRound: () => server.lastGlobal?.round } } : {}),
  });
  feed.state('preprocessing');
  return watch;
}

/**
 * Agree on the data with the members (or, resuming, read the agreement saved
 * before), read the site's own tensors, and make its algorithm's site (for
 * several tasks, every task a site of its own over the one body).
 */
async function buildSite(
  cfg: PeerConfig,
  alg: Algorithm,
  selfId: string,
  links: SiteLinks,
  resume: boolean,
  o: RunPeerOptions,
  held: PeerRunHeld,
): Promise<{ prepared: PreparedSite; site: AlgorithmSite; index: number }> {
  const prepared = (held.prepared = await prepareSiteData(cfg, {
    node: links.node,
    selfId,
    logger: o.logger,
    resume,
    signal: o.signal,
    ...(o.data ? { source: o.data } : {}),
  }));
  const index = siteIndex(cfg, selfId);
  const model = siteModelOptions(cfg, selfId, index, prepared.data, prepared.body, prepared.bodySpec);
  const options = siteAlgorithmOptions(cfg);
  const site = (held.site = prepared.tasks ? createMultiTaskSite(alg, model, prepared.tasks, options) : alg.createSite(model, options));
  writeSiteDescription(
    cfg,
    model,
    options,
    prepared.tasks?.tasks.map((t) => t.task),
  );
  return { prepared, site, index };
}

/** The audit trail: one signed, hash-chained entry per round (and one per start), from what the site's links sent and received. */
function openSiteAudit(
  cfg: PeerConfig,
  alg: Algorithm,
  id: { peerId: string; privateKey: PrivateKey },
  links: SiteLinks,
  site: AlgorithmSite,
  from: number,
): Promise<SiteAudit> {
  const { heads, bodies, server, cross } = links;
  return SiteAudit.open(cfg.out, id.privateKey, id.peerId, alg.name, from, {
    exchange: heads,
    server,
    serverPeer: cfg.server?.peerId,
    // Under secure aggregation what the body channel carries is masked: the trail keeps the digest of the body itself, which never left.
    ...(bodies ? { bodies: cfg.bodies.secureAggregation ? { published: () => site.bodyShare?.lastPublished ?? bodies.published() } : bodies } : {}),
    // A multi-task site's task channels, and the cross-task channel with the members' bundles its read-outs read.
    ...(Object.keys(links.tasks).length > 0 ? { tasks: links.tasks } : {}),
    ...(cross && isMultiTask(site)
      ? {
          cross: {
            receivedDigest: (p: string, v: number) => cross.receivedDigest(p, v),
            takeReceived: () => cross.takeReceived(),
            published: () => cross.published(),
            used: () => site.crossBundles(),
          },
        }
      : {}),
  });
}

/**
 * Start the site's libp2p node with the exchanges its algorithm needs (the
 * same services a host adds to its own node: service.ts). Every member serves
 * federated preprocessing, so a local-only site with members starts one too.
 */
async function startLinks(
  cfg: PeerConfig,
  alg: Algorithm,
  id: { peerId: string; privateKey: PrivateKey },
  o: RunPeerOptions,
  names: Map<string, string | undefined>,
  prom: PeerMetrics | undefined,
): Promise<SiteLinks> {
  const log = o.logger;
  if (alg.network === 'none' && otherMembers(cfg, id.peerId).length === 0) return { tasks: {} };
  const heads = alg.message === 'head';
  const services = {
    ...(alg.network === 'peers' && alg.message !== 'body'
      ? {
          heads: headExchange({
            members: cfg.members,
            logger: log,
            signal: o.signal,
            maxHeadBytes: heads ? cfg.limits.maxHeadBytes : cfg.limits.maxModelBytes,
            protocol: heads ? HEAD_PROTOCOL : MODEL_PROTOCOL,
            topic: heads ? ANNOUNCE_TOPIC : MODEL_ANNOUNCE_TOPIC,
          }),
        }
      : {}),
    // Bodies travel like heads (signed announcements, pulls, checks, strikes) on their own protocol and topic.
    // Under secure aggregation a round is four messages per member, each needed: every version is delivered, not only the newest.
    ...(sharesBodies(alg, siteAlgorithmOptions(cfg))
      ? {
          bodies: bodyExchange({
            members: cfg.members,
            logger: log,
            signal: o.signal,
            maxHeadBytes: cfg.limits.maxModelBytes,
            ...(cfg.bodies.secureAggregation ? { everyVersion: true } : {}),
          }),
        }
      : {}),
  };
  const links: SiteLinks = { tasks: {} };
  const node = await createSiteNode({
    services,
    ...(o.transports ? { transports: o.transports } : {}),
    privateKey: id.privateKey,
    listen: cfg.listen,
    announce: cfg.announce,
    allow: [...cfg.members.map((m) => m.peerId), ...(cfg.server ? [cfg.server.peerId] : [])],
    psk: cfg.psk ? loadPsk(cfg.psk) : undefined,
    onRefused: (peer, dir) => log.warn(`refused ${dir} connection from non-member ${peer}`),
    metricsRegistry: prom?.registry,
    isBlocked: (peer) => (links.heads?.isBlocked(peer) ?? false) || (links.bodies?.isBlocked(peer) ?? false),
    relay: siteRelayOptions(cfg),
    discovery: siteDiscoveryOptions(cfg, id.peerId, log),
    onRelayRefused: (peer, what) => log.warn(`refused to relay a ${what} for non-member ${peer}`),
    onRelayStatus: (s) =>
      s.state === 'reserved'
        ? log.info(`reserved a slot on relay ${s.relay}; members reach this site at ${s.addrs.join(', ')}`)
        : log.warn(`no reservation on relay ${s.relay} yet (retrying): ${s.error}`),
  });
  links.node = node;
  watchConnections(node, log, names);
  Object.assign(links, node.services as { heads?: ExchangeService; bodies?: ExchangeService });
  // crossTask: the cross-task protocol is served from the start, so that identify tells every member, from the first
  // connection on, that this site takes part (its channel opens after the agreement; until then a pull finds nothing).
  if (alg.name === 'dflmoe' && siteAlgorithmOptions(cfg).crossTask === true)
    await node.handle(CROSS_TASK_PROTOCOL, (stream) => stream.abort(new Error('the cross-task channel is not open yet')));
  // Starting the node starts the exchanges: protocols registered, announcements subscribed, members dialled.
  await startNode(node, cfg.listen);
  log.info(`site ${cfg.name ?? '(unnamed)'} (${alg.name}, peer ID ${id.peerId}) listening on ${node.getMultiaddrs().map(String).join(', ')}`);
  if (alg.network === 'server') {
    links.server = new Libp2pServerLink(node, {
      server: cfg.server!,
      maxModelBytes: cfg.limits.maxModelBytes,
      logger: log,
      deadlineMs: cfg.round.deadlineMs,
      signal: o.signal,
    });
  }
  return links;
}

/**
 * The site's network for the round loop. Rounds wait for the members the site
 * agreed on the data with, and only while they are connected: not for one left
 * out (its data does not fit), never heard from (it came late, or never) or
 * gone (it stopped, or crashed). Members left out are not experts here either.
 */
async function siteNetwork(
  cfg: PeerConfig,
  selfId: string,
  links: SiteLinks,
  site: AlgorithmSite,
  prepared: PreparedSite,
  memberName: (p: string) => string,
  signal: AbortSignal | undefined,
  log: Logger,
): Promise<{ net: SiteNetwork; adaptive?: AdaptiveDeadline }> {
  const { heads, bodies, server } = links;
  // Members that agreed apart, holding the data in another form, are waited for too.
  const agreed = new Set([...prepared.preprocessing.included, ...(prepared.preprocessing.otherForms ?? [])]);
  const awaited = otherMembers(cfg, selfId)
    .map((m) => m.peerId)
    .filter((p) => agreed.has(p));
  const others = awaited.length;
  // With round.adaptive the deadline follows what the link delivers (measured on the exchange's waits).
  const adaptive = cfg.round.adaptive
    ? new AdaptiveDeadline({ maxMs: cfg.round.deadlineMs, minMs: Math.min(cfg.round.minDeadlineMs, cfg.round.deadlineMs) })
    : undefined;
  const left = new Set(prepared.preprocessing.excluded.map((x) => x.peer));
  const agreedExchange = heads && left.size > 0 ? withoutMembers(heads, left, log) : heads;
  const net: SiteNetwork = {
    exchange: agreedExchange && adaptive ? adaptive.wrap(agreedExchange) : agreedExchange,
    ...(bodies ? { bodies } : {}),
    server,
    logger: log,
    quorum: Math.min(cfg.round.quorum ?? others, others),
    others,
    awaited,
    memberName,
    deadlineMs: cfg.round.deadlineMs,
    transferSeconds: () => (heads?.transferSeconds ?? server?.transferSeconds ?? 0) + (bodies?.transferSeconds ?? 0),
  };
  if (adaptive) Object.defineProperty(net, 'deadlineMs', { get: () => adaptive.current, enumerable: true });
  // dFLMoE's tasks: each exchanges heads on a channel of its own, among the members that learn it.
  if (links.node && site.headTasks?.length) {
    links.tasks = await openTaskChannels(links.node, site.headTasks, prepared.preprocessing, cfg, selfId, log, signal);
    net.tasks = taskNetworks(links.tasks, prepared.preprocessing, cfg, selfId, log, memberName);
  }
  if (links.node && site.crossTask) {
    links.cross = await openCrossChannel(links.node, [selfId, ...awaited], prepared.preprocessing, cfg, { log, memberName }, signal);
    Object.assign(net, { crossTask: links.cross, crossOthers: others, crossTaskNames: (prepared.preprocessing.agreed.tasks ?? []).map((t) => t.name) });
  }
  return { net, ...(adaptive ? { adaptive } : {}) };
}

/**
 * Members that took this site's agreement after it agreed (they came late,
 * and their data fits it) are not among those it agreed with, so its rounds
 * did not wait for them. Once one announces a message, rounds wait for it
 * too, as for the others (while it is connected and in step); without a
 * configured `round.quorum` the quorum grows with it. Members left out by
 * preprocessing are never taken in. Returns the members taken in now.
 */
export function awaitLateMembers(
  net: SiteNetwork,
  ex: Pick<HeadExchange, 'announced'> | undefined,
  leftOut: ReadonlySet<string>,
  quorumSet: boolean,
  log: Logger,
  name: (p: string) => string,
): string[] {
  if (!net.awaited || !ex?.announced) return [];
  const awaited = new Set(net.awaited);
  const late = [...ex.announced().keys()].filter((p) => !awaited.has(p) && !leftOut.has(p)).sort();
  if (late.length === 0) return [];
  net.awaited = [...net.awaited, ...late];
  net.others = net.awaited.length;
  if (!quorumSet) net.quorum = net.awaited.length;
  log.info(
    `${late.map(name).join(', ')} took the agreement after this site agreed: rounds wait for ${late.length > 1 ? 'them' : 'it'} too from the next round`,
  );
  return late;
}

/**
 * Wait (at most `ms`) until every one of `members` is connected, saying every
 * few seconds whom the site still waits for. A site resuming from its
 * checkpoint reads its agreement from disk, so, unlike one that has just
 * agreed, it has no connection when its first round begins; rounds wait only
 * for connected members. Returns the members still not connected.
 */
export async function awaitConnected(
  ex: Pick<HeadExchange, 'members'>,
  members: readonly string[],
  ms: number,
  log: Logger,
  name: (p: string) => string,
  signal?: AbortSignal,
): Promise<string[]> {
  const t0 = Date.now();
  const noticeMs = waitNoticeMs(ms);
  let noticed = t0;
  for (;;) {
    const connected = new Set(ex.members());
    const missing = members.filter((p) => !connected.has(p));
    const now = Date.now();
    if (missing.length === 0 || now - t0 >= ms) return missing;
    if (now - noticed >= noticeMs) {
      noticed = now;
      log.info(`resumed: waiting for connections to ${missing.map(name).join(', ')} ${waitLeft(ms - (now - t0), ms)}`);
    }
    await pause(Math.min(100, ms - (now - t0)), signal);
  }
}

/** Input the site's transports and its preprocessing dropped so far, by reason (prefixed by channel). */
function droppedSoFar(links: SiteLinks, prepared: PreparedSite): Record<string, number> {
  return {
    ...(links.heads?.dropped ?? {}),
    ...prefixKeys(links.bodies?.dropped ?? {}, 'body-transfer:'),
    ...prefixKeys(prepared.agreement?.dropped ?? {}, 'preprocess:'),
    ...Object.fromEntries(Object.entries(links.tasks).flatMap(([t, ex]) => Object.entries(prefixKeys(ex.dropped, `task:${t}:`)))),
    ...prefixKeys(links.cross?.dropped ?? {}, 'cross-transfer:'),
  } as Record<string, number>;
}

/**
 * After the last round: stay a little so that slower members can fetch the
 * last head or model, and keep serving the preprocessing statement to a
 * member that still asks for it (it started later, or a short run ended
 * first), within the preprocessing deadline.
 */
async function linger(cfg: PeerConfig, links: SiteLinks, prepared: PreparedSite, log: Logger, signal?: AbortSignal): Promise<void> {
  if (links.heads || links.bodies || links.cross || Object.keys(links.tasks).length > 0) await sleep(cfg.lingerMs, signal);
  const agreement = prepared.agreement;
  if (agreement && agreement.unserved().length > 0) {
    log.info(
      `waiting (at most preprocess.deadlineMs) for ${agreement
        .unserved()
        .map((p) => agreement.label(p))
        .join(', ')} to fetch this site's preprocessing statement`,
    );
    await agreement.waitServed(cfg.preprocess.deadlineMs, signal);
  }
}

/** The run's traffic, cumulative: this part's (lingering included) plus the earlier parts'. */
function runTraffic(
  net: SiteNetwork,
  links: SiteLinks,
  before: EarlierParts,
): Pick<PeerRunResult, 'bytesSent' | 'bytesReceived' | 'bodyBytesSent' | 'bodyBytesReceived'> {
  const t = networkStats(net);
  const bodies = links.bodies?.stats();
  return {
    bytesSent: t.bytesSent + before.bytesSent,
    bytesReceived: t.bytesReceived + before.bytesReceived,
    ...(bodies ? { bodyBytesSent: bodies.bytesSent + before.bodyBytesSent, bodyBytesReceived: bodies.bytesReceived + before.bodyBytesReceived } : {}),
  };
}

/** Release what a run held, whether it finished, failed or was interrupted. */
async function release(held: PeerRunHeld): Promise<void> {
  held.watch?.stop();
  held.site?.dispose();
  if (held.prepared) disposePeerData(held.prepared.data);
  await held.prepared?.agreement?.close();
  await held.links.heads?.close();
  for (const ex of Object.values(held.links.tasks)) await ex.close();
  await held.links.cross?.close();
  await held.links.bodies?.close();
  await held.links.node?.stop();
  await held.prom?.close();
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
  node: SiteNode,
  tasks: readonly string[],
  pre: PreparedSite['preprocessing'],
  cfg: PeerConfig,
  selfId: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<Record<string, Libp2pHeadExchange>> {
  const out: Record<string, Libp2pHeadExchange> = {};
  for (const t of tasks) {
    const learners = new Set(taskLearners(pre, t, selfId));
    const ex = new Libp2pHeadExchange(node, {
      members: cfg.members.filter((m) => m.peerId === selfId || learners.has(m.peerId)),
      logger: log,
      signal,
      maxHeadBytes: cfg.limits.maxHeadBytes,
      ...taskChannel(t),
    });
    await ex.register();
    ex.start();
    // The members are connected already (preprocessing): greeted now; their heads come as they announce them.
    ex.greetConnected();
    out[t] = ex;
  }
  return out;
}

/**
 * Open the cross-task channel (`CROSS_TASK_PROTOCOL`) on the running node
 * among `members` (this site and the others it agreed with): a message is a
 * site's bundle of all its tasks' heads, so it may be as large as a head of
 * every task the agreement holds. What anyone else sends is dropped, logged
 * and counted (`cross-transfer:<reason>`); a bundle that does not decode, or
 * names a task the agreement does not hold, is the site's `cross:<reason>`.
 * A member that does not serve the protocol (identify says so: its
 * `crossTask` is off) is not waited for, said once.
 */
async function openCrossChannel(
  node: SiteNode,
  members: readonly string[],
  pre: PreparedSite['preprocessing'],
  cfg: PeerConfig,
  o: { log: Logger; memberName: (p: string) => string },
  signal?: AbortSignal,
): Promise<Libp2pHeadExchange> {
  const ids = new Set(members);
  const ex = new Libp2pHeadExchange(node, {
    members: cfg.members.filter((m) => ids.has(m.peerId)),
    logger: o.log,
    signal,
    maxHeadBytes: cfg.limits.maxHeadBytes * Math.max(1, pre.agreed.tasks?.length ?? 1),
    protocol: CROSS_TASK_PROTOCOL,
    topic: CROSS_TASK_TOPIC,
    servedOnly: {
      protocolsOf: async (p) => (await node.peerStore.get(peerIdFromString(p))).protocols,
      onNotServing: (p) => o.log.info(`${o.memberName(p)} does not take part in experts across tasks: not waiting for its bundles`),
    },
  });
  // In place of the placeholder served since the node started (startLinks): the protocol is never unserved.
  await ex.register({ replace: true });
  ex.start();
  ex.greetConnected();
  return ex;
}

/** The other members that learn task `t`, as the data agreement says. */
function taskLearners(pre: PreparedSite['preprocessing'], t: string, selfId: string): string[] {
  return (pre.agreed.tasks?.find((a) => a.name === t)?.sites ?? []).filter((p) => p !== selfId && pre.included.includes(p));
}

/** Each task's network: its channel, waiting (up to the quorum) for the members that learn it. */
function taskNetworks(
  exchanges: Record<string, Libp2pHeadExchange>,
  pre: PreparedSite['preprocessing'],
  cfg: PeerConfig,
  selfId: string,
  log: Logger,
  memberName: (p: string) => string,
): Record<string, SiteNetwork> {
  return Object.fromEntries(
    Object.entries(exchanges).map(([t, ex]) => {
      const awaited = taskLearners(pre, t, selfId);
      const n = awaited.length;
      if (n === 0) log.info(`task "${t}": no other member learns it; its head stays here`);
      return [t, { exchange: ex, quorum: Math.min(cfg.round.quorum ?? n, n), others: n, awaited, memberName, deadlineMs: cfg.round.deadlineMs, logger: log }];
    }),
  );
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}
