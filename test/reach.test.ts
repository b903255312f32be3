/**
 * Reach: sites behind NAT through a circuit relay served by a member, only
 * for members; every wait bounded.
 */
import assert from 'node:assert/strict';
import { silentLogger } from '@dflmoe/core';
import { multiaddr } from '@multiformats/multiaddr';
import { Libp2pHeadExchange, createSiteNode, generateIdentity, isRelayed, type SiteNode } from '@dflmoe/p2p';

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | false | undefined>, timeoutMs: number): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('reach: circuit relay for members only', function () {
  this.timeout(60000);
  const nodes: SiteNode[] = [];
  const exs: Libp2pHeadExchange[] = [];
  afterEach(async () => {
    for (const e of exs.splice(0)) await e.close();
    for (const n of nodes.splice(0)) await n.stop().catch(() => {});
  });

  it('a site with no listen address is reached through a member relay and exchanges heads; a stranger can neither reserve nor be relayed', async () => {
    const [relay, nat, other, stranger] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity(), generateIdentity()]);
    const members = [relay, nat, other].map((i) => i.peerId);
    const refusedRelay: string[] = [];
    const r = await createSiteNode({
      // The stranger may connect to the relay (as a FedAvg server or another relay could) but is no member.
      privateKey: relay.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: [...members, stranger.peerId],
      relay: { serve: { members } }, onRelayRefused: (p, what) => refusedRelay.push(`${what}:${p}`),
    });
    nodes.push(r);
    await r.start();
    const relayAddr = `${r.getMultiaddrs()[0].toString()}`;
    assert.match(relayAddr, /\/p2p\//);
    const n = await createSiteNode({ privateKey: nat.privateKey, listen: [], allow: members, relay: { via: [relayAddr] } });
    const o = await createSiteNode({ privateKey: other.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: members });
    nodes.push(n, o);
    const mk = (node: SiteNode) => new Libp2pHeadExchange(node, { members: members.map((peerId) => ({ peerId, addrs: [] })), maxHeadBytes: 1 << 20, logger: silentLogger, heartbeatMs: 500 });
    const [en, eo] = [mk(n), mk(o)];
    exs.push(en, eo);
    for (const e of [en, eo]) await e.register();
    await n.start();
    await o.start();
    for (const e of [en, eo]) e.start();
    // The NAT'd site has no address of its own: only the one through the relay, once its reservation holds.
    const circuit = await until('a reservation on the relay', () => n.getMultiaddrs().find((a) => a.toString().includes('/p2p-circuit')), 20000);
    assert.ok(n.getMultiaddrs().every((a) => a.toString().includes('/p2p-circuit')), n.getMultiaddrs().join());
    const conn = await o.dial(circuit);
    assert.ok(isRelayed(conn), `relayed: ${conn.remoteAddr}`);
    assert.equal(conn.remotePeer.toString(), nat.peerId);
    assert.equal(conn.limits, undefined, 'a member relay sets no data or time limit');
    const head = new Uint8Array(300_000).map((_, i) => (i * 7) & 255);
    await en.publish(head, 1);
    assert.equal(await eo.waitForHeads(1, 20000), 1, 'the head crossed the relay');
    const [m] = eo.drain();
    assert.equal(m.from, nat.peerId);
    assert.ok(Buffer.from(m.payload).equals(Buffer.from(head)));
    await eo.publish(new Uint8Array(1000).fill(9), 1);
    assert.equal(await en.waitForHeads(1, 20000), 1, 'and back');
    assert.ok(o.getConnections(n.peerId).every(isRelayed), 'no direct path exists to the NAT site');

    // A stranger (not a member): the relay refuses its reservation and will not relay it to a member,
    // even when the stranger's own node would accept everyone.
    const status: string[] = [];
    const s = await createSiteNode({
      privateKey: stranger.privateKey, listen: [], allow: [...members, stranger.peerId], relay: { via: [relayAddr] }, onRelayStatus: (x) => status.push(x.state),
    });
    nodes.push(s);
    await s.start();
    await until('the relay to refuse the stranger', () => refusedRelay.some((x) => x.startsWith('reservation:') && x.endsWith(stranger.peerId)), 20000);
    await until('the stranger to see its reservation fail', () => status.includes('failed'), 20000);
    assert.ok(!s.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')), 'the stranger holds no reservation');
    await assert.rejects(s.dial(multiaddr(`${relayAddr}/p2p-circuit/p2p/${nat.peerId}`), { signal: AbortSignal.timeout(10000) }));
    assert.ok(refusedRelay.some((x) => x === `relayed connection:${stranger.peerId}`), refusedRelay.join());
  });
});
