/**
 * A few members on 127.0.0.1 in one process, each with its own identity,
 * node and started head exchange: for tests, benchmarks and trying the
 * protocol out. Every member admits only the others (as a consortium's
 * allow-list does); nodes find each other by dialing or through discovery.
 */
import type { Logger } from '@dflmoe/core';
import { Libp2pHeadExchange, type Libp2pExchangeOptions } from './head-exchange.js';
import { generateIdentity } from './identity.js';
import { createSiteNode, type SiteNode } from './node.js';

export interface LoopbackMembers {
  ids: Awaited<ReturnType<typeof generateIdentity>>[];
  nodes: SiteNode[];
  exchanges: Libp2pHeadExchange[];
  /** Close every exchange, then stop every node. */
  stop(): Promise<void>;
}

export async function loopbackMembers(
  n: number,
  o: { maxHeadBytes: number; heartbeatMs?: number; logger: Logger } & Pick<Libp2pExchangeOptions, 'everyVersion'>,
): Promise<LoopbackMembers> {
  const ids = await Promise.all(Array.from({ length: n }, () => generateIdentity()));
  const allow = ids.map((i) => i.peerId);
  const nodes = await Promise.all(ids.map((i) => createSiteNode({ privateKey: i.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow })));
  const members = ids.map((i) => ({ peerId: i.peerId, addrs: [] as string[] }));
  const exchanges = nodes.map((node) => new Libp2pHeadExchange(node, { members, ...o }));
  for (const e of exchanges) await e.register();
  for (const node of nodes) await node.start();
  for (const e of exchanges) e.start();
  return {
    ids,
    nodes,
    exchanges,
    stop: async () => {
      for (const e of exchanges) await e.close();
      for (const node of nodes) await node.stop();
    },
  };
}
