/**
 * The status of running sites, as the live view shows it (`dflmoe peer --ui`,
 * `dflmoe simulate --ui`; docs/live-view.md has the JSON schema). One model
 * for both: the in-memory simulator feeds it from its round records,
 * `dflmoe peer` from its round lines, connections, strikes and audit trail,
 * and `simulate --transport tcp` copies in what its site processes report.
 * Plain numbers and strings only: nothing here holds a tensor.
 */
import { z } from 'zod';
import type { SiteRoundRecord } from './rounds.js';
import { metricOf, oneClassification, taskKind } from './tasks/index.js';

/** Where a site is in its run. */
export const SITE_STATES = ['starting', 'preprocessing', 'training', 'done', 'failed', 'interrupted'] as const;
/** Where a site is in its run (one of `SITE_STATES`). */
export type SiteState = (typeof SITE_STATES)[number];
/** The states of a site whose run has ended (and which has left the network). */
const ENDED: ReadonlySet<SiteState> = new Set(['done', 'failed', 'interrupted']);

/** A member as a site sees it: connected or not, strikes given, the round of its newest head. */
export interface MemberStatus {
  /** The member's name where the consortium gives one, else its peer ID. */
  id: string;
  /** The member's libp2p peer ID, when `id` is a name. */
  peerId?: string;
  /** Whether the member is connected to this site now (false for every member once the site's run has ended). */
  connected: boolean;
  /** Bad messages counted against it so far (refused heads, models, bodies, uploads). */
  strikes: number;
  /** Refused for now after too many strikes. */
  blocked?: boolean;
  /** The newest round of its head (model, body) that this site knows of; null before any. */
  lastHeadRound: number | null;
}

/** Whether a site's audit trail checks out, and how long it is. */
export interface AuditStatus {
  /** The audit trail's chain and signatures check out; null where the site keeps none (the in-memory simulator). */
  ok: boolean | null;
  /** Lines in the audit trail so far (0 where the site keeps none). */
  lines: number;
  /** The first problem found, when `ok` is false. */
  problem?: string;
}

/**
 * A site's status in the live view (`GET /api/status`): its state and round,
 * accuracy, loss and gate weights per round, members, bytes, privacy spent,
 * audit.
 */
export interface SiteStatus {
  /** The site's name on the board (its consortium name, or its peer ID without one). */
  id: string;
  /** The site's libp2p peer ID, where it has one (not in the in-memory simulator). */
  peerId?: string;
  /** The algorithm the site runs (`dflmoe`, `fedavg`, ...). */
  algorithm: string;
  /** How the site holds the data (`image`, `table`), where sites of one consortium hold it in several forms; the live view groups gate weights by it. */
  modality?: string;
  /** Where the site is in its run. */
  state: SiteState;
  /** Why the site failed (one line). */
  error?: string;
  /** The last round finished (0 before the first). */
  round: number;
  /** The rounds the run is to take in all. */
  rounds: number;
  /** The other members of the consortium as this site sees them. */
  members: MemberStatus[];
  /** Per round, index r - 1 (null for a round not seen, such as one before a resumed run began). */
  accuracy: (number | null)[];
  /** A site whose task is not a classification: its task's headline metric (a regression's RMSE) per round, as `accuracy` is kept. */
  metric?: { task: string; name: string; higherIsBetter: boolean; values: (number | null)[] };
  /** null)[]; | Training loss per round, kept as `accuracy` is. */
  loss: (number | null)[];
  /** dFLMoE: the mean gate weight of each expert (by member id; the own head under the site's id) per round. */
  gate: (Record<string, number> | null)[];
  /** A multi-task site with `crossTask`: how much each task's read-out leans on each other task (`"<task> <- <other>"`) per round, kept as `gate` is. */
  reliance?: (Record<string, number> | null)[];
  /** Seconds each round took, and when it finished (ms since the epoch): the round timeline. */
  seconds: (number | null)[];
  /** null)[]; | When each round finished (ms since the epoch), kept as `accuracy` is. */
  finishedAt: (number | null)[];
  /** When this process began the site (ms since the epoch). */
  startedAt: number;
  /** Bytes sent so far, cumulative over the run (this site's side of the transport). */
  bytesSent: number;
  /** Bytes received so far, cumulative over the run. */
  bytesReceived: number;
  /** Sites that share bodies: the part of the bytes that were bodies. */
  bodyBytesSent?: number;
  /** Of `bytesReceived`, the bytes that were bodies (cumulative). */
  bodyBytesReceived?: number;
  /** With DP-SGD: epsilon spent so far (at `delta`), and the budget to show it against; null when off or unset. */
  epsilon: number | null;
  /** null; | The DP delta at which `epsilon` is reckoned; null without DP-SGD. */
  delta: number | null;
  /** null; | The epsilon budget the live view shows `epsilon` against, set by the board; null when unset. */
  epsilonBudget: number | null;
  /** Whether the site's audit trail verifies, and its length. */
  audit: AuditStatus;
  /** When this status last changed (ms since the epoch). */
  updatedAt: number;
}

