/**
 * Which experts a site with a bounded mixture pulls next round: at most `k`
 * of the members that announced a head. It keeps the experts its own
 * evidence rates best (a score on local data and the gate weight it gives
 * them, measured each round for the experts it holds) and spends a few
 * slots on exploration: members it has not tried yet first (in a seeded
 * random order), then the ones it dropped, most promising and longest
 * untested first. With `k` or fewer candidates it takes them all.
 */
import { Rng, deriveSeed } from '@dflmoe/data/internal';

/** What a site remembers of an expert it held: its utility when last measured, and that round. */
export interface ExpertMemory {
  utility: number;
  round: number;
}

export interface ChooseExpertsOptions {
  k: number;
  /** Slots for experts not held now, when there are any (at most `k`). */
  explore: number;
  /** Members that could be pulled (announced or connected). */
  candidates: readonly string[];
  /** Experts held now, with their utility measured this round. */
  held: ReadonlyMap<string, number>;
  /** Evidence on experts held before. */
  memory: ReadonlyMap<string, ExpertMemory>;
  round: number;
  /** Seeds the order in which untried members are explored. */
  seed: number;
  /** Added to a dropped expert's remembered utility per round since it was measured (default 0.02). */
  staleBonus?: number;
}

/** Default exploration slots for a mixture of `k` received experts. */
export function defaultExploration(k: number): number {
  return Math.max(1, Math.round(k / 4));
}

const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The experts to pull next round (sorted by id), at most `o.k`. */
export function chooseExperts(o: ChooseExpertsOptions): string[] {
  if (!Number.isInteger(o.k) || o.k < 1) throw new Error(`k must be a positive integer, got ${o.k}`);
  const all = [...new Set([...o.candidates, ...o.held.keys()])].sort(byId);
  if (all.length <= o.k) return all;
  const others = all.filter((id) => !o.held.has(id));
  const explore = Math.min(others.length, Math.max(0, Math.min(o.k, o.explore)));
  const keep = [...o.held]
    .sort((a, b) => b[1] - a[1] || byId(a[0], b[0]))
    .slice(0, o.k - explore)
    .map(([id]) => id);
  const untried = new Rng(o.seed).shuffle(others.filter((id) => !o.memory.has(id))) as string[];
  const bonus = o.staleBonus ?? 0.02;
  const priority = (id: string) => {
    const m = o.memory.get(id)!;
    return m.utility + bonus * Math.max(0, o.round - m.round);
  };
  const tried = others.filter((id) => o.memory.has(id)).sort((a, b) => priority(b) - priority(a) || byId(a, b));
  return [...keep, ...[...untried, ...tried].slice(0, o.k - keep.length)].sort(byId);
}

/** What a bounded mixture saves in a checkpoint (`ExpertSelection.state`). */
export interface ExpertSelectionState {
  chosen?: string[];
  memory: [string, number, number][];
  dormant: string[];
}

/**
 * A site's bounded mixture of at most `k` received experts: the experts
 * chosen for the next round, what it remembers of experts it held, and the
 * experts out of the pool whose gate slot, transform and optimizer state it
 * keeps (at most 2k, least recent first) so that they resume where they were
 * if chosen again. The site owns those variables; this decides which.
 */
export class ExpertSelection {
  /** The experts chosen for the next round (undefined until the first choice). */
  private chosen?: Set<string>;
  private memory = new Map<string, ExpertMemory>();
  private dormant: string[] = [];

  /** `k` experts at most (0: unbounded, and this does nothing), `explore` of the slots for experts not held, seeded by `seed`. */
  constructor(
    readonly k: number,
    private readonly explore: number,
    private readonly seed: number,
  ) {}

  /** Whether the choice refuses a head from `peer` (a choice was made, and `peer` is not in it). */
  refuses(peer: string): boolean {
    return this.chosen !== undefined && !this.chosen.has(peer);
  }

  /** The experts chosen for the next round, sorted, or undefined. */
  get current(): string[] | undefined {
    return this.chosen && [...this.chosen].sort();
  }

  /**
   * Choose among `candidates` (the site's own id left out, the experts held
   * included) from the held experts' utility this round (measured only when
   * a choice is made), or undefined while unbounded or no more than `k` were
   * ever seen. Returns the choice and the held experts it drops.
   */
  choose(round: number, candidates: ReadonlySet<string>, utilities: () => ReadonlyMap<string, number>): { chosen: string[]; dropped: string[] } | undefined {
    if (this.k === 0 || (!this.chosen && candidates.size <= this.k)) return undefined;
    const held = utilities();
    for (const [id, utility] of held) this.memory.set(id, { utility, round });
    const chosen = chooseExperts({
      k: this.k,
      explore: this.explore,
      candidates: [...candidates],
      held,
      memory: this.memory,
      round,
      seed: deriveSeed(this.seed, 'explore', round),
    });
    this.chosen = new Set(chosen);
    return { chosen, dropped: [...held.keys()].filter((id) => !this.chosen!.has(id)) };
  }

  /** An expert is back in the pool: its state is no longer dormant. */
  returned(peer: string): void {
    this.dormant = this.dormant.filter((id) => id !== peer);
  }

  /** Experts that left the pool: their state is kept. Returns the least recent beyond 2k, whose state the site frees. */
  retire(ids: readonly string[]): string[] {
    this.dormant = [...this.dormant.filter((id) => !ids.includes(id)), ...ids];
    const forgotten: string[] = [];
    while (this.dormant.length > 2 * this.k) forgotten.push(this.dormant.shift()!);
    return forgotten;
  }

  /** What a checkpoint keeps (undefined while unbounded). */
  state(): ExpertSelectionState | undefined {
    if (this.k === 0) return undefined;
    return {
      ...(this.chosen ? { chosen: [...this.chosen] } : {}),
      memory: [...this.memory].map(([id, m]): [string, number, number] => [id, m.utility, m.round]),
      dormant: this.dormant,
    };
  }

  /** Restore what `state` saved. */
  restore(s: ExpertSelectionState): void {
    this.chosen = s.chosen && new Set(s.chosen);
    this.memory = new Map(s.memory.map(([id, utility, round]) => [id, { utility, round }]));
    this.dormant = [...s.dormant];
  }
}
