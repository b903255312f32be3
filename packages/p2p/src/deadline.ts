/**
 * Round deadlines that adapt to what the link delivers. A site waits for
 * the other members' heads at most `deadlineMs` each round; with
 * `round.adaptive` it learns how long the heads take to arrive when all of
 * them do, and (once it has seen `minSamples` such rounds) waits `factor`
 * times the slowest of the last `window` of them plus a margin (between
 * `minMs` and the configured `deadlineMs`). A
 * round that runs out of time while every awaited member is connected (the
 * link is slow, not a member gone) doubles the deadline, up to `deadlineMs`;
 * members that are gone do not stretch it.
 */
import type { HeadExchange } from '@dflmoe/core';

export interface AdaptiveDeadlineOptions {
  /** The configured deadline: the first rounds use it, and it is the ceiling. */
  maxMs: number;
  /** The floor. */
  minMs: number;
  /** Wait this many times the slowest recent complete wait (default 3)... */
  factor?: number;
  /** ...plus this margin (default 500 ms)... */
  marginMs?: number;
  /** ...over the last this many complete rounds (default 5)... */
  window?: number;
  /** ...once there are this many (default 3; until then the deadline stays at `maxMs`). */
  minSamples?: number;
}

export interface DeadlineRecord {
  /** The deadline the wait had. */
  deadlineMs: number;
  /** How long it took (ms). */
  waitedMs: number;
  /** Whether everything awaited arrived in time. */
  complete: boolean;
}

export class AdaptiveDeadline {
  private samples: number[] = [];
  private cur: number;
  /** The waits seen, newest last (bounded). */
  readonly history: DeadlineRecord[] = [];

  constructor(private readonly o: AdaptiveDeadlineOptions) {
    if (!(o.minMs >= 0 && o.maxMs >= o.minMs)) throw new Error(`adaptive deadline: need 0 <= minMs (${o.minMs}) <= maxMs (${o.maxMs})`);
    this.cur = o.maxMs;
  }

  /** The deadline the next wait gets. */
  get current(): number {
    return this.cur;
  }

  private clamp(ms: number): number {
    return Math.round(Math.min(this.o.maxMs, Math.max(this.o.minMs, ms)));
  }

  /** Record a wait: `complete` when everything awaited arrived; `linkSlow` when it did not although every awaited member was connected. */
  observe(waitedMs: number, complete: boolean, linkSlow: boolean): void {
    this.history.push({ deadlineMs: this.cur, waitedMs, complete });
    if (this.history.length > 1000) this.history.shift();
    if (complete) {
      this.samples.push(waitedMs);
      if (this.samples.length > (this.o.window ?? 5)) this.samples.shift();
      if (this.samples.length >= Math.min(this.o.minSamples ?? 3, this.o.window ?? 5)) {
        this.cur = this.clamp((this.o.factor ?? 3) * Math.max(...this.samples) + (this.o.marginMs ?? 500));
      }
    } else if (linkSlow) {
      this.samples = [];
      this.cur = this.clamp(this.cur * 2);
    }
  }

  /**
   * `exchange` with its `waitForHeads` measured: every wait feeds `observe`.
   * The other methods are the exchange's own.
   */
  wrap<E extends HeadExchange>(exchange: E): E {
    const wait = async (count: number, timeoutMs: number): Promise<number> => {
      const t0 = performance.now();
      const got = await exchange.waitForHeads(count, timeoutMs);
      const waited = performance.now() - t0;
      const complete = got >= count;
      this.observe(waited, complete, !complete && exchange.members().length >= count);
      return got;
    };
    return new Proxy(exchange, {
      get(target, key) {
        if (key === 'waitForHeads') return wait;
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }
}
