/**
 * Every algorithm the simulator, `dflmoe peer`, the CLI, reports and
 * benchmarks know. Adding one: a file exporting an `Algorithm`, and its
 * line here.
 */
import { DEFAULT_LIMITS, type Algorithm, type AlgorithmBaseOptions } from './api.js';
import { dflmoe } from './dflmoe-site.js';
import type { DflmoeSettings } from './dflmoe-settings.js';
import { fedavg } from './fedavg.js';
import { fedavgFt, type FineTuneSettings } from './fedavg-ft.js';
import { fedrep, fedrepP2p, type FedRepSettings } from './fedrep.js';
import type { BodySettings } from '../body-share.js';
import type { StalenessSettings } from '../experts.js';
import { resolveSettings, type SettingsContext, type SettingsGroup } from '../settings.js';
import { gossip } from './gossip.js';
import { local } from './local.js';

/** The name of an algorithm: `dflmoe` and the baselines. */
export type AlgorithmName = 'dflmoe' | 'fedavg' | 'fedavg-ft' | 'fedrep' | 'fedrep-p2p' | 'gossip' | 'local';

/** In the order tables list them. */
export const REGISTRY = [dflmoe, fedavg, fedavgFt, fedrep, fedrepP2p, gossip, local] as const;

// AlgorithmName names exactly the registered algorithms (this line fails to compile when one is added to only one of them).
const _sameNames: [AlgorithmName, (typeof REGISTRY)[number]['name']] extends [(typeof REGISTRY)[number]['name'], AlgorithmName] ? true : never = true;

/** Every group of settings, each once, in the order help lists them. */
export const SETTINGS: readonly SettingsGroup[] = [...new Set(REGISTRY.flatMap((a) => a.settings))];

/** Every algorithm's settings, resolved (each group's type). */
export type AlgorithmSettings = DflmoeSettings & BodySettings & StalenessSettings & FineTuneSettings & FedRepSettings;

/** What a site of any algorithm is made with: the base options and every algorithm's settings. */
export interface AlgorithmOptions extends AlgorithmBaseOptions, AlgorithmSettings {}

/**
 * The settings `alg` runs with: what `given` sets (each checked by its
 * schema), else what the variants of `alg`'s own groups say, else the
 * defaults. `epochs` is the variants' default for the local epochs when
 * `given` has none (dFLMoE with shared bodies: 2). Throws a `SettingError`.
 */
export function algorithmSettings(
  alg: { readonly settings: readonly SettingsGroup[] },
  given: Partial<AlgorithmSettings> & { epochs?: number },
  context: SettingsContext = {},
): { settings: AlgorithmSettings; epochs?: number } {
  const r = resolveSettings(SETTINGS, alg.settings, given, context);
  const epochs = given.epochs ?? (r.outside.epochs as number | undefined);
  return { settings: r.values as unknown as AlgorithmSettings, ...(epochs !== undefined ? { epochs } : {}) };
}

/** Every setting at its default (no variant), with the default size limits: the options of a site no one configured. */
export const DEFAULT_ALGORITHM_OPTIONS: Omit<AlgorithmOptions, 'seed'> = { ...algorithmSettings({ settings: [] }, {}).settings, ...DEFAULT_LIMITS };

/** Every algorithm's name, in the order tables list them. */
export const ALGORITHMS: readonly AlgorithmName[] = REGISTRY.map((a) => a.name);

export function isAlgorithmName(name: string): name is AlgorithmName {
  return (ALGORITHMS as readonly string[]).includes(name);
}

export function unknownAlgorithmMessage(name: string): string {
  return `unknown algorithm "${name}"; choose from ${ALGORITHMS.join(', ')}`;
}

export function getAlgorithm(name: string): Algorithm<AlgorithmName, AlgorithmOptions> {
  const a = REGISTRY.find((x) => x.name === name);
  if (!a) throw new Error(unknownAlgorithmMessage(name));
  return a;
}

/** A Vega-Lite colour scale for `names` (registered colours; a grey for names this version does not know). */
export function algorithmColors(names: readonly string[] = ALGORITHMS): { domain: string[]; range: string[] } {
  const domain = [...new Set([...ALGORITHMS, ...names])];
  return { domain, range: domain.map((n) => REGISTRY.find((a) => a.name === n)?.color ?? '#999999') };
}