/** Every site on a `StatusBoard`, as `GET /api/status` returns them. */
export interface StatusSnapshot {
  /** Every site on the board, in the order they were added. */
  sites: SiteStatus[];
}

/** A site's key on a board: sites of different algorithms may share an id. */
export const siteKey = (s: Pick<SiteStatus, 'algorithm' | 'id'>): string => `${s.algorithm}/${s.id}`;

const MAX_ROUNDS = 1_000_000;
const text = z.string().max(256);
const count = z.number().finite().min(0);
const num = z.number().finite().nullable();
const memberSchema = z.object({
  id: text,
  peerId: text.optional(),
  connected: z.boolean(),
  strikes: count,
  blocked: z.boolean().optional(),
  lastHeadRound: num,
});
const perRound = <T extends z.ZodType>(t: T) => z.array(t).max(MAX_ROUNDS);

/** What a site status must look like (checked where one arrives from another process). */
const siteStatusSchema = z.object({
  id: text,
  peerId: text.optional(),
  algorithm: text,
  modality: text.optional(),
  state: z.enum(SITE_STATES),
  error: z.string().max(2000).optional(),
  round: count,
  rounds: count,
  members: z.array(memberSchema).max(100_000),
  accuracy: perRound(num),
  loss: perRound(num),
  metric: z.object({ task: text, name: text, higherIsBetter: z.boolean(), values: perRound(num) }).optional(),
  gate: perRound(z.record(text, z.number().finite()).nullable()),
  reliance: perRound(z.record(text, z.number().finite()).nullable()).optional(),
  seconds: perRound(num),
  finishedAt: perRound(num),
  startedAt: count,
  bytesSent: count,
  bytesReceived: count,
  bodyBytesSent: count.optional(),
  bodyBytesReceived: count.optional(),
  epsilon: num,
  delta: num,
  epsilonBudget: num,
  audit: z.object({ ok: z.boolean().nullable(), lines: count, problem: z.string().max(2000).optional() }),
  updatedAt: count,
});

/** A site status from untrusted JSON (another process's status endpoint); throws when it is not one. */
export function parseSiteStatus(x: unknown): SiteStatus {
  return siteStatusSchema.parse(x) as SiteStatus;
}

/** The headline metric of a site's first task, unless the site learns one classification task (whose accuracy the status keeps anyway). */
function headlineOf(tasks: SiteRoundRecord['tasks'] | undefined): Pick<RoundUpdate, 'metric'> {
  const first = Object.entries(tasks ?? {})[0];
  if (!first || oneClassification(tasks ?? {})) return {};
  const h = taskKind(first[1].kind).headline;
  return { metric: { task: first[0], name: h.metric, higherIsBetter: h.higherIsBetter, value: metricOf(first[1], h.metric) } };
}

