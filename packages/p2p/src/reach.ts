/**
 * How a site reaches the others and is reached (relays, hole punching), from
 * its config, and a log line per member connection saying whether it is
 * direct or relayed.
 */
import type { Logger } from '@dflmoe/core';
import type { PeerConfig } from './config.js';
import { isRelayed, type NodeOptions, type RelayOptions, type SiteNode } from './node.js';

/** The relay options of `createSiteNode` for a site config. */
export function siteRelayOptions(cfg: Pick<PeerConfig, 'members' | 'relay'>): RelayOptions {
  return {
    ...(cfg.relay.serve ? { serve: { members: cfg.members.map((m) => m.peerId), maxReservations: cfg.relay.maxReservations } } : {}),
    via: cfg.relay.via,
    holePunch: cfg.relay.holePunch,
    only: cfg.relay.only,
  };
}

/**
 * The discovery options of `createSiteNode` for a site config; undefined when
 * every member has an address and nothing asks for discovery.
 */
export function siteDiscoveryOptions(cfg: Pick<PeerConfig, 'members' | 'discovery'>, selfId: string, log: Logger): NodeOptions['discovery'] {
  const d = cfg.discovery;
  const unaddressed = cfg.members.some((m) => m.peerId !== selfId && m.addrs.length === 0);
  const dht = d.dht ?? (d.bootstrap.length > 0 || unaddressed);
  if (!dht && !d.mdns && d.bootstrap.length === 0) return undefined;
  const names = new Map(cfg.members.map((m) => [m.peerId, m.name ?? 'member']));
  const dropped = new Set<string>();
  return {
    members: cfg.members,
    bootstrap: d.bootstrap,
    dht,
    mdns: d.mdns,
    intervalMs: d.intervalMs,
    onFound: (peer, addr, how) =>
      log.info(
        `found ${names.get(peer)} (${peer}) at ${addr} (${how === 'dht' ? 'DHT lookup' : how === 'bootstrap' ? 'bootstrap' : 'address known or learnt at run time'})`,
      ),
    onDroppedAddrs: (peer, n) => {
      if (dropped.has(peer)) return;
      dropped.add(peer);
      log.warn(`dropped ${n} unusable or excess address(es) learnt for ${peer} (logged once per peer)`);
    },
  };
}

export interface ConnectionCounts {
  direct: number;
  relayed: number;
}

/**
 * Log a member once it is connected ("connected to site-b (12D3...) relayed
 * at /ip4/..."), not once per connection: two members that dial each other
 * at once hold an inbound and an outbound connection, and the second is
 * logged at debug level only. A direct connection that replaces relayed ones
 * (DCUtR) is logged again. Every connection is counted.
 */
export function watchConnections(node: SiteNode, log: Logger, names: Map<string, string | undefined>): ConnectionCounts {
  const counts: ConnectionCounts = { direct: 0, relayed: 0 };
  /** The open connections to each member, by connection ID: relayed or not. */
  const open = new Map<string, Map<string, boolean>>();
  node.addEventListener('connection:open', (evt) => {
    const c = evt.detail;
    const id = c.remotePeer.toString();
    if (!names.has(id)) return;
    const name = names.get(id) ?? 'member';
    const relayed = isRelayed(c);
    counts[relayed ? 'relayed' : 'direct']++;
    const mine = open.get(id) ?? new Map<string, boolean>();
    open.set(id, mine);
    const news = mine.size === 0 || (!relayed && [...mine.values()].every(Boolean));
    mine.set(c.id, relayed);
    (news ? log.info : log.debug).call(log, `connected to ${name} (${id}) ${relayed ? 'relayed' : 'direct'} ${c.direction} at ${c.remoteAddr.toString()}`);
  });
  node.addEventListener('connection:close', (evt) => {
    const id = evt.detail.remotePeer.toString();
    const mine = open.get(id);
    if (!mine?.delete(evt.detail.id) || mine.size > 0) return;
    open.delete(id);
    // The last connection to a member went (it stopped, its tab closed, the link broke): rounds go on without it.
    log.info(`no connection to ${names.get(id) ?? 'member'} (${id}) any more`);
  });
  return counts;
}
