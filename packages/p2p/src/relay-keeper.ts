/**
 * Keeps a reservation on each relay a site behind NAT is reached through.
 * libp2p's circuit transport reserves once when asked to listen and does not
 * come back after the relay restarts or the connection drops, and a relay
 * that is down at start would make `node.start()` fail; so a site listens
 * on no relay at start and this loop asks for a reservation whenever one is
 * missing: dial the relay (bounded), then listen on `<relay>/p2p-circuit`.
 */
import type { Libp2p } from '@libp2p/interface';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';

export type RelayStatus = { relay: string; state: 'reserved'; addrs: string[] } | { relay: string; state: 'failed'; error: string };

interface WithTransportManager {
  components: { transportManager: { listen(addrs: Multiaddr[]): Promise<void> } };
}

export class RelayKeeper {
  private timer?: NodeJS.Timeout;
  private inflight = new Set<string>();
  /** Last state reported per relay, so that each change is reported once. */
  private last = new Map<string, string>();
  private failures = new Map<string, number>();
  private nextTry = new Map<string, number>();
  private stopped = false;

  constructor(
    private readonly node: Libp2p,
    private readonly via: string[],
    private readonly onStatus: (s: RelayStatus) => void = () => {},
    private readonly intervalMs = 1000,
  ) {}

  /** Relay peer ID of a relay address (its last /p2p/ component). */
  private static relayId(a: string): string {
    return multiaddr(a)
      .getComponents()
      .filter((c) => c.name === 'p2p')
      .at(-1)!.value!;
  }

  /** Our circuit addresses through `relay`. */
  addrsVia(relay: string): string[] {
    const id = RelayKeeper.relayId(relay);
    return this.node
      .getMultiaddrs()
      .map(String)
      .filter((a) => a.includes(`/p2p/${id}/p2p-circuit`));
  }

  start(): void {
    this.stopped = false;
    const tick = () => {
      for (const r of this.via) void this.ensure(r);
    };
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private report(relay: string, s: RelayStatus): void {
    const key = s.state === 'reserved' ? `reserved:${s.addrs.join()}` : 'failed';
    if (this.last.get(relay) === key) return;
    this.last.set(relay, key);
    this.onStatus(s);
  }

  private async ensure(relay: string): Promise<void> {
    if (this.stopped || this.inflight.has(relay) || Date.now() < (this.nextTry.get(relay) ?? 0)) return;
    if (this.addrsVia(relay).length > 0) return;
    this.inflight.add(relay);
    try {
      // Dial first (cheap to retry), so that a listener is made only when the relay answers.
      await this.node.dial(multiaddr(relay), { signal: AbortSignal.timeout(10000) });
      await (this.node as unknown as WithTransportManager).components.transportManager.listen([multiaddr(`${relay}/p2p-circuit`)]);
      this.failures.delete(relay);
      this.report(relay, { relay, state: 'reserved', addrs: this.addrsVia(relay) });
    } catch (e) {
      // Back off by a second more after each failure, up to 10 s, on a relay that is down or refuses us.
      const n = (this.failures.get(relay) ?? 0) + 1;
      this.failures.set(relay, n);
      this.nextTry.set(relay, Date.now() + Math.min(10000, 1000 * n));
      this.report(relay, {
        relay,
        state: 'failed',
        error: String((e as Error | undefined)?.message ?? e)
          .split('\n')[0]
          .slice(0, 200),
      });
    } finally {
      this.inflight.delete(relay);
    }
  }
}
