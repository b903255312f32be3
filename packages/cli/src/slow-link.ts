/**
 * Put every site of a consortium (written by `writeConsortium`) behind its
 * own emulated weak link (`LinkEmulator`: a shaping TCP proxy on
 * 127.0.0.1): members dial a site's proxy, and the site announces the
 * proxy's address, so every connection between two sites is shaped.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { LinkEmulator, type LinkOptions, type LinkStats } from '@dflmoe/p2p/internal';
import type { ConsortiumFiles } from './consortium.js';

export interface EmulatedLinks {
  /** Each site's proxy port, in site order. */
  ports: number[];
  stats(): LinkStats;
  close(): Promise<void>;
}

/**
 * Start one emulated link per site and rewrite the site configs to use them.
 * `edit` may change each config further (precision, deadlines).
 */
export async function emulateLinks(
  files: ConsortiumFiles,
  o: LinkOptions,
  edit?: (cfg: Record<string, unknown>, index: number) => void,
): Promise<EmulatedLinks> {
  const links = files.sites.map((s, i) => new LinkEmulator({ host: '127.0.0.1', port: s.port }, { ...o, seed: (o.seed ?? 1) * 1000 + i }));
  const ports: number[] = [];
  for (const l of links) ports.push(await l.start());
  const proxied = new Map(files.sites.map((s, i) => [s.peerId, `/ip4/127.0.0.1/tcp/${ports[i]}`]));
  files.sites.forEach((s, i) => {
    const cfg = JSON.parse(readFileSync(s.config, 'utf8')) as Record<string, unknown> & { members: { peerId: string; addrs: string[] }[] };
    cfg.members = cfg.members.map((m) => ({ ...m, addrs: [proxied.get(m.peerId)!] }));
    cfg.announce = [proxied.get(s.peerId)!];
    edit?.(cfg, i);
    writeFileSync(s.config, JSON.stringify(cfg, null, 2) + '\n');
  });
  return {
    ports,
    stats: () =>
      links.reduce((a, l) => ({ connections: a.connections + l.stats.connections, resets: a.resets + l.stats.resets, bytes: a.bytes + l.stats.bytes }), {
        connections: 0,
        resets: 0,
        bytes: 0,
      }),
    close: async () => {
      await Promise.all(links.map((l) => l.close()));
    },
  };
}
