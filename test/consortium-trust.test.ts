/**
 * Trust and operations over TCP on 127.0.0.1: a hostile FedAvg client, a
 * FedAvg server killed with SIGKILL and restarted, and reconnects that do
 * not get an honest member blocked. Every wait is bounded; every process is
 * killed in `afterEach` whatever happens.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, silentLogger, simulate, type SimulationConfig } from '@dflmoe/core';
import { waitExit, writeConsortium, type ConsortiumFiles } from '@dflmoe/cli/internal';
import {
  Libp2pHeadExchange,
  createSiteNode,
  generateIdentity,
  loopbackMembers,
  readJsonLines,
  type RoundLine,
  type ServerRoundLine,
} from '@dflmoe/p2p/internal';
import { processGroup, until } from './helpers.js';

const sim = (o: Partial<SimulationConfig> = {}): SimulationConfig => ({
  ...DEFAULT_SIMULATION,
  dataset: 'breast-cancer',
  peers: 4,
  rounds: 4,
  partition: 'dirichlet:0.5',
  seed: 5,
  algorithms: ['fedavg'],
  ...o,
});

const lines = <T = RoundLine>(file: string): T[] => readJsonLines<T>(file);

describe('trust and operations over TCP', function () {
  this.timeout(180000);
  const group = processGroup();
  const start = (args: string[], log?: string) => group.start(args, log);
  /** Processes this file spawns itself (the hostile client). */
  let procs: ChildProcess[] = [];
  afterEach(() => {
    group.kill();
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    procs = [];
  });

  it('a hostile FedAvg client (wrong sizes first, garbage, NaN, renamed tensors, 2^60 samples) changes nothing: the server runs on and the average is the honest one', async () => {
    // The server waits its whole deadline for the fourth client each round: keep it short (the quorum of 3 is waited for regardless).
    // Sites: quorum 2 (the honest others), so that preprocessing does not wait for the hostile client's summary.
    // Two consortia of the same data and settings, run at once (the suite's time): one clean, one with its fourth client hostile.
    const make = () =>
      writeConsortium({
        dir: mkdtempSync(join(tmpdir(), 'dflmoe-hostile-fedavg-')),
        algorithm: 'fedavg',
        sim: sim({ rounds: 3 }),
        deadlineMs: 2000,
        quorum: 2,
        serverQuorum: 3,
        lingerMs: 1000,
      });
    const [fc, f] = [await make(), await make()];
    const run = async (c: ConsortiumFiles, withHostile: boolean) => {
      const honest = c.sites.slice(0, 3);
      const tag = withHostile ? 'hostile' : 'clean';
      const server = start(['server', '--config', c.server!.config], `${c.server!.out}-${tag}.log`);
      if (withHostile) {
        // It needs no training, so it uploads first in round 1.
        const h = spawn(process.execPath, [...process.execArgv, 'test/fixtures/hostile-fedavg-client.ts', '--config', c.sites[3].config, '--seconds', '60'], {
          stdio: 'ignore',
        });
        procs.push(h);
      }
      const ps = honest.map((s) => start(['peer', '--config', s.config], `${s.out}-${tag}.log`));
      const codes = await Promise.all([server, ...ps].map((p) => waitExit(p, 120000)));
      assert.deepEqual(codes, [0, 0, 0, 0], `${tag}: server and honest clients exit cleanly`);
      return { sites: honest.map((s) => lines(join(s.out, 'metrics.jsonl'))), server: lines<ServerRoundLine>(join(c.server!.out, 'metrics.jsonl')) };
    };
    const [clean, attacked] = await Promise.all([run(fc, false), run(f, true)]);
    attacked.sites.forEach((ls, i) => {
      assert.deepEqual(
        ls.map((l) => l.round),
        [1, 2, 3],
      );
      assert.deepEqual(
        ls.map((l) => l.accuracy),
        clean.sites[i].map((l) => l.accuracy),
        `site ${i}: exactly the clean run's accuracy`,
      );
    });
    assert.deepEqual(
      attacked.server.map((l) => l.clients),
      [3, 3, 3],
      'only honest models averaged',
    );
    const dropped = attacked.server.at(-1)!.dropped;
    for (const reason of ['mismatch', 'magic', 'bad-request', 'nonfinite', 'header'])
      assert.ok((dropped[reason] ?? 0) > 0, `${reason} counted: ${JSON.stringify(dropped)}`);
    const log = readFileSync(`${f.server!.out}-hostile.log`, 'utf8');
    assert.match(log, /dropped FedAvg traffic from \S+: mismatch/);
    assert.match(log, /keeps sending bad data: disconnected and refused/);
  });

  it('a FedAvg server killed with SIGKILL and restarted resumes from its checkpoint; the run equals the in-memory FedAvg exactly', async () => {
    const cfg = sim({ peers: 3, rounds: 6, epochs: 2 });
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-server-kill-'));
    const f = await writeConsortium({ dir, algorithm: 'fedavg', sim: cfg, deadlineMs: 10000, lingerMs: 1500 });
    const server = start(['server', '--config', f.server!.config], `${f.server!.out}.log`);
    const ps = f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    const serverLines = join(f.server!.out, 'metrics.jsonl');
    await until('the server to finish round 2', () => lines(serverLines).length >= 2, 90000);
    server.kill('SIGKILL');
    await waitExit(server, 10000);
    const before = lines(serverLines).length;
    await new Promise((r) => setTimeout(r, 1000));
    const again = start(['server', '--config', f.server!.config], `${f.server!.out}-restart.log`);
    // The in-memory run while the restarted server and the clients finish.
    const mem = await simulate(cfg, { logger: silentLogger });
    const codes = await Promise.all([again, ...ps].map((p) => waitExit(p, 150000)));
    assert.deepEqual(codes, [0, 0, 0, 0]);
    const log = readFileSync(`${f.server!.out}-restart.log`, 'utf8');
    const m = /resumed from round (\d+) \(its checkpoint/.exec(log);
    assert.ok(m, log.slice(0, 2000));
    assert.ok(Number(m[1]) >= before - 1 && Number(m[1]) <= before + 1, `resumed at ${m[1]}, had finished ${before}`);
    assert.deepEqual(
      lines(serverLines).map((l) => l.round),
      [1, 2, 3, 4, 5, 6],
      'every server round once',
    );
    f.sites.forEach((s, i) => {
      const ls = lines(join(s.out, 'metrics.jsonl'));
      assert.deepEqual(
        ls.map((l) => l.round),
        [1, 2, 3, 4, 5, 6],
        `site ${i}: every round once`,
      );
      assert.deepEqual(
        ls.map((l) => l.accuracy),
        mem.algorithms.fedavg!.rounds.map((r) => r.peerAccuracy[i]),
        `site ${i}: the in-memory accuracies`,
      );
    });
  });

  it('reconnecting six times moves no head twice and never blocks an honest member', async () => {
    const ids = await Promise.all([generateIdentity(), generateIdentity()]);
    const allow = ids.map((i) => i.peerId);
    let ex: Libp2pHeadExchange[] = [];
    const nodes = await Promise.all(
      ids.map((i, k) => createSiteNode({ privateKey: i.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow, isBlocked: (p) => ex[k]?.isBlocked(p) ?? false })),
    );
    const members = ids.map((i) => ({ peerId: i.peerId, addrs: [] as string[] }));
    ex = nodes.map((n) => new Libp2pHeadExchange(n, { members, maxHeadBytes: 1 << 20, logger: silentLogger, maxStrikes: 3 }));
    for (const e of ex) await e.register();
    for (const n of nodes) await n.start();
    for (const e of ex) e.start();
    try {
      await ex[0].publish(new Uint8Array(5000).fill(1), 1);
      await nodes[1].dial(nodes[0].getMultiaddrs()[0]);
      assert.equal(await ex[1].waitForHeads(1, 10000), 1);
      ex[1].drain();
      const got = ex[1].stats().bytesReceived;
      for (let k = 0; k < 6; k++) {
        await nodes[1].hangUp(nodes[0].peerId);
        await until('disconnect', () => nodes[1].getConnections().length === 0, 5000);
        for (let t = 0; t < 20 && nodes[1].getConnections().length === 0; t++) {
          await nodes[1].dial(nodes[0].getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) }).catch(() => new Promise((r) => setTimeout(r, 200)));
        }
        await ex[1].settle(3000);
      }
      assert.equal(ex[1].stats().bytesReceived, got, 'the head it holds was not pulled again');
      assert.equal(
        ex[0].isBlocked(ids[1].peerId) || ex[1].isBlocked(ids[0].peerId),
        false,
        `nobody blocked (dropped: ${JSON.stringify([ex[0].dropped, ex[1].dropped])})`,
      );
      assert.equal((ex[1].dropped['old-version'] ?? 0) + (ex[1].dropped['blocked'] ?? 0), 0, JSON.stringify(ex[1].dropped));
      // A newer head still arrives.
      await ex[0].publish(new Uint8Array(5000).fill(2), 2);
      assert.equal(
        await ex[1].waitForHeads(1, 30000),
        1,
        `the newer head (dropped: ${JSON.stringify([ex[0].dropped, ex[1].dropped])}, connections ${nodes[1].getConnections().length})`,
      );
    } finally {
      for (const e of ex) await e.close();
      for (const n of nodes) await n.stop();
    }
  });

  it('a member whose gossip never arrives is polled: its new heads still come, and nothing is pulled twice', async () => {
    const { ids, nodes, exchanges: ex, stop } = await loopbackMembers(2, { maxHeadBytes: 1 << 20, logger: silentLogger, heartbeatMs: 100 });
    try {
      // Site 1 hears no announcement at all (as when gossip is lost): only polling can bring it heads.
      for (const t of nodes[1].services.pubsub.getTopics()) nodes[1].services.pubsub.unsubscribe(t);
      await nodes[1].dial(nodes[0].getMultiaddrs()[0]);
      await ex[1].settle(3000);
      assert.equal(ex[1].stats().bytesReceived, 0);
      await ex[0].publish(new Uint8Array(3000).fill(1), 1);
      assert.equal(await ex[1].waitForHeads(1, 10000), 1, 'version 1 arrived by polling');
      assert.ok(ex[1].polls > 0);
      assert.deepEqual(
        ex[1].drain().map((m) => m.payload[0]),
        [1],
      );
      await ex[0].publish(new Uint8Array(3000).fill(2), 2);
      assert.equal(await ex[1].waitForHeads(1, 10000), 1, 'version 2 too');
      assert.deepEqual(
        ex[1].drain().map((m) => m.payload[0]),
        [2],
      );
      // More polls find nothing newer: no bytes move.
      const got = ex[1].stats().bytesReceived;
      const polls = ex[1].polls;
      await until('more polls', () => ex[1].polls >= polls + 3, 10000);
      assert.equal(ex[1].stats().bytesReceived, got);
      assert.equal(ex[1].announced().get(ids[0].peerId), 2, 'a polled head counts as announced (expert choice sees it)');
    } finally {
      await stop();
    }
  });
});
