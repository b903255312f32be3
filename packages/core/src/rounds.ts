/**
 * The round loop every site runs, in the simulator (all sites in one
 * process, in-memory transports) and in `dflmoe peer` (one site, libp2p):
 * the algorithm's round, then evaluation and metrics. Also the in-memory
 * transports and the server's aggregation step shared with the libp2p server.
 */
import type { Algorithm, AlgorithmSite, ServerLink, SiteNetwork, ExpertInfo, Upload } from './algorithms/api.js';
import { CodecError, decodeBundle, encodeBundle, type NamedArray } from './codec.js';
import { MemoryHub, type ExchangeStats } from './exchange.js';
import type { Logger } from './log.js';

export interface SiteRoundRecord {
  round: number;
  accuracy: number;
  ownHeadAccuracy: number;
  loss: number;
  experts: ExpertInfo[];
  /** Messages from other sites taken in this round. */
  fresh: number;
  /** dFLMoE: experts dropped as stale at the start of the round. */
  expired: string[];
  /** Received input the algorithm refused so far, by reason. */
  rejected: Record<string, number>;
  /** Bytes so far (this site's side of the transport). */
  bytesSent: number;
  bytesReceived: number;
  trainSeconds: number;
  waitSeconds: number;
  networkSeconds: number;
  seconds: number;
  privacy?: { epsilon: number; delta: number; steps: number };
}

const NO_TRAFFIC: ExchangeStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0 };

export function networkStats(net: SiteNetwork): ExchangeStats {
  return net.exchange?.stats() ?? net.server?.stats() ?? NO_TRAFFIC;
}

/** One round of `site` and its evaluation. */
export async function siteRound(site: AlgorithmSite, net: SiteNetwork, round: number): Promise<SiteRoundRecord> {
  const t0 = performance.now();
  const moved = net.transferSeconds?.() ?? 0;
  const r = await site.runRound(round, net);
  const ev = site.evaluate();
  const s = networkStats(net);
  const privacy = site.privacySpent();
  return {
    round, accuracy: ev.accuracy, ownHeadAccuracy: ev.ownHeadAccuracy, loss: r.loss,
    experts: site.experts?.() ?? [], fresh: r.fresh, expired: r.expired ?? [], rejected: site.rejected(),
    bytesSent: s.bytesSent, bytesReceived: s.bytesReceived,
    trainSeconds: r.trainSeconds, waitSeconds: r.waitSeconds, networkSeconds: (net.transferSeconds?.() ?? 0) - moved,
    seconds: (performance.now() - t0) / 1000,
    ...(privacy ? { privacy } : {}),
  };
}

export interface RunSiteOptions {
  /** First round (default 1; later when resuming from a checkpoint)... */
  from?: number;
  /** ...through this one. */
  rounds: number;
  signal?: AbortSignal;
  onRound?(rec: SiteRoundRecord): void | Promise<void>;
}

/** Drive `site` through its rounds. */
export async function runSite(site: AlgorithmSite, net: SiteNetwork, o: RunSiteOptions): Promise<SiteRoundRecord[]> {
  const out: SiteRoundRecord[] = [];
  for (let r = o.from ?? 1; r <= o.rounds; r++) {
    if (o.signal?.aborted) throw new Error('stopped');
    const rec = await siteRound(site, net, r);
    out.push(rec);
    await o.onRound?.(rec);
  }
  return out;
}

/** Bytes that crossed the network for these sites' records: what they sent, plus the server's downloads. */
export function networkBytes(alg: Algorithm, recs: { bytesSent: number; bytesReceived: number }[]): number {
  return recs.reduce((a, r) => a + r.bytesSent + (alg.network === 'server' ? r.bytesReceived : 0), 0);
}

// ---------------------------------------------------------------- server side

interface HeldUpload extends Upload {
  rank: number;
  arch: string;
}

/**
 * A server's round: validated uploads in, one aggregate out. Uploads are
 * untrusted: `accept` throws a `CodecError` for a bad one (the caller counts
 * and drops it). Shared by `MemoryServer` and the libp2p server.
 */