/** One finished round, as the status takes it. */
export interface RoundUpdate {
  /** The round that finished (from 1). */
  round: number;
  /** The site's test accuracy after the round (0..1; NaN for a task without one). */
  accuracy: number;
  /** A task that is not a classification: its headline metric this round. */
  metric?: { task: string; name: string; higherIsBetter: boolean; value: number };
  /** The training loss of the round. */
  loss: number;
  /** dFLMoE: the mean gate weight of each expert this round, by member id (the own head under the site's id). */
  gate?: Record<string, number>;
  /** A multi-task site with `crossTask`: each task's reliance on each other task this round (`"<task> <- <other>"`). */
  reliance?: Record<string, number>;
  /** Wall-clock seconds the round took. */
  seconds: number;
  /** Bytes sent so far, cumulative over the run (not this round's). */
  bytesSent: number;
  /** Bytes received so far, cumulative over the run (not this round's). */
  bytesReceived: number;
  /** Sites that share bodies: of `bytesSent`, the bytes that were bodies (cumulative). */
  bodyBytesSent?: number;
  /** Sites that share bodies: of `bytesReceived`, the bytes that were bodies (cumulative). */
  bodyBytesReceived?: number;
  /** With DP-SGD: epsilon spent so far over the run, at `delta`. */
  epsilon?: number;
  /** With DP-SGD: the delta at which `epsilon` is reckoned. */
  delta?: number;
  /** When the round finished (default now). */
  at?: number;
}

/** What the status takes of a round record. */
export type RecordedRound = Pick<
  SiteRoundRecord,
  | 'round'
  | 'accuracy'
  | 'tasks'
  | 'loss'
  | 'experts'
  | 'reliance'
  | 'seconds'
  | 'bytesSent'
  | 'bytesReceived'
  | 'bodyBytesSent'
  | 'bodyBytesReceived'
  | 'privacy'
>;

/** A change to what a site knows of a member (by id); fields left out stay as they were. */
export type MemberUpdate = Pick<MemberStatus, 'id'> & Partial<Omit<MemberStatus, 'id'>>;

/**
 * The gate weights of a round by expert: the received experts' mean weights
 * (`name` maps a peer to its id on the board), and the rest for the own head,
 * under `self`. A multi-task site's experts carry their task: each task's
 * gate is keyed `<task> · <id>`, its own head's share included. Undefined
 * without experts (algorithms that have no gate).
 */
export function gateWeights(
  self: string,
  experts: readonly { peer: string; gateWeight: number; task?: string }[],
  name: (peer: string) => string = (p) => p,
): Record<string, number> | undefined {
  if (experts.length === 0) return undefined;
  // A multi-task site has a gate per task: its experts, and its own head, under `<task> · <id>`.
  const key = (task: string | undefined, id: string) => (task === undefined ? id : `${task} · ${id}`);
  const own = new Map<string | undefined, number>();
  const out: Record<string, number> = {};
  for (const e of experts) {
    out[key(e.task, name(e.peer))] = e.gateWeight;
    own.set(e.task, (own.get(e.task) ?? 0) + e.gateWeight);
  }
  return { ...Object.fromEntries([...own].map(([task, received]) => [key(task, self), Math.max(0, 1 - received)])), ...out };
}

/** What the live view asks of an exchange (a `HeadExchange`): who is a member now, and their newest announced rounds. */
export interface MemberSource {
  members(): string[];
  announced?(): Map<string, number>;
}

/** What a site's network (`SiteNetwork`) says of `ids`: connected (a member of its exchange now) and the newest round it announced. */
export function networkMembers(net: { exchange?: MemberSource; bodies?: MemberSource }, ids: readonly string[]): MemberUpdate[] {
  const ex = net.exchange ?? net.bodies;
  if (!ex) return [];
  const connected = new Set(ex.members());
  const announced = ex.announced?.();
  return ids.map((id) => ({ id, connected: connected.has(id), lastHeadRound: announced?.get(id) ?? null }));
}

/** What a `StatusBoard` needs to start showing a site: its id, algorithm, rounds and members. */
export interface SiteInit {
  /** The site's name on the board. */
  id: string;
  /** The site's libp2p peer ID, where it has one. */
  peerId?: string;
  /** The algorithm the site runs; with `id`, the site's key on the board. */
  algorithm: string;
  /** How the site holds the data, where the consortium's sites hold it in several forms. */
  modality?: string;
  /** The rounds the run is to take in all. */
  rounds: number;
  /** The members known from the start, shown as not connected until told otherwise. */
  members?: { id: string; peerId?: string }[];
  /** The state to start in (default `starting`). */
  state?: SiteState;
}

/** What `StatusBoard.onChange` calls with a site's new status. */
export type StatusListener = (site: SiteStatus) => void;

/**
 * The status of every site one process runs or watches. Feeds (`site`)
 * change it; listeners hear of every change with the site's new status
 * (the object is replaced, never changed in place after it was handed out).
 */
