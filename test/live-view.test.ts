/**
 * The live view without a browser: the status model both `simulate` and
 * `peer` feed, the HTTP server (routes, token, bad input, event streams that
 * close), a site process's view followed by another process, and the CLI's
 * errors for a port in use. The page in a real browser: live-browser.test.ts.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import { request } from 'node:http';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StatusBoard, gateWeights, parseSiteStatus, silentLogger, simulate, siteKey, type SiteStatus, type StatusSnapshot } from '@dflmoe/core/internal';
import { LiveServer, LiveViewError, RemoteSites, parseListen, serverToken } from '@dflmoe/live';
import { AUDIT_FILE, PeerStatusWatch, SiteAudit, generateIdentity, loopbackMembers, verifyAudit, type SiteNode } from '@dflmoe/p2p/internal';
import { writeConsortium } from '@dflmoe/cli/internal';
import { DEFAULT_SIMULATION } from '@dflmoe/core';
import { backend, cli, cliCommand, until } from './helpers.js';

/** GET (or another method) on the server; resolves with the status, headers and body. */
function http(
  url: string,
  o: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method ?? 'GET', headers: o.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    if (o.body) req.write(o.body);
    req.end();
  });
}

/** Send raw bytes and read what comes back until the server closes (or 2 s). */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    const done = () => resolve(out);
    s.on('close', done);
    s.on('error', done);
    setTimeout(() => s.destroy(), 2000);
  });
}

/** Open an event stream; returns the events as they arrive and a way to close it. */
function stream(url: string, headers: Record<string, string> = {}) {
  const events: { event: string; data: unknown }[] = [];
  let buf = '';
  let status = 0;
  const req = request(url, { headers }, (res) => {
    status = res.statusCode!;
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
      }
    });
  });
  req.on('error', () => {});
  req.end();
  return { events, status: () => status, close: () => req.destroy() };
}

function occupy(): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

const portOf = (s: Server) => (s.address() as { port: number }).port;

