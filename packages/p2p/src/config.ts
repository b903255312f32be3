/**
 * Site configuration: one JSON file per site. Paths inside it are relative
 * to the file. Errors name the field and say what is wrong.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { z } from 'zod';
import { closest, distance } from 'fastest-levenshtein';
import {
  ALGORITHMS,
  DEFAULT_SIMULATION,
  DEFAULT_TRAIN,
  OPTIMIZERS,
  SETTINGS,
  SettingError,
  algorithmSettings,
  bodySettings,
  dflmoeSettings,
  fedrepSettings,
  fineTuneSettings,
  stalenessSettings,
  type AlgorithmName,
  type AlgorithmSettings,
  type OptimizerKind,
  type SectionOf,
  type SimulationConfig,
  TASK_KINDS,
} from '@dflmoe/core';
import {
  DEFAULT_LIMITS,
  DEFAULT_MAX_SAMPLE_RATIO,
  DEFAULT_MAX_SAMPLES,
  configPath,
  fromSections,
  getAlgorithm,
  settingsList,
  parseBodySpec,
  parsedString,
  sectionShape,
  simulationSettings,
  toSections,
} from '@dflmoe/core/internal';
import { loadIdentity } from './identity.js';

/**
 * Every default of a site's data, model and training settings is the
 * simulator's (`DEFAULT_SIMULATION`), and the algorithms' sections
 * (`dflmoe`, `bodies`, `finetune`, `fedrep`, `round.maxStaleness`) are the
 * algorithms' own settings (`SETTINGS`), so a site config means what the
 * same options mean in `dflmoe simulate`.
 */
const D = DEFAULT_SIMULATION;
const A = DEFAULT_LIMITS;

const addr = z.string().refine((s) => {
  try {
    multiaddr(s);
    return true;
  } catch {
    return false;
  }
}, 'not a valid multiaddr (e.g. /ip4/127.0.0.1/tcp/9001)');

const peerId = z.string().refine((s) => {
  try {
    peerIdFromString(s);
    return true;
  } catch {
    return false;
  }
}, 'not a valid peer ID (run `dflmoe keygen` to get one)');

/** A relay's address: a multiaddr that ends in /p2p/<the relay's peer ID>. */
const relayAddr = addr.refine((s) => {
  try {
    const id = multiaddr(s)
      .getComponents()
      .filter((c) => c.name === 'p2p')
      .at(-1)?.value;
    return id !== undefined && !s.includes('/p2p-circuit') && Boolean(peerIdFromString(id));
  } catch {
    return false;
  }
}, "a relay address ends in /p2p/<the relay's peer ID> (e.g. /ip4/10.0.0.1/tcp/9101/p2p/12D3KooW...)");

const posInt = z.number().int().min(1);
/** The most tasks one site learns. */
const MAX_TASKS = 16;

/** Finding members at run time: members may be listed by peer ID only. */
export const discoverySchema = z
  .object({
    /** Member addresses (ending in /p2p/<member peer ID>) to contact first; the others' addresses are found through them. */
    bootstrap: z.array(relayAddr).max(8).default([]),
    /** Look members up in the consortium's private Kademlia DHT (default: when bootstrap is given or a member has no address). */
    dht: z.boolean().optional(),
    /** Find members on the same LAN by multicast DNS. */
    mdns: z.boolean().default(false),
    /** Look for members without a connection this often. */
    intervalMs: z.number().int().min(100).max(600000).default(2000),
  })
  .strict()
  .prefault({});

/** Reaching sites behind NAT through circuit relays (libp2p circuit relay v2) and hole punching (DCUtR). */
export const relaySchema = z
  .object({
    /** Serve as a relay for the members (reservations and relayed connections for member peer IDs only). */
    serve: z.boolean().default(false),
    /** Relays this site keeps a reservation on, so that members reach it through them (a site behind NAT). */
    via: z.array(relayAddr).max(8).default([]),
    /** Try to replace relayed connections with direct ones by hole punching (DCUtR). */
    holePunch: z.boolean().default(true),
    /** Reach members through the relays in `via` only (a firewall that lets connections out to the relays alone). */
    only: z.boolean().default(false),
    /** Serving: most reservations held at once. */
    maxReservations: posInt.max(1024).default(64),
  })
  .strict()
  .prefault({});