export class StatusBoard {
  private readonly sites = new Map<string, SiteStatus>();
  private readonly listeners = new Set<StatusListener>();
  /** null; | The epsilon budget every site on the board is shown against (overrides a reported site's own); null when unset. */
  readonly epsilonBudget: number | null;

  constructor(o: { epsilonBudget?: number } = {}) {
    this.epsilonBudget = o.epsilonBudget ?? null;
  }

  /** The feed of a site, created with `init` the first time (later calls return a feed of the same site). */
  site(init: SiteInit): SiteFeed {
    const key = siteKey(init);
    if (!this.sites.has(key)) {
      const now = Date.now();
      this.set({
        id: init.id,
        ...(init.peerId ? { peerId: init.peerId } : {}),
        algorithm: init.algorithm,
        ...(init.modality ? { modality: init.modality } : {}),
        state: init.state ?? 'starting',
        round: 0,
        rounds: init.rounds,
        members: (init.members ?? []).map((m) => ({ id: m.id, ...(m.peerId ? { peerId: m.peerId } : {}), connected: false, strikes: 0, lastHeadRound: null })),
        accuracy: [],
        loss: [],
        gate: [],
        seconds: [],
        finishedAt: [],
        startedAt: now,
        bytesSent: 0,
        bytesReceived: 0,
        epsilon: null,
        delta: null,
        epsilonBudget: this.epsilonBudget,
        audit: { ok: null, lines: 0 },
        updatedAt: now,
      });
    }
    return new SiteFeed(this, key);
  }

  /** Put a whole site status (one another process reported); the board's budget wins when it has one. */
  put(s: SiteStatus): void {
    this.set(this.epsilonBudget !== null ? { ...s, epsilonBudget: this.epsilonBudget } : s);
  }

  /** The status of the site with this key (see `siteKey`), if on the board. */
  get(key: string): SiteStatus | undefined {
    return this.sites.get(key);
  }

  /** Every site on the board now, as `GET /api/status` returns them. */
  snapshot(): StatusSnapshot {
    return { sites: [...this.sites.values()] };
  }

  /** Hear of every change; returns the function that stops it. */
  onChange(l: StatusListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Replace a site's status and tell the listeners. @internal */
  set(s: SiteStatus): void {
    this.sites.set(siteKey(s), s);
    for (const l of this.listeners) l(s);
  }
}

/** Changes one site on a board. */
export class SiteFeed {
  constructor(
    private readonly board: StatusBoard,
    /** The site's key on the board (see `siteKey`). */
    readonly key: string,
  ) {}

  /** The site's current status on the board. */
  get status(): SiteStatus {
    return this.board.get(this.key)!;
  }

  private change(patch: Partial<SiteStatus>): void {
    this.board.set({ ...this.status, ...patch, updatedAt: Date.now() });
  }

  /** Move the site to `state` (with `error`'s first line when it failed); a site that ended shows no member connected. */
  state(state: SiteState, error?: string): void {
    const s = this.status;
    if (s.state === state && s.error === error) return;
    const { error: _old, ...rest } = s;
    // A site that has ended has left the network: none of its members is connected to it any more.
    const members = ENDED.has(state) && s.members.some((m) => m.connected) ? s.members.map((m) => ({ ...m, connected: false })) : s.members;
    this.board.set({ ...rest, members, state, ...(error !== undefined ? { error: firstLine(error) } : {}), updatedAt: Date.now() });
  }

  /**
   * A round as the round loop recorded it (a `SiteRoundRecord`, or a site's
   * metrics line, which is one): its gate weights by expert (`name` maps a
   * member's peer to its id here), bytes and privacy spent.
   */
  record(r: RecordedRound, name?: (peer: string) => string, at?: number): void {
    this.round({
      round: r.round,
      accuracy: r.accuracy,
      ...headlineOf(r.tasks),
      loss: r.loss,
      gate: gateWeights(this.status.id, r.experts, name),
      ...(r.reliance ? { reliance: r.reliance } : {}),
      seconds: r.seconds,
      bytesSent: r.bytesSent,
      bytesReceived: r.bytesReceived,
      ...(r.bodyBytesSent !== undefined ? { bodyBytesSent: r.bodyBytesSent, bodyBytesReceived: r.bodyBytesReceived } : {}),
      ...(r.privacy ? { epsilon: r.privacy.epsilon, delta: r.privacy.delta } : {}),
      ...(at !== undefined ? { at } : {}),
    });
  }

