/**
 * The server algorithms (FedAvg, FedAvg-FT, FedRep) over the same libp2p
 * stack, so that bytes and seconds compare like with like. The server
 * aggregates with the algorithm's `aggregate` (config `algorithm`); FedRep's
 * uploads and aggregates are bodies only. Protocol `/dflmoe/fedavg/1.0.0`,
 * one stream per request:
 *
 * - UPLOAD: `FedAvgRequest{UPLOAD, round, samples}` + model frame ->
 *   `FedAvgResponse{ok, round}` (`round`: the server's current round).
 * - GET_GLOBAL: `FedAvgRequest{GET_GLOBAL, round}` -> the server answers
 *   once a global model of that round or a newer one exists: `FedAvgResponse{ok,
 *   has_model}` + model frame; or at once with `need_upload` when it holds no
 *   upload of that client for its current round (it restarted).
 *
 * The server aggregates a round when every client has uploaded, or at the
 * deadline with at least `quorum` uploads, in the order of its `clients`
 * list (so the sum is the same as in the in-memory simulator). Uploads are
 * checked by `RoundAggregator` (size, format, finite values, tensor names,
 * one layout for the consortium, sample counts declared once and clipped);
 * bad ones are refused, logged once per client and reason, counted, and are
 * strikes against the client (`StrikeBook`). After every round the server
 * writes a checkpoint (its newest global model and aggregator state) before
 * it hands the global model out, and `dflmoe server` resumes from it.
 * Clients retry through a server restart: they upload again when asked.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { CodecError, throwIfInterrupted, type ExchangeStats, type Logger } from '@dflmoe/core';
import {
  RoundAggregator,
  getAlgorithm,
  listCheckpoints,
  pause,
  restoreNewest,
  writeCheckpoint,
  type AggregatorState,
  type ServerLink,
} from '@dflmoe/core/internal';
import type { ServerConfig } from './config.js';
import { readFrames, writeFrames } from './frames.js';
import { loadIdentity, loadPsk } from './identity.js';
import { createSiteNode, startNode, type SiteNode } from './node.js';
import { FedAvgRequest, FedAvgResponse } from './proto/messages.js';
import { readJsonFile, readJsonLines, writeJsonAtomic, writeJsonLinesAtomic } from './files.js';
import { StrikeBook } from './strikes.js';

export const FEDAVG_PROTOCOL = '/dflmoe/fedavg/1.0.0';
const WIRE_FORMAT = 1;
const MAX_CONTROL = 4096;
/** How long the server waits for a quorum, a deadline at a time, before it gives up (sites may start late or restart). */
const GIVE_UP_MS = 10 * 60 * 1000;

/** The client side of the server protocol (`ServerLink`), for every server algorithm. */
export class Libp2pServerLink implements ServerLink {
  private s: ExchangeStats = { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0 };
  /** Seconds spent moving model bytes (upload, and download once the server answers). */
  transferSeconds = 0;
  /** This round's upload, kept to send again if the server restarts before it aggregates. */
  private last?: { round: number; payload: Uint8Array; samples: number };
  /** The last global model downloaded: the round it was asked for and its SHA-256 (hex), for the audit trail. */
  lastGlobal?: { round: number; digest: string };

  constructor(
    private node: SiteNode,
    private o: {
      server: { peerId: string; addrs: string[] };
      maxModelBytes: number;
      logger: Logger;
      deadlineMs: number;
      /** The site is stopping (SIGINT/SIGTERM): requests and waits end with `Interrupted`. */
      signal?: AbortSignal;
    },
  ) {}

  private signal(): AbortSignal {
    const t = AbortSignal.timeout(this.o.deadlineMs * 2 + 60000);
    return this.o.signal ? AbortSignal.any([t, this.o.signal]) : t;
  }

  private async open(signal: AbortSignal): Promise<Stream> {
    const { peerId, addrs } = this.o.server;
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
    return this.node.dialProtocol(peerIdFromString(peerId), FEDAVG_PROTOCOL, { signal });
  }