export class RoundAggregator {
  private uploads = new Map<string, HeldUpload>();

  constructor(private readonly combine: (ups: Upload[]) => NamedArray[], private readonly maxBytes: number) {}

  get size(): number {
    return this.uploads.size;
  }

  accept(from: string, rank: number, samples: number, payload: Uint8Array): void {
    const b = decodeBundle(payload, { maxBytes: this.maxBytes });
    if (b.kind !== 'model' || typeof b.meta.arch !== 'string') throw new CodecError('kind', 'not a model');
    if (!Number.isSafeInteger(samples) || samples < 1) throw new CodecError('header', 'sample count must be a positive integer');
    const other = [...this.uploads].find(([k]) => k !== from)?.[1];
    const sameShapes = (a: NamedArray[], c: NamedArray[]) => a.length === c.length && a.every((t, i) => t.shape.join() === c[i].shape.join());
    if (other && (other.arch !== b.meta.arch || !sameShapes(other.weights, b.tensors))) throw new CodecError('mismatch', 'model differs from the other clients\'');
    this.uploads.set(from, { rank, samples, arch: b.meta.arch, weights: b.tensors });
  }

  /** Combine the uploads (in rank order, so that sums are reproducible) into the bundle of `round`, and start afresh. */
  finish(round: number): { global: Uint8Array; clients: number } {
    const ups = [...this.uploads.values()].sort((a, b) => a.rank - b.rank);
    if (ups.length === 0) throw new Error(`round ${round}: nothing to aggregate`);
    this.uploads.clear();
    return { global: encodeBundle('model', { arch: ups[0].arch, round }, this.combine(ups)), clients: ups.length };
  }
}

/** In-process aggregation server: aggregates a round once all `clients` have uploaded. */
export class MemoryServer {
  private agg: RoundAggregator;
  private globals = new Map<number, Uint8Array>();
  private waiters = new Set<() => void>();

  constructor(private readonly clients: number, combine: (ups: Upload[]) => NamedArray[], maxBytes: number) {
    this.agg = new RoundAggregator(combine, maxBytes);
  }

  join(id: string, rank: number): ServerLink {
    const s = { ...NO_TRAFFIC };
    return {
      upload: async (round, payload, samples) => {
        this.agg.accept(id, rank, samples, payload);
        s.bytesSent += payload.length;
        s.messagesSent++;
        if (this.agg.size < this.clients) return;
        this.globals.set(round, this.agg.finish(round).global);
        this.globals.delete(round - 2);
        for (const w of [...this.waiters]) w();
      },
      download: (round) => new Promise((resolve) => {
        const check = () => {
          const g = this.globals.get(round);
          if (!g) return;
          this.waiters.delete(check);
          s.bytesReceived += g.length;
          s.messagesReceived++;
          resolve(g);
        };
        this.waiters.add(check);
        check();
      }),
      stats: () => ({ ...s }),
    };
  }
}

/** Longest wait in memory, where every site always delivers (a finite value: timers treat Infinity as 1 ms). */
const MEMORY_DEADLINE_MS = 2 ** 31 - 1;

/** In-memory networks for the sites of `alg`, in site order. */
export function memoryNetworks(alg: Algorithm, sites: AlgorithmSite[], combineLimitBytes: number, logger: Logger): SiteNetwork[] {
  const n = sites.length;
  if (alg.network === 'peers') {
    const hub = new MemoryHub({ lockstep: true });
    return sites.map((s) => ({ exchange: hub.join(s.id), quorum: n - 1, deadlineMs: MEMORY_DEADLINE_MS, logger }));
  }
  if (alg.network === 'server') {
    if (!alg.aggregate) throw new Error(`${alg.name} is a server algorithm without an aggregate`);
    const server = new MemoryServer(n, alg.aggregate, combineLimitBytes);
    return sites.map((s, i) => ({ server: server.join(s.id, i), quorum: 0, deadlineMs: 0, logger }));
  }
  return sites.map(() => ({ quorum: 0, deadlineMs: 0, logger }));
}
