/**
 * The libp2p node of a site: TCP (WebSockets optional), noise, yamux,
 * identify, ping and gossipsub; a connection gater that refuses every peer
 * that is not a consortium member; an optional pre-shared key.
 *
 * Sites behind NAT: every node can dial through circuit relays (v2); a site
 * with `relay.via` keeps a reservation on those relays so that members reach
 * it through them, and DCUtR replaces relayed connections with direct ones
 * where hole punching works. A site with `relay.serve` relays for members
 * only: the gater refuses reservations and relayed connections of anyone
 * else, and relayed connections carry no data or time limit (heads are big).
 */
import './polyfill.js';
// libp2p and its transports and services load when a node is made (`createSiteNode`), not with this module:
// a process that only reads configs, identities or audit trails (dflmoe simulate, audit, ...) never loads them.
import type { gossipsub } from '@libp2p/gossipsub';
import type { identify } from '@libp2p/identify';
import type { Connection, ConnectionGater, Libp2p, PeerId, PrivateKey } from '@libp2p/interface';
import type { ping } from '@libp2p/ping';
import { multiaddr } from '@multiformats/multiaddr';
import type { Libp2pOptions } from 'libp2p';
import { RelayKeeper, type RelayStatus } from './relay-keeper.js';
import { DHT_PROTOCOL, MemberFinder, memberPeerInfoMapper, type MemberFinderOptions } from './discovery.js';
import type { Registry } from 'prom-client';

export interface NodeOptions {
  privateKey: PrivateKey;
  listen: string[];
  /** Addresses to announce instead of the listen ones (a forwarded port, a proxy). */
  announce?: string[];
  /** Peer IDs allowed to connect (in either direction). */
  allow: string[];
  psk?: Uint8Array;
  /** Called when the gater refuses a peer. */
  onRefused?: (peer: string, direction: 'inbound' | 'outbound') => void;
  /** Peers refused for now even though they are members (misbehaving ones). */
  isBlocked?: (peer: string) => boolean;
  /** Register libp2p's own metrics in this Prometheus registry. */
  metricsRegistry?: Registry;
  relay?: RelayOptions;
  /** Called when the relay this node serves refuses a peer (not a member, or blocked). */
  onRelayRefused?: (peer: string, what: string) => void;
  /** Called when a reservation on a relay of `relay.via` is made or fails (once per change). */
  onRelayStatus?: (s: RelayStatus) => void;
  /** Find members at run time (bootstrap, DHT, mDNS): see MemberFinder. */
  discovery?: MemberFinderOptions & { mdns: boolean };
  /** More libp2p services on the node (the dflmoe exchanges: `headExchange`, `bodyExchange`). */
  services?: Record<string, (components: never) => unknown>;
  /**
   * The node's transports besides the circuit relay (always added); default
   * TCP, plus WebSockets when a listen address ends in `/ws`. A site in a
   * browser tab passes WebSockets and WebRTC.
   */
  transports?: NodeTransport[];
}

/** A libp2p transport factory, as `tcp()` or `webSockets()` return. */
export type NodeTransport = NonNullable<Libp2pOptions['transports']>[number];

export interface RelayOptions {
  /** Relay for these peers only (the members): reservations and both ends of a relayed connection. */
  serve?: { members: string[]; maxReservations?: number };
  /** Relay addresses (ending in /p2p/<relay>) to keep a reservation on, so that members reach this site through them. */
  via?: string[];
  /** DCUtR: replace relayed connections with direct ones where hole punching works (default true). */
  holePunch?: boolean;
  /** Dial only the relays in `via` and circuit addresses through them (a firewall that lets nothing else out). */
  only?: boolean;
}

/** The peer ID a multiaddr names last (`/p2p/<id>`), if any. */
export function peerIdOfAddr(a: string): string | undefined {
  return multiaddr(a)
    .getComponents()
    .filter((c) => c.name === 'p2p')
    .at(-1)?.value;
}

/** Whether a connection runs through a relay. */
export function isRelayed(c: Connection): boolean {
  return c.remoteAddr.toString().includes('/p2p-circuit');
}

/** A site's libp2p node, with the identify, ping and gossipsub services it runs. */
export type SiteNode = Libp2p<{
  identify: ReturnType<ReturnType<typeof identify>>;
  ping: ReturnType<ReturnType<typeof ping>>;
  pubsub: ReturnType<ReturnType<typeof gossipsub>>;
}>;

/**
 * What the head exchange uses of a node: a site's own node, or a host's
 * node seen from a libp2p service (`headExchange`, service.ts).
 */
