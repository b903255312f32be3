/**
 * Which experts a site with a bounded mixture pulls next round: at most `k`
 * of the members that announced a head. It keeps the experts its own
 * evidence rates best (a score on local data and the gate weight it gives
 * them, measured each round for the experts it holds) and spends a few
 * slots on exploration: members it has not tried yet first (in a seeded
 * random order), then the ones it dropped, most promising and longest
 * untested first. With `k` or fewer candidates it takes them all.
 */
import { Rng } from '@dflmoe/data/internal';

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
  const keep = [...o.held].sort((a, b) => b[1] - a[1] || byId(a[0], b[0])).slice(0, o.k - explore).map(([id]) => id);
  const untried = new Rng(o.seed).shuffle(others.filter((id) => !o.memory.has(id))) as string[];
  const bonus = o.staleBonus ?? 0.02;
  const priority = (id: string) => {
    const m = o.memory.get(id)!;
    return m.utility + bonus * Math.max(0, o.round - m.round);
  };
  const tried = others.filter((id) => o.memory.has(id)).sort((a, b) => priority(b) - priority(a) || byId(a, b));
  return [...keep, ...[...untried, ...tried].slice(0, o.k - keep.length)].sort(byId);
}