  /** One request and its answer; transport failures (the server restarting, starting late) are retried until `signal`. */
  private async call(frames: Uint8Array[], n: number, maxLen: number, signal: AbortSignal): Promise<{ res: FedAvgResponse; frames: Uint8Array[] }> {
    for (;;) {
      try {
        const stream = await this.open(signal);
        stream.maxReadBufferLength = maxLen + MAX_CONTROL;
        const [, got] = await Promise.all([writeFrames(stream, frames), readFrames(stream, n, maxLen, signal)]);
        if (got.length === 0) throw new Error('no answer');
        return { res: FedAvgResponse.decode(got[0]), frames: got };
      } catch (e) {
        throwIfInterrupted(this.o.signal);
        if (signal.aborted) throw new Error(`FedAvg server ${this.o.server.peerId} unreachable: ${(e as Error).message}`, { cause: e });
        this.o.logger.debug(`FedAvg request failed (${(e as Error).message}); retrying`);
        await pause(500, this.o.signal);
      }
    }
  }

  async upload(round: number, payload: Uint8Array, samples: number): Promise<void> {
    this.last = { round, payload, samples };
    await this.sendUpload(this.signal());
  }

  private async sendUpload(signal: AbortSignal): Promise<void> {
    const { round, payload, samples } = this.last!;
    const req = FedAvgRequest.encode({ format: WIRE_FORMAT, kind: FedAvgRequest.Kind.UPLOAD, round: BigInt(round), samples: BigInt(samples), rank: 0 });
    for (;;) {
      const t0 = performance.now();
      const { res } = await this.call([req, payload], 1, MAX_CONTROL, signal);
      this.s.bytesSent += payload.length;
      this.s.messagesSent++;
      this.transferSeconds += (performance.now() - t0) / 1000;
      if (res.ok) return;
      const at = Number(res.round);
      if (at > round) {
        this.o.logger.info(`the server has moved on to round ${at}; skipping our upload of round ${round} and taking its newest global model`);
        return;
      }
      if (at >= 1 && at < round) {
        // The server is behind us (it restarted): it gets there once the others have uploaded.
        await pause(500, this.o.signal);
        if (signal.aborted) throw new Error(`the FedAvg server stayed at round ${at} while we are at round ${round}`);
        continue;
      }
      throw new Error(`server refused our upload for round ${round}: ${res.error}`);
    }
  }

  /** The server answers when the round is aggregated; the bytes are checked by the site. */
  async download(round: number): Promise<Uint8Array> {
    const signal = this.signal();
    const get = FedAvgRequest.encode({ format: WIRE_FORMAT, kind: FedAvgRequest.Kind.GET_GLOBAL, round: BigInt(round), samples: 0n, rank: 0 });
    for (;;) {
      const t0 = performance.now();
      const { res, frames } = await this.call([get], 2, this.o.maxModelBytes, signal);
      if (res.ok && res.hasModel && frames[1]) {
        this.transferSeconds += (performance.now() - t0) / 1000;
        this.s.bytesReceived += frames[1].length;
        this.s.messagesReceived++;
        this.lastGlobal = { round, digest: createHash('sha256').update(frames[1]).digest('hex') };
        return frames[1];
      }
      if (res.needUpload && this.last && Number(res.round) === this.last.round) {
        this.o.logger.info(`the server lost our upload of round ${this.last.round} (it restarted): uploading again`);
        await this.sendUpload(signal);
        continue;
      }
      throwIfInterrupted(this.o.signal);
      if (signal.aborted) throw new Error(`server sent no global model for round ${round}: ${res.error}`);
      await pause(500, this.o.signal);
    }
  }

  stats(): ExchangeStats {
    return { ...this.s };
  }

  /** The round and SHA-256 (hex) of the last upload. */
  lastUpload(): { round: number; digest: string } | undefined {
    return this.last && { round: this.last.round, digest: createHash('sha256').update(this.last.payload).digest('hex') };
  }
}

/** Whether a request frame asks to upload (a model frame follows); a frame that does not decode is not. */
function isUpload(frame: Uint8Array): boolean {
  try {
    return FedAvgRequest.decode(frame).kind === FedAvgRequest.Kind.UPLOAD;
  } catch {
    return false;
  }
}

/** One round of a FedAvg server: clients heard, bytes in and out, seconds. */
export interface ServerRoundLine {
  /** The round (from 1). */
  round: number;
  /** Clients whose uploads went into this round's global model. */
  clients: number;
  /** Bytes the server received in this round alone (not cumulative, unlike a site's round line). */
  bytesIn: number;
  /** Bytes the server sent in this round alone. */
  bytesOut: number;
  /** Wall-clock seconds the round took. */
  seconds: number;
  /** Uploads dropped so far over the run (cumulative), by reason. */
  dropped: Record<string, number>;
  /** When the round finished (ISO 8601). */
  time: string;
}

