/**
 * An emulated weak link for tests and benchmarks: a TCP proxy in front of a
 * site that holds every byte back by half the round-trip time, lets through
 * at most `bytesPerSecond` per connection and direction, and resets a share
 * of the connections (TCP RST) at a random moment. A site announces the
 * proxy's address (config `announce`) so that every member reaches it
 * through the proxy; everything a site sends back travels the same
 * connection, so both directions are shaped.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { mulberry32 } from '@dflmoe/data/internal';

export interface LinkOptions {
  /** Per connection and direction (default 1 MB/s). */
  bytesPerSecond?: number;
  /** Round-trip time added, ms (default 100: 50 each way). */
  rttMs?: number;
  /** Share of connections reset at a random moment of their first `resetWithinMs` (default 0.02). */
  resetProbability?: number;
  resetWithinMs?: number;
  /** Reset this many connections for sure (the first ones still open then; so that a short test sees resets), default 0... */
  forceResets?: number;
  /** ...at a random moment this long after they open, ms (default [1000, 4000]). */
  forceResetAfterMs?: [number, number];
  /** Seed of the reset decisions (default 1). */
  seed?: number;
}

export interface LinkStats {
  connections: number;
  resets: number;
  bytes: number;
}

/**
 * Shape one direction: each chunk leaves when the link has sent what was
 * queued before it (at `bytesPerSecond`) plus half the RTT; chunks stay in
 * order (one FIFO, one timer). The source is paused while much is queued.
 */
function shape(from: Socket, to: Socket, o: Required<Pick<LinkOptions, 'bytesPerSecond' | 'rttMs'>>, stats: LinkStats): void {
  let nextFree = 0; // when the link finishes sending what is queued (ms, performance.now)
  let queued = 0;
  let ended = false;
  const fifo: { at: number; chunk: Buffer }[] = [];
  let timer: NodeJS.Timeout | undefined;
  const HIGH = 256 * 1024;
  const pump = () => {
    timer = undefined;
    const now = performance.now();
    while (fifo.length > 0 && fifo[0].at <= now + 0.5) {
      const { chunk } = fifo.shift()!;
      queued -= chunk.length;
      stats.bytes += chunk.length;
      if (!to.destroyed) to.write(chunk);
    }
    if (queued <= HIGH && from.isPaused() && !from.destroyed) from.resume();
    if (fifo.length > 0) timer = setTimeout(pump, Math.max(0, fifo[0].at - performance.now()));
    else if (ended && !to.destroyed) to.end();
  };
  from.on('data', (chunk: Buffer) => {
    const now = performance.now();
    nextFree = Math.max(now, nextFree) + (chunk.length / o.bytesPerSecond) * 1000;
    queued += chunk.length;
    fifo.push({ at: nextFree + o.rttMs / 2, chunk });
    if (queued > HIGH) from.pause();
    if (!timer) timer = setTimeout(pump, Math.max(0, fifo[0].at - now));
  });
  from.on('end', () => {
    ended = true;
    if (!timer && fifo.length === 0 && !to.destroyed) to.end();
  });
}

export class LinkEmulator {
  readonly stats: LinkStats = { connections: 0, resets: 0, bytes: 0 };
  private server?: Server;
  private sockets = new Set<Socket>();
  private timers = new Set<NodeJS.Timeout>();
  private random: () => number;
  /** Forced resets done, and connections waiting for theirs. */
  private forcedDone = 0;
  private forcedPending = 0;
  private readonly o: Required<LinkOptions>;

  /** Proxy connections to `target` (host:port); listen with `start()`. */
  constructor(
    private readonly target: { host: string; port: number },
    o: LinkOptions = {},
  ) {
    this.o = {
      bytesPerSecond: o.bytesPerSecond ?? 1e6,
      rttMs: o.rttMs ?? 100,
      resetProbability: o.resetProbability ?? 0.02,
      resetWithinMs: o.resetWithinMs ?? 30000,
      forceResets: o.forceResets ?? 0,
      forceResetAfterMs: o.forceResetAfterMs ?? [1000, 4000],
      seed: o.seed ?? 1,
    };
    // Reset decisions are reproducible for a seed.
    this.random = mulberry32(this.o.seed);
  }

  /** Listen on 127.0.0.1:`port` (0: any); returns the port. */
  start(port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => this.accept(client));
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        this.server = server;
        const a = server.address();
        resolve(typeof a === 'object' && a ? a.port : port);
      });
    });
  }

  private accept(client: Socket): void {
    ++this.stats.connections;
    const upstream = connect({ port: this.target.port, host: this.target.host, allowHalfOpen: true });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => {});
      // A clean close leaves the other side to finish what is queued for it (the shaper ends it); an error or reset ends both.
      s.on('close', (hadError) => {
        this.sockets.delete(s);
        if (hadError) for (const x of [client, upstream]) if (!x.destroyed) x.destroy();
      });
    }
    upstream.once('connect', () => {
      shape(client, upstream, this.o, this.stats);
      shape(upstream, client, this.o, this.stats);
      client.resume();
    });
    const forced = this.forcedDone + this.forcedPending < this.o.forceResets;
    const reset = forced || this.random() < this.o.resetProbability;
    const when = this.random() * this.o.resetWithinMs;
    if (forced) this.forcedPending++;
    if (reset) {
      const t = setTimeout(
        () => {
          this.timers.delete(t);
          if (forced) this.forcedPending--;
          // A connection that closed by itself first leaves its forced reset to a later one.
          if (client.destroyed) return;
          if (forced) this.forcedDone++;
          this.stats.resets++;
          client.resetAndDestroy();
          upstream.resetAndDestroy();
        },
        forced ? this.o.forceResetAfterMs[0] + (when / this.o.resetWithinMs) * (this.o.forceResetAfterMs[1] - this.o.forceResetAfterMs[0]) : when,
      );
      t.unref();
      this.timers.add(t);
    }
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
