/**
 * Groups for secure aggregation, drawn afresh each round.
 *
 * A sum under pairwise masking is one sum for the whole group, so the
 * members who combine bodies together must agree on who they are: a site
 * cannot take its own `k` partners as with plain sharing (partner sets are
 * not symmetric). Instead the consortium's members are shuffled with a
 * generator seeded by the consortium's seed and the round (every site draws
 * the same) and dealt into `max(1, floor(n / size))` groups, in turn, so
 * that every group has `size` members or more (sizes differ by one at most).
 * The size comes from the topology: `full`, one group of everyone; `ring`,
 * groups of 3; `random:k` (`gossipPeers` k), groups of k + 1, so that a
 * site combines with k others as with plain sharing, and its bytes stay
 * flat as the consortium grows. Re-drawing every round mixes the bodies
 * across groups over rounds, as re-drawn partners do (SecAgg+, Bell et al.
 * 2020, bounds each member's neighbourhood the same way; here the
 * neighbourhoods are cliques, so every member's sum is its group's sum).
 *
 * The threshold is `max(2, ceil(2 n / 3))` for a group of n: a round
 * completes while at most a third of the group drops out, and fewer than t
 * colluders learn nothing from the shares they hold (see
 * docs/secure-aggregation.md).
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { Rng, deriveSeed } from '@dflmoe/data/internal';
import { FIXED_POINT } from './fixed-point.js';

/** A round's group: its id, its members in peer-id order and the Shamir threshold. */
export interface SecAggGroup {
  round: number;
  id: string;
  members: string[];
  threshold: number;
}

/** Shares needed to reconstruct a secret in a group of `n`. */
export const secAggThreshold = (n: number): number => Math.max(2, Math.ceil((2 * n) / 3));

/** The id of a group: the first 16 bytes of the SHA-256 of its round and members. */
export const groupId = (round: number, members: readonly string[]): string =>
  bytesToHex(sha256(new TextEncoder().encode(`dflmoe secure aggregation group|${round}|${members.join(',')}`))).slice(0, 32);

/** Every group of `round`: `members` (any order, duplicates ignored) dealt into groups of at least `size`. */
export function secAggGroups(members: readonly string[], round: number, size: number, seed: number): SecAggGroup[] {
  if (!Number.isInteger(size) || size < 2) throw new Error(`a secure aggregation group needs at least 2 members, got ${size}`);
  const all = [...new Set(members)].sort();
  const rng = new Rng(deriveSeed(seed, 'secagg-groups', round));
  for (let i = all.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [all[i], all[j]] = [all[j], all[i]];
  }
  const count = Math.max(1, Math.floor(all.length / size), Math.ceil(all.length / FIXED_POINT.maxGroup));
  const groups: string[][] = Array.from({ length: count }, () => []);
  all.forEach((m, i) => groups[i % count].push(m));
  return groups.map((g) => g.sort()).map((g) => ({ round, id: groupId(round, g), members: g, threshold: secAggThreshold(g.length) }));
}

/** The group size a topology asks for (`full`: everyone, in one group). */
export function secAggGroupSize(t: { kind: 'full' } | { kind: 'ring' } | { kind: 'random'; k: number }, members: number): number {
  return Math.max(2, t.kind === 'full' ? members : t.kind === 'ring' ? 3 : t.k + 1);
}

/** The group of `self` in `round`. */
export function secAggGroupOf(self: string, members: readonly string[], round: number, size: number, seed: number): SecAggGroup {
  const g = secAggGroups([...members, self], round, size, seed).find((x) => x.members.includes(self));
  if (!g) throw new Error(`${self} is in no group`);
  return g;
}