const algorithm = z.enum(ALGORITHMS as [AlgorithmName, ...AlgorithmName[]]);

export const memberSchema = z
  .object({
    peerId,
    addrs: z.array(addr).default([]),
    name: z.string().optional(),
  })
  .strict();

const checkpointSchema = z
  .object({
    enabled: z.boolean().default(true),
    keep: posInt.default(2),
  })
  .strict()
  .prefault({});

/** The schema of a site config (`dflmoe peer --config`); `parsePeerConfig` checks a config against it. */
export const peerConfigSchema = z
  .object({
    name: z.string().optional(),
    key: z.string(),
    /** Addresses to accept connections on; may be empty behind NAT when `relay.via` names a relay. */
    listen: z.array(addr).default([]),
    /** Addresses members should dial to reach this site, when not the listen ones (a port a NAT forwards, a proxy). */
    announce: z.array(addr).default([]),
    members: z.array(memberSchema).default([]),
    relay: relaySchema,
    discovery: discoverySchema,
    psk: z.string().optional(),
    algorithm: algorithm.default('dflmoe'),
    server: memberSchema.optional(),
    /**
     * The site's own data: `csv:<file>` (with `labelColumn`, optional
     * `features`/`drop`/`categorical`), `images:<dir>` (one sub-folder per
     * class; `imageSize`, `channels`, `fit`), or a built-in dataset. Only
     * `simulate` (the simulator's partition mode) makes it a share of one dataset.
     */
    data: z
      .object({
        dataset: z.string().min(1),
        labelColumn: z.string().optional(),
        /**
         * What the site learns: a task's name (the same across the consortium),
         * its label column (csv) and kind. `labelColumn` is the shorthand for one
         * classification task named after its column. Several tasks (multi-task:
         * one body, a head per task) each name their column; a row whose cell in
         * a task's column is empty lacks that task's label and stays for the others.
         */
        tasks: z
          .array(
            z
              .object({
                name: z.string().min(1).max(128).optional(),
                column: z.string().min(1).optional(),
                kind: z.enum(TASK_KINDS).default('classification'),
                /** A classification task's label set, in order (with several tasks; one task declares it in `data.classes`). */
                classes: z.array(z.string().min(1)).min(2).optional(),
              })
              .strict(),
          )
          .min(1)
          .max(MAX_TASKS, { message: `at most ${MAX_TASKS} tasks per site` })
          .optional(),
        features: z.array(z.string()).min(1).optional(),
        drop: z.array(z.string()).optional(),
        categorical: z.array(z.string()).optional(),
        /** The consortium's label set, in order (every site that lists it must list the same). */
        classes: z.array(z.string().min(1)).min(2).optional(),
        imageSize: z.tuple([posInt, posInt]).optional(),
        channels: z.union([z.literal(1), z.literal(3)]).optional(),
        fit: z.enum(['fill', 'cover', 'contain']).optional(),
        seed: z.number().int().default(D.seed),
        testFraction: z.number().gt(0).lt(1).default(D.testFraction),
        maxSamples: posInt.optional(),
        dataDir: z.string().optional(),
        /** `federated`: statistics pooled from every site's counts, sums and sums of squares; `local`: the site's own training rows. */
        standardize: z.enum(['federated', 'local']).default('federated'),
        simulate: z
          .object({
            peers: posInt,
            index: z.number().int().min(0),
            partition: z.string().default('iid'),
            minSize: posInt.default(D.minSize),
            /** The share file the simulator wrote (only this site's rows); without it the whole dataset is read and partitioned. */
            share: z.string().optional(),
          })
          .strict()
          .optional(),
      })
      .strict(),
    /**
     * Federated preprocessing before round 1: wait for every other member's
     * summary at most `deadlineMs`, or, once `round.quorum` of them are in,
     * `graceMs` more for the rest.
     */
    preprocess: z
      .object({
        deadlineMs: z.number().int().min(0).default(120000),
        graceMs: z.number().int().min(0).default(2000),
      })
      .strict()
      .prefault({}),
    model: z
      .object({
        body: parsedString(parseBodySpec).default(D.bodies[0]),
        featureDim: posInt.default(D.featureDim),
        headHidden: z.array(posInt).default(D.headHidden),
        /** Start from the consortium's shared initial model (seeded by data.seed and the body). */
        sharedInit: z.boolean().default(D.sharedInit),
        /**
         * A body pretrained on public data to start from (a directory with
         * model.json and weights.bin, as "dflmoe pretrain" writes); relative to
         * this file. Every member should name the same file.
         */
        pretrainedBody: z.string().min(1).optional(),
        /** Never train the body (a pretrained one, usually): only the head, gate and transforms learn. */
        freezeBody: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    train: z
      .object({
        /** Local epochs per round (default 1; 2 for dFLMoE with `shareBody`). */
        epochs: posInt.optional(),
        batchSize: posInt.default(D.batchSize),
        learningRate: z.number().positive().default(D.learningRate),
        /** Local optimiser: adam, sgd, or momentum (SGD with momentum 0.9). */
        optimizer: z.enum(OPTIMIZERS as [OptimizerKind, ...OptimizerKind[]]).default(D.optimizer),
        /** DP-SGD: per-example (or per-microbatch) clipping and Gaussian noise. */
        dp: z
          .object({
            clipNorm: z.number().positive(),
            noiseMultiplier: z.number().min(0),
            microbatches: posInt.optional(),
            delta: z.number().gt(0).lt(1).default(1e-5),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** dFLMoE's settings (`dflmoeSettings`). */
    dflmoe: z.object(sectionShape(dflmoeSettings)).strict().prefault({}),
    /** How bodies are shared, by dflmoe with `dflmoe.shareBody` and by fedrep-p2p (`bodySettings`). */
    bodies: z.object(sectionShape(bodySettings)).strict().prefault({}),
    /** fedavg-ft's settings (`fineTuneSettings`). */
    finetune: z.object(sectionShape(fineTuneSettings)).strict().prefault({}),
    /** fedrep's settings (`fedrepSettings`). */
    fedrep: z.object(sectionShape(fedrepSettings)).strict().prefault({}),
    rounds: posInt,
    round: z
      .object({
        deadlineMs: z.number().int().min(0).default(30000),
        /** Fresh heads (models) from other members to wait for each round; default: all other members. */
        quorum: z.number().int().min(0).optional(),
        ...sectionShape(stalenessSettings),
        /** Adapt the deadline to how long heads take to arrive (deadlineMs is then the first rounds' deadline and the ceiling). */
        adaptive: z.boolean().default(false),
        /** With `adaptive`: the shortest deadline. */
        minDeadlineMs: z.number().int().min(0).default(2000),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxHeadBytes: posInt.default(A.maxHeadBytes),
        maxModelBytes: posInt.default(A.maxModelBytes),
        /** Largest preprocessing summary accepted from a member. */
        maxSummaryBytes: posInt.default(32 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    checkpoint: checkpointSchema,
    /** After the last round, keep answering head requests this long. */
    lingerMs: z.number().int().min(0).default(3000),
    /**
     * The live view of this site in a browser (`dflmoe peer --ui` overrides):
     * `listen` is host:port (default host 127.0.0.1); an address other than
     * loopback needs `token` (or one is generated and printed once).
     */
    ui: z
      .object({
        listen: z.string().min(1),
        token: z.string().optional(),
        /** Show the DP epsilon spent against this budget. */
        epsilonBudget: z.number().positive().optional(),
      })
      .strict()
      .optional(),
    out: z.string(),
  })
  .strict();

/** A site config as its file gives it (the schema's output), before its algorithm's settings are resolved. */
export type ParsedConfig = z.infer<typeof peerConfigSchema>;

/** A site config after `parsePeerConfig`: defaults filled in (the algorithm's settings too), paths resolved. */
export type PeerConfig = Omit<ParsedConfig, 'dflmoe' | 'bodies' | 'finetune' | 'fedrep' | 'round' | 'train'> & {
  dflmoe: SectionOf<typeof dflmoeSettings>;
  bodies: SectionOf<typeof bodySettings>;
  finetune: SectionOf<typeof fineTuneSettings>;
  fedrep: SectionOf<typeof fedrepSettings>;
  round: Omit<ParsedConfig['round'], 'maxStaleness'> & SectionOf<typeof stalenessSettings>;
  train: Omit<ParsedConfig['train'], 'epochs'> & { epochs: number };
};

/** The schema of a FedAvg server's config (`dflmoe server --config`). */
export const serverConfigSchema = z
  .object({
    name: z.string().optional(),
    /** The server algorithm whose aggregation this server runs. */
    algorithm: algorithm.default('fedavg'),
    key: z.string(),
    listen: z.array(addr).min(1),
    clients: z.array(memberSchema).min(1),
    psk: z.string().optional(),
    rounds: posInt,
    round: z
      .object({
        deadlineMs: z.number().int().min(0).default(120000),
        quorum: z.number().int().min(1).optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxModelBytes: posInt.default(A.maxModelBytes),
        /** Largest sample count a client may declare (larger claims are clipped). */
        maxSamples: posInt.default(DEFAULT_MAX_SAMPLES),
        /** A client's weight is clipped to this many times the median count of the round. */
        maxSampleRatio: z.number().min(1).default(DEFAULT_MAX_SAMPLE_RATIO),
      })
      .strict()
      .prefault({}),
    /** Bad uploads: `max` within `decayMs` block a client for `blockMs`. */
    strikes: z
      .object({
        max: posInt.default(5),
        blockMs: z.number().int().min(0).default(60000),
        decayMs: z.number().int().min(1).default(30000),
      })
      .strict()
      .prefault({}),
    checkpoint: checkpointSchema,
    lingerMs: z.number().int().min(0).default(3000),
    out: z.string(),
  })
  .strict();

/** A FedAvg server's config after `parseServerConfig`. */
export type ServerConfig = z.infer<typeof serverConfigSchema>;

/** A config that cannot be used, with what to change (the file and the setting). */
export class ConfigError extends Error {
  /** Always `ConfigError`. */
  override name = 'ConfigError';
}

/** The keys the object schema at `path` of `schema` accepts (through defaults, optionals and arrays); none when it is no object. */
function keysAt(schema: z.ZodType, path: PropertyKey[]): string[] {
  let s: z.ZodType | undefined = schema;
  for (const k of [...path, undefined]) {
    for (let inner: z.ZodType | undefined = s; inner; inner = (inner._zod.def as { innerType?: z.ZodType }).innerType) s = inner;
    if (k === undefined) break;
    s = s instanceof z.ZodObject ? (s.shape as Record<string, z.ZodType>)[String(k)] : s instanceof z.ZodArray ? (s.element as z.ZodType) : undefined;
  }
  return s instanceof z.ZodObject ? Object.keys(s.shape) : [];
}

/** The known key a misspelled one most likely meant (at most a third of its letters off), if any. */
function suggestKey(key: string, known: string[]): string | undefined {
  if (known.length === 0) return undefined;
  const best = closest(key, known);
  return distance(key, best) <= Math.max(1, Math.ceil(key.length / 3)) ? best : undefined;
}

/** One line per problem, `field: what is wrong`; a misspelled key says which one it meant: `unknown key "rouds" (did you mean "rounds"?)`. */
function formatIssues(file: string, err: z.ZodError, schema: z.ZodType): string {
  const at = (path: PropertyKey[]) => (path.length ? `${path.join('.')}: ` : '');
  const meant = new Set<string>();
  const unknown = err.issues.flatMap((i) =>
    i.code !== 'unrecognized_keys'
      ? []
      : i.keys.map((k) => {
          const s = suggestKey(k, keysAt(schema, i.path));
          if (s) meant.add([...i.path, s].join('.'));
          return `${at(i.path)}unknown key "${k}"${s ? ` (did you mean "${s}"?)` : ''}`;
        }),
  );
  const others = err.issues
    // A required key reported missing because it was misspelled is the same mistake.
    .filter((i) => i.code !== 'unrecognized_keys' && !(i.code === 'invalid_type' && meant.has(i.path.join('.'))))
    .map((i) => `${at(i.path)}${i.message}`);
  const lines = [...others, ...unknown];
  return lines.length === 1 ? `config ${file}: ${lines[0]}` : `config ${file} is not valid:\n${lines.map((l) => `  ${l}`).join('\n')}`;
}

function readJson(file: string): unknown {
  if (!existsSync(file)) throw new ConfigError(`config file ${file} not found`);
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`config ${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Resolve paths in the config relative to the config file's directory. */
function rel(base: string, p: string | undefined): string | undefined {
  return p === undefined ? undefined : isAbsolute(p) ? p : resolve(base, p);
}

/** Configs written before sites held their own data: say how to migrate rather than list unknown keys. */
function checkLegacyData(raw: unknown, file: string): void {
  const d = (raw as { data?: Record<string, unknown> } | null)?.data;
  if (!d || typeof d !== 'object') return;
  const moved = ['peers', 'index', 'partition', 'minSize'].filter((k) => k in d);
  if (moved.length > 0) {
    const sim = Object.fromEntries(moved.map((k) => [k, d[k]]));
    throw new ConfigError(
      `config ${file}: data.${moved.join(', data.')} ${moved.length > 1 ? 'are' : 'is'} the simulator's partition mode and moved into data.simulate: ` +
        `write "data": {"dataset": ${JSON.stringify(d.dataset ?? '...')}, "simulate": ${JSON.stringify(sim)}}. ` +
        'A real site names only its own files, e.g. "data": {"dataset": "csv:our-patients.csv", "labelColumn": "diagnosis"}.',
    );
  }
  if (d.standardize === 'global') {
    throw new ConfigError(
      `config ${file}: data.standardize "global" read every site's rows; write "federated" (the default): statistics pooled from every site's counts, sums and sums of squares over libp2p`,
    );
  }
}

/**
 * Check a site config and fill in its defaults; relative paths are resolved
 * against `base`. Throws a `ConfigError` naming the file and the setting.
 */
export function parsePeerConfig(raw: unknown, file = '<inline>', base = process.cwd()): PeerConfig {
  checkLegacyData(raw, file);
  const r = peerConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(file, r.error, peerConfigSchema));
  const c = withSettings(r.data, file);
  if (c.listen.length === 0 && c.relay.via.length === 0) {
    throw new ConfigError(
      `config ${file}: listen: give at least one address to listen on, or (behind NAT) relay.via: a relay that members reach this site through`,
    );
  }
  if (c.relay.only && c.relay.via.length === 0) throw new ConfigError(`config ${file}: relay.only: needs relay.via (the relays to reach members through)`);
  c.discovery.bootstrap.forEach((b, i) => {
    const id = multiaddr(b)
      .getComponents()
      .filter((x) => x.name === 'p2p')
      .at(-1)?.value;
    if (!c.members.some((m) => m.peerId === id))
      throw new ConfigError(`config ${file}: discovery.bootstrap.${i}: ${id} is not in members (bootstrap through members only)`);
  });
  checkTasks(c, file);
  const sim = c.data.simulate;
  if (sim && sim.index >= sim.peers)
    throw new ConfigError(`config ${file}: data.simulate.index (${sim.index}) must be below data.simulate.peers (${sim.peers})`);
  if (getAlgorithm(c.algorithm).network === 'server' && !c.server) {
    throw new ConfigError(`config ${file}: server: required when algorithm is "${c.algorithm}" (the aggregation server's peerId and addrs)`);
  }
  c.key = rel(base, c.key)!;
  // The members list usually names the site itself: the quorum counts the others.
  if (existsSync(c.key)) checkQuorum(c, loadIdentity(c.key).peerId, file);
  else if (c.round.quorum !== undefined && c.round.quorum > c.members.length) checkQuorum(c, '', file);
  c.out = rel(base, c.out)!;
  c.psk = rel(base, c.psk);
  if (c.model.pretrainedBody !== undefined) c.model.pretrainedBody = rel(base, c.model.pretrainedBody);
  if (c.model.body.startsWith('tfjs:')) {
    c.model.body = `tfjs:${rel(base, c.model.body.slice(5))}`;
    if (!existsSync(c.model.body.slice(5)))
      throw new ConfigError(
        `config ${file}: model.body: ${c.model.body.slice(5)} not found (a saved tfjs layers model: a directory with model.json and its weights)`,
      );
  }
  if (c.model.pretrainedBody !== undefined && !existsSync(c.model.pretrainedBody)) {
    throw new ConfigError(
      `config ${file}: model.pretrainedBody: ${c.model.pretrainedBody} not found (a directory with model.json and weights.bin, as "dflmoe pretrain" writes)`,
    );
  }
  c.data.dataDir = rel(base, c.data.dataDir);
  for (const kind of ['csv:', 'images:']) if (c.data.dataset.startsWith(kind)) c.data.dataset = `${kind}${rel(base, c.data.dataset.slice(kind.length))}`;
  if (sim) sim.share = rel(base, sim.share);
  return c;
}

/** Several tasks: each with a distinct name and column, its classes in its own entry; one task keeps `data.classes`. */
function checkTasks(c: ParsedConfig, file: string): void {
  const ts = c.data.tasks ?? [];
  ts.forEach((t, i) => {
    if (t.classes && ts.length === 1) throw new ConfigError(`config ${file}: data.tasks.0.classes: one task declares its classes in data.classes`);
    if (t.classes && t.kind === 'regression')
      throw new ConfigError(`config ${file}: data.tasks.${i}.classes: task "${t.name ?? t.column}" is a regression (it has no classes)`);
  });
  if (ts.length < 2) return;
  ts.forEach((t, i) => {
    if (t.name === undefined && t.column === undefined)
      throw new ConfigError(`config ${file}: data.tasks.${i}: give the task a name or a column (several tasks: each names its label column)`);
  });
  for (const [what, of] of [
    ['name', (t: (typeof ts)[number]) => t.name ?? t.column],
    ['column', (t: (typeof ts)[number]) => t.column ?? t.name],
  ] as const) {
    const seen = new Map<string, number>();
    ts.forEach((t, i) => {
      const v = of(t)!;
      if (seen.has(v)) throw new ConfigError(`config ${file}: data.tasks.${i}: ${what} "${v}" is task ${seen.get(v)}'s too (each task has its own ${what})`);
      seen.set(v, i);
    });
  }
  if (c.data.labelColumn !== undefined)
    throw new ConfigError(`config ${file}: data.labelColumn: with several tasks, each names its label column in data.tasks[].column`);
  if (c.data.classes !== undefined)
    throw new ConfigError(`config ${file}: data.classes: with several tasks, each declares its classes in data.tasks[].classes`);
}

/**
 * The config with its algorithm's settings resolved into its sections: what
 * it sets, else the algorithm's variants (dFLMoE with `shareBody`: no FST,
 * two epochs), else the defaults; a bad value names its key.
 */
function withSettings(c: ParsedConfig, file: string): PeerConfig {
  const given = { ...fromSections(SETTINGS, c as unknown as Record<string, Record<string, unknown>>), epochs: c.train.epochs };
  let resolved;
  try {
    resolved = algorithmSettings(getAlgorithm(c.algorithm), given, { freezeBody: c.model.freezeBody });
  } catch (e) {
    if (e instanceof SettingError) throw new ConfigError(`config ${file}: ${configPath(SETTINGS, e.setting)}: ${e.problem}`);
    throw e;
  }
  const sections = toSections(SETTINGS, resolved.settings);
  return {
    ...c,
    dflmoe: sections.dflmoe,
    bodies: sections.bodies,
    finetune: sections.finetune,
    fedrep: sections.fedrep,
    round: { ...c.round, ...sections.round },
    train: { ...c.train, epochs: resolved.epochs ?? DEFAULT_TRAIN.epochs },
  } as PeerConfig;
}

/** A site's algorithm settings from its (parsed) config: the flat names the algorithms take. */
export function configSettings(c: PeerConfig): AlgorithmSettings {
  return fromSections(SETTINGS, c as unknown as Record<string, Record<string, unknown>>) as unknown as AlgorithmSettings;
}

/** The members other than the site `selfId`. */
export function otherMembers(c: PeerConfig, selfId: string): PeerConfig['members'] {
  return c.members.filter((m) => m.peerId !== selfId);
}

/**
 * Throws a ConfigError when the site's own key is not among the config's
 * `members` (the members would refuse it, and it would wait out every
 * deadline): one line naming the peer ID to add. A config without members
 * (a site alone) needs none.
 */
export function checkSelfMember(c: PeerConfig, selfId: string): void {
  if (c.members.length === 0 || c.members.some((m) => m.peerId === selfId)) return;
  throw new ConfigError(
    `this site's key ${c.key} is peer ${selfId}, which is not among "members": add {"peerId": "${selfId}"} (with the addresses the others reach it at) to "members" ` +
      "in every site's config (members refuse a site they do not list), or use the key of a member",
  );
}

/** Throws a ConfigError when `round.quorum` asks for more fresh heads than there are other members. */
export function checkQuorum(c: PeerConfig, selfId: string, file = '<config>'): void {
  const others = otherMembers(c, selfId).length;
  if (c.round.quorum !== undefined && c.round.quorum > others) {
    throw new ConfigError(
      `config ${file}: round.quorum (${c.round.quorum}) exceeds the number of other members (${others}); every round would wait out its deadline`,
    );
  }
}

/** Simulation options that `siteSettings` carries into a site config. */
const PER_SITE = [
  'dataset',
  'datasetOptions',
  'peers',
  'partition',
  'seed',
  'testFraction',
  'minSize',
  'standardize',
  'bodies',
  'featureDim',
  'headHidden',
  'sharedInit',
  'pretrainedBody',
  'freezeBody',
  'epochs',
  'batchSize',
  'learningRate',
  'optimizer',
  'dp',
  'rounds',
  // Every algorithm's settings, into their sections.
  ...settingsList(SETTINGS).map((s) => s.name),
];
/** One consortium per algorithm. */
const PER_CONSORTIUM = ['algorithms'] as const;
/** Simulation-only experiments: a consortium of processes refuses them rather than ignore them. */
const SIMULATION_ONLY: Partial<Record<keyof SimulationConfig, (s: SimulationConfig) => boolean>> = {
  poisoned: (s) => s.poisoned > 0,
  poisonKind: () => false,
  trainPerSite: (s) => s.trainPerSite !== undefined,
  featureShift: (s) => s.featureShift.length > 0,
  evaluateOn: (s) => s.evaluateOn !== 'test',
};

/** Every simulation option, sorted by how a consortium of processes treats it (for tests). */
export const SIMULATION_OPTION_KINDS = { perSite: PER_SITE, perConsortium: PER_CONSORTIUM, simulationOnly: Object.keys(SIMULATION_ONLY) };

/** A saved body (`tfjs:<dir>`) with its directory made absolute: a site config reads paths relative to itself. */
function absoluteBody(body: string): string {
  return body.startsWith('tfjs:') ? `tfjs:${resolve(body.slice('tfjs:'.length))}` : body;
}

/**
 * The data, model, training and algorithm sections of site `index`'s config
 * for the simulation `sim`: what `dflmoe simulate --transport tcp` writes,
 * so that a site process runs with the settings the in-memory simulator uses.
 * Throws for simulation-only options that a site config cannot express.
 */
export function siteSettings(sim: SimulationConfig, index: number, algorithm: AlgorithmName = sim.algorithms[0]) {
  for (const [k, used] of Object.entries(SIMULATION_ONLY)) {
    if (used(sim)) throw new ConfigError(`${k} is a simulation-only option: run it with --transport memory`);
  }
  const o = sim.datasetOptions ?? {};
  // The algorithm's settings as the in-memory simulator resolves them (its variants' defaults included).
  const { epochs, ...settings } = simulationSettings(sim, algorithm);
  const sections = toSections(SETTINGS, settings);
  return {
    data: {
      dataset: sim.dataset,
      seed: sim.seed,
      testFraction: sim.testFraction,
      // The simulator's pooled statistics are the federated ones (summaries merged); local: each site's own.
      standardize: (sim.standardize as string) === 'global' ? ('federated' as const) : sim.standardize,
      simulate: { peers: sim.peers, index, partition: sim.partition, minSize: sim.minSize },
      ...(o.maxSamples !== undefined ? { maxSamples: o.maxSamples } : {}),
      ...(o.dataDir !== undefined ? { dataDir: o.dataDir } : {}),
      ...(o.labelColumn !== undefined ? { labelColumn: o.labelColumn } : {}),
    },
    model: {
      body: absoluteBody(sim.bodies[index % sim.bodies.length]),
      featureDim: sim.featureDim,
      headHidden: sim.headHidden,
      sharedInit: sim.sharedInit,
      ...(sim.pretrainedBody !== undefined ? { pretrainedBody: resolve(sim.pretrainedBody) } : {}),
      freezeBody: sim.freezeBody,
    },
    train: {
      epochs,
      batchSize: sim.batchSize,
      learningRate: sim.learningRate,
      optimizer: sim.optimizer,
      ...(sim.dp ? { dp: sim.dp } : {}),
    },
    dflmoe: sections.dflmoe,
    bodies: sections.bodies,
    finetune: sections.finetune,
    fedrep: sections.fedrep,
    rounds: sim.rounds,
    round: sections.round,
  };
}

/** Read and check a site config file (`parsePeerConfig`, paths relative to the file). */
export function loadPeerConfig(file: string): PeerConfig {
  return parsePeerConfig(readJson(file), file, dirname(resolve(file)));
}

/** Check a FedAvg server's config and fill in its defaults. Throws a `ConfigError`. */
export function parseServerConfig(raw: unknown, file = '<inline>', base = process.cwd()): ServerConfig {
  const r = serverConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(file, r.error, serverConfigSchema));
  const c = r.data;
  if (getAlgorithm(c.algorithm).network !== 'server') throw new ConfigError(`config ${file}: algorithm: "${c.algorithm}" does not use a server`);
  if (c.round.quorum !== undefined && c.round.quorum > c.clients.length) {
    throw new ConfigError(`config ${file}: round.quorum (${c.round.quorum}) exceeds the number of clients (${c.clients.length})`);
  }
  c.key = rel(base, c.key)!;
  c.out = rel(base, c.out)!;
  c.psk = rel(base, c.psk);
  return c;
}

/** Read and check a FedAvg server's config file. */
export function loadServerConfig(file: string): ServerConfig {
  return parseServerConfig(readJson(file), file, dirname(resolve(file)));
}

/**
 * `dflmoe relay`: a relay the consortium runs for sites behind NAT. It is no
 * member (it sees no heads, only who connects to whom) and relays for the
 * listed members only.
 */
export const relayConfigSchema = z
  .object({
    name: z.string().optional(),
    key: z.string(),
    listen: z.array(addr).min(1),
    /** Addresses members dial, when not the listen ones. */
    announce: z.array(addr).default([]),
    members: z.array(memberSchema).min(1),
    psk: z.string().optional(),
    maxReservations: posInt.max(1024).default(64),
  })
  .strict();

/** A relay's config after `parseRelayConfig`. */
export type RelayConfig = z.infer<typeof relayConfigSchema>;

/** Check a relay's config and fill in its defaults. Throws a `ConfigError`. */
export function parseRelayConfig(raw: unknown, file = '<inline>', base = process.cwd()): RelayConfig {
  const r = relayConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(file, r.error, relayConfigSchema));
  const c = r.data;
  c.key = rel(base, c.key)!;
  c.psk = rel(base, c.psk);
  return c;
}

/** Read and check a relay's config file. */
export function loadRelayConfig(file: string): RelayConfig {
  return parseRelayConfig(readJson(file), file, dirname(resolve(file)));
}
