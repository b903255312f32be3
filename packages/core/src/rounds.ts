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
import { throwIfInterrupted } from './interrupt.js';
import type { MixedBody } from './body-share.js';
import type { TaskResult } from './tasks/index.js';
import type { PeerData } from './train.js';
import type { PeerEval } from './algorithms/common.js';
import { DEFAULT_MAX_SAMPLE_RATIO, DEFAULT_MAX_SAMPLES, boundSampleCounts } from './averaging.js';

/** What the round loop records of one site's round: metrics after it, experts, cumulative bytes, timing and privacy spent. */
export interface SiteRoundRecord {
  /** The round (from 1). */
  round: number;
  /** The site's accuracy (NaN for a task without one: see `tasks`). */
  accuracy: number;
  /** The accuracy of the site's own head alone, without the received experts. */
  ownHeadAccuracy: number;
  /** Every task the site learns, by name: its kind, test rows and metrics (`accuracy`, ... or `rmse`, `mae`, `r2`). */
  tasks: Record<string, TaskResult>;
  /** The training loss of the round. */
  loss: number;
  /** dFLMoE: the experts the site's gate mixed this round and their mean gate weights (empty for other algorithms). */
  experts: ExpertInfo[];
  /** A multi-task site with `crossTask`: how much each task's read-out leans on each other task after the round (`"<task> <- <other>"`: shares of its map weights). */
  reliance?: Record<string, number>;
  /** Messages from other sites taken in this round. */
  fresh: number;
  /** dFLMoE: experts dropped as stale at the start of the round. */
  expired: string[];
  /** Received input the algorithm refused so far, by reason. */
  rejected: Record<string, number>;
  /** Bytes so far (this site's side of the transport; bodies included). */
  bytesSent: number;
  /** Bytes received so far, cumulative over the run (bodies included). */
  bytesReceived: number;
  /** Sites that share bodies: the part of those bytes that were bodies... */
  bodyBytesSent?: number;
  /** Of `bytesReceived`, the bytes that were bodies (cumulative). */
  bodyBytesReceived?: number;
  /** ...and the members' bodies combined into this site's body this round. */
  bodies?: MixedBody[];
  /** Seconds of local training this round. */
  trainSeconds: number;
  /** Seconds spent waiting for other sites' messages this round. */
  waitSeconds: number;
  /** Seconds spent moving bytes this round, where the transport measures it (else 0). */
  networkSeconds: number;
  /** Wall-clock seconds of the whole round, evaluation included. */
  seconds: number;
  /** With DP-SGD: the privacy spent so far over the run (epsilon at delta, and DP-SGD steps taken). */
  privacy?: { epsilon: number; delta: number; steps: number };
}

const NO_TRAFFIC: ExchangeStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0 };

/** A site's traffic so far: heads or models, bodies, server. */
export function networkStats(net: SiteNetwork): ExchangeStats {
  const parts = [
    net.exchange?.stats(),
    net.bodies?.stats(),
    net.server?.stats(),
    ...Object.values(net.tasks ?? {}).map((t) => t.exchange?.stats()),
    net.crossTask?.stats(),
  ].filter((s) => s !== undefined);
  return parts.reduce(
    (a, s) => ({
      bytesSent: a.bytesSent + s.bytesSent,
      bytesReceived: a.bytesReceived + s.bytesReceived,
      messagesSent: a.messagesSent + s.messagesSent,
      messagesReceived: a.messagesReceived + s.messagesReceived,
    }),
    NO_TRAFFIC,
  );
}

/** A site's weights or loss became NaN or infinite: the learning rate is too high for this model and data. */
export class TrainingDiverged extends Error {
  /** Always `TrainingDiverged`. */
  override name = 'TrainingDiverged';
  /**
   * @param round - The round in which training diverged.
   * @param cause - The error that showed it, when one did.
   */
  constructor(
    /** The round in which training diverged. */
    readonly round: number,
    cause?: Error,
  ) {
    super(
      `training diverged in round ${round} (the model's weights or loss became NaN or infinite); lower the learning rate (--lr, or train.learningRate in a site config) or try --optimizer adam`,
      cause ? { cause } : undefined,
    );
  }
}

