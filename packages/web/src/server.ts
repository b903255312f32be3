/**
 * `dflmoe web`: serves the browser app (a static bundle built into
 * dist/app: the page, its script, styles and tfjs's wasm binaries) from
 * this machine, nothing fetched from elsewhere. The app holds no data and
 * no secrets; a tab that opens it keeps its own key and files.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LiveViewError, listenAt, parseListen, type ListenAddress } from '@dflmoe/live';

/** Where the app's files are (built by `npm run build`). */
export const WEB_APP_DIR = fileURLToPath(new URL('../dist/app/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
};

/** The app's files, read once: only these paths are answered. */
function appFiles(): Map<string, { body: Buffer; type: string }> {
  if (!existsSync(join(WEB_APP_DIR, 'index.html'))) throw new LiveViewError(`the browser app is not built (${WEB_APP_DIR} is missing): run "npm run build"`);
  const files = new Map<string, { body: Buffer; type: string }>();
  const add = (rel: string) => {
    const type = TYPES[rel.slice(rel.lastIndexOf('.'))];
    if (type) files.set(`/${rel}`, { body: readFileSync(join(WEB_APP_DIR, rel)), type });
  };
  for (const f of readdirSync(WEB_APP_DIR)) add(f);
  for (const f of readdirSync(join(WEB_APP_DIR, 'wasm'))) add(`wasm/${f}`);
  files.set('/', files.get('/index.html')!);
  return files;
}

/** The app being served. */
export interface WebAppServer {
  /** Where it listens (the port bound, when 0 was asked for). */
  address: ListenAddress;
  /** The address to open in a browser. */
  url: string;
  /** Requests answered, by path (tests check what a tab asked for). */
  readonly requests: string[];
  /** Stop serving (open connections are closed). */
  close(): Promise<void>;
}

/**
 * Serve the app at `listen` (`host:port`, default host 127.0.0.1; port 0:
 * any free port). A browser treats only https pages and localhost as secure
 * (the tab's key and WebRTC need that): put an https proxy in front of an
 * address other than loopback.
 */
export async function serveWebApp(o: { listen: string; option?: string }): Promise<WebAppServer> {
  const option = o.option ?? '--listen';
  const address = parseListen(o.listen, option);
  const files = appFiles();
  const requests: string[] = [];
  const server: Server = createServer({ requestTimeout: 10000, headersTimeout: 10000 }, (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push(`${req.method} ${path}`);
    const f = req.method === 'GET' || req.method === 'HEAD' ? files.get(path) : undefined;
    if (!f) {
      res.writeHead(req.method === 'GET' || req.method === 'HEAD' ? 404 : 405, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, {
      'Content-Type': f.type,
      'Content-Length': f.body.length,
      'Cache-Control': 'no-cache',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      // Script and wasm from here only; connections to anywhere (the members' WebSockets and WebRTC).
      'Content-Security-Policy':
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src *; img-src 'self' blob: data:; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    });
    res.end(req.method === 'HEAD' ? undefined : f.body);
  });
  await listenAt(server, address, `${option} ${o.listen}`, option);
  const bound = { ...address, port: (server.address() as AddressInfo).port };
  const host = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
  return {
    address: bound,
    url: `http://${host}:${bound.port}/`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