/** What a server checkpoint holds besides its newest global model. */
export interface ServerState {
  kind: 'fedavg-server';
  aggregator: AggregatorState;
  dropped: Record<string, number>;
  bytesIn: number;
  bytesOut: number;
}

export class FedAvgServer {
  round = 1;
  private uploads: RoundAggregator;
  private globals = new Map<number, Uint8Array>();
  private waiters = new Set<() => void>();
  readonly dropped: Record<string, number> = {};
  bytesIn = 0;
  bytesOut = 0;
  /** A client's rank is its place in the config's `clients` list (what it claims is ignored). */
  private ranks: Map<string, number>;
  private strikes: StrikeBook;
  private logged = new Set<string>();
  private finished = false;

  /** @param signal the server is stopping (SIGINT/SIGTERM): its waits end, and `collect` throws `Interrupted`. */
  constructor(
    private node: SiteNode,
    private cfg: ServerConfig,
    private log: Logger,
    private readonly signal?: AbortSignal,
  ) {
    this.ranks = new Map(cfg.clients.map((c, i) => [c.peerId, i]));
    const alg = getAlgorithm(cfg.algorithm);
    if (!alg.aggregate) throw new Error(`${alg.name} does not use a server`);
    this.uploads = new RoundAggregator(alg.aggregate, {
      maxBytes: cfg.limits.maxModelBytes,
      maxSamples: cfg.limits.maxSamples,
      maxSampleRatio: cfg.limits.maxSampleRatio,
    });
    this.strikes = new StrikeBook({ maxStrikes: cfg.strikes.max, blockMs: cfg.strikes.blockMs, decayMs: cfg.strikes.decayMs });
  }

  async register(): Promise<void> {
    await this.node.handle(FEDAVG_PROTOCOL, (s, c) => this.serve(s, c), { maxInboundStreams: 256 });
  }

  /** Whether `peer` is refused for now because it kept sending bad uploads. */
  isBlocked(peer: string): boolean {
    return this.strikes.isBlocked(peer);
  }

  state(): ServerState {
    return { kind: 'fedavg-server', aggregator: this.uploads.state(), dropped: { ...this.dropped }, bytesIn: this.bytesIn, bytesOut: this.bytesOut };
  }

