/**
 * Algorithm settings, declared once. Each algorithm (and body sharing, which
 * two algorithms use) declares its settings as one group: a zod schema per
 * setting with its default and a one-line description, the section of the
 * site config it sits in, and the defaults that follow from other settings
 * (a variant: dFLMoE with shared bodies trains twice per round, without
 * feature-space transforms, unless told otherwise). The CLI's flags, the
 * simulator's config, the site config's sections, the learner's options and
 * the algorithm's own options are all derived from the groups, and a value
 * is checked by its schema where it enters.
 */
import { z } from 'zod';

/** One group of settings: flat names (as the simulator and the algorithms use them) to schemas. */
export interface SettingsGroup<S extends z.ZodRawShape = z.ZodRawShape, K extends { readonly [N in keyof S]?: string } = { readonly [N in keyof S]?: string }> {
  /** The site config's section (`dflmoe`, `bodies`, ...). */
  readonly section: string;
  /** Who uses these settings, in help text (`dFLMoE`, `sites that share bodies`). */
  readonly usedBy: string;
  /** Flat name to schema; every schema has `.default()` or `.optional()` and then `.describe()`. */
  readonly shape: S;
  /** The key in the site config's section where it is not the flat name. */
  readonly keys?: K;
  /** The CLI flag (without `--`) where it is not the flat name in kebab case. */
  readonly flags?: { readonly [K in keyof S]?: string };
  /** Words a CLI value may also be (`all` for 0). */
  readonly aliases?: { readonly [K in keyof S]?: Readonly<Record<string, unknown>> };
  /**
   * Defaults that follow from what was set (of any group, or `epochs`): applied
   * to settings left unset, for the algorithms that own this group.
   */
  readonly variants?: (given: Readonly<Record<string, unknown>>) => Record<string, unknown>;
  /** What a help text says of a default that variants change (`none with --share-body`). */
  readonly variantNotes?: { readonly [K in keyof S]?: string };
  /** A check across settings once defaults are in: the setting at fault and the problem, or undefined. May normalize values in place. */
  readonly finish?: (values: Record<string, unknown>, context: SettingsContext) => [setting: string, problem: string] | undefined;
}

/** What the settings' checks see beyond the settings themselves. */
export interface SettingsContext {
  /** Whether the body is frozen (never trained), which rules out some settings (dFLMoE's `shareBody`). */
  freezeBody?: boolean;
}

/** The values of a group once resolved. */
export type SettingsOf<G> = G extends SettingsGroup<infer S, infer _K> ? z.output<z.ZodObject<S>> : never;

/** The values of a group once resolved, as its section of the site config names them. */
export type SectionOf<G> =
  G extends SettingsGroup<infer S, infer K>
    ? { [N in keyof z.output<z.ZodObject<S>> as N extends keyof K ? (K[N] extends string ? K[N] : N) : N]: z.output<z.ZodObject<S>>[N] }
    : never;

/** A group, typed (its section's keys kept as literals). */
export function defineSettings<S extends z.ZodRawShape, const K extends { readonly [N in keyof S]?: string } = Record<never, string>>(
  g: SettingsGroup<S, K>,
): SettingsGroup<S, K> {
  return g;
}

/** A setting that cannot be used; `setting` is its flat name (callers name it as their users know it). */
export class SettingError extends Error {
  /** Always `SettingError`. */
  override name = 'SettingError';
  constructor(
    /** The setting at fault, by name. */
    readonly setting: string,
    /** What is wrong with it. */
    readonly problem: string,
  ) {
    super(`${setting}: ${problem}`);
  }
}

/** The schema inside defaults and optionals. */
export function innerSchema(s: z.ZodType): z.ZodType {
  let t = s;
  for (let inner = (t._zod.def as { innerType?: z.ZodType }).innerType; inner; inner = (t._zod.def as { innerType?: z.ZodType }).innerType) t = inner;
  return t;
}

/** A setting's default (undefined for an optional one). */
export function settingDefault(s: z.ZodType): unknown {
  return s.safeParse(undefined).data;
}

/** The one-line description of a setting. */
export function settingDescription(s: z.ZodType): string {
  return s.description ?? '';
}

/** Every setting of `groups`: its group, flat name and schema. */
export function settingsList(groups: readonly SettingsGroup[]): { group: SettingsGroup; name: string; schema: z.ZodType }[] {
  return groups.flatMap((group) => Object.entries(group.shape).map(([name, schema]) => ({ group, name, schema: schema as z.ZodType })));
}

