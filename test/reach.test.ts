/**
 * Reach: sites behind NAT through a circuit relay served by a member, only
 * for members; every wait bounded.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@dflmoe/core';
import type { SiteFiles } from '@dflmoe/cli/internal';
import { multiaddr } from '@multiformats/multiaddr';
import {
  ConfigError,
  Libp2pHeadExchange,
  createSiteNode,
  generateIdentity,
  isRelayed,
  parsePeerConfig,
  parseRelayConfig,
  saveIdentity,
  startRelay,
  type SiteNode,
} from '@dflmoe/p2p/internal';
import { processGroup, runFourSites, testNamespace, untilValue as until } from './helpers.js';

describe('reach: circuit relay for members only', function () {
  this.timeout(60000);
  const nodes: SiteNode[] = [];
  const exs: Libp2pHeadExchange[] = [];
  afterEach(async () => {
    for (const e of exs.splice(0)) await e.close();
    for (const n of nodes.splice(0)) await Promise.resolve(n.stop()).catch(() => {});
  });

  it('a site with no listen address is reached through a member relay and exchanges heads; a stranger can neither reserve nor be relayed', async () => {
    const [relay, nat, other, stranger] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity(), generateIdentity()]);
    const members = [relay, nat, other].map((i) => i.peerId);
    const refusedRelay: string[] = [];
    const r = await createSiteNode({
      // The stranger may connect to the relay (as a FedAvg server or another relay could) but is no member.
      privateKey: relay.privateKey,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      allow: [...members, stranger.peerId],
      relay: { serve: { members } },
      onRelayRefused: (p, what) => refusedRelay.push(`${what}:${p}`),
    });
    nodes.push(r);
    await r.start();
    const relayAddr = `${r.getMultiaddrs()[0].toString()}`;
    assert.match(relayAddr, /\/p2p\//);
    const n = await createSiteNode({ privateKey: nat.privateKey, listen: [], allow: members, relay: { via: [relayAddr] } });
    const o = await createSiteNode({ privateKey: other.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: members });
    nodes.push(n, o);
    const mk = (node: SiteNode) =>
      new Libp2pHeadExchange(node, {
        members: members.map((peerId) => ({ peerId, addrs: [] })),
        maxHeadBytes: 1 << 20,
        logger: silentLogger,
        heartbeatMs: 500,
      });
    const [en, eo] = [mk(n), mk(o)];
    exs.push(en, eo);
    for (const e of [en, eo]) await e.register();
    await n.start();
    await o.start();
    for (const e of [en, eo]) e.start();
    // The NAT'd site has no address of its own: only the one through the relay, once its reservation holds.
    const circuit = await until('a reservation on the relay', () => n.getMultiaddrs().find((a) => a.toString().includes('/p2p-circuit')), 20000);
    assert.ok(
      n.getMultiaddrs().every((a) => a.toString().includes('/p2p-circuit')),
      n.getMultiaddrs().join(),
    );
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
      privateKey: stranger.privateKey,
      listen: [],
      allow: [...members, stranger.peerId],
      relay: { via: [relayAddr] },
      onRelayStatus: (x) => status.push(x.state),
    });
    nodes.push(s);
    await s.start();
    await until('the relay to refuse the stranger', () => refusedRelay.some((x) => x.startsWith('reservation:') && x.endsWith(stranger.peerId)), 20000);
    await until('the stranger to see its reservation fail', () => status.includes('failed'), 20000);
    assert.ok(!s.getMultiaddrs().some((a) => a.toString().includes('/p2p-circuit')), 'the stranger holds no reservation');
    await assert.rejects(s.dial(multiaddr(`${relayAddr}/p2p-circuit/p2p/${nat.peerId}`), { signal: AbortSignal.timeout(10000) }));
    assert.ok(
      refusedRelay.some((x) => x === `relayed connection:${stranger.peerId}`),
      refusedRelay.join(),
    );
  });
});

describe('reach: hole punching (DCUtR) in a network namespace', function () {
  this.timeout(90000);
  // DCUtR only dials public addresses, so loopback cannot show it: the test makes a namespace of its own whose loopback
  // carries 5.5.5.1-3 (nothing leaves the namespace) and runs a relay and two members there (test/fixtures/dcutr-run.ts).
  let ns: ReturnType<typeof testNamespace>;
  before(function () {
    ns = testNamespace(
      'dflmoe-dcutr',
      [1, 2, 3].map((i) => ['addr', 'add', `5.5.5.${i}/32`, 'dev', 'lo']),
    );
    if (!ns) this.skip();
  });
  after(() => ns?.remove());
  const run = (holePunch: boolean) => {
    const r = ns!.run([process.execPath, '--import', 'tsx', '--conditions=development', 'test/fixtures/dcutr-run.ts'], {
      timeout: 60000,
      env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn', HOLE_PUNCH: holePunch ? 'on' : 'off' },
    });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
      firstRelayed?: boolean;
      direct?: string | null;
      directDirection?: string | null;
      error?: string;
    };
  };

  it('a member reached through the relay opens a direct connection to the member that dialed it; with hole punching off, none comes', () => {
    const on = run(true);
    assert.equal(on.error, undefined);
    assert.equal(on.firstRelayed, true, 'the first connection went through the relay');
    assert.ok(on.direct?.startsWith('/ip4/5.5.5.'), `a direct connection: ${on.direct}`);
    assert.equal(on.directDirection, 'inbound', 'dialed by the member the relayed connection came in to');
    const off = run(false);
    assert.equal(off.error, undefined);
    assert.equal(off.firstRelayed, true);
    assert.equal(off.direct, null, 'nothing else opens a direct connection');
  });
});

describe('reach: config', () => {
  it('a site needs a listen address or a relay; relay.only needs relays; relay addresses name the relay', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-reachcfg-'));
    const r = await generateIdentity();
    const base = { key: 'k.key', data: { dataset: 'breast-cancer' }, rounds: 2, out: 'o' };
    const via = `/ip4/10.0.0.1/tcp/9101/p2p/${r.peerId}`;
    const bad = (cfg: object, re: RegExp) =>
      assert.throws(
        () => parsePeerConfig(cfg, 'a.json', dir),
        (e: Error) => e instanceof ConfigError && re.test(e.message),
      );
    bad({ ...base, listen: [] }, /listen: give at least one address to listen on, or \(behind NAT\) relay\.via/);
    bad({ ...base, listen: ['/ip4/127.0.0.1/tcp/1'], relay: { only: true } }, /relay\.only: needs relay\.via/);
    bad({ ...base, listen: [], relay: { via: ['/ip4/10.0.0.1/tcp/9101'] } }, /relay\.via\.0: a relay address ends in \/p2p\//);
    const ok = parsePeerConfig({ ...base, listen: [], relay: { via: [via], only: true } }, 'a.json', dir);
    assert.deepEqual([ok.listen, ok.relay.via, ok.relay.only, ok.relay.serve, ok.relay.holePunch], [[], [via], true, false, true]);
  });
});

describe('reach: a relay the consortium runs (dflmoe relay)', function () {
  this.timeout(60000);

  it('relays between two members that cannot reach each other, refuses a stranger, and its config is checked', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-relayd-'));
    const [relayId, a, b, stranger] = await Promise.all([generateIdentity(), generateIdentity(), generateIdentity(), generateIdentity()]);
    saveIdentity(join(dir, 'relay.key'), relayId.privateKey, true);
    const members = [a, b].map((i) => ({ peerId: i.peerId }));
    assert.throws(
      () => parseRelayConfig({ key: 'relay.key', listen: [], members }, 'relay.json', dir),
      (e: Error) => e instanceof ConfigError && /listen/.test(e.message),
    );
    const cfg = parseRelayConfig({ name: 'relay', key: 'relay.key', listen: ['/ip4/127.0.0.1/tcp/0'], members }, 'relay.json', dir);
    const relay = await startRelay(cfg, silentLogger);
    const nodes: SiteNode[] = [];
    try {
      const via = relay.addrs[0];
      assert.match(via, new RegExp(`/p2p/${relayId.peerId}$`));
      // Both members are behind NAT: no listen address, reachable only through the relay.
      const allow = [a.peerId, b.peerId];
      for (const i of [a, b]) nodes.push(await createSiteNode({ privateKey: i.privateKey, listen: [], allow, relay: { via: [via] } }));
      for (const n of nodes) await n.start();
      const circuits = await until(
        'both reservations',
        () => {
          const c = nodes.map((n) => n.getMultiaddrs().find((x) => x.toString().includes('/p2p-circuit')));
          return c.every(Boolean) && c;
        },
        20000,
      );
      assert.equal(relay.reservations(), 2);
      const conn = await nodes[0].dial(circuits[1]!);
      assert.ok(isRelayed(conn) && conn.remotePeer.toString() === b.peerId);
      await nodes[0].services.ping.ping(conn.remotePeer);
      // A stranger: the relay does not even let it connect.
      const s = await createSiteNode({ privateKey: stranger.privateKey, listen: [], allow: [...allow, relayId.peerId, stranger.peerId] });
      nodes.push(s);
      await s.start();
      await assert.rejects(s.dial(multiaddr(`${via}/p2p-circuit/p2p/${b.peerId}`), { signal: AbortSignal.timeout(10000) }));
    } finally {
      for (const n of nodes) await Promise.resolve(n.stop()).catch(() => {});
      await relay.stop();
    }
  });
});

describe('reach: a consortium with a site behind NAT (multi-process)', function () {
  this.timeout(300000);
  const procs = processGroup();
  afterEach(() => procs.kill());

  it('4 sites, one with no listen address reachable only through a member relay: every round completes, with all 3 experts at every site from round 2', async () => {
    let relayAddr = '';
    const { files: f, logs } = await runFourSites(
      procs,
      'relay',
      3,
      (c, s, files) => {
        const [relay, , , nat] = files.sites;
        relayAddr = `/ip4/127.0.0.1/tcp/${relay.port}/p2p/${relay.peerId}`;
        if (s === relay) c.relay = { serve: true };
        if (s === nat) {
          // No address of its own, and a firewall that lets connections out to the relay alone.
          c.listen = [];
          c.relay = { via: [relayAddr], only: true };
          for (const m of c.members) if (m.peerId !== relay.peerId) m.addrs = [];
        } else {
          const m = c.members.find((x) => x.peerId === nat.peerId)!;
          m.addrs = s === relay ? [] : [`${relayAddr}/p2p-circuit`];
        }
      },
      2,
    ); // round 1: on a heavily loaded machine the NAT'd site's first head can miss the deadline while its reservation is made

    const [relay, , , nat] = f.sites;
    const log = (s: SiteFiles) => logs[f.sites.indexOf(s)];
    assert.match(log(nat), /reserved a slot on relay .*members reach this site at \/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+\/p2p-circuit/);
    for (const s of f.sites.slice(1, 3)) {
      // The others reach the NAT'd site through the relay only: never a direct connection.
      assert.match(log(s), new RegExp(`connected to site-3 \\(${nat.peerId}\\) relayed`));
      assert.doesNotMatch(log(s), new RegExp(`connected to site-3 \\(${nat.peerId}\\) direct`));
      assert.doesNotMatch(log(nat), new RegExp(`connected to ${s.out.split('/').at(-1)} \\(${s.peerId}\\) direct`));
    }
    assert.match(log(nat), new RegExp(`connected to site-0 \\(${relay.peerId}\\) direct outbound`));
  });
});