/** A site's evaluation as its tasks' results, by task name (see `SiteRoundRecord.tasks`). */
export function siteTasks(data: Pick<PeerData, 'task' | 'testSamples'>, ev: PeerEval): Record<string, TaskResult> {
  return { [data.task.name]: { kind: data.task.kind, testRows: data.testSamples, ...ev.metrics } };
}

/** One round of `site` and its evaluation. */
export async function siteRound(site: AlgorithmSite, net: SiteNetwork, round: number): Promise<SiteRoundRecord> {
  const t0 = performance.now();
  const moved = net.transferSeconds?.() ?? 0;
  let r: Awaited<ReturnType<AlgorithmSite['runRound']>>;
  try {
    r = await site.runRound(round, net);
  } catch (e) {
    // Encoding our own head or model found NaN or infinity: training diverged (received input is checked, and dropped, elsewhere).
    if (e instanceof CodecError && e.reason === 'nonfinite') throw new TrainingDiverged(round, e);
    throw e;
  }
  if (r.loss === Infinity || r.loss === -Infinity) throw new TrainingDiverged(round);
  const ev = site.evaluate();
  const s = networkStats(net);
  const b = net.bodies?.stats();
  const privacy = site.privacySpent();
  const reliance = site.crossTaskReliance?.();
  return {
    round,
    accuracy: ev.accuracy,
    ownHeadAccuracy: ev.ownHeadAccuracy,
    tasks: site.taskResults?.() ?? siteTasks(site.data, ev),
    loss: r.loss,
    experts: site.experts?.() ?? [],
    ...(reliance ? { reliance } : {}),
    fresh: r.fresh,
    expired: r.expired ?? [],
    rejected: site.rejected(),
    bytesSent: s.bytesSent,
    bytesReceived: s.bytesReceived,
    ...(b ? { bodyBytesSent: b.bytesSent, bodyBytesReceived: b.bytesReceived } : {}),
    ...(r.bodies ? { bodies: r.bodies } : {}),
    trainSeconds: r.trainSeconds,
    waitSeconds: r.waitSeconds,
    networkSeconds: (net.transferSeconds?.() ?? 0) - moved,
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
    throwIfInterrupted(o.signal);
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
  from: string;
  rank: number;
  arch: string;
  /** Architecture, tensor names and shapes: uploads are averaged only with uploads of the same layout. */
  layout: string;
}

/** What the aggregator refused, or noted and accepted, for counters and logs. */
export type UploadNote = 'samples-changed' | 'samples-clipped';

export interface AggregatorOptions {
  /** Largest upload accepted, in bytes. */
  maxBytes: number;
  /** Largest sample count a client may declare (claims above are clipped; default 2^31). */
  maxSamples?: number;
  /** A client's weight is clipped to this many times the median count of the round's uploads (default 10). */
  maxSampleRatio?: number;
}

/** What a server keeps of its aggregator across restarts. */
export interface AggregatorState {
  layout?: string;
  declared: Record<string, number>;
}

/** Architecture, tensor names and shapes (as JSON): two models can be averaged exactly when their layouts are equal. */
export function modelLayout(arch: string, tensors: { name: string; shape: number[] }[]): string {
  return JSON.stringify([arch, ...tensors.map((t) => `${t.name}:${t.shape.join('x')}`)]);
}

/**
 * A server's round: validated uploads in, one aggregate out. Uploads are
 * untrusted: `accept` throws a `CodecError` for a bad one (size, format,
 * finite values, tensor names, kind; after the first round, a layout that
 * differs from the consortium's), and the caller counts and drops it. In the
 * first round the layout is not known yet: `finish` averages the layout that
 * most uploads share and returns the others as refused, and that layout is
 * the consortium's from then on. A client declares its sample count once
 * (its first upload); counts are clipped (see `boundSampleCounts`). Shared by
 * `MemoryServer` and the libp2p server.
 */
export class RoundAggregator {
  private uploads = new Map<string, HeldUpload>();
  private layout?: string;
  private declared = new Map<string, number>();
  private readonly maxSamples: number;
  private readonly ratio: number;

  constructor(
    private readonly combine: (ups: Upload[]) => NamedArray[],
    private readonly o: AggregatorOptions,
  ) {
    this.maxSamples = o.maxSamples ?? DEFAULT_MAX_SAMPLES;
    this.ratio = o.maxSampleRatio ?? DEFAULT_MAX_SAMPLE_RATIO;
  }

  get size(): number {
    return this.uploads.size;
  }

  has(from: string): boolean {
    return this.uploads.has(from);
  }

  /** Uploads of the consortium's layout (before it is known: of the layout most uploads share): what counts for a quorum. */
  get agreeing(): number {
    const counts = new Map<string, number>();
    for (const u of this.uploads.values()) counts.set(u.layout, (counts.get(u.layout) ?? 0) + 1);
    return this.layout !== undefined ? (counts.get(this.layout) ?? 0) : Math.max(0, ...counts.values());
  }

  /** Check and keep `from`'s upload of this round (replacing its earlier one); returns notes on its sample count. */
  accept(from: string, rank: number, samples: number, payload: Uint8Array): UploadNote[] {
    const b = decodeBundle(payload, { maxBytes: this.o.maxBytes });
    if (b.kind !== 'model' || typeof b.meta.arch !== 'string') throw new CodecError('kind', 'not a model');
    if (!Number.isSafeInteger(samples) || samples < 1) throw new CodecError('header', 'sample count must be a positive integer');
    if (b.tensors.length === 0) throw new CodecError('shape', 'model has no tensors');
    const names = new Set(b.tensors.map((t) => t.name));
    if (names.size !== b.tensors.length || names.has('')) throw new CodecError('header', 'tensor names are empty or repeated');
    const layout = modelLayout(b.meta.arch, b.tensors);
    if (this.layout !== undefined && layout !== this.layout) {
      throw new CodecError('mismatch', `model layout differs from the consortium's: ${describeLayoutDifference(this.layout, layout)}`);
    }
    const notes: UploadNote[] = [];
    let declared = this.declared.get(from);
    if (declared === undefined) {
      declared = Math.min(samples, this.maxSamples);
      if (declared < samples) notes.push('samples-clipped');
      this.declared.set(from, declared);
    } else if (samples !== declared) {
      notes.push('samples-changed');
    }
    this.uploads.set(from, { from, rank, samples: declared, arch: b.meta.arch, layout, weights: b.tensors });
    return notes;
  }

  /**
   * Combine the uploads of the consortium's layout (in rank order, so that
   * sums are reproducible) into the bundle of `round`, and start afresh.
   * `refused` lists the clients whose upload had another layout.
   */
  finish(round: number): { global: Uint8Array; clients: number; refused: string[]; clipped: string[] } {
    const all = [...this.uploads.values()];
    this.uploads.clear();
    if (all.length === 0) throw new Error(`round ${round}: nothing to aggregate`);
    let layout = this.layout;
    if (layout === undefined) {
      // The layout most uploads share (ties: the smallest rank among its uploads).
      const votes = new Map<string, HeldUpload[]>();
      for (const u of all) votes.set(u.layout, [...(votes.get(u.layout) ?? []), u]);
      const minRank = (us: HeldUpload[]) => Math.min(...us.map((u) => u.rank));
      layout = [...votes].sort(([, a], [, b]) => b.length - a.length || minRank(a) - minRank(b))[0][0];
      this.layout = layout;
    }
    const ups = all.filter((u) => u.layout === layout).sort((a, b) => a.rank - b.rank || (a.from < b.from ? -1 : 1));
    const bounded = boundSampleCounts(
      ups.map((u) => u.samples),
      this.ratio,
      this.maxSamples,
    );
    const clipped = ups.filter((u, i) => bounded[i] < u.samples).map((u) => u.from);
    const global = encodeBundle('model', { arch: ups[0].arch, round }, this.combine(ups.map((u, i) => ({ weights: u.weights, samples: bounded[i] }))));
    return { global, clients: ups.length, refused: all.filter((u) => u.layout !== layout).map((u) => u.from), clipped };
  }

  state(): AggregatorState {
    return { ...(this.layout !== undefined ? { layout: this.layout } : {}), declared: Object.fromEntries(this.declared) };
  }

  restore(s: AggregatorState): void {
    this.layout = s.layout;
    this.declared = new Map(Object.entries(s.declared));
  }
}

function describeLayoutDifference(want: string, got: string): string {
  const [wa, ...w] = JSON.parse(want) as string[];
  const [ga, ...g] = JSON.parse(got) as string[];
  if (wa !== ga) return `architecture "${ga.slice(0, 120)}", expected "${wa}"`;
  if (w.length !== g.length) return `${g.length} tensors, expected ${w.length}`;
  const i = w.findIndex((x, k) => x !== g[k]);
  return `tensor ${i} is ${g[i].slice(0, 120)}, expected ${w[i]}`;
}

/** In-process aggregation server: aggregates a round once all `clients` have uploaded. */
export class MemoryServer {
  private agg: RoundAggregator;
  private globals = new Map<number, Uint8Array>();
  private waiters = new Set<() => void>();

  constructor(
    private readonly clients: number,
    combine: (ups: Upload[]) => NamedArray[],
    maxBytes: number,
  ) {
    this.agg = new RoundAggregator(combine, { maxBytes });
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
      download: (round) =>
        new Promise((resolve) => {
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
  // Multi-task sites whose tasks exchange heads do so on the tasks' hubs (`withTaskHubs`), not on one of the site's.
  if (sites.some((s) => s.headTasks))
    return withTaskHubs(
      sites,
      memoryNetworks(
        { ...alg, message: 'body' },
        sites.map((s) => ({ id: s.id, bodyShare: s.bodyShare }) as AlgorithmSite),
        combineLimitBytes,
        logger,
      ),
      logger,
    );
  if (alg.network === 'peers') {
    const hub = alg.message === 'body' ? undefined : new MemoryHub({ lockstep: true });
    // Bodies travel on a hub of their own, so that they are counted and pulled apart from heads.
    const bodies = sites.some((s) => s.bodyShare) ? new MemoryHub({ lockstep: true }) : undefined;
    return sites.map((s) => ({
      ...(hub ? { exchange: hub.join(s.id) } : {}),
      ...(bodies && s.bodyShare ? { bodies: bodies.join(s.id) } : {}),
      quorum: n - 1,
      others: n - 1,
      deadlineMs: MEMORY_DEADLINE_MS,
      logger,
    }));
  }
  if (alg.network === 'server') {
    if (!alg.aggregate) throw new Error(`${alg.name} is a server algorithm without an aggregate`);
    const server = new MemoryServer(n, alg.aggregate, combineLimitBytes);
    return sites.map((s, i) => ({ server: server.join(s.id, i), quorum: 0, deadlineMs: 0, logger }));
  }
  return sites.map(() => ({ quorum: 0, deadlineMs: 0, logger }));
}

/**
 * Multi-task sites whose tasks exchange heads: beside each site's network
 * `nets[i]` (bodies, server), a hub per task among the sites that learn it
 * (`SiteNetwork.tasks`), and with `crossTask` one hub of every task's heads.
 */
function withTaskHubs(sites: AlgorithmSite[], nets: SiteNetwork[], logger: Logger): SiteNetwork[] {
  const learners = new Map<string, string[]>();
  for (const s of sites) for (const t of s.headTasks ?? []) learners.set(t, [...(learners.get(t) ?? []), s.id]);
  const hubs = new Map([...learners.keys()].map((t) => [t, new MemoryHub({ lockstep: true })]));
  const crossing = sites.filter((s) => s.crossTask);
  const cross = crossing.length > 0 ? new MemoryHub({ lockstep: true }) : undefined;
  return sites.map((s, i) => {
    const tasks = Object.fromEntries(
      (s.headTasks ?? []).map((t) => {
        const others = learners.get(t)!.length - 1;
        return [t, { exchange: hubs.get(t)!.join(s.id), quorum: others, others, deadlineMs: MEMORY_DEADLINE_MS, logger }];
      }),
    );
    return { ...nets[i], tasks, ...(cross && s.crossTask ? { crossTask: cross.join(s.id), crossOthers: crossing.length - 1 } : {}) };
  });
}