/** The first problem zod finds with `value` for `schema`, in a few words. */
function problemWith(schema: z.ZodType, value: unknown): string | undefined {
  const r = schema.safeParse(value);
  return r.success ? undefined : r.error.issues.map((i) => i.message).join('; ');
}

/** Check one given value of a setting by its schema: the parsed value, or a `SettingError`. */
export function checkSetting(groups: readonly SettingsGroup[], name: string, value: unknown): unknown {
  const s = settingsList(groups).find((x) => x.name === name);
  if (!s) throw new SettingError(name, 'no such setting');
  const problem = problemWith(s.schema, value);
  if (problem) throw new SettingError(name, problem);
  return s.schema.parse(value);
}

/**
 * Every setting of `all` for an algorithm that owns `own`: what `given` sets
 * (checked), else what the variants of `own` say, else the default. Returns
 * the values and the variants' defaults for keys outside the groups
 * (`epochs`), which the caller applies where they were not set.
 * Throws a `SettingError` naming the setting.
 */
export function resolveSettings(
  all: readonly SettingsGroup[],
  own: readonly SettingsGroup[],
  given: object,
  context: SettingsContext = {},
): { values: Record<string, unknown>; outside: Record<string, unknown> } {
  const list = settingsList(all);
  const known = new Set(list.map((s) => s.name));
  const set = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  const variant: Record<string, unknown> = {};
  for (const g of own) Object.assign(variant, g.variants?.(set) ?? {});
  const values: Record<string, unknown> = {};
  for (const { name, schema } of list) {
    const v = name in set ? set[name] : variant[name];
    const problem = problemWith(schema, v);
    if (problem) throw new SettingError(name, problem);
    values[name] = schema.parse(v);
  }
  for (const g of all) {
    const problem = g.finish?.(values, context);
    if (problem) throw new SettingError(...problem);
  }
  const outside = Object.fromEntries(Object.entries(variant).filter(([k]) => !known.has(k) && !(k in set)));
  return { values, outside };
}

/** The site config's key of a setting of `group`. */
export function configKey(group: SettingsGroup, name: string): string {
  return (group.keys as Record<string, string | undefined> | undefined)?.[name] ?? name;
}

/**
 * A group's keys in its section of the site config, every one optional:
 * defaults are applied once the algorithm is known (`resolveSettings`).
 */
export function sectionShape<S extends z.ZodRawShape, K extends { readonly [N in keyof S]?: string }>(group: SettingsGroup<S, K>): SectionShape<S, K> {
  return Object.fromEntries(
    Object.entries(group.shape).map(([name, s]) => {
      const inner = innerSchema(s as z.ZodType);
      return [configKey(group as SettingsGroup, name), inner.optional().describe(settingDescription(s as z.ZodType))];
    }),
  ) as SectionShape<S, K>;
}

/** The zod shape of a group's section: its keys, each optional. */
export type SectionShape<S extends z.ZodRawShape, K> = {
  [N in keyof S as N extends keyof K ? (K[N] extends string ? K[N] : N) : N]: z.ZodOptional<z.ZodType<Exclude<z.output<S[N]>, undefined>>>;
};

/** A string that `parse` accepts; otherwise the issue is the parser's own message (what a topology looks like, say). */
export function parsedString(parse: (s: string) => unknown) {
  return z.string().superRefine((s, ctx) => {
    try {
      parse(s);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
    }
  });
}

/** Flat settings from a config's sections (`{ bodies: { every: 2 } }` to `{ bodyEvery: 2 }`). */
export function fromSections(
  groups: readonly SettingsGroup[],
  sections: Readonly<Record<string, Readonly<Record<string, unknown>> | undefined>>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { group, name } of settingsList(groups)) {
    const v = sections[group.section]?.[configKey(group, name)];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/** The sections of a site config holding `values` (the inverse of `fromSections`). */
export function toSections(groups: readonly SettingsGroup[], values: Readonly<Record<string, unknown>>): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const { group, name } of settingsList(groups)) {
    if (values[name] === undefined) continue;
    (out[group.section] ??= {})[configKey(group, name)] = values[name];
  }
  return out;
}

/** Where a setting is in the site config (`bodies.every`), for messages. */
export function configPath(groups: readonly SettingsGroup[], name: string): string {
  const s = settingsList(groups).find((x) => x.name === name);
  return s ? `${s.group.section}.${configKey(s.group, name)}` : name;
}