  /** Continue after the checkpointed `round` whose global model is `global`. */
  restore(round: number, s: ServerState, global: Uint8Array): void {
    if (s?.kind !== 'fedavg-server') throw new Error('not a FedAvg server checkpoint');
    this.uploads.restore(s.aggregator);
    Object.assign(this.dropped, s.dropped);
    this.bytesIn = s.bytesIn;
    this.bytesOut = s.bytesOut;
    this.globals.set(round, global);
    this.round = round + 1;
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
      const stop = () => done(pred());
      const done = (v: boolean) => {
        clearTimeout(t);
        this.waiters.delete(check);
        this.signal?.removeEventListener('abort', stop);
        resolve(v);
      };
      const t = setTimeout(stop, ms);
      this.waiters.add(check);
      this.signal?.addEventListener('abort', stop, { once: true });
      if (this.signal?.aborted) stop();
    });
  }

  /** Count `reason` from `peer`, log it once per (peer, reason); with `strike`, it counts against the peer. */
  private drop(peer: string, reason: string, detail = '', strike = true): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    const key = `${peer}:${reason}`;
    if (!this.logged.has(key)) {
      this.logged.add(key);
      this.log.warn(`dropped FedAvg traffic from ${peer}: ${reason}${detail ? ` (${detail.slice(0, 300)})` : ''}`);
    }
    if (strike && this.ranks.has(peer) && this.strikes.strike(peer)) {
      this.dropped['blocked'] = (this.dropped['blocked'] ?? 0) + 1;
      this.log.warn(`client ${peer} keeps sending bad data: disconnected and refused for ${Math.round(this.strikes.blockMs / 1000)} s`);
      void this.node.hangUp(peerIdFromString(peer)).catch(() => {});
    }
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    try {
      const rank = this.ranks.get(from);
      if (rank === undefined || this.isBlocked(from)) {
        if (rank === undefined) this.drop(from, 'not-a-client', '', false);
        stream.abort(new Error('refused'));
        return;
      }
      stream.maxReadBufferLength = this.cfg.limits.maxModelBytes + MAX_CONTROL;
      const signal = AbortSignal.timeout(this.cfg.round.deadlineMs * 2 + 60000);
      // An upload is a request and a model; anything else, the request alone: read no further than that.
      const frames = await readFrames(stream, (fs) => (isUpload(fs[0]) ? 2 : 1), this.cfg.limits.maxModelBytes, signal);
      if (frames.length === 0) {
        // The connection closed before any request came (a client restarting): not an offence.
        stream.abort(new Error('no request'));
        return;
      }
      let req: FedAvgRequest;
      try {
        req = FedAvgRequest.decode(frames[0]);
        if (req.format !== WIRE_FORMAT) throw new Error(`format ${req.format}`);
      } catch (e) {
        this.drop(from, 'bad-request', (e as Error).message);
        stream.abort(new Error('bad request'));
        return;
      }
      const round = Number(req.round);
      const reply = (r: Partial<FedAvgResponse>, model?: Uint8Array) =>
        writeFrames(stream, [
          FedAvgResponse.encode({ ok: false, round: BigInt(this.round), hasModel: false, finished: this.finished, error: '', ...r }),
          ...(model ? [model] : []),
        ]);
      if (req.kind === FedAvgRequest.Kind.UPLOAD) {
        const body = frames[1];
        // A client behind or ahead of us is not an offence (it restarted, or we did): it learns our round.
        if (round !== this.round) return void (await reply({ error: `server is at round ${this.round}, not ${round}` }));
        if (!body) {
          this.drop(from, 'missing-model');
          return void (await reply({ error: 'missing model' }));
        }
        try {
          for (const note of this.uploads.accept(from, rank, Number(req.samples), body)) this.drop(from, note, `claimed ${req.samples}`, false);
        } catch (e) {
          this.drop(from, e instanceof CodecError ? e.reason : 'bad-model', (e as Error).message);
          return void (await reply({ error: (e as Error).message }));
        }
        this.bytesIn += body.length;
        await reply({ ok: true });
        this.notify();
      } else {
        const newest = () => {
          const rs = [...this.globals.keys()].filter((r) => r >= round);
          return rs.length ? this.globals.get(Math.max(...rs)) : undefined;
        };
        // This round has no upload of the client's (we restarted and lost it): ask for it again, also when the
        // server only reaches that round while the client waits, or the two would wait for each other.
        const lost = () => !newest() && round === this.round && !this.uploads.has(from);
        const ok = await this.wait(() => newest() !== undefined || lost(), this.cfg.round.deadlineMs * 2 + 30000);
        if (lost()) return void (await reply({ needUpload: true, error: `no upload of yours for round ${round}` }));
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

  /**
   * Wait for this round's uploads (all clients, or the quorum at the
   * deadline; more deadlines for the quorum, up to 10 minutes, before giving up) and
   * average them, and move to the next round (uploads for this one are now
   * late). The result is not handed out until `publish`.
   */
  async collect(): Promise<{ round: number; global: Uint8Array; clients: number }> {
    const all = this.ranks.size;
    const quorum = Math.max(1, this.cfg.round.quorum ?? all);
    await this.wait(() => this.uploads.size >= all, this.cfg.round.deadlineMs);
    throwIfInterrupted(this.signal);
    // Only uploads that can be averaged together count: a client sending something else cannot complete a quorum.
    const t0 = Date.now();
    const step = Math.max(1000, this.cfg.round.deadlineMs);
    while (this.uploads.agreeing < quorum && Date.now() - t0 < GIVE_UP_MS) {
      this.log.warn(`round ${this.round}: ${this.uploads.agreeing} of ${quorum} required uploads at the deadline; waiting another ${step} ms`);
      await this.wait(() => this.uploads.agreeing >= quorum, step);
      throwIfInterrupted(this.signal);
    }
    if (this.uploads.agreeing < quorum) {
      throw new Error(
        `round ${this.round}: only ${this.uploads.agreeing} of ${quorum} required uploads after ${Math.round((Date.now() - t0) / 1000)} s; giving up`,
      );
    }
    const round = this.round;
    const { global, clients, refused, clipped } = this.uploads.finish(round);
    this.round++;
    for (const p of refused) this.drop(p, 'mismatch', 'its model layout differs from the one most clients share');
    for (const p of clipped) this.drop(p, 'samples-clipped', 'weight clipped to the bound of this round', false);
    return { round, global, clients };
  }

  /** Hand out the global model of `round` (clients waiting for it get it now). */
  publish(round: number, global: Uint8Array): void {
    this.globals.delete(round - 2);
    this.globals.set(round, global);
    this.notify();
  }

  finish(): void {
    this.finished = true;
  }
}

/** `dflmoe server`: run a FedAvg server from its config (resuming from its newest checkpoint). */
export async function runServer(
  cfg: ServerConfig,
  log: Logger,
  signal?: AbortSignal,
): Promise<{ peerId: string; rounds: ServerRoundLine[]; bytesIn: number; bytesOut: number; wallSeconds: number }> {
  const t0 = performance.now();
  const id = loadIdentity(cfg.key);
  mkdirSync(cfg.out, { recursive: true });
  const metricsFile = join(cfg.out, 'metrics.jsonl');
  const ckptDir = join(cfg.out, 'checkpoints');
  const node = await createSiteNode({
    privateKey: id.privateKey,
    listen: cfg.listen,
    allow: cfg.clients.map((c) => c.peerId),
    psk: cfg.psk ? loadPsk(cfg.psk) : undefined,
    onRefused: (p, d) => log.warn(`refused ${d} connection from non-client ${p}`),
    isBlocked: (p) => server.isBlocked(p),
  });
  const server = new FedAvgServer(node, cfg, log, signal);
  const rounds: ServerRoundLine[] = [];
  let earlierSeconds = 0;
  const restored =
    cfg.checkpoint.enabled && listCheckpoints(ckptDir).length > 0
      ? await restoreNewest(ckptDir, (c) => server.restore(c.round, c.state as ServerState, c.read('global.bin')), log)
      : undefined;
  if (restored) {
    const r = restored.checkpoint.round;
    const kept = readJsonLines<ServerRoundLine>(metricsFile).filter((l) => l.round <= r);
    if (!kept.some((l) => l.round === r) && restored.checkpoint.extra.line) kept.push(restored.checkpoint.extra.line as ServerRoundLine);
    writeJsonLinesAtomic(metricsFile, kept);
    rounds.push(...kept);
    // An earlier part that ended at this round also counted the last downloads (after its checkpoint), and its time.
    const done = readJsonFile<{ rounds?: ServerRoundLine[]; bytesIn: number; bytesOut: number; wallSeconds: number }>(join(cfg.out, 'results.json'));
    if (done?.rounds?.at(-1)?.round === r && Number.isFinite(done.bytesOut)) {
      server.bytesIn = done.bytesIn;
      server.bytesOut = done.bytesOut;
      earlierSeconds = done.wallSeconds;
    }
    log.info(`resumed from round ${r} (its checkpoint: ${restored.checkpoint.path})`);
  } else {
    if (cfg.checkpoint.enabled && listCheckpoints(ckptDir).length > 0) log.warn('no usable checkpoint: starting from round 1');
    writeFileSync(metricsFile, '');
  }
  await server.register();
  await startNode(node, cfg.listen);
  log.info(`FedAvg server ${id.peerId} listening on ${node.getMultiaddrs().map(String).join(', ')}`);
  try {
    for (let r = server.round; r <= cfg.rounds; r++) {
      const rt = performance.now();
      const [bi, bo] = [server.bytesIn, server.bytesOut];
      const { global, clients: n } = await server.collect();
      const line: ServerRoundLine = {
        round: r,
        clients: n,
        bytesIn: server.bytesIn - bi,
        bytesOut: server.bytesOut - bo,
        seconds: (performance.now() - rt) / 1000,
        dropped: { ...server.dropped },
        time: new Date().toISOString(),
      };
      // Checkpoint first: a global model that a client has seen is never lost by a crash.
      if (cfg.checkpoint.enabled) writeCheckpoint(ckptDir, r, { 'global.bin': global }, server.state(), { line }, cfg.checkpoint.keep);
      server.publish(r, global);
      rounds.push(line);
      appendFileSync(metricsFile, JSON.stringify(line) + '\n');
      log.info(`round ${r}: averaged ${n} models`);
    }
    server.finish();
    // Every round is done: a stop while lingering ends the linger, not the run.
    await pause(cfg.lingerMs, signal).catch(() => {});
  } finally {
    await node.stop();
  }
  const result = {
    peerId: id.peerId,
    rounds,
    bytesIn: server.bytesIn,
    bytesOut: server.bytesOut,
    wallSeconds: earlierSeconds + (performance.now() - t0) / 1000,
  };
  writeJsonAtomic(join(cfg.out, 'results.json'), result);
  return result;
}
