/**
 * Prometheus metrics for operators: `dflmoe peer --metrics <port>` serves
 * them on 127.0.0.1 (rounds, accuracy, experts in the pool, bytes, dropped
 * messages), together with libp2p's own metrics and Node's process metrics.
 */
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';

/**
 * prom-client (CommonJS) loads with the first PeerMetrics, that is for
 * `dflmoe peer --metrics`, not with this module: every other process that
 * imports @dflmoe/p2p goes without it.
 */
let promClient: typeof PromClient | undefined;
const prom = (): typeof PromClient => (promClient ??= createRequire(import.meta.url)('prom-client') as typeof PromClient);

export class PeerMetrics {
  private readonly prom = prom();
  readonly registry = new this.prom.Registry();
  readonly rounds = new this.prom.Counter({ name: 'dflmoe_rounds_total', help: 'Local rounds completed', registers: [this.registry] });
  readonly accuracy = new this.prom.Gauge({
    name: 'dflmoe_accuracy',
    help: 'Personalized accuracy on the local test split after the last round',
    registers: [this.registry],
  });
  readonly ownHeadAccuracy = new this.prom.Gauge({
    name: 'dflmoe_own_head_accuracy',
    help: 'Accuracy of the own head alone after the last round',
    registers: [this.registry],
  });
  readonly experts = new this.prom.Gauge({ name: 'dflmoe_experts', help: 'Received experts in the pool', registers: [this.registry] });
  readonly expertVersion = new this.prom.Gauge({
    name: 'dflmoe_expert_version',
    help: 'Head version held per expert',
    labelNames: ['peer'],
    registers: [this.registry],
  });
  readonly bytes = new this.prom.Gauge({
    name: 'dflmoe_bytes',
    help: 'Head or model bytes moved since start',
    labelNames: ['direction'],
    registers: [this.registry],
  });
  readonly dropped = new this.prom.Gauge({
    name: 'dflmoe_dropped_messages',
    help: 'Messages dropped since start, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly roundSeconds = new this.prom.Gauge({
    name: 'dflmoe_round_seconds',
    help: 'Duration of the last round, by part',
    labelNames: ['part'],
    registers: [this.registry],
  });
  private server?: Server;

  constructor() {
    this.prom.collectDefaultMetrics({ register: this.registry, prefix: 'dflmoe_process_' });
  }

  /** Serve `/metrics` on 127.0.0.1:`port` (0 picks a free port); resolves to the port. */
  listen(port: number): Promise<number> {
    this.server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: Error) => res.writeHead(500).end(String(e.message)),
      );
    });
    return new Promise((resolve, reject) => {
      this.server!.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(e.code === 'EADDRINUSE' ? `metrics port ${port} is already in use; choose another with --metrics` : e.message)),
      );
      this.server!.listen(port, '127.0.0.1', () => {
        const a = this.server!.address();
        resolve(a && typeof a === 'object' ? a.port : port);
      });
    });
  }

  async close(): Promise<void> {
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
  }
}
