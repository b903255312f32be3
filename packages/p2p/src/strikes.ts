/**
 * Strikes against members that send bad data, shared by the head exchange
 * and the FedAvg server. Each strike expires `decayMs` after it was given, so
 * an honest member that now and then sends something odd (a transfer cut by
 * a restart) is never blocked; `maxStrikes` live strikes block a member for
 * `blockMs`. Only the caller's members are tracked, so memory is bounded.
 */
export interface StrikeOptions {
  /** Live strikes that block a member (default 5)... */
  maxStrikes?: number;
  /** ...for this long (default 60 s). */
  blockMs?: number;
  /** A strike counts for this long (default 30 s). */
  decayMs?: number;
  /** The clock (tests). */
  now?: () => number;
}

export class StrikeBook {
  private strikes = new Map<string, number[]>();
  private blockedUntil = new Map<string, number>();
  /** Every strike given, per member (they never expire here). */
  private total = new Map<string, number>();
  readonly maxStrikes: number;
  readonly blockMs: number;
  readonly decayMs: number;
  private readonly now: () => number;

  constructor(o: StrikeOptions = {}) {
    this.maxStrikes = o.maxStrikes ?? 5;
    this.blockMs = o.blockMs ?? 60000;
    this.decayMs = o.decayMs ?? 30000;
    this.now = o.now ?? Date.now;
  }

  /** Whether `peer` is refused for now. */
  isBlocked(peer: string): boolean {
    const until = this.blockedUntil.get(peer);
    if (until === undefined) return false;
    if (this.now() < until) return true;
    this.blockedUntil.delete(peer);
    return false;
  }

  /** Strikes of `peer` that still count. */
  live(peer: string): number {
    const t = this.now();
    const kept = (this.strikes.get(peer) ?? []).filter((s) => t - s < this.decayMs);
    if (kept.length) this.strikes.set(peer, kept);
    else this.strikes.delete(peer);
    return kept.length;
  }

  /** Strikes `peer` was given so far, expired ones included. */
  given(peer: string): number {
    return this.total.get(peer) ?? 0;
  }

  /** Give `peer` a strike; true when that blocks it (from now for `blockMs`). */
  strike(peer: string): boolean {
    this.live(peer);
    this.total.set(peer, this.given(peer) + 1);
    const list = [...(this.strikes.get(peer) ?? []), this.now()];
    if (list.length < this.maxStrikes) {
      this.strikes.set(peer, list);
      return false;
    }
    this.strikes.delete(peer);
    this.blockedUntil.set(peer, this.now() + this.blockMs);
    return true;
  }
}
