/**
 * `dflmoe relay`: run a circuit relay (v2) for the members of a consortium,
 * for sites behind NAT that no member can relay for. It relays for members
 * only (reservations and both ends of a relayed connection), sets no data or
 * time limit on relayed connections, and logs reservations and refusals.
 */
import type { Logger } from '@dflmoe/core';
import type { RelayConfig } from './config.js';
import { loadIdentity, loadPsk } from './identity.js';
import { createSiteNode, type SiteNode } from './node.js';
import { watchConnections } from './reach.js';

/** A running relay: its node and addresses, its reservations, and how to stop it. */
export interface RelayHandle {
  /** The relay's libp2p node. */
  node: SiteNode;
  /** The relay's peer ID. */
  peerId: string;
  /** The addresses members put in `relay.via` (with /p2p/<relay>). */
  addrs: string[];
  /** Reservations held now. */
  reservations(): number;
  /** Stop the relay's node. */
  stop(): Promise<void>;
}

/**
 * Start a relay for a consortium's members (`dflmoe relay`): sites behind NAT
 * keep a reservation on it and reach each other through it.
 */
export async function startRelay(cfg: RelayConfig, log: Logger): Promise<RelayHandle> {
  const id = loadIdentity(cfg.key);
  const members = cfg.members.map((m) => m.peerId);
  const node = await createSiteNode({
    privateKey: id.privateKey,
    listen: cfg.listen,
    announce: cfg.announce,
    allow: members,
    psk: cfg.psk ? loadPsk(cfg.psk) : undefined,
    relay: { serve: { members, maxReservations: cfg.maxReservations }, holePunch: false },
    onRefused: (peer, dir) => log.warn(`refused ${dir} connection from non-member ${peer}`),
    onRelayRefused: (peer, what) => log.warn(`refused to relay a ${what} for non-member ${peer}`),
  });
  const names = new Map(cfg.members.map((m) => [m.peerId, m.name]));
  watchConnections(node, log, names);
  const service = (node.services as unknown as { relay: { reservations: { size: number } } }).relay;
  await node.start();
  // A line whenever the number of reservations changes (checked every 2 s).
  let last = 0;
  const timer = setInterval(() => {
    if (service.reservations.size !== last) log.info(`${(last = service.reservations.size)} reservation(s) held`);
  }, 2000);
  timer.unref();
  const addrs = node.getMultiaddrs().map(String);
  log.info(
    `relay ${id.peerId} (${cfg.name ?? 'unnamed'}) for ${members.length} members; members behind NAT put one of these in relay.via: ${addrs.join(', ')}`,
  );
  return {
    node,
    peerId: id.peerId,
    addrs,
    reservations: () => service.reservations.size,
    stop: async () => {
      clearInterval(timer);
      await node.stop();
    },
  };
}
