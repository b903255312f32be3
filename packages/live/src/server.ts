/**
 * The live view's HTTP server: the page, `GET /api/status` (JSON) and
 * `GET /api/events` (Server-Sent Events), from a `StatusBoard`.
 *
 * - Only GET (405 otherwise, with `Allow: GET`); unknown paths 404; a request
 *   with a body 413, a URL over 2 KiB 414, over-long headers and malformed
 *   requests 400 (Node's parser); nothing reaches the board but reads.
 * - With a token every request needs it (`Authorization: Bearer <token>` or
 *   `?token=`), else 401 and nothing else. Bound to loopback without a token,
 *   only the Host names of loopback are answered (a web page that rebinds
 *   its own name to 127.0.0.1 gets 403).
 * - Events: `status` (every site) when a stream opens, then `update` (the
 *   sites that changed) at most every `throttleMs`; a comment every
 *   `heartbeatMs` finds closed tabs. A stream whose client stops reading is
 *   dropped. Nothing is serialized while no stream is open.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type SiteStatus, type StatusBoard } from '@dflmoe/core';
import { siteKey } from '@dflmoe/core/internal';
import { LiveViewError, checkToken, generateToken, parseListen, type ListenAddress } from './address.js';

/**
 * The token a live view at `address` requires: the one given (checked), else
 * a generated one when the address is not loopback, else none.
 */
export function serverToken(address: ListenAddress, o: Pick<LiveServerOptions, 'token' | 'tokenOption'>): string | undefined {
  return o.token !== undefined ? checkToken(o.token, o.tokenOption ?? '--ui-token') : address.loopback ? undefined : generateToken();
}

/** What `LiveServer` takes: the board, where to listen, the token for non-loopback addresses. */
export interface LiveServerOptions {
  /** The status board to serve. */
  board: StatusBoard;
  /** `host:port` (see `parseListen`). */
  listen: string;
  /** The option that gave `listen` and `token`, for errors: `--ui` (`--ui-token`) or `ui.listen` (`ui.token`). */
  option?: string;
  /** See `option`: the option named in errors about `token` (default `--ui-token`). */
  tokenOption?: string;
  /** Required from every client when given; generated when the address is not loopback and none is given. */
  token?: string;
  /** Shortest time between two updates of a stream (ms, default 250). */
  throttleMs?: number;
  /** A comment on every stream this often (ms, default 15000). */
  heartbeatMs?: number;
  /** Streams open at once at most (default 16); more get 503. */
  maxStreams?: number;
}

/** The page as the bundle script writes it. */
interface PageAsset {
  html: string;
  scriptHash: string;
  styleHash: string;
}

const MAX_URL = 2048;
/** A client that still holds this much unread when the next event is due is dropped. */
const MAX_BACKLOG = 8 << 20;

let page: PageAsset | undefined;
function loadPage(): PageAsset {
  if (page) return page;
  const file = new URL('../dist/page.json', import.meta.url);
  try {
    page = JSON.parse(readFileSync(file, 'utf8')) as PageAsset;
  } catch {
    throw new LiveViewError(`the live view's page is not built (${file.pathname} is missing): run "npm run build"`);
  }
  return page;
}

interface Stream {
  res: ServerResponse;
}

/** Serves a `StatusBoard` over HTTP: the page, `GET /api/status` and `GET /api/events` (Server-Sent Events). */
export class LiveServer {
  private readonly streams = new Set<Stream>();
  private readonly dirty = new Map<string, SiteStatus>();
  private flushTimer?: NodeJS.Timeout;
  private lastFlush = 0;
  private heartbeat?: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private busy = 0;
  private closed = false;
  /** Requests answered, by status code (tests, benchmarks). */
  readonly responses = new Map<number, number>();

  private constructor(
    private readonly server: Server,
    private readonly o: LiveServerOptions,
    /** Where the server listens (the port bound, when 0 was asked for). */
    readonly address: ListenAddress,
    /** The token clients must send (undefined: none needed). */
    readonly token: string | undefined,
    /** True when the token was generated here (print it once). */
    readonly generatedToken: boolean,
  ) {
    this.unsubscribe = o.board.onChange((s) => this.changed(s));
  }

