/**
 * The libp2p node of a site: TCP (WebSockets optional), noise, yamux,
 * identify, ping and gossipsub; a connection gater that refuses every peer
 * that is not a consortium member; an optional pre-shared key.
 */
import './polyfill.js';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { gossipsub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import type { Connection, Libp2p, PeerId, PrivateKey } from '@libp2p/interface';
import { ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { webSockets } from '@libp2p/websockets';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { prometheusMetrics } from '@libp2p/prometheus-metrics';
import type { Registry } from 'prom-client';

export interface NodeOptions {
  privateKey: PrivateKey;
  listen: string[];
  /** Peer IDs allowed to connect (in either direction). */
  allow: string[];
  psk?: Uint8Array;
  /** Called when the gater refuses a peer. */
  onRefused?: (peer: string, direction: 'inbound' | 'outbound') => void;
  /** Peers refused for now even though they are members (misbehaving ones). */
  isBlocked?: (peer: string) => boolean;
  /** Register libp2p's own metrics in this Prometheus registry. */
  metricsRegistry?: Registry;
}

export type SiteNode = Libp2p<{ identify: ReturnType<ReturnType<typeof identify>>; ping: ReturnType<ReturnType<typeof ping>>; pubsub: ReturnType<ReturnType<typeof gossipsub>> }>;

export async function createSiteNode(o: NodeOptions): Promise<SiteNode> {
  const allowed = new Set(o.allow);
  const refuse = (peer: PeerId, direction: 'inbound' | 'outbound'): boolean => {
    const ok = allowed.has(peer.toString()) && !o.isBlocked?.(peer.toString());
    if (!ok) o.onRefused?.(peer.toString(), direction);
    return !ok;
  };
  const useWs = o.listen.some((a) => a.includes('/ws'));
  const node = await createLibp2p({
    start: false,
    privateKey: o.privateKey,
    addresses: { listen: o.listen },
    transports: useWs ? [tcp(), webSockets()] : [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(o.psk ? { connectionProtector: preSharedKey({ psk: o.psk }) } : {}),
    ...(o.metricsRegistry ? { metrics: prometheusMetrics({ registry: o.metricsRegistry, collectDefaultMetrics: false, preserveExistingMetrics: true }) } : {}),
    connectionGater: {
      // Loopback and private addresses are fine: consortium members may sit on a LAN.
      denyDialMultiaddr: () => false,
      denyDialPeer: (peer) => refuse(peer, 'outbound'),
      denyInboundEncryptedConnection: (peer) => refuse(peer, 'inbound'),
      denyOutboundEncryptedConnection: (peer) => refuse(peer, 'outbound'),
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        floodPublish: true,
        // Announcements are tiny; anything big on gossip is hostile.
        maxInboundDataLength: 64 * 1024,
      }),
    },
  });
  return node as unknown as SiteNode;
}

/** Dial every member we have addresses for; failures are expected (peers start at different times). */
export async function dialMembers(node: SiteNode, members: { peerId: string; addrs: string[] }[], signal?: AbortSignal): Promise<number> {
  let ok = 0;
  await Promise.all(
    members.map(async (m) => {
      if (m.peerId === node.peerId.toString() || m.addrs.length === 0) return;
      if (node.getConnections().some((c: Connection) => c.remotePeer.toString() === m.peerId)) {
        ok++;
        return;
      }
      for (const a of m.addrs) {
        try {
          await node.dial(multiaddr(`${a}/p2p/${m.peerId}`), { signal: signal ?? AbortSignal.timeout(3000) });
          ok++;
          return;
        } catch {
          // try the next address, or the next time round
        }
      }
    }),
  );
  return ok;
}
