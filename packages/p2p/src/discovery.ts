/**
 * Finding members at run time: a config may list members by peer ID only,
 * plus a bootstrap address or two. `MemberFinder` keeps looking for every
 * member it has no connection to: first at the addresses this node already
 * knows (the config, and addresses learnt at run time: identify, the DHT's
 * own routing-table queries, mDNS, earlier lookups), then through the
 * consortium's private Kademlia DHT (`/dflmoe/kad/1.0.0`, spoken only
 * between members because the gater admits no one else), so a member that
 * restarts on another address is found again.
 *
 * Addresses learnt from the network are untrusted: only IP/TCP, DNS and
 * circuit addresses are kept, at most `MAX_ADDRS` per peer (the rest are
 * dropped and counted); a connection is still authenticated by the member's
 * key before anything is exchanged.
 */
import type { Libp2p, PeerInfo } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';

export const DHT_PROTOCOL = '/dflmoe/kad/1.0.0';
export const MAX_ADDRS = 16;

export interface FinderMember {
  peerId: string;
  addrs: string[];
  name?: string;
}

export interface MemberFinderOptions {
  members: FinderMember[];
  /** Member addresses (ending in /p2p/<peer ID>) to contact first. */
  bootstrap: string[];
  /** Look members up in the DHT when no known address works. */
  dht: boolean;
  /** How often to look for missing members (ms). */
  intervalMs: number;
  /** A member was reached (again) at `addr`, found how. */
  onFound?: (peer: string, addr: string, how: 'known' | 'dht' | 'bootstrap') => void;
  /** Addresses learnt from the network that were dropped (not usable, or over the limit per peer). */
  onDroppedAddrs?: (peer: string, n: number) => void;
}

const USABLE = ['ip4', 'ip6', 'dns', 'dns4', 'dns6', 'dnsaddr'];

/** Keep usable addresses only (IP or DNS with TCP, or circuit), at most MAX_ADDRS; report how many were dropped. */
export function boundedAddrs(addrs: Multiaddr[]): { kept: Multiaddr[]; dropped: number } {
  const kept: Multiaddr[] = [];
  for (const a of addrs) {
    if (kept.length >= MAX_ADDRS) break;
    try {
      const names = a.getComponents().map((c) => c.name);
      if (USABLE.includes(names[0]) && (names.includes('tcp') || names.includes('p2p-circuit'))) kept.push(a);
    } catch {
      // not a multiaddr we can read: dropped
    }
  }
  return { kept, dropped: addrs.length - kept.length };
}

/** A kad-dht peer info mapper that keeps private addresses (members may sit on one LAN) but bounds what is kept. */
export function memberPeerInfoMapper(onDropped?: (peer: string, n: number) => void): (p: PeerInfo) => PeerInfo {
  return (p) => {
    const { kept, dropped } = boundedAddrs(p.multiaddrs);
    if (dropped > 0) onDropped?.(p.id.toString(), dropped);
    return { ...p, multiaddrs: kept };
  };
}

type RoutingNode = Pick<Libp2p, 'dial' | 'getConnections' | 'peerId' | 'peerRouting' | 'peerStore'>;

export class MemberFinder {
  private timer?: NodeJS.Timeout;
  private inflight = new Set<string>();
  private nextTry = new Map<string, number>();
  private failures = new Map<string, number>();
  private stopped = true;
  /** How each member was last reached, and where. */
  readonly found = new Map<string, { addr: string; how: 'known' | 'dht' | 'bootstrap' }>();
  /** DHT lookups made, and lookups that found the member. */
  lookups = 0;
  lookupHits = 0;

  constructor(
    private readonly node: RoutingNode,
    private readonly o: MemberFinderOptions,
  ) {}

  start(): void {
    this.stopped = false;
    const tick = () => this.tick();
    tick();
    this.timer = setInterval(tick, this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private connected(peer: string): boolean {
    return this.node.getConnections().some((c) => c.remotePeer.toString() === peer);
  }

  private tick(): void {
    if (this.stopped) return;
    const self = this.node.peerId.toString();
    for (const b of this.o.bootstrap) {
      const id = multiaddr(b)
        .getComponents()
        .filter((c) => c.name === 'p2p')
        .at(-1)?.value;
      if (id && id !== self && !this.connected(id)) void this.attempt(`bootstrap:${b}`, () => this.dialAddr(id, multiaddr(b), 'bootstrap'));
    }
    for (const m of this.o.members) {
      if (m.peerId === self || this.connected(m.peerId)) continue;
      void this.attempt(m.peerId, () => this.find(m));
    }
  }

  /** One attempt per key at a time, with a backoff (0.5 s doubling to 30 s) after failures. */
  private async attempt(key: string, fn: () => Promise<boolean>): Promise<void> {
    if (this.inflight.has(key) || Date.now() < (this.nextTry.get(key) ?? 0)) return;
    this.inflight.add(key);
    try {
      if (await fn()) {
        this.failures.delete(key);
        this.nextTry.delete(key);
        return;
      }
    } catch {
      // counted below as a failure
    } finally {
      this.inflight.delete(key);
    }
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    this.nextTry.set(key, Date.now() + Math.min(30000, 250 * 2 ** Math.min(n, 7)));
  }

  private async dialAddr(peer: string, addr: Parameters<Libp2p['dial']>[0], how: 'known' | 'dht' | 'bootstrap'): Promise<boolean> {
    const c = await this.node.dial(addr, { signal: AbortSignal.timeout(10000) });
    if (c.remotePeer.toString() !== peer) return false;
    const a = c.remoteAddr.toString();
    if (this.found.get(peer)?.addr !== a) this.o.onFound?.(peer, a, how);
    this.found.set(peer, { addr: a, how });
    return true;
  }

  /** The member's configured addresses and those the peer store holds (identify, mDNS, an earlier lookup). */
  private async knownAddrs(m: FinderMember): Promise<Multiaddr[]> {
    const own = `/p2p/${m.peerId}`;
    const out = m.addrs.map((a) => multiaddr(a.endsWith(own) ? a : `${a}${own}`));
    try {
      const p = await this.node.peerStore.get(peerIdFromString(m.peerId));
      for (const a of p.addresses) out.push(a.multiaddr.toString().includes(own) ? a.multiaddr : a.multiaddr.encapsulate(own));
    } catch {
      // not in the peer store yet
    }
    return boundedAddrs(out).kept;
  }

  private async find(m: FinderMember): Promise<boolean> {
    const id = peerIdFromString(m.peerId);
    // Known addresses first. Never dial by peer ID alone: libp2p would look the peer up inside the dial,
    // and every other dial to that member (the exchange's, preprocessing's) would queue behind the lookup.
    const known = await this.knownAddrs(m);
    if (known.length > 0) {
      try {
        if (await this.dialAddr(m.peerId, known, 'known')) return true;
      } catch {
        // none of them works: look it up
      }
    }
    if (!this.o.dht || this.stopped) return false;
    this.lookups++;
    const info = await this.node.peerRouting.findPeer(id, { useCache: false, signal: AbortSignal.timeout(10000) } as Parameters<
      RoutingNode['peerRouting']['findPeer']
    >[1]);
    const { kept, dropped } = boundedAddrs(info.multiaddrs);
    if (dropped > 0) this.o.onDroppedAddrs?.(m.peerId, dropped);
    if (kept.length === 0) return false;
    this.lookupHits++;
    return this.dialAddr(
      m.peerId,
      kept.map((a) => (a.toString().includes(`/p2p/${m.peerId}`) ? a : a.encapsulate(`/p2p/${m.peerId}`))),
      'dht',
    );
  }
}
