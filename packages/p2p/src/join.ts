/**
 * Join details: what a new site needs to join a consortium, without the
 * parts that are a site's own (its key, data file, listen addresses, out
 * directory). A member prints them (`dflmoe peer --config x.json
 * --print-join`); a site in a browser tab reads them and builds its site
 * config from them, so that it runs with the settings every member runs with.
 */
import { z } from 'zod';
import { multiaddr } from '@multiformats/multiaddr';
import { memberSchema, parsePeerConfig, peerConfigSchema, type ParsedConfig, type PeerConfig } from './config.js';

/** The `format` that join details start with (and the version of their layout). */
export const JOIN_FORMAT = 'dflmoe-join/1';

/** The sections of a site config that every member shares (the rest is a site's own). */
const SHARED = ['algorithm', 'preprocess', 'model', 'train', 'dflmoe', 'bodies', 'finetune', 'fedrep', 'rounds', 'round', 'limits'] as const;

/** The `data` settings that describe the consortium's table, not one site's file. */
const dataSettings = peerConfigSchema.shape.data.omit({ dataset: true, dataDir: true, simulate: true, maxSamples: true });

/** The schema of join details (zod); `parseJoinDetails` checks with it. */
export const joinSchema = peerConfigSchema
  .pick(Object.fromEntries(SHARED.map((k) => [k, true])) as { [K in (typeof SHARED)[number]]: true })
  .extend({
    format: z.literal(JOIN_FORMAT),
    /** Every member: peer ID, name and the addresses it can be reached at (a browser tab dials the WebSockets ones). */
    members: z.array(memberSchema).min(1),
    /** Relays of the consortium (members that serve one), through which browser tabs reach each other. */
    relays: z.array(z.string()).default([]),
    data: dataSettings,
  })
  .strict();

/**
 * Join details: the consortium's shared sections of a site config, its
 * members and relays, and the data settings that describe its table.
 * (Written out rather than inferred from `joinSchema`, so that the type
 * reads the same wherever it is printed.)
 */
export type JoinDetails = Pick<
  ParsedConfig,
  'algorithm' | 'preprocess' | 'model' | 'train' | 'dflmoe' | 'bodies' | 'finetune' | 'fedrep' | 'rounds' | 'round' | 'limits'
> & {
  format: typeof JOIN_FORMAT;
  /** Every member: peer ID, name and the addresses it can be reached at (a browser tab dials the WebSockets ones). */
  members: PeerConfig['members'];
  /** Relays of the consortium (members that serve one, with their peer ID), through which browser tabs reach each other. */
  relays: string[];
  data: Omit<PeerConfig['data'], 'dataset' | 'dataDir' | 'simulate' | 'maxSamples'>;
};

// The written-out type and the schema's must stay the same.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameJoinType: Same<JoinDetails, z.infer<typeof joinSchema>> = true;
void sameJoinType;

/** Whether a browser can dial this address (WebSockets, or WebRTC through a relay). */
export function browserDialable(addr: string): boolean {
  try {
    const names = multiaddr(addr)
      .getComponents()
      .map((c) => c.name);
    return names.includes('ws') || names.includes('wss') || names.includes('webrtc');
  } catch {
    return false;
  }
}

/**
 * The join details of the consortium `cfg` belongs to, as the site `selfId`
 * sees it: its settings, the members with their addresses (its own from
 * `announce`, else `listen`, with its peer ID appended) and its relay.
 * Throws when the settings name files a new site could not have (a saved
 * body, a pretrained body) or a pre-shared key (a secret: hand it over
 * apart, not in a file meant to be passed around).
 */