describe('live view: status model', () => {
  it('takes round updates, gate weights and members, reporting only real changes', () => {
    const board = new StatusBoard({ epsilonBudget: 8 });
    const changes: SiteStatus[] = [];
    board.onChange((s) => changes.push(s));
    const feed = board.site({ id: 'a', algorithm: 'dflmoe', rounds: 5, members: [{ id: 'b' }, { id: 'c' }] });
    assert.equal(changes.length, 1);
    assert.equal(feed.status.state, 'starting');
    feed.round({
      round: 1,
      accuracy: 0.5,
      loss: 1.2,
      seconds: 0.3,
      bytesSent: 100,
      bytesReceived: 200,
      gate: gateWeights('a', [
        { peer: 'b', gateWeight: 0.25 },
        { peer: 'c', gateWeight: 0.15 },
      ]),
      epsilon: 1.5,
      delta: 1e-5,
    });
    // A resumed site reports round 3 next: round 2 is a gap, not a shifted entry.
    feed.round({ round: 3, accuracy: 0.7, loss: Number.NaN, seconds: 0.2, bytesSent: 300, bytesReceived: 400 });
    const s = feed.status;
    assert.equal(s.state, 'training');
    assert.equal(s.round, 3);
    assert.deepEqual(s.accuracy, [0.5, null, 0.7]);
    assert.deepEqual(s.loss, [1.2, null, null]);
    assert.equal(s.gate[0]!.a.toFixed(2), '0.60');
    assert.equal(s.gate[0]!.b, 0.25);
    assert.equal(s.gate[2], null);
    assert.equal(s.epsilon, 1.5);
    assert.equal(s.epsilonBudget, 8);
    const before = changes.length;
    feed.members([{ id: 'b', connected: true, strikes: 0 }]);
    feed.members([{ id: 'b', connected: true, strikes: 0 }]);
    assert.equal(changes.length, before + 1, 'the same member state twice is one change');
    feed.members([{ id: 'b', strikes: 2 }]);
    assert.deepEqual(
      feed.status.members.find((m) => m.id === 'b'),
      { id: 'b', connected: true, strikes: 2, lastHeadRound: null },
    );
    feed.state('failed', 'line one\nline two');
    assert.equal(feed.status.error, 'line one');
    // Statuses handed out are never changed in place.
    assert.equal(changes[1].round, 1);
    // What the board holds passes the schema another process checks it with.
    assert.deepEqual(parseSiteStatus(JSON.parse(JSON.stringify(feed.status))), feed.status);
    assert.equal(gateWeights('a', []), undefined);
  });

  it('refuses a site status that is not one', () => {
    const board = new StatusBoard();
    const ok = board.site({ id: 'x', algorithm: 'local', rounds: 2 }).status;
    for (const bad of [
      null,
      {},
      { ...ok, state: 'hacked' },
      { ...ok, round: -1 },
      { ...ok, id: 'x'.repeat(1000) },
      { ...ok, accuracy: ['1'] },
      { ...ok, members: [{ id: 3 }] },
      { ...ok, modality: 7 },
      { ...ok, modality: 'i'.repeat(1000) },
    ]) {
      assert.throws(() => parseSiteStatus(bad));
    }
    const image = board.site({ id: 'y', algorithm: 'dflmoe', modality: 'image', rounds: 2 }).status;
    assert.equal(parseSiteStatus(JSON.parse(JSON.stringify(image))).modality, 'image');
  });

  it('the in-memory simulator feeds every site of every algorithm through its hooks', async function () {
    this.timeout(60000);
    await backend();
    const board = new StatusBoard();
    // What the view showed of dFLMoE's members at each round, while the sites ran.
    const seen = new Map<string, boolean[][]>();
    board.onChange((s) => {
      if (s.algorithm === 'dflmoe' && s.state === 'training') seen.set(`${s.id}@${s.round}`, [s.members.map((m) => m.connected)]);
    });
    const r = await simulate(
      { ...DEFAULT_SIMULATION, dataset: 'synthetic:classes=3,dim=8,samples=240', peers: 3, rounds: 3, algorithms: ['dflmoe', 'local', 'fedavg'], minSize: 5 },
      { status: board },
    );
    const sites = board.snapshot().sites;
    assert.equal(sites.length, 9);
    for (const s of sites) {
      assert.equal(s.state, 'done');
      assert.equal(s.round, 3);
      assert.equal(s.accuracy.length, 3);
      assert.ok(s.accuracy.every((a) => a !== null && a >= 0 && a <= 1));
    }
    const d = sites.filter((s) => s.algorithm === 'dflmoe');
    // dFLMoE: the gate over the own head and the two others' heads, every round; members connected with their newest head.
    for (const s of d) {
      assert.deepEqual(Object.keys(s.gate[2]!).sort(), ['site-0', 'site-1', 'site-2']);
      assert.ok(Math.abs(Object.values(s.gate[2]!).reduce((a, b) => a + b, 0) - 1) < 1e-6);
      assert.deepEqual(seen.get(`${s.id}@3`), [[true, true]], 'connected while it ran');
      // Once done, the site has left: no member is shown connected to it (their newest head stays).
      assert.deepEqual(
        s.members.map((m) => [m.connected, m.lastHeadRound]),
        [
          [false, 3],
          [false, 3],
        ],
      );
      assert.ok(s.bytesSent > 0 && s.bytesReceived > 0);
    }
    assert.equal(d[0].accuracy[2], r.algorithms.dflmoe!.peers[0].accuracy);
    assert.ok(sites.filter((s) => s.algorithm === 'local').every((s) => s.gate.every((g) => g === null) && s.bytesSent === 0 && s.members.length === 0));
    // A server algorithm's member is the server.
    assert.ok(
      sites
        .filter((s) => s.algorithm === 'fedavg')
        .every((s) => JSON.stringify(s.members) === JSON.stringify([{ id: 'server', connected: false, strikes: 0, lastHeadRound: 3 }])),
    );
  });

  it("a peer's members: connections, strikes of both exchanges, blocked, newest head round, the server's last round", () => {
    const board = new StatusBoard();
    const feed = board.site({ id: 'me', algorithm: 'dflmoe', rounds: 3 });
    const open = new Set<string>();
    const node = new EventTarget() as EventTarget & { getConnections(): { remotePeer: { toString(): string } }[] };
    node.getConnections = () => [...open].map((p) => ({ remotePeer: { toString: () => p } }));
    const strikes = new Map<string, number>([['P2', 2]]);
    const heads = { strikesOf: (p: string) => strikes.get(p) ?? 0, isBlocked: (p: string) => p === 'P2', announced: () => new Map([['P1', 4]]) };
    const bodies = { strikesOf: (p: string) => (p === 'P2' ? 1 : 0), isBlocked: () => false, announced: () => new Map([['P1', 5]]) };
    const watch = new PeerStatusWatch(feed, {
      members: [{ peerId: 'P1', name: 'one' }, { peerId: 'P2' }, { peerId: 'S', name: 'server' }],
      node: node as unknown as SiteNode,
      exchanges: [heads, bodies],
      server: { peerId: 'S', lastRound: () => 3 },
      auditFile: '/nonexistent',
      periodMs: 60000,
    });
    try {
      const m = () => Object.fromEntries(feed.status.members.map((x) => [x.id, x]));
      assert.deepEqual(m().one, { id: 'one', peerId: 'P1', connected: false, strikes: 0, blocked: false, lastHeadRound: 5 });
      assert.deepEqual(m().P2, { id: 'P2', peerId: 'P2', connected: false, strikes: 3, blocked: true, lastHeadRound: null });
      assert.equal(m().server.lastHeadRound, 3);
      // A connection event refreshes at once.
      open.add('P1');
      node.dispatchEvent(new Event('connection:open'));
      assert.equal(m().one.connected, true);
      // The site's run ended: it has left, so no member shows connected, even if a refresh still sees the connection.
      feed.state('done');
      assert.equal(m().one.connected, false);
      watch.refresh();
      assert.equal(m().one.connected, false);
      assert.equal(m().one.lastHeadRound, 5);
    } finally {
      watch.stop();
    }
  });

  it('over libp2p: a member connecting and earning strikes (a bad head reported by the learner) shows in the status', async function () {
    this.timeout(60000);
    const { ids, nodes, exchanges, stop } = await loopbackMembers(2, { maxHeadBytes: 1 << 20, logger: silentLogger, heartbeatMs: 60000 });
    const board = new StatusBoard();
    const feed = board.site({ id: 'a', algorithm: 'dflmoe', rounds: 2 });
    const watch = new PeerStatusWatch(feed, {
      members: [{ peerId: ids[1].peerId, name: 'b' }],
      node: nodes[0],
      exchanges: [exchanges[0]],
      auditFile: '/nonexistent',
      periodMs: 60000,
    });
    try {
      assert.equal(feed.status.members[0].connected, false);
      await nodes[0].dial(nodes[1].getMultiaddrs()[0]);
      await until('b connected', () => feed.status.members[0].connected, 10000);
      await exchanges[1].publish(new Uint8Array([1, 2, 3]), 1);
      exchanges[0].reportBad(ids[1].peerId, 'not a head');
      exchanges[0].reportBad(ids[1].peerId, 'not a head');
      watch.refresh();
      assert.equal(feed.status.members[0].strikes, 2);
      await until(
        'the announced round',
        () => {
          watch.refresh();
          return feed.status.members[0].lastHeadRound === 1;
        },
        10000,
      );
    } finally {
      watch.stop();
      await stop();
    }
  });

  it('checks an audit trail again, verifying the signatures of new lines only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-live-audit-'));
    const id = await generateIdentity();
    const a = await SiteAudit.open(dir, id.privateKey, id.peerId, 'dflmoe', 1, {});
    await a.round({ round: 1, experts: [] });
    const file = join(dir, AUDIT_FILE);
    const verified = new Set<string>();
    assert.deepEqual((await verifyAudit(file, verified)).problems, []);
    assert.equal(verified.size, 2);
    // A line whose signature was checked before is taken as checked: seed the set with a forged line's hash...
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
    const forged = lines[1].replace(/"sig":"[^"]*"/, '"sig":"AAAA"');
    writeFileSync(file, `${lines[0]}\n${forged}\n`);
    assert.match((await verifyAudit(file)).problems[0].reason, /signature does not match/);
    assert.deepEqual((await verifyAudit(file, new Set([...verified, createHash('sha256').update(forged).digest('hex')]))).problems, []);
    // ...while a changed line is a new line, checked in full.
    assert.match((await verifyAudit(file, verified)).problems[0].reason, /signature does not match/);
    assert.equal(verified.size, 2, 'a line that does not check out is not remembered');
  });
});