export type ExchangeNode = Pick<SiteNode, 'peerId' | 'handle' | 'unhandle' | 'getConnections' | 'hangUp' | 'dialProtocol' | 'dial' | 'addEventListener'> & {
  services: Pick<SiteNode['services'], 'pubsub'>;
};

export async function createSiteNode(o: NodeOptions): Promise<SiteNode> {
  const via = o.relay?.via ?? [];
  const { allowed, gater } = membersGater(o);
  const useWs = o.listen.some((a) => a.includes('/ws'));
  const [{ createLibp2p }, { noise }, { yamux }, { circuitRelayServer, circuitRelayTransport }, { dcutr }, { gossipsub }, { identify }, { ping }, { tcp }] =
    await Promise.all([
      import('libp2p'),
      import('@chainsafe/libp2p-noise'),
      import('@chainsafe/libp2p-yamux'),
      import('@libp2p/circuit-relay-v2'),
      import('@libp2p/dcutr'),
      import('@libp2p/gossipsub'),
      import('@libp2p/identify'),
      import('@libp2p/ping'),
      import('@libp2p/tcp'),
    ]);
  // What only some nodes use loads only for them.
  const webSockets = useWs && !o.transports ? (await import('@libp2p/websockets')).webSockets : undefined;
  const preSharedKey = o.psk ? (await import('@libp2p/pnet')).preSharedKey : undefined;
  const prometheusMetrics = o.metricsRegistry ? (await import('@libp2p/prometheus-metrics')).prometheusMetrics : undefined;
  const mdns = o.discovery?.mdns ? (await import('@libp2p/mdns')).mdns : undefined;
  const kadDHT = o.discovery?.dht ? (await import('@libp2p/kad-dht')).kadDHT : undefined;
  const node = await createLibp2p({
    start: false,
    privateKey: o.privateKey,
    addresses: { listen: o.listen, ...(o.announce?.length ? { announce: o.announce } : {}) },
    transports: [...(o.transports ?? [tcp(), ...(webSockets ? [webSockets()] : [])]), circuitRelayTransport({ reservationCompletionTimeout: 10000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // Every member may connect at once from one host (one machine, a NAT, a relay): libp2p's defaults
    // (5 inbound connections per host per second, 10 pending) refused most of a 64-site consortium's dials.
    connectionManager: { inboundConnectionThreshold: Math.max(5, 2 * allowed.size), maxIncomingPendingConnections: Math.max(10, 2 * allowed.size) },
    ...(o.psk && preSharedKey ? { connectionProtector: preSharedKey({ psk: o.psk }) } : {}),
    ...(o.metricsRegistry && prometheusMetrics
      ? { metrics: prometheusMetrics({ registry: o.metricsRegistry, collectDefaultMetrics: false, preserveExistingMetrics: true }) }
      : {}),
    ...(mdns ? { peerDiscovery: [mdns({ serviceTag: '_dflmoe-discovery._udp.local', interval: 5000 })] } : {}),
    connectionGater: gater,
    services: {
      identify: identify(),
      ping: ping(),
      ...(o.relay?.serve
        ? {
            relay: circuitRelayServer({
              reservations: { maxReservations: o.relay.serve.maxReservations ?? 64, applyDefaultLimit: false },
              hopTimeout: 30000,
            }),
          }
        : {}),
      ...(o.relay?.holePunch !== false ? { dcutr: dcutr() } : {}),
      ...(o.discovery?.dht && kadDHT
        ? { dht: kadDHT({ protocol: DHT_PROTOCOL, clientMode: false, peerInfoMapper: memberPeerInfoMapper(o.discovery.onDroppedAddrs) }) }
        : {}),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        floodPublish: true,
        // Announcements are tiny; anything big on gossip is hostile.
        maxInboundDataLength: 64 * 1024,
        // No penalty for many peers on one IP address: the gater admits members only, and members may well share one
        // (one machine, a NAT, a relay). With the default, more than 10 peers on 127.0.0.1 scored negative and their
        // announcements were ignored: a 16-site consortium on one machine moved no heads.
        scoreParams: { IPColocationFactorWeight: 0 },
      }),
      ...(o.services as Record<string, (components: unknown) => unknown> | undefined),
    },
  });
  if (via.length > 0) {
    // Reservations are asked for (and asked for again) once the node runs: see RelayKeeper.
    const keeper = new RelayKeeper(node, via, o.onRelayStatus);
    node.addEventListener('start', () => keeper.start());
    node.addEventListener('stop', () => keeper.stop());
  }
  if (o.discovery) {
    const finder = new MemberFinder(node, o.discovery);
    node.addEventListener('start', () => finder.start());
    node.addEventListener('stop', () => finder.stop());
    (node as unknown as { memberFinder: MemberFinder }).memberFinder = finder;
  }
  return node as unknown as SiteNode;
}

/**
 * The site's connection gater: members only (and the relays it reserves on,
 * which the consortium may run without their being members), a member it
 * blocks for now refused too; relaying only for members, at both ends.
 * Returns the peers allowed and the gater.
 */
function membersGater(o: NodeOptions): { allowed: Set<string>; gater: ConnectionGater } {
  const via = o.relay?.via ?? [];
  const allowed = new Set([...o.allow, ...via.map(peerIdOfAddr).filter((p): p is string => p !== undefined)]);
  const refuse = (peer: PeerId, direction: 'inbound' | 'outbound'): boolean => {
    const ok = allowed.has(peer.toString()) && !o.isBlocked?.(peer.toString());
    if (!ok) o.onRefused?.(peer.toString(), direction);
    return !ok;
  };
  const relayFor = new Set(o.relay?.serve?.members ?? []);
  const notRelayed = (peer: PeerId, what: string): boolean => {
    if (relayFor.has(peer.toString()) && !o.isBlocked?.(peer.toString())) return false;
    o.onRelayRefused?.(peer.toString(), what);
    return true;
  };
  const gater: ConnectionGater = {
    // Loopback and private addresses are fine: consortium members may sit on a LAN. With relay.only, the relays alone.
    denyDialMultiaddr: (ma) => {
      if (!o.relay?.only) return false;
      const a = ma.toString();
      return !(a.includes('/p2p-circuit') || via.some((r) => peerIdOfAddr(r) === peerIdOfAddr(a)));
    },
    denyDialPeer: (peer) => refuse(peer, 'outbound'),
    denyInboundEncryptedConnection: (peer) => refuse(peer, 'inbound'),
    denyOutboundEncryptedConnection: (peer) => refuse(peer, 'outbound'),
    denyInboundRelayReservation: (peer) => notRelayed(peer, 'reservation'),
    denyOutboundRelayedConnection: (source, destination) => notRelayed(source, 'relayed connection') || notRelayed(destination, 'relayed connection'),
    denyInboundRelayedConnection: (relay, remote) => refuse(relay, 'inbound') || refuse(remote, 'inbound'),
  };
  return { allowed, gater };
}

/** The MemberFinder of a node made with `discovery`, for its counters. */
export function memberFinderOf(node: SiteNode): MemberFinder | undefined {
  return (node as unknown as { memberFinder?: MemberFinder }).memberFinder;
}

/**
 * Start a node; a listen address that cannot be bound (the port is taken,
 * the address is not this machine's) is one clear line naming it, not
 * libp2p's message with a stack trace inside.
 */
export async function startNode(node: SiteNode, listen: readonly string[]): Promise<void> {
  try {
    await node.start();
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    const bad = listen.filter((a) => msg.includes(a));
    const why = /EADDRINUSE/.test(msg)
      ? 'the port is in use by another program'
      : /EADDRNOTAVAIL/.test(msg)
        ? "the address is not one of this machine's"
        : /EACCES/.test(msg)
          ? 'permission denied (ports below 1024 need privileges)'
          : undefined;
    if (why) {
      await Promise.resolve(node.stop()).catch(() => {});
      throw new Error(`cannot listen on ${(bad.length ? bad : listen).join(', ')}: ${why}; change "listen" in the config`, { cause: e });
    }
    throw e;
  }
}

/** Dial every member we have addresses for; failures are expected (peers start at different times). */
/** Members each node is dialling now: a heartbeat does not start a second dial while one is under way. */
const dialling = new WeakMap<ExchangeNode, Set<string>>();

export async function dialMembers(node: ExchangeNode, members: { peerId: string; addrs: string[] }[], signal?: AbortSignal): Promise<number> {
  let ok = 0;
  const busy = dialling.get(node) ?? new Set<string>();
  dialling.set(node, busy);
  await Promise.all(
    members.map(async (m) => {
      if (m.peerId === node.peerId.toString() || m.addrs.length === 0) return;
      if (node.getConnections().some((c: Connection) => c.remotePeer.toString() === m.peerId)) {
        ok++;
        return;
      }
      if (busy.has(m.peerId)) return;
      busy.add(m.peerId);
      try {
        for (const a of m.addrs) {
          try {
            // On a loaded machine a handshake can take seconds: 5 s, and no second dial while this one runs
            // (dials cut short at 3 s and started again every heartbeat kept dozens of sites from connecting).
            await node.dial(multiaddr(`${a}/p2p/${m.peerId}`), { signal: signal ?? AbortSignal.timeout(5000) });
            ok++;
            return;
          } catch {
            // try the next address, or the next time round
          }
        }
      } finally {
        busy.delete(m.peerId);
      }
    }),
  );
  return ok;
}
