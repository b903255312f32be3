/**
 * The head exchange as a libp2p service on a host's own node (#22):
 * members only, strikes and blocking without the site's own gater, and a
 * clear error (not a hang) for a node without pubsub or without a
 * transport that reaches the members.
 */
import assert from 'node:assert/strict';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { gossipsub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import { tcp } from '@libp2p/tcp';
import { webSockets } from '@libp2p/websockets';
import type { PrivateKey } from '@libp2p/interface';
import { createLibp2p } from 'libp2p';
import { ExchangeServiceError, HEAD_PROTOCOL, generateIdentity, headExchange, membersOnlyGater, writeFrames, type ExchangeService } from '@dflmoe/p2p/internal';

type Services = Record<string, (c: never) => unknown>;

function hostNode(privateKey: PrivateKey, services: Services, o: { transports?: 'tcp' | 'ws'; gater?: ReturnType<typeof membersOnlyGater> } = {}) {
  return createLibp2p({
    start: false,
    privateKey,
    addresses: { listen: o.transports === 'ws' ? [] : ['/ip4/127.0.0.1/tcp/0'] },
    transports: [o.transports === 'ws' ? webSockets() : tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(o.gater ? { connectionGater: o.gater } : {}),
    services: services as never,
  });
}

const until = async (what: string, fn: () => boolean, ms = 5000) => {
  const t0 = Date.now();
  while (!fn()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('the exchange as a libp2p service', function () {
  this.timeout(60000);

  it('a node without pubsub is refused by createLibp2p, naming what is missing', async () => {
    const id = await generateIdentity();
    await assert.rejects(hostNode(id.privateKey, { identify: identify(), heads: headExchange({ members: [] }) }), (e: Error) =>
      /Service "@dflmoe\/exchange" required capability "@libp2p\/pubsub"/.test(e.message),
    );
    // A pubsub under another name: the service says which name it looked for.
    const node = await hostNode(id.privateKey, { identify: identify(), gossip: gossipsub(), heads: headExchange({ members: [] }) });
    await assert.rejects(
      async () => node.start(),
      (e: Error) => e instanceof ExchangeServiceError && /needs a pubsub service named "pubsub"/.test(e.message),
    );
    await node.stop();
  });

  it('a node whose transports reach no member fails to start with a clear error, at once', async () => {
    const [a, b] = await Promise.all([generateIdentity(), generateIdentity()]);
    const members = [
      { peerId: a.peerId, addrs: [] },
      { peerId: b.peerId, addrs: ['/ip4/127.0.0.1/tcp/9'] },
    ];
    const node = await hostNode(a.privateKey, { identify: identify(), pubsub: gossipsub(), heads: headExchange({ members }) }, { transports: 'ws' });
    const t0 = Date.now();
    await assert.rejects(
      async () => node.start(),
      (e: Error) => e instanceof ExchangeServiceError && /cannot reach any member: no transport of this node dials \/ip4\/127\.0\.0\.1\/tcp\/9/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 5000);
    await node.stop();
  });

  it("serves members only; a member that keeps sending bad requests is struck, hung up on and refused, without the site's gater", async () => {
    const [host, member, stranger] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
    const members = [host, member].map((i) => ({ peerId: i.peerId, addrs: [] }));
    const node = await hostNode(host.privateKey, {
      identify: identify(),
      pubsub: gossipsub(),
      heads: headExchange({ members, maxStrikes: 3, blockMs: 30000 }),
    });
    const m = await hostNode(member.privateKey, { identify: identify(), pubsub: gossipsub() });
    const x = await hostNode(stranger.privateKey, { identify: identify(), pubsub: gossipsub() });
    await Promise.all([node.start(), m.start(), x.start()]);
    const ex = (node.services as unknown as { heads: ExchangeService }).heads;
    try {
      await ex.publish(new Uint8Array([1, 2, 3]), 1);
      // A stranger may connect (no gater here) but is not served.
      await x.dial(node.getMultiaddrs()[0]);
      const sx = await x.dialProtocol(node.peerId, HEAD_PROTOCOL);
      await writeFrames(sx, [new Uint8Array([8, 1])]).catch(() => {});
      await until('the stranger counted', () => (ex.dropped['not-member'] ?? 0) >= 1);
      // A member sending garbage requests.
      await m.dial(node.getMultiaddrs()[0]);
      for (let t = 0; t < 20 && !ex.isBlocked(member.peerId); t++) {
        const s = await m.dialProtocol(node.peerId, HEAD_PROTOCOL).catch(() => undefined);
        if (s) await writeFrames(s, [new Uint8Array([0xff, 0xff, 0xff])]).catch(() => {});
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(ex.isBlocked(member.peerId), `blocked; dropped ${JSON.stringify(ex.dropped)}`);
      assert.ok((ex.dropped['bad-response'] ?? 0) >= 3);
      await until('the member hung up on', () => node.getConnections(m.peerId).length === 0);
      // It comes back: hung up on again, and nothing is served.
      await m.dial(node.getMultiaddrs()[0]).catch(() => undefined);
      await until('the member hung up on again', () => node.getConnections(m.peerId).length === 0);
    } finally {
      await Promise.all([node.stop(), m.stop(), x.stop()]);
    }
  });

  it('membersOnlyGater refuses everyone else at the door', async () => {
    const [host, stranger] = await Promise.all([generateIdentity(), generateIdentity()]);
    const node = await hostNode(host.privateKey, { identify: identify(), pubsub: gossipsub() }, { gater: membersOnlyGater([host.peerId]) });
    const x = await hostNode(stranger.privateKey, { identify: identify(), pubsub: gossipsub() });
    await Promise.all([node.start(), x.start()]);
    try {
      // The handshake is refused on the host's side once the stranger's key is known: no connection stays, no stream opens.
      await x.dial(node.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
      await until('the stranger refused', () => node.getConnections().length === 0 && x.getConnections().length === 0);
      await assert.rejects(x.dialProtocol(node.peerId, HEAD_PROTOCOL, { signal: AbortSignal.timeout(5000) }));
    } finally {
      await Promise.all([node.stop(), x.stop()]);
    }
  });
});