  /** Take in a finished round: its per-round entries, the cumulative bytes and privacy; the first round moves a starting site to `training`. Rounds out of range are ignored. */
  round(u: RoundUpdate): void {
    if (!Number.isInteger(u.round) || u.round < 1 || u.round > MAX_ROUNDS) return;
    const s = this.status;
    const finite = (x: number | undefined) => (x !== undefined && Number.isFinite(x) ? x : null);
    this.change({
      ...(s.state === 'starting' || s.state === 'preprocessing' ? { state: 'training' as const } : {}),
      round: Math.max(s.round, u.round),
      accuracy: withRound(s.accuracy, u.round, finite(u.accuracy)),
      ...(u.metric
        ? {
            metric: {
              task: u.metric.task,
              name: u.metric.name,
              higherIsBetter: u.metric.higherIsBetter,
              values: withRound(s.metric?.values ?? [], u.round, finite(u.metric.value)),
            },
          }
        : {}),
      loss: withRound(s.loss, u.round, finite(u.loss)),
      gate: withRound(s.gate, u.round, u.gate ?? null),
      ...(u.reliance ? { reliance: withRound(s.reliance ?? [], u.round, u.reliance) } : {}),
      seconds: withRound(s.seconds, u.round, finite(u.seconds)),
      finishedAt: withRound(s.finishedAt, u.round, u.at ?? Date.now()),
      bytesSent: u.bytesSent,
      bytesReceived: u.bytesReceived,
      ...(u.bodyBytesSent !== undefined ? { bodyBytesSent: u.bodyBytesSent, bodyBytesReceived: u.bodyBytesReceived ?? 0 } : {}),
      ...(u.epsilon !== undefined ? { epsilon: finite(u.epsilon), delta: finite(u.delta) } : {}),
    });
  }

  /** Update members by id (members not known yet are added); a change is reported only when something changed. */
  members(updates: readonly MemberUpdate[]): void {
    const s = this.status;
    const next = s.members.slice();
    let changed = false;
    for (const u of updates) {
      const i = next.findIndex((m) => m.id === u.id);
      const old: MemberStatus = i >= 0 ? next[i] : { id: u.id, connected: false, strikes: 0, lastHeadRound: null };
      const m: MemberStatus = { ...old };
      for (const [k, v] of Object.entries(u)) if (v !== undefined) (m as unknown as Record<string, unknown>)[k] = v;
      if (ENDED.has(s.state)) m.connected = false;
      if (i >= 0 && sameMember(old, m)) continue;
      changed = true;
      if (i >= 0) next[i] = m;
      else next.push(m);
    }
    if (changed) this.change({ members: next });
  }

  /** Set how the site holds the data (`image`, `table`), once it knows that members hold it in other forms; reported only when it changed. */
  modality(m: string): void {
    if (this.status.modality !== m) this.change({ modality: m });
  }

  /** Set the cumulative bytes sent and received (between rounds); reported only when they changed. */
  bytes(b: Pick<SiteStatus, 'bytesSent' | 'bytesReceived'>): void {
    const s = this.status;
    if (s.bytesSent !== b.bytesSent || s.bytesReceived !== b.bytesReceived) this.change(b);
  }

  /** Set whether the audit trail verifies and its length; reported only when it changed. */
  audit(a: AuditStatus): void {
    const o = this.status.audit;
    if (o.ok !== a.ok || o.lines !== a.lines || o.problem !== a.problem) this.change({ audit: a });
  }
}

/** A copy of a per-round list with round `round`'s entry set (rounds between filled with null). */
function withRound<T>(xs: readonly (T | null)[], round: number, v: T | null): (T | null)[] {
  const out = xs.slice();
  while (out.length < round) out.push(null);
  out[round - 1] = v;
  return out;
}

function sameMember(a: MemberStatus, b: MemberStatus): boolean {
  return a.connected === b.connected && a.strikes === b.strikes && a.blocked === b.blocked && a.lastHeadRound === b.lastHeadRound && a.peerId === b.peerId;
}

function firstLine(s: string): string {
  return s.split('\n')[0].slice(0, 2000);
}
