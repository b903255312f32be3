/**
 * Discovery: members listed by peer ID only plus a bootstrap address; the
 * others are found through the members' private DHT, and found again after
 * a restart on another address. Every wait bounded.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PrivateKey } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import { ConfigError, boundedAddrs, createSiteNode, generateIdentity, memberFinderOf, parsePeerConfig, type SiteNode } from '@dflmoe/p2p/internal';
import { processGroup, runFourSites, testNamespace, until } from './helpers.js';

describe('discovery: members by peer ID only', function () {
  this.timeout(90000);
  const nodes: SiteNode[] = [];
  afterEach(async () => {
    for (const n of nodes.splice(0)) await Promise.resolve(n.stop()).catch(() => {});
  });

  it('a member known only by peer ID is found through the bootstrap member, and found again on its new address after a restart', async () => {
    const ids = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
    const members = ids.map((i) => ({ peerId: i.peerId, addrs: [] as string[] }));
    const allow = ids.map((i) => i.peerId);
    const found: string[] = [];
    const make = async (key: PrivateKey, bootstrap: string[], port = 0) => {
      const n = await createSiteNode({
        privateKey: key,
        listen: [`/ip4/127.0.0.1/tcp/${port}`],
        allow,
        discovery: { members, bootstrap, dht: true, mdns: false, intervalMs: 300, onFound: (p, a, how) => found.push(`${p} ${how} ${a}`) },
      });
      nodes.push(n);
      await n.start();
      return n;
    };
    const a = await make(ids[0].privateKey, []);
    const boot = `${a.getMultiaddrs()[0].toString()}`;
    const b = await make(ids[1].privateKey, [boot]);
    let c = await make(ids[2].privateKey, [boot]);
    const linked = (x: SiteNode, y: string) => x.getConnections().some((k) => k.remotePeer.toString() === y);
    // Neither was given the other's address: each learnt it through a (the finder's lookup, or the DHT's own
    // queries, which may connect them first; either is discovery through the network).
    await until('b and c to find each other', () => linked(b, ids[2].peerId) && linked(c, ids[1].peerId), 30000);
    const learnt = async (x: SiteNode, peer: string) => (await x.peerStore.get(peerIdFromString(peer))).addresses.length > 0;
    assert.ok((await learnt(b, ids[2].peerId)) && (await learnt(c, ids[1].peerId)), found.join('\n'));

    // c restarts on another port: b finds it there.
    const oldAddr = c.getMultiaddrs()[0].toString();
    await c.stop();
    nodes.splice(nodes.indexOf(c), 1);
    await until('b to notice', () => !linked(b, ids[2].peerId), 15000);
    c = await make(ids[2].privateKey, [boot]);
    const newAddr = c.getMultiaddrs()[0].toString();
    assert.notEqual(newAddr, oldAddr);
    const port = multiaddr(newAddr)
      .getComponents()
      .find((x) => x.name === 'tcp')!.value;
    // c does not dial b (its finder is off): b must find c's new address itself.
    memberFinderOf(c)!.stop();
    await until(
      'b to find c on its new address',
      () => b.getConnections().some((k) => k.remotePeer.toString() === ids[2].peerId && k.remoteAddr.toString().includes(`/tcp/${port}/`)),
      40000,
    );
    assert.ok(
      found.some((f) => f.startsWith(ids[2].peerId) && f.includes(`/tcp/${port}/`)),
      found.join('\n'),
    );
  });

  it("mDNS: two members on one LAN, listed by peer ID only and without bootstrap, find each other (in a network namespace of the test's own)", function () {
    // The LAN is the loopback of a namespace made for the test, with multicast on: the nodes listen on 127.0.0.1 and
    // their mDNS queries and answers stay inside it (test/fixtures/mdns-run.ts).
    const ns = testNamespace('dflmoe-mdns', [['link', 'set', 'lo', 'multicast', 'on']]);
    if (!ns) this.skip();
    try {
      const r = ns.run([process.execPath, '--import', 'tsx', '--conditions=development', 'test/fixtures/mdns-run.ts'], {
        timeout: 60000,
        env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' },
      });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { found?: boolean; remoteAddr?: string; error?: string };
      assert.equal(out.error, undefined);
      assert.equal(out.found, true, 'an mDNS-found connection');
      assert.match(out.remoteAddr!, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\//);
    } finally {
      ns.remove();
    }
  });

  it('addresses learnt from the network are bounded and filtered', () => {
    const many = Array.from({ length: 40 }, (_, i) => multiaddr(`/ip4/10.0.0.${i}/tcp/1`));
    const r = boundedAddrs([multiaddr('/ip4/1.2.3.4/udp/5'), ...many]);
    assert.equal(r.kept.length, 16);
    assert.equal(r.dropped, 25);
    assert.ok(r.kept.every((x) => x.toString().includes('/tcp/')));
  });

  it('config: bootstrap must name a member; members may have no address', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-disc-'));
    const [x, y, z] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity()]);
    const base = {
      key: 'k.key',
      listen: ['/ip4/127.0.0.1/tcp/1'],
      data: { dataset: 'breast-cancer' },
      rounds: 2,
      out: 'o',
      members: [x, y].map((i) => ({ peerId: i.peerId })),
    };
    const ok = parsePeerConfig({ ...base, discovery: { bootstrap: [`/ip4/10.0.0.1/tcp/9101/p2p/${x.peerId}`] } }, 'a.json', dir);
    assert.equal(ok.discovery.bootstrap.length, 1);
    assert.throws(
      () => parsePeerConfig({ ...base, discovery: { bootstrap: [`/ip4/10.0.0.1/tcp/9101/p2p/${z.peerId}`] } }, 'a.json', dir),
      (e: Error) => e instanceof ConfigError && /discovery\.bootstrap\.0: .* is not in members/.test(e.message),
    );
    assert.throws(
      () => parsePeerConfig({ ...base, discovery: { bootstrap: ['/ip4/10.0.0.1/tcp/9101'] } }, 'a.json', dir),
      /discovery\.bootstrap\.0: a relay address ends in \/p2p\//,
    );
  });
});

describe('discovery: a consortium whose configs list peer IDs and one bootstrap address (multi-process)', function () {
  this.timeout(300000);
  const procs = processGroup();
  afterEach(() => procs.kill());

  it('4 sites find each other through site-0 and the DHT and complete every round with all 3 experts', async () => {
    // Every config lists the members by peer ID only, and site-0's address to bootstrap from.
    const { files: f, logs } = await runFourSites(
      procs,
      'discovery',
      4,
      (c, _s, files) => {
        c.members = c.members.map((m) => ({ peerId: m.peerId, name: m.name }));
        c.discovery = { bootstrap: [`/ip4/127.0.0.1/tcp/${files.sites[0].port}/p2p/${files.sites[0].peerId}`], intervalMs: 500 };
      },
      2,
    );
    // Sites 1-3 knew only site-0's address: every pair of them found one another at run time (at an address the DHT
    // holds for it: its listen port, or the port another member observed it connecting from, which identify also passes on).
    const foundBy = (i: number, j: number) => new RegExp(`found site-${j} \\(${f.sites[j].peerId}\\) at /ip4/127\\.0\\.0\\.1/tcp/\\d+/`).test(logs[i]);
    for (const [i, j] of [
      [1, 2],
      [1, 3],
      [2, 3],
    ])
      assert.ok(foundBy(i, j) || foundBy(j, i), `site-${i} and site-${j} found each other`);
  });
});
