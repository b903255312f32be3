/**
 * Every algorithm the simulator, `dflmoe peer`, the CLI, reports and
 * benchmarks know. Adding one: a file exporting an `Algorithm`, and its
 * line here.
 */
import type { Algorithm } from './api.js';
import { dflmoe } from './dflmoe-site.js';
import { fedavg } from './fedavg.js';
import { fedavgFt } from './fedavg-ft.js';
import { fedrep, fedrepP2p } from './fedrep.js';
import { gossip } from './gossip.js';
import { local } from './local.js';

/** The name of an algorithm: `dflmoe` and the baselines. */
export type AlgorithmName = 'dflmoe' | 'fedavg' | 'fedavg-ft' | 'fedrep' | 'fedrep-p2p' | 'gossip' | 'local';

/** In the order tables list them. */
export const REGISTRY = [dflmoe, fedavg, fedavgFt, fedrep, fedrepP2p, gossip, local] as const;

// AlgorithmName names exactly the registered algorithms (this line fails to compile when one is added to only one of them).
const _sameNames: [AlgorithmName, (typeof REGISTRY)[number]['name']] extends [(typeof REGISTRY)[number]['name'], AlgorithmName] ? true : never = true;

/** Every algorithm's name, in the order tables list them. */
export const ALGORITHMS: readonly AlgorithmName[] = REGISTRY.map((a) => a.name);

export function isAlgorithmName(name: string): name is AlgorithmName {
  return (ALGORITHMS as readonly string[]).includes(name);
}

export function unknownAlgorithmMessage(name: string): string {
  return `unknown algorithm "${name}"; choose from ${ALGORITHMS.join(', ')}`;
}

export function getAlgorithm(name: string): Algorithm<AlgorithmName> {
  const a = REGISTRY.find((x) => x.name === name);
  if (!a) throw new Error(unknownAlgorithmMessage(name));
  return a;
}

/** A Vega-Lite colour scale for `names` (registered colours; a grey for names this version does not know). */
export function algorithmColors(names: readonly string[] = ALGORITHMS): { domain: string[]; range: string[] } {
  const domain = [...new Set([...ALGORITHMS, ...names])];
  return { domain, range: domain.map((n) => REGISTRY.find((a) => a.name === n)?.color ?? '#999999') };
}