describe('live view: server', () => {
  let server: LiveServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  const board = () => {
    const b = new StatusBoard();
    b.site({ id: 'site-0', algorithm: 'dflmoe', rounds: 3 });
    return b;
  };

  it('parses --ui addresses and refuses bad ones with the option named', () => {
    assert.deepEqual(parseListen('8080'), { host: '127.0.0.1', port: 8080, loopback: true });
    assert.deepEqual(parseListen(':0'), { host: '127.0.0.1', port: 0, loopback: true });
    assert.deepEqual(parseListen('0.0.0.0:80'), { host: '0.0.0.0', port: 80, loopback: false });
    assert.deepEqual(parseListen('[::1]:9'), { host: '::1', port: 9, loopback: true });
    assert.throws(() => parseListen('host:99999', 'ui.listen'), /^LiveViewError: ui\.listen "host:99999": the port/);
    assert.throws(() => parseListen('a b:1'), /--ui "a b:1"/);
    assert.throws(() => parseListen('::1:80'), /expected host:port/);
  });

  it('serves the page, the status and nothing else: 404, 405, 413, 414, 400, Host checks', async () => {
    server = await LiveServer.start({ board: board(), listen: '127.0.0.1:0' });
    const base = `http://127.0.0.1:${server.address.port}`;
    const page = await http(`${base}/`);
    assert.equal(page.status, 200);
    assert.match(page.body, /<title>dflmoe live view<\/title>/);
    // Self-contained: no script or style from elsewhere, and a policy that allows none.
    assert.doesNotMatch(page.body, /<script[^>]+src=|<link[^>]+stylesheet|https?:\/\/(?!www\.w3\.org)/);
    assert.match(String(page.headers['content-security-policy']), /default-src 'none'; script-src 'sha256-/);
    // The gate heatmap's caption says what its weights are: routing, not trust.
    assert.match(page.body, /A weight near 1 is where the gate routes rows, not a measure of trust/);
    const status = await http(`${base}/api/status`);
    assert.equal(status.status, 200);
    assert.equal((JSON.parse(status.body) as StatusSnapshot).sites[0].id, 'site-0');
    assert.equal((await http(`${base}/nothing`)).status, 404);
    for (const method of ['POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS']) {
      const r = await http(`${base}/api/status`, { method });
      assert.equal(r.status, 405, method);
      assert.equal(r.headers.allow, 'GET');
    }
    assert.equal((await http(`${base}/api/status`, { headers: { 'Content-Length': '5' }, body: 'hello' })).status, 413);
    assert.equal((await http(`${base}/api/status?x=${'a'.repeat(3000)}`)).status, 414);
    assert.match(await raw(server.address.port, 'GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await raw(server.address.port, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`), /^HTTP\/1\.1 (400|431)/);
    // A page on another name that resolves to 127.0.0.1 (DNS rebinding) is not answered.
    assert.equal((await http(`${base}/api/status`, { headers: { Host: 'attacker.example:80' } })).status, 403);
    // The site is unaffected: it still answers.
    assert.equal((await http(`${base}/api/status`)).status, 200);
  });

  it('with a token: 401 and nothing else without it or with a wrong one; bearer header or ?token=', async () => {
    const token = 'a-token-of-24-characters';
    server = await LiveServer.start({ board: board(), listen: '127.0.0.1:0', token });
    const base = `http://127.0.0.1:${server.address.port}`;
    for (const path of ['/', '/api/status', '/api/events', '/nothing']) {
      for (const r of [
        await http(`${base}${path}`),
        await http(`${base}${path}?token=wrong-token-wrong-token`),
        await http(`${base}${path}`, { headers: { Authorization: 'Bearer nope' } }),
      ]) {
        assert.equal(r.status, 401, path);
        assert.equal(r.body, 'unauthorized\n');
        assert.doesNotMatch(r.body, /site-0/);
      }
    }
    assert.equal((await http(`${base}/api/status`, { headers: { Authorization: `Bearer ${token}` } })).status, 200);
    assert.equal((await http(`${base}/api/status?token=${token}`)).status, 200);
    assert.equal(server.url, `${base}/?token=${token}`);
    await assert.rejects(LiveServer.start({ board: board(), listen: '127.0.0.1:0', token: 'short' }), /--ui-token: use 16 to 256 characters/);
  });

  it('an address other than loopback gets a generated token (decided without binding one: tests stay on 127.0.0.1)', () => {
    const token = serverToken(parseListen('0.0.0.0:0'), {});
    assert.match(token!, /^[A-Za-z0-9_-]{24}$/);
    assert.notEqual(serverToken(parseListen('192.168.7.1:80'), {}), token, 'a fresh one each time');
    assert.equal(serverToken(parseListen('127.0.0.1:0'), {}), undefined);
    assert.equal(serverToken(parseListen('0.0.0.0:0'), { token: 'a'.repeat(16) }), 'a'.repeat(16));
  });

  it('streams the status, then the sites that change; a closed client leaves no open stream', async () => {
    const b = board();
    server = await LiveServer.start({ board: b, listen: '127.0.0.1:0', throttleMs: 20 });
    const url = `http://127.0.0.1:${server.address.port}/api/events`;
    const tabs = [stream(url), stream(url)];
    await until('two open streams', () => server!.openStreams === 2, 5000);
    await until('the first status', () => tabs.every((t) => t.events.length === 1), 5000);
    assert.equal(tabs[0].events[0].event, 'status');
    const feed = b.site({ id: 'site-0', algorithm: 'dflmoe', rounds: 3 });
    // Three changes within the throttle reach a client as one update with the newest status.
    feed.round({ round: 1, accuracy: 0.5, loss: 1, seconds: 0.1, bytesSent: 1, bytesReceived: 1 });
    feed.round({ round: 2, accuracy: 0.6, loss: 1, seconds: 0.1, bytesSent: 2, bytesReceived: 2 });
    feed.state('done');
    await until('an update', () => tabs.every((t) => t.events.length >= 2), 5000);
    const upd = tabs[0].events[1];
    assert.equal(upd.event, 'update');
    const sites = (upd.data as StatusSnapshot).sites;
    assert.deepEqual(
      sites.map((s) => [siteKey(s), s.round, s.state]),
      [['dflmoe/site-0', 2, 'done']],
    );
    tabs[0].close();
    await until('one stream left', () => server!.openStreams === 1, 5000);
    tabs[1].close();
    await until('no stream left', () => server!.openStreams === 0, 5000);
    // More streams than allowed: 503, the others keep theirs.
    await server.close();
    server = await LiveServer.start({ board: b, listen: '127.0.0.1:0', maxStreams: 1 });
    const one = stream(`http://127.0.0.1:${server.address.port}/api/events`);
    await until('one stream', () => server!.openStreams === 1, 5000);
    assert.equal((await http(`http://127.0.0.1:${server.address.port}/api/events`)).status, 503);
    one.close();
    await until('no stream left', () => server!.openStreams === 0, 5000);
  });

  it('a client that stops reading is dropped, not buffered for', async function () {
    this.timeout(60000);
    const b = new StatusBoard();
    const base = b.site({ id: 'long', algorithm: 'dflmoe', rounds: 1_000_000 }).status;
    const rounds = 50000;
    const big = (r: number) => ({
      ...base,
      round: r,
      accuracy: Array(rounds).fill(0.123456789),
      loss: Array(rounds).fill(1.23456789),
      seconds: Array(rounds).fill(0.5),
      finishedAt: Array(rounds).fill(Date.now()),
      updatedAt: Date.now() + r,
    });
    b.put(big(1));
    server = await LiveServer.start({ board: b, listen: '127.0.0.1:0', throttleMs: 1 });
    const port = server.address.port;
    const sock = connect(port, '127.0.0.1', () => sock.write(`GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`));
    sock.pause();
    try {
      await until('the stream', () => server!.openStreams === 1, 5000);
      // Events of about 3 MB each that nobody reads: the socket's buffers fill, then the server lets the client go.
      for (let i = 2; i < 60 && server.openStreams > 0; i++) {
        b.put(big(i));
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(server.openStreams, 0);
    } finally {
      sock.destroy();
    }
  });

  it('a port in use is a LiveViewError naming the option', async () => {
    const busy = await occupy();
    try {
      await assert.rejects(
        LiveServer.start({ board: board(), listen: `127.0.0.1:${portOf(busy)}`, option: 'ui.listen' }),
        (e: Error) => e instanceof LiveViewError && e.message === `ui.listen 127.0.0.1:${portOf(busy)}: the port is in use; choose another port for ui.listen`,
      );
    } finally {
      busy.close();
    }
  });

  it('another process follows a view: statuses copied, junk refused, unfinished sites marked at the end', async () => {
    const src = new StatusBoard();
    const feed = src.site({ id: 'site-1', algorithm: 'gossip', rounds: 4 });
    server = await LiveServer.start({ board: src, listen: '127.0.0.1:0', throttleMs: 10 });
    const dst = new StatusBoard({ epsilonBudget: 3 });
    const remote = new RemoteSites(dst, { retryMs: 50 });
    remote.follow({ url: `http://127.0.0.1:${server.address.port}` });
    await until('the site copied', () => dst.get('gossip/site-1') !== undefined, 5000);
    feed.round({ round: 1, accuracy: 0.9, loss: 0.2, seconds: 1, bytesSent: 10, bytesReceived: 20 });
    await until('round 1 copied', () => dst.get('gossip/site-1')!.round === 1, 5000);
    assert.equal(dst.get('gossip/site-1')!.epsilonBudget, 3);
    remote.stop('failed', 'the site process ended without a word');
    assert.equal(dst.get('gossip/site-1')!.state, 'failed');
    // A stream that sends something else than statuses changes nothing.
    const fake = createServer((sock) => {
      sock.on('data', () =>
        sock.end(
          'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: status\ndata: {"sites":[{"id":"<b>x</b>"}]}\n\nevent: update\ndata: not json\n\n',
        ),
      );
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const other = new StatusBoard();
    const r2 = new RemoteSites(other, { retryMs: 50 });
    r2.follow({ url: `http://127.0.0.1:${portOf(fake)}` });
    await until('both refused', () => (r2.refused.get('not-a-status') ?? 0) >= 1 && (r2.refused.get('not-json') ?? 0) >= 1, 5000);
    r2.stop();
    fake.close();
    assert.equal(other.snapshot().sites.length, 0);
  });
});

describe('live view: command line', () => {
  it('simulate --ui --ui-keep serves the finished run until Ctrl-C, then exits 0; --ui-keep without --ui is refused', async function () {
    this.timeout(120000);
    const out = mkdtempSync(join(tmpdir(), 'dflmoe-live-keep-'));
    const p = spawn(
      process.execPath,
      [
        ...cliCommand(),
        'simulate',
        '--dataset',
        'synthetic:classes=2,dim=4,samples=120',
        '--peers',
        '2',
        '--rounds',
        '2',
        '--algorithms',
        'dflmoe',
        '--quiet',
        '--ui',
        '127.0.0.1:0',
        '--ui-keep',
        '--out',
        out,
      ],
      { env: { ...process.env, DFLMOE_LOG_LEVEL: 'warn' } },
    );
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code)));
    try {
      await until('the run to end', () => /still serving/.test(stderr), 100000);
      const url = /live view: the run has ended; still serving (http:\/\/127\.0\.0\.1:\d+\/) until Ctrl-C/.exec(stderr)![1];
      const status = await http(`${url}api/status`);
      assert.equal(status.status, 200);
      const sites = (JSON.parse(status.body) as StatusSnapshot).sites;
      assert.deepEqual(
        sites.map((x) => [x.state, x.round]),
        [
          ['done', 2],
          ['done', 2],
        ],
      );
      p.kill('SIGINT');
      assert.equal(await exited, 0, stderr);
      await assert.rejects(http(`${url}api/status`), /ECONNREFUSED/);
    } finally {
      p.kill('SIGKILL');
    }
    const plain = cli([
      'simulate',
      '--dataset',
      'synthetic:classes=2,dim=4,samples=120',
      '--peers',
      '2',
      '--rounds',
      '1',
      '--algorithms',
      'local',
      '--quiet',
      '--ui-keep',
      '--out',
      out,
    ]);
    assert.equal(plain.stderr, 'dflmoe: error: --ui-keep keeps the live view of --ui: give --ui <host:port> too\n');
  });

  it('simulate --ui on a port in use: one line naming --ui, before any training', async () => {
    const busy = await occupy();
    try {
      const r = cli([
        'simulate',
        '--dataset',
        'breast-cancer',
        '--peers',
        '2',
        '--rounds',
        '2',
        '--algorithms',
        'local',
        '--ui',
        `127.0.0.1:${portOf(busy)}`,
        '--out',
        mkdtempSync(join(tmpdir(), 'dflmoe-live-')),
      ]);
      assert.equal(r.status, 1);
      assert.equal(r.stderr, `dflmoe: error: --ui 127.0.0.1:${portOf(busy)}: the port is in use; choose another port for --ui\n`);
      assert.equal(r.stdout, '');
    } finally {
      busy.close();
    }
  });

  it('peer with ui.listen in its config on a port in use: one line naming ui.listen, before any training', async () => {
    const busy = await occupy();
    try {
      const dir = mkdtempSync(join(tmpdir(), 'dflmoe-live-peer-'));
      const files = await writeConsortium({
        dir,
        algorithm: 'local',
        sim: { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', peers: 1, rounds: 2, algorithms: ['local'] },
      });
      const cfgFile = files.sites[0].config;
      const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
      writeFileSync(cfgFile, JSON.stringify({ ...cfg, ui: { listen: `127.0.0.1:${portOf(busy)}` } }));
      const r = cli(['peer', '--config', cfgFile]);
      assert.equal(r.status, 1);
      assert.equal(r.stderr, `dflmoe: error: ui.listen 127.0.0.1:${portOf(busy)}: the port is in use; choose another port for ui.listen\n`);
      const r2 = cli(['peer', '--config', cfgFile, '--ui', 'nonsense:port']);
      assert.equal(r2.status, 1);
      assert.match(r2.stderr, /^dflmoe: error: --ui "nonsense:port": the port must be a number from 0 to 65535\n$/);
    } finally {
      busy.close();
    }
  });
});
