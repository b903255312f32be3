/**
 * The server algorithms (FedAvg, FedAvg-FT, FedRep) over the same libp2p
 * stack, so that bytes and seconds compare like with like. The server
 * aggregates with the algorithm's `aggregate` (config `algorithm`); FedRep's
 * uploads and aggregates are bodies only. Protocol `/dflmoe/fedavg/1.0.0`,
 * one stream per request:
 *
 * - UPLOAD: `FedAvgRequest{UPLOAD, round, samples, rank}` + model frame ->
 *   `FedAvgResponse{ok}`.
 * - GET_GLOBAL: `FedAvgRequest{GET_GLOBAL, round}` -> the server answers
 *   once the global model of that round exists: `FedAvgResponse{ok,
 *   has_model}` + model frame.
 *
 * The server aggregates a round when every client has uploaded, or at the
 * deadline with at least `quorum` uploads, in rank order (so the sum is the
 * same as in the in-memory simulator). Uploads are checked by
 * `RoundAggregator` (size, format, finite values, same architecture and
 * shapes as the others, positive sample count); bad ones are refused,
 * logged and counted.
 */
import { mkdirSync, appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { CodecError, RoundAggregator, getAlgorithm, type ExchangeStats, type Logger, type ServerLink } from '@dflmoe/core';
import type { ServerConfig } from './config.js';
import { readFrames, writeFrames } from './frames.js';
import { loadIdentity, loadPsk } from './identity.js';
import { createSiteNode, type SiteNode } from './node.js';
import { FedAvgRequest, FedAvgResponse } from './proto/messages.js';
import { writeJsonAtomic } from './run-peer.js';

export const FEDAVG_PROTOCOL = '/dflmoe/fedavg/1.0.0';
const WIRE_FORMAT = 1;
const MAX_CONTROL = 4096;

/** The client side of the server protocol (`ServerLink`), for every server algorithm. */
export class Libp2pServerLink implements ServerLink {
  private s: ExchangeStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0 };
  /** Seconds spent moving model bytes (upload, and download once the server answers). */
  transferSeconds = 0;

  constructor(
    private node: SiteNode,
    private o: { server: { peerId: string; addrs: string[] }; rank: number; maxModelBytes: number; logger: Logger; deadlineMs: number },
  ) {}

  private signal(): AbortSignal {
    return AbortSignal.timeout(this.o.deadlineMs * 2 + 60000);
  }

  private async open(signal: AbortSignal): Promise<Stream> {
    const { peerId, addrs } = this.o.server;
    // Keep trying until the deadline: the server may start after us or restart.
    for (;;) {
      try {
        if (!this.node.getConnections().some((c) => c.remotePeer.toString() === peerId)) {
          for (const a of addrs) {
            try {
              await this.node.dial(multiaddr(`${a}/p2p/${peerId}`), { signal: AbortSignal.any([signal, AbortSignal.timeout(3000)]) });
              break;
            } catch {
              /* next address */
            }
          }
        }
        return await this.node.dialProtocol(peerIdFromString(peerId), FEDAVG_PROTOCOL, { signal });
      } catch (e) {
        if (signal.aborted) throw new Error(`FedAvg server ${peerId} unreachable: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  async upload(round: number, payload: Uint8Array, samples: number): Promise<void> {
    const signal = this.signal();
    const t0 = performance.now();
    const stream = await this.open(signal);
    const req = FedAvgRequest.encode({ format: WIRE_FORMAT, kind: FedAvgRequest.Kind.UPLOAD, round: BigInt(round), samples: BigInt(samples), rank: this.o.rank });
    const [, ack] = await Promise.all([writeFrames(stream, [req, payload]), readFrames(stream, 1, MAX_CONTROL, signal)]);
    const a = FedAvgResponse.decode(ack[0] ?? new Uint8Array());
    if (!a.ok) throw new Error(`server refused our upload for round ${round}: ${a.error}`);
    this.s.bytesSent += payload.length;
    this.s.messagesSent++;
    this.transferSeconds += (performance.now() - t0) / 1000;
  }

  /** The server answers when the round is aggregated; the bytes are checked by the site. */
  async download(round: number): Promise<Uint8Array> {
    const signal = this.signal();
    const stream = await this.open(signal);
    stream.maxReadBufferLength = this.o.maxModelBytes + MAX_CONTROL;
    const get = FedAvgRequest.encode({ format: WIRE_FORMAT, kind: FedAvgRequest.Kind.GET_GLOBAL, round: BigInt(round), samples: 0n, rank: this.o.rank });
    const [, frames] = await Promise.all([writeFrames(stream, [get]), readFrames(stream, 2, this.o.maxModelBytes, signal)]);
    const res = FedAvgResponse.decode(frames[0] ?? new Uint8Array());
    if (!res.ok || !res.hasModel || !frames[1]) throw new Error(`server sent no global model for round ${round}: ${res.error}`);
    this.s.bytesReceived += frames[1].length;
    this.s.messagesReceived++;
    return frames[1];
  }

  stats(): ExchangeStats {
    return { ...this.s };
  }
}

export interface ServerRoundLine {
  round: number;
  clients: number;
  bytesIn: number;
  bytesOut: number;
  seconds: number;
  dropped: Record<string, number>;
  time: string;
}

export class FedAvgServer {
  round = 1;
  private uploads: RoundAggregator;
  private globals = new Map<number, Uint8Array>();
  private waiters = new Set<() => void>();
  readonly dropped: Record<string, number> = {};
  bytesIn = 0;
  bytesOut = 0;
  private clientIds: Set<string>;
  private finished = false;

  constructor(private node: SiteNode, private cfg: ServerConfig, private log: Logger) {
    this.clientIds = new Set(cfg.clients.map((c) => c.peerId));
    const alg = getAlgorithm(cfg.algorithm);
    if (!alg.aggregate) throw new Error(`${alg.name} does not use a server`);
    this.uploads = new RoundAggregator(alg.aggregate, cfg.limits.maxModelBytes);
  }

  async register(): Promise<void> {
    await this.node.handle(FEDAVG_PROTOCOL, (s, c) => this.serve(s, c), { maxInboundStreams: 256 });
  }

  private notify(): void {
    for (const w of this.waiters) w();
  }

  private wait(pred: () => boolean, ms: number): Promise<boolean> {
    if (pred()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (pred()) done(true);
      };
      const done = (v: boolean) => {
        clearTimeout(t);
        this.waiters.delete(check);
        resolve(v);
      };
      const t = setTimeout(() => done(pred()), ms);
      this.waiters.add(check);
    });
  }

  private drop(peer: string, reason: string): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.log.warn(`dropped FedAvg traffic from ${peer}: ${reason}`);
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    try {
      if (!this.clientIds.has(from)) {
        this.drop(from, 'not-a-client');
        stream.abort(new Error('not a client'));
        return;
      }
      stream.maxReadBufferLength = this.cfg.limits.maxModelBytes + MAX_CONTROL;
      const signal = AbortSignal.timeout(this.cfg.round.deadlineMs * 2 + 60000);
      const duplexFrames = readFrames(stream, 2, this.cfg.limits.maxModelBytes, signal);
      const frames = await duplexFrames;
      let req: FedAvgRequest;
      try {
        req = FedAvgRequest.decode(frames[0] ?? new Uint8Array());
        if (req.format !== WIRE_FORMAT) throw new Error(`format ${req.format}`);
      } catch (e) {
        this.drop(from, `bad-request: ${(e as Error).message}`);
        stream.abort(new Error('bad request'));
        return;
      }
      const round = Number(req.round);
      const reply = (r: Partial<FedAvgResponse>, model?: Uint8Array) =>
        writeFrames(stream, [FedAvgResponse.encode({ ok: false, round: BigInt(round), hasModel: false, finished: this.finished, error: '', ...r }), ...(model ? [model] : [])]);
      if (req.kind === FedAvgRequest.Kind.UPLOAD) {
        const body = frames[1];
        if (round !== this.round) return void (await reply({ error: `server is at round ${this.round}, not ${round}` }));
        if (!body) return void (await reply({ error: 'missing model' }));
        try {
          this.uploads.accept(from, req.rank, Number(req.samples), body);
        } catch (e) {
          this.drop(from, e instanceof CodecError ? e.reason : 'bad-model');
          return void (await reply({ error: (e as Error).message }));
        }
        this.bytesIn += body.length;
        await reply({ ok: true });
        this.notify();
      } else {
        // A client that missed a round (deadline) gets the newest global model instead.
        const newest = () => [...this.globals.entries()].find(([r]) => r >= round)?.[1];
        const ok = await this.wait(() => newest() !== undefined, this.cfg.round.deadlineMs * 2 + 30000);
        const g = newest();
        if (!ok || !g) return void (await reply({ error: `no global model for round ${round}` }));
        await reply({ ok: true, hasModel: true }, g);
        this.bytesOut += g.length;
      }
    } catch (e) {
      this.log.debug(`FedAvg request from ${from} failed: ${(e as Error).message}`);
      stream.abort(e as Error);
    }
  }

  /** Wait for this round's uploads (all clients, or the quorum at the deadline) and average them. */
  async aggregate(): Promise<number> {
    const all = this.clientIds.size;
    const quorum = this.cfg.round.quorum ?? all;
    await this.wait(() => this.uploads.size >= all, this.cfg.round.deadlineMs);
    await this.wait(() => this.uploads.size >= quorum, this.cfg.round.deadlineMs);
    if (this.uploads.size < Math.max(1, quorum)) throw new Error(`round ${this.round}: only ${this.uploads.size} of ${quorum} required uploads by the deadline`);
    const { global, clients: n } = this.uploads.finish(this.round);
    this.globals.delete(this.round - 2);
    this.globals.set(this.round, global);
    this.round++;
    this.notify();
    return n;
  }

  finish(): void {
    this.finished = true;
  }
}

/** `dflmoe server`: run a FedAvg server from its config. */
export async function runServer(cfg: ServerConfig, log: Logger): Promise<{ peerId: string; rounds: ServerRoundLine[]; bytesIn: number; bytesOut: number; wallSeconds: number }> {
  const t0 = performance.now();
  const id = loadIdentity(cfg.key);
  mkdirSync(cfg.out, { recursive: true });
  const metricsFile = join(cfg.out, 'metrics.jsonl');
  writeFileSync(metricsFile, '');
  const node = await createSiteNode({
    privateKey: id.privateKey, listen: cfg.listen, allow: cfg.clients.map((c) => c.peerId), psk: cfg.psk ? loadPsk(cfg.psk) : undefined,
    onRefused: (p, d) => log.warn(`refused ${d} connection from non-client ${p}`),
  });
  const server = new FedAvgServer(node, cfg, log);
  await server.register();
  await node.start();
  log.info(`FedAvg server ${id.peerId} listening on ${node.getMultiaddrs().map(String).join(', ')}`);
  const rounds: ServerRoundLine[] = [];
  try {
    for (let r = 1; r <= cfg.rounds; r++) {
      const rt = performance.now();
      const [bi, bo] = [server.bytesIn, server.bytesOut];
      const n = await server.aggregate();
      const line = { round: r, clients: n, bytesIn: server.bytesIn - bi, bytesOut: server.bytesOut - bo, seconds: (performance.now() - rt) / 1000, dropped: { ...server.dropped }, time: new Date().toISOString() };
      rounds.push(line);
      appendFileSync(metricsFile, JSON.stringify(line) + '\n');
      log.info(`round ${r}: averaged ${n} models`);
    }
    server.finish();
    await new Promise((r) => setTimeout(r, cfg.lingerMs));
  } finally {
    await node.stop();
  }
  const result = { peerId: id.peerId, rounds, bytesIn: server.bytesIn, bytesOut: server.bytesOut, wallSeconds: (performance.now() - t0) / 1000 };
  writeJsonAtomic(join(cfg.out, 'results.json'), result);
  return result;
}