  /**
   * Bind and serve. Fails with a `LiveViewError` naming the option when the
   * address is taken or not this machine's (before anything else starts).
   */
  static async start(o: LiveServerOptions): Promise<LiveServer> {
    const option = o.option ?? '--ui';
    const address = parseListen(o.listen, option);
    const asset = loadPage();
    const token = serverToken(address, o);
    // The handler needs the LiveServer, which needs the bound server.
    const ref: { live?: LiveServer } = {};
    const server = createServer({ maxHeaderSize: 8192, requestTimeout: 10000, headersTimeout: 10000, keepAliveTimeout: 5000 }, (req, res) =>
      ref.live!.handle(req, res, asset),
    );
    server.maxHeadersCount = 64;
    server.maxConnections = 256;
    // Malformed requests and over-long headers: 400 and close, as Node does, without an exception.
    server.on('clientError', (_e, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
    await listenAt(server, address, `${option} ${o.listen}`, option);
    const bound = { ...address, port: (server.address() as AddressInfo).port };
    const live = new LiveServer(server, o, bound, token, token !== undefined && o.token === undefined);
    ref.live = live;
    live.heartbeat = setInterval(() => live.ping(), o.heartbeatMs ?? 15000);
    live.heartbeat.unref();
    return live;
  }

  /** The page's address (with the token, when one is needed). */
  get url(): string {
    const host = this.address.host.includes(':') ? `[${this.address.host}]` : this.address.host;
    return `http://${host}:${this.address.port}/${this.token ? `?token=${this.token}` : ''}`;
  }

  /** Event streams open now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Milliseconds spent answering requests and writing events so far. */
  get busyMs(): number {
    return this.busy;
  }

  private handle(req: IncomingMessage, res: ServerResponse, asset: PageAsset): void {
    const t0 = performance.now();
    try {
      this.route(req, res, asset);
    } catch {
      if (!res.headersSent) this.plain(res, 500, 'internal error\n');
      else res.destroy();
    } finally {
      this.busy += performance.now() - t0;
    }
  }

  private route(req: IncomingMessage, res: ServerResponse, asset: PageAsset): void {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    const raw = req.url ?? '/';
    if (raw.length > MAX_URL) return this.plain(res, 414, 'URL too long\n');
    let url: URL;
    try {
      url = new URL(raw, 'http://view.invalid');
    } catch {
      return this.plain(res, 400, 'bad request\n');
    }
    if (!this.authorized(req, url)) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      return this.plain(res, 401, 'unauthorized\n');
    }
    if (!this.token && !this.hostAllowed(req.headers.host)) return this.plain(res, 403, 'forbidden host\n');
    if (req.method !== 'GET') {
      res.setHeader('Allow', 'GET');
      return this.plain(res, 405, 'method not allowed\n');
    }
    const length = req.headers['content-length'];
    if ((length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined) {
      res.setHeader('Connection', 'close');
      return this.plain(res, 413, 'a request body is not accepted\n');
    }
    switch (url.pathname) {
      case '/':
        return this.send(res, 200, 'text/html; charset=utf-8', asset.html, {
          'Content-Security-Policy': `default-src 'none'; script-src '${asset.scriptHash}'; style-src '${asset.styleHash}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
          'X-Frame-Options': 'DENY',
        });
      case '/api/status':
        return this.send(res, 200, 'application/json; charset=utf-8', JSON.stringify(this.o.board.snapshot()));
      case '/api/events':
        return this.openStream(req, res);
      default:
        return this.plain(res, 404, 'not found\n');
    }
  }

  private authorized(req: IncomingMessage, url: URL): boolean {
    if (!this.token) return true;
    const auth = req.headers.authorization;
    const given = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : url.searchParams.get('token');
    if (!given) return false;
    const digest = (s: string) => createHash('sha256').update(s).digest();
    return timingSafeEqual(digest(given), digest(this.token));
  }

  private hostAllowed(host: string | undefined): boolean {
    if (!this.address.loopback) return true;
    if (!host) return false;
    const p = this.address.port;
    return [`127.0.0.1:${p}`, `localhost:${p}`, `[::1]:${p}`, `${this.address.host}:${p}`].includes(host.toLowerCase());
  }

  private plain(res: ServerResponse, code: number, body: string): void {
    this.send(res, code, 'text/plain; charset=utf-8', body);
  }

  private send(res: ServerResponse, code: number, type: string, body: string, headers: Record<string, string> = {}): void {
    this.responses.set(code, (this.responses.get(code) ?? 0) + 1);
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers });
    res.end(body);
  }

  private openStream(req: IncomingMessage, res: ServerResponse): void {
    if (this.closed) return this.plain(res, 503, 'shutting down\n');
    if (this.streams.size >= (this.o.maxStreams ?? 16)) {
      res.setHeader('Retry-After', '10');
      return this.plain(res, 503, 'too many open streams\n');
    }
    this.responses.set(200, (this.responses.get(200) ?? 0) + 1);
    const stream: Stream = { res };
    this.streams.add(stream);
    const drop = () => {
      this.streams.delete(stream);
      if (this.streams.size === 0) this.dirty.clear();
    };
    req.once('close', drop);
    res.once('close', drop);
    res.once('error', drop);
    req.socket.setNoDelay(true);
    // The stream lives as long as the client reads it: no request timeout.
    req.socket.setTimeout(0);
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    this.write(stream, `retry: 2000\nevent: status\ndata: ${JSON.stringify(this.o.board.snapshot())}\n\n`);
  }

  private write(s: Stream, chunk: string): void {
    if (s.res.destroyed) return;
    // A client that stopped reading (a frozen tab) is let go rather than buffered for; one large event is fine.
    if (s.res.writableLength > MAX_BACKLOG) {
      s.res.destroy();
      return;
    }
    s.res.write(chunk);
  }

  private changed(s: SiteStatus): void {
    if (this.streams.size === 0) return;
    this.dirty.set(siteKey(s), s);
    if (this.flushTimer) return;
    const wait = Math.max(0, this.lastFlush + (this.o.throttleMs ?? 250) - Date.now());
    this.flushTimer = setTimeout(() => this.flush(), wait);
    this.flushTimer.unref();
  }

  private flush(): void {
    const t0 = performance.now();
    this.flushTimer = undefined;
    this.lastFlush = Date.now();
    if (this.dirty.size > 0 && this.streams.size > 0) {
      const chunk = `event: update\ndata: ${JSON.stringify({ sites: [...this.dirty.values()] })}\n\n`;
      for (const s of this.streams) this.write(s, chunk);
    }
    this.dirty.clear();
    this.busy += performance.now() - t0;
  }

  private ping(): void {
    for (const s of this.streams) this.write(s, ': ping\n\n');
  }

  /** Send what is pending, end every stream and stop listening. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.flushTimer);
    this.flush();
    clearInterval(this.heartbeat);
    this.unsubscribe();
    for (const s of this.streams) s.res.end();
    this.streams.clear();
    const done = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    // Connections still open after a second (a request under way) are cut.
    const cut = setTimeout(() => this.server.closeAllConnections(), 1000);
    await done;
    clearTimeout(cut);
  }
}

/**
 * Bind `server` to `address`; a port in use, an address not this
 * machine's or one that needs privileges is a `LiveViewError` that names
 * `where` (the option and its value) and the option to change.
 */
export async function listenAt(server: Server, address: ListenAddress, where: string, option: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const fail = (e: NodeJS.ErrnoException) => {
      reject(
        new LiveViewError(
          e.code === 'EADDRINUSE'
            ? `${where}: the port is in use; choose another port for ${option}`
            : e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN'
              ? `${where}: not an address of this machine`
              : e.code === 'EACCES'
                ? `${where}: not allowed to listen there (ports below 1024 need privileges)`
                : `${where}: cannot listen (${e.code ?? e.message})`,
        ),
      );
    };
    server.once('error', fail);
    server.listen(address.port, address.host, () => {
      server.off('error', fail);
      resolve();
    });
  });
}
