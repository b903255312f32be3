/**
 * Where the live view listens (`--ui host:port`) and who may read it: a
 * loopback address is open to this machine's browsers; any other address
 * needs a token.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';

/** A problem with the live view's settings or its port: one line that names the option. */
export class LiveViewError extends Error {
  /** Always `LiveViewError`. */
  override name = 'LiveViewError';
}

/** Where the live view listens (`parseListen`), and whether that is only this machine. */
export interface ListenAddress {
  /** The host or IP address to bind (default 127.0.0.1). */
  host: string;
  /** The TCP port (0: any free port; the bound port once listening). */
  port: number;
  /** Whether the address is loopback only, so no token is needed. */
  loopback: boolean;
}

const DEFAULT_HOST = '127.0.0.1';

/**
 * `host:port`, `[v6]:port`, `:port` or `port` (host 127.0.0.1); port 0 takes
 * any free port. `option` names the setting in errors (`--ui`, `ui.listen`).
 */
export function parseListen(spec: string, option = '--ui'): ListenAddress {
  const s = spec.trim();
  let host = DEFAULT_HOST;
  let port: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (v6) [, host, port] = v6;
  else if (/^\d+$/.test(s)) port = s;
  else {
    const i = s.lastIndexOf(':');
    if (i < 0 || s.indexOf(':') !== i) throw new LiveViewError(`${option} "${spec}": expected host:port (such as 127.0.0.1:8080, or [::1]:8080)`);
    host = s.slice(0, i) || DEFAULT_HOST;
    port = s.slice(i + 1);
  }
  const n = Number(port);
  if (!/^\d+$/.test(port) || n > 65535) throw new LiveViewError(`${option} "${spec}": the port must be a number from 0 to 65535`);
  if (!isIP(host) && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(host)) {
    throw new LiveViewError(`${option} "${spec}": "${host}" is neither an IP address nor a host name`);
  }
  return { host, port: n, loopback: isLoopback(host) };
}

/** Whether `host` reaches only this machine (`localhost`, `127.x.x.x`, `::1`). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** A fresh token: 24 URL-safe characters (144 random bits). */
export function generateToken(): string {
  return randomBytes(18).toString('base64url');
}

/** A token given by the operator: at least 16 characters, those that a URL carries as they are. */
export function checkToken(token: string, option = '--ui-token'): string {
  if (!/^[A-Za-z0-9._~-]{16,256}$/.test(token)) {
    throw new LiveViewError(`${option}: use 16 to 256 characters from A-Z a-z 0-9 . _ ~ - (or leave it out to have one generated)`);
  }
  return token;
}