export function joinDetails(cfg: PeerConfig, selfId: string): { join: JoinDetails; warnings: string[] } {
  const warnings: string[] = [];
  if (cfg.psk) throw new Error('this consortium uses a pre-shared key (psk), which browser tabs cannot use; join details are for consortia without one');
  if (cfg.model.pretrainedBody !== undefined) throw new Error('model.pretrainedBody names a file on this machine: a browser tab cannot start from it');
  if (cfg.model.body.startsWith('tfjs:')) throw new Error(`model.body ${cfg.model.body} is a saved model on this machine: a browser tab cannot load it`);
  const own = (cfg.announce.length > 0 ? cfg.announce : cfg.listen).filter((a) => !a.includes('/p2p-circuit'));
  for (const a of own)
    if (/\/ip[46]\/(0\.0\.0\.0|::)\//.test(a))
      warnings.push(`${a} listens on every interface: members cannot dial it; set "announce" to the address they reach this site at`);
  // Member addresses are written without the peer ID (the dialler appends /p2p/<member>); a relay's with it.
  const withoutId = (a: string) => a.replace(new RegExp(`/p2p/${selfId}$`), '');
  const withId = (a: string) => `${withoutId(a)}/p2p/${selfId}`;
  const members = cfg.members.map((m) => (m.peerId === selfId ? { ...m, addrs: [...new Set([...own.map(withoutId), ...m.addrs])] } : m));
  if (!members.some((m) => m.peerId === selfId)) members.push({ peerId: selfId, addrs: own.map(withoutId), ...(cfg.name ? { name: cfg.name } : {}) });
  if (!members.some((m) => m.addrs.some(browserDialable))) {
    warnings.push('no member has a WebSockets address (/ws): a browser tab cannot reach any; add one to "listen", e.g. /ip4/0.0.0.0/tcp/9002/ws');
  }
  const relays = cfg.relay.serve ? own.filter(browserDialable).map(withId) : [];
  const { dataset: _d, dataDir: _dd, simulate: _s, maxSamples: _m, ...data } = cfg.data;
  const shared = Object.fromEntries(SHARED.map((k) => [k, cfg[k]])) as Pick<PeerConfig, (typeof SHARED)[number]>;
  return { join: { format: JOIN_FORMAT, ...shared, members, relays, data }, warnings };
}

/** Join details that do not parse: one line per problem, naming the field. */
export class JoinError extends Error {
  /** Always `JoinError`. */
  override name = 'JoinError';
}

/** Parse join details (as text or JSON), with errors that name the field. */
export function parseJoinDetails(input: unknown): JoinDetails {
  let raw = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (e) {
      throw new JoinError(`the join details are not JSON (${(e as Error).message}); paste what "dflmoe peer --config <file> --print-join" printed`);
    }
  }
  if (raw === null || typeof raw !== 'object' || (raw as { format?: unknown }).format !== JOIN_FORMAT) {
    throw new JoinError(
      `these are not dflmoe join details (they start with "format": "${JOIN_FORMAT}"); a member prints them with: dflmoe peer --config <file> --print-join`,
    );
  }
  const r = joinSchema.safeParse(raw);
  if (!r.success) throw new JoinError(`join details: ${r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** What a joining site adds to the join details: its own key, data, addresses and files. */
export interface JoiningSite {
  /** Its name in the consortium, for logs and the live view. */
  name?: string;
  /** Its key file. */
  key: string;
  /** Its data: `csv:<file>` or `images:<dir>`. */
  dataset: string;
  /** Its output directory (checkpoints, agreement, audit trail, results). */
  out: string;
  /** Addresses to listen on (a browser tab: `/p2p-circuit` and `/webrtc`, reached through relays). */
  listen: string[];
  /** This site's peer ID: it must be one of the members. */
  peerId: string;
  /** Directory the paths are relative to. */
  base?: string;
}

/**
 * A site config for a site joining with `join`: its own key, data and
 * addresses, the consortium's settings. Throws when the site is not a
 * member yet (the others would refuse it) or no member can be reached.
 */
export function siteConfigFromJoin(join: JoinDetails, site: JoiningSite): PeerConfig {
  if (!join.members.some((m) => m.peerId === site.peerId)) {
    throw new JoinError(
      `this site (${site.peerId}) is not among the consortium's members yet: ask a member to add {"peerId": "${site.peerId}"} to "members" in every site config, restart, and print the join details again`,
    );
  }
  const others = join.members.filter((m) => m.peerId !== site.peerId);
  if (others.length > 0 && !others.some((m) => m.addrs.some(browserDialable)) && join.relays.length === 0) {
    throw new JoinError('no member has an address a browser can dial (WebSockets, /ws): a member must listen on one, e.g. /ip4/0.0.0.0/tcp/9002/ws');
  }
  const { format: _f, relays, data, members, ...shared } = join;
  const raw = {
    ...shared,
    // Members with no address of their own (browser tabs, sites behind NAT) hold reservations on the
    // consortium's relays: reach them there, over WebRTC (tabs) or the relayed connection itself.
    members: members.map((m) =>
      m.addrs.length > 0 || m.peerId === site.peerId
        ? m
        : {
            ...m,
            addrs: relays.flatMap((r) => [`${r}/p2p-circuit/webrtc`, `${r}/p2p-circuit`]),
          },
    ),
    ...(site.name ? { name: site.name } : {}),
    key: site.key,
    listen: site.listen,
    relay: { via: relays, holePunch: false },
    data: { ...data, dataset: site.dataset },
    out: site.out,
  };
  return parsePeerConfig(raw, 'join details', site.base ?? '/');
}
