/**
 * The algorithms' settings as command-line flags: one flag per setting of
 * every group (`SETTINGS`), named, described and defaulted by its schema,
 * and each value checked by that schema as it is parsed. Only the flags a
 * user gave are passed on, so that an algorithm's variants can choose the
 * defaults of the rest (dFLMoE with `--share-body`: no FST, two epochs).
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { z } from 'zod';
import type { AlgorithmSettings } from '@dflmoe/core';
import { SETTINGS, SettingError, checkSetting, innerSchema, settingDefault, settingDescription, settingsList, type SettingsGroup } from '@dflmoe/core/internal';

/** `maxExperts` to `max-experts`. */
const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
/** `max-experts` to `maxExperts`, as commander names an option's value. */
const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

interface FlagSetting {
  name: string;
  flag: string;
  group: SettingsGroup;
  schema: z.ZodType;
}

function flagSettings(groups: readonly SettingsGroup[]): FlagSetting[] {
  return settingsList(groups).map(({ group, name, schema }) => ({
    name,
    schema,
    group,
    flag: (group.flags as Record<string, string | undefined> | undefined)?.[name] ?? kebab(name),
  }));
}

/** A typed value from a flag's text: a number, a word of an enum or a string, then checked by the setting's schema. */
function parser(s: FlagSetting): (v: string) => unknown {
  const inner = innerSchema(s.schema);
  const aliases = (s.group.aliases as Record<string, Record<string, unknown> | undefined> | undefined)?.[s.name] ?? {};
  return (v: string) => {
    const value = v in aliases ? aliases[v] : inner instanceof z.ZodNumber ? (v.trim() === '' ? NaN : Number(v)) : v;
    try {
      return checkSetting(SETTINGS, s.name, value);
    } catch (e) {
      if (e instanceof SettingError) throw new InvalidArgumentError(`${e.problem}.`);
      throw e;
    }
  };
}

function option(s: FlagSetting): Option {
  const inner = innerSchema(s.schema);
  const help = `${s.group.usedBy}: ${settingDescription(s.schema)}`;
  if (inner instanceof z.ZodBoolean) return new Option(`--${s.flag}`, help);
  const o = new Option(`--${s.flag} <${inner instanceof z.ZodNumber ? (inner.format === 'safeint' ? 'n' : 'x') : 'value'}>`, help).argParser(parser(s));
  if (inner instanceof z.ZodEnum) o.choices(inner.options.map(String));
  const dflt = settingDefault(s.schema);
  const note = (s.group.variantNotes as Record<string, string | undefined> | undefined)?.[s.name];
  if (dflt !== undefined) o.default(dflt, note ? `${String(dflt)}; ${note}` : undefined);
  return o;
}

/** Add a flag for every algorithm setting to `cmd`. */
export function addSettingsOptions(cmd: Command, groups: readonly SettingsGroup[] = SETTINGS): Command {
  for (const s of flagSettings(groups)) cmd.addOption(option(s));
  return cmd;
}

/** The settings the user gave on `cmd`'s command line (defaults left out). */
export function givenSettings(cmd: Command, groups: readonly SettingsGroup[] = SETTINGS): Partial<AlgorithmSettings> {
  const values = cmd.opts();
  const out: Record<string, unknown> = {};
  for (const s of flagSettings(groups)) {
    const key = camel(s.flag);
    const source = cmd.getOptionValueSource(key);
    if (source !== undefined && source !== 'default' && values[key] !== undefined) out[s.name] = values[key];
  }
  return out as Partial<AlgorithmSettings>;
}
