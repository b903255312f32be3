/**
 * Multi-process consortium tests over TCP on 127.0.0.1. Every wait is
 * bounded; every process is killed in `afterEach` whatever happens.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, type AlgorithmName, type SimulationConfig } from '@dflmoe/core';
import { startProcess, waitExit, writeConsortium, type ConsortiumFiles } from '@dflmoe/cli/internal';
import type { RoundLine } from '@dflmoe/p2p';

const sim = (o: Partial<SimulationConfig> = {}): SimulationConfig => ({
  ...DEFAULT_SIMULATION,
  dataset: 'breast-cancer',
  peers: 4,
  rounds: 10,
  partition: 'dirichlet:0.5',
  seed: 3,
  ...o,
});

function lines(file: string): RoundLine[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | false>, timeoutMs: number): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('consortium over TCP (multi-process)', function () {
  this.timeout(240000);
  let procs: ChildProcess[] = [];
  const start = (args: string[], log?: string) => {
    const p = startProcess(args, log, { DFLMOE_LOG_LEVEL: 'info' });
    procs.push(p);
    return p;
  };
  afterEach(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    procs = [];
  });

  async function consortium(
    alg: AlgorithmName,
    o: Partial<SimulationConfig>,
    extra: { deadlineMs?: number; quorum?: number; lingerMs?: number } = {},
  ): Promise<ConsortiumFiles> {
    const dir = mkdtempSync(join(tmpdir(), `dflmoe-${alg}-`));
    return writeConsortium({ dir, algorithm: alg, sim: sim(o), deadlineMs: extra.deadlineMs ?? 5000, quorum: extra.quorum, lingerMs: extra.lingerMs ?? 1500 });
  }
  const metrics = (s: { out: string }) => join(s.out, 'metrics.jsonl');

  it('4 peers finish 10 rounds; each ends with experts from all 3 others', async () => {
    const f = await consortium('dflmoe', {});
    const ps = f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    const codes = await Promise.all(ps.map((p) => waitExit(p, 180000)));
    assert.deepEqual(codes, [0, 0, 0, 0], 'every peer exits cleanly');
    for (const s of f.sites) {
      const ls = lines(metrics(s));
      assert.equal(ls.length, 10);
      const last = ls.at(-1)!;
      const others = f.sites
        .filter((o) => o !== s)
        .map((o) => o.peerId)
        .sort();
      assert.deepEqual(last.experts.map((e) => e.peer).sort(), others, `experts of ${s.peerId}`);
      for (const e of last.experts) assert.ok(e.version >= 8, `expert version ${e.version} is fresh`);
      assert.ok(last.accuracy > 0.8);
      assert.ok(last.bytesReceived > 0 && last.bytesSent > 0);
    }
  });

  it('a peer killed with SIGKILL at round 3: the others finish every round and its expert ages out', async () => {
    // Three peers: the victim and two that go on (a fourth would only add a process).
    const f = await consortium('dflmoe', { peers: 3, maxStaleness: 2 }, { deadlineMs: 2000 });
    const ps = f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    const victim = f.sites[2];
    await until('the victim to reach round 3', () => lines(metrics(victim)).length >= 3, 60000);
    ps[2].kill('SIGKILL');
    const codes = await Promise.all(ps.slice(0, 2).map((p) => waitExit(p, 120000)));
    assert.deepEqual(codes, [0, 0]);
    for (const s of f.sites.slice(0, 2)) {
      const ls = lines(metrics(s));
      assert.equal(ls.length, 10, 'no round skipped, no hang');
      const withVictim = ls.filter((l) => l.experts.some((e) => e.peer === victim.peerId));
      assert.ok(withVictim.length > 0, 'the victim was an expert before it died');
      const lastSeen = withVictim.at(-1)!;
      const lastVersionRound =
        ls.findIndex((l) =>
          l.experts.some(
            (e) =>
              e.peer === victim.peerId &&
              e.version === Math.max(...withVictim.flatMap((w) => w.experts.filter((e2) => e2.peer === victim.peerId).map((e2) => e2.version))),
          ),
        ) + 1;
      // It ages out within maxStaleness (2) rounds of its last update.
      assert.ok(lastSeen.round <= lastVersionRound + 2, `victim seen until round ${lastSeen.round}, last updated in round ${lastVersionRound}`);
      assert.ok(!ls.at(-1)!.experts.some((e) => e.peer === victim.peerId));
      assert.equal(ls.at(-1)!.experts.length, 1, 'the other survivor only');
    }
  });

  it('kill -9 mid-run and restart: the peer resumes from its last checkpoint with its expert pool, the others are unaffected', async () => {
    const f = await consortium('dflmoe', { peers: 3, rounds: 10, epochs: 4 }, { deadlineMs: 4000, lingerMs: 4000 });
    const ps = f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    const victim = f.sites[2];
    await until('the victim to finish round 3', () => lines(metrics(victim)).length >= 3, 90000);
    ps[2].kill('SIGKILL');
    await waitExit(ps[2], 10000);
    const doneBefore = lines(metrics(victim)).length;
    const again = start(['peer', '--config', victim.config], `${victim.out}-restart.log`);
    const codes = await Promise.all([ps[0], ps[1], again].map((p) => waitExit(p, 150000)));
    assert.deepEqual(codes, [0, 0, 0]);
    const log = readFileSync(`${victim.out}-restart.log`, 'utf8');
    const m = /resumed from round (\d+) \(its checkpoint, with (\d+) experts in the pool/.exec(log);
    assert.ok(m, log.slice(0, 2000));
    assert.ok(Number(m[1]) >= doneBefore - 1 && Number(m[1]) <= doneBefore + 1, `resumed at ${m[1]}, had finished ${doneBefore}`);
    assert.equal(Number(m[2]), 2, 'expert pool intact');
    assert.deepEqual(
      lines(metrics(victim)).map((l) => l.round),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      'every round once, none lost or repeated',
    );
    for (const l of lines(metrics(victim))) assert.ok((l.checkpointBytes ?? 0) > 1000 && (l.checkpointSeconds ?? -1) >= 0);
    // Bytes and time count the whole run: the restarted part adds to what the killed part had moved.
    const vl = lines(metrics(victim));
    for (let k = 1; k < vl.length; k++)
      assert.ok(vl[k].bytesSent >= vl[k - 1].bytesSent && vl[k].wallSeconds! > vl[k - 1].wallSeconds!, `round ${vl[k].round}: bytes and seconds so far go on`);
    for (const s of f.sites.slice(0, 2)) assert.equal(lines(metrics(s)).length, 10);
  });

  it('a hostile member sending garbage, truncated streams, oversized prefixes, NaN and wrong-shape heads changes nothing for the honest peers', async () => {
    const { spawn } = await import('node:child_process');
    // Well-separated synthetic classes: accuracy is high and stable, so run-to-run timing differences in
    // which head version a peer mixes do not move it, while a hostile head that got into a pool would.
    const make = () =>
      consortium(
        'dflmoe',
        { dataset: 'synthetic:classes=4,dim=16,samples=2400,separation=1', peers: 4, rounds: 6, partition: 'iid', epochs: 2 },
        { deadlineMs: 4000, quorum: 2, lingerMs: 2500 },
      );
    // Two consortia of the same data and settings, run at once (the suite's time): one clean, one with its fourth member hostile.
    const [fc, f] = [await make(), await make()];
    const run = async (c: ConsortiumFiles, withHostile: boolean) => {
      const honest = c.sites.slice(0, 3);
      let hostile: ChildProcess | undefined;
      if (withHostile) {
        hostile = spawn(
          process.execPath,
          [...process.execArgv, 'test/fixtures/hostile-peer.ts', '--config', c.sites[3].config, '--seconds', '60', '--classes', '4'],
          { stdio: 'ignore' },
        );
        procs.push(hostile);
      }
      const ps = honest.map((s) => start(['peer', '--config', s.config], `${s.out}-${withHostile ? 'hostile' : 'clean'}.log`));
      const codes = await Promise.all(ps.map((p) => waitExit(p, 150000)));
      hostile?.kill('SIGKILL');
      assert.deepEqual(codes, [0, 0, 0]);
      return honest.map((s) => lines(metrics(s)));
    };
    const [clean, attacked] = await Promise.all([run(fc, false), run(f, true)]);
    const honest = f.sites.slice(0, 3);
    const mean = (ls: RoundLine[][]) => ls.reduce((a, l) => a + l.at(-1)!.accuracy, 0) / ls.length;
    process.stdout.write(
      `      (honest mean accuracy: ${(100 * mean(clean)).toFixed(2)}% without, ${(100 * mean(attacked)).toFixed(2)}% with the hostile member)\n`,
    );
    for (const ls of attacked) {
      assert.equal(ls.length, 6, 'every round finished');
      for (const l of ls) assert.ok(!l.experts.some((e) => e.peer === f.sites[3].peerId), 'no hostile head in a pool');
      assert.equal(ls.at(-1)!.experts.length, 2);
    }
    const dropped = attacked.map((ls) => Object.values(ls.at(-1)!.dropped).reduce((a, b) => a + b, 0));
    assert.ok(
      dropped.every((d) => d > 0),
      `drops counted: ${dropped}`,
    );
    const logs = honest.map((s) => readFileSync(`${s.out}-hostile.log`, 'utf8'));
    assert.ok(
      logs.some((l) => /keeps sending bad data: disconnected and refused/.test(l)),
      'the hostile member was cut off',
    );
    assert.ok(Math.abs(mean(clean) - mean(attacked)) <= 0.01, `within 1 point: ${mean(clean)} vs ${mean(attacked)}`);
  });

  it('a peer started at round 5 receives the newest heads and finishes', async () => {
    // Early peers run 16 slower rounds (5 epochs each), so that the late one joins mid-run; the late one runs 6 (what is
    // checked is its first round, and that it runs them all), not many past the early ones' end, where each waits out the deadline.
    const LATE_ROUNDS = 6;
    const f = await consortium('dflmoe', { rounds: 16, epochs: 5 }, { deadlineMs: 1500, quorum: 2, lingerMs: 4000 });
    const lateCfg = JSON.parse(readFileSync(f.sites[3].config, 'utf8'));
    writeFileSync(f.sites[3].config, JSON.stringify({ ...lateCfg, rounds: LATE_ROUNDS }));
    const early = f.sites.slice(0, 3).map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    await until('round 5 at the first peers', () => f.sites.slice(0, 3).every((s) => lines(metrics(s)).length >= 5), 90000);
    const late = f.sites[3];
    const lp = start(['peer', '--config', late.config], `${late.out}.log`);
    const codes = await Promise.all([...early, lp].map((p) => waitExit(p, 120000)));
    assert.deepEqual(codes, [0, 0, 0, 0]);
    const ls = lines(metrics(late));
    assert.equal(ls.length, LATE_ROUNDS, 'the late peer runs all its rounds');
    const early2 = ls[0].experts;
    const got = new Set(early2.map((e) => e.peer));
    for (const s of f.sites.slice(0, 3)) assert.ok(got.has(s.peerId), `late peer got ${s.peerId}'s head before its first round`);
    for (const e of early2) assert.ok(e.version >= 5, `head version ${e.version} is the newest, not round 1`);
  });

  it('a node outside the consortium cannot connect, and no head of it enters any pool', async () => {
    const f = await consortium('dflmoe', { peers: 2, rounds: 6 }, { deadlineMs: 1500 });
    // The intruder has a valid config of its own that lists the members, but they do not list it.
    const dir = join(f.sites[0].out, '..');
    const { generateIdentity, saveIdentity } = await import('@dflmoe/p2p');
    const { freePort } = await import('@dflmoe/cli/internal');
    const id = await generateIdentity();
    saveIdentity(join(dir, 'intruder.key'), id.privateKey, true);
    const cfg0 = JSON.parse(readFileSync(f.sites[0].config, 'utf8'));
    const intruder = {
      ...cfg0,
      name: 'intruder',
      key: 'intruder.key',
      listen: [`/ip4/127.0.0.1/tcp/${await freePort()}`],
      out: 'intruder',
      members: [...cfg0.members, { peerId: id.peerId, addrs: [] }],
      data: { ...cfg0.data, simulate: { ...cfg0.data.simulate, index: 1, share: 'site-1.share' } },
      // The members never answer it: it agrees with itself after 3 s.
      preprocess: { deadlineMs: 3000 },
    };
    writeFileSync(join(dir, 'intruder.json'), JSON.stringify(intruder));
    const ip = start(['peer', '--config', join(dir, 'intruder.json')], join(dir, 'intruder.log'));
    const ps = f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    const codes = await Promise.all([...ps, ip].map((p) => waitExit(p, 120000)));
    assert.deepEqual(codes.slice(0, 2), [0, 0]);
    for (const s of f.sites) {
      for (const l of lines(metrics(s))) assert.ok(!l.experts.some((e) => e.peer === id.peerId), 'intruder head in a pool');
      assert.ok(lines(metrics(s)).at(-1)!.experts.length === 1);
      const log = readFileSync(`${s.out}.log`, 'utf8');
      assert.match(log, new RegExp(`refused (inbound|outbound) connection from non-member ${id.peerId}`));
    }
    const il = lines(join(dir, 'intruder', 'metrics.jsonl'));
    assert.ok(
      il.every((l) => l.experts.length === 0),
      'the intruder got no head either',
    );
  });

  it('dflmoe peer --metrics serves Prometheus metrics on 127.0.0.1, libp2p metrics included', async () => {
    const { freePort } = await import('@dflmoe/cli/internal');
    // Scraped from round 2 on: two more rounds and the linger keep the site up for the scrapes.
    const f = await consortium('dflmoe', { peers: 2, rounds: 4, epochs: 3 }, { deadlineMs: 3000, lingerMs: 3000 });
    const port = await freePort();
    const ps = [
      start(['peer', '--config', f.sites[0].config, '--metrics', String(port)], `${f.sites[0].out}.log`),
      start(['peer', '--config', f.sites[1].config], `${f.sites[1].out}.log`),
    ];
    const body = await until(
      'metrics with two rounds',
      async () => {
        try {
          const res = await fetch(`http://127.0.0.1:${port}/metrics`);
          const text = await res.text();
          const m = /^dflmoe_rounds_total (\d+)/m.exec(text);
          return m && Number(m[1]) >= 2 ? text : false;
        } catch {
          return false;
        }
      },
      90000,
    );
    assert.match(body, /^dflmoe_accuracy 0\.\d+/m);
    assert.match(body, /^dflmoe_experts 1$/m);
    assert.match(body, /^dflmoe_bytes\{direction="in"\} [1-9]\d*/m);
    assert.match(body, /^libp2p_/m, 'libp2p metrics');
    assert.match(body, /^dflmoe_process_/m, 'process metrics');
    assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
    assert.deepEqual(await Promise.all(ps.map((p) => waitExit(p, 120000))), [0, 0]);
  });

  it('gossip: 3 processes exchange whole models on the pull protocol, mix them every round and finish', async () => {
    const { simulate } = await import('@dflmoe/core');
    const cfg = sim({ peers: 3, rounds: 4, algorithms: ['gossip'] });
    const f = await consortium('gossip', cfg, { deadlineMs: 8000, lingerMs: 2500 });
    const ps = f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`));
    // One model message is about the size of the in-memory one (the sender id in its header is longer here): run while the processes run.
    const mem = await simulate(cfg, { logger: { debug() {}, info() {}, warn() {}, error() {} } });
    assert.deepEqual(await Promise.all(ps.map((p) => waitExit(p, 120000))), [0, 0, 0]);
    const model = mem.algorithms.gossip!.peers[0].bytesSent / (2 * 4);
    let sent = 0;
    let got = 0;
    for (const s of f.sites) {
      const ls = lines(metrics(s));
      assert.deepEqual(
        ls.map((l) => l.round),
        [1, 2, 3, 4],
      );
      // No two rounds in a row without another's model, and nearly all of the 8 models the others sent are taken in. A round's
      // count may be 1 and the next one 3, or 2 and then 0 (members a round ahead: their next models came before this site's
      // round ended, so the next round has nothing new and does not wait: seen once as 2,2,0,2 with 0.0 s waited), and a model
      // overtaken by the same member's newer one is refused as stale.
      const fresh = ls.map((l) => l.fresh);
      assert.ok(
        fresh.every((n, k) => n >= 1 || (k > 0 && fresh[k - 1] >= 1)) && fresh[0] >= 1 && fresh.reduce((a, b) => a + b, 0) >= 6,
        `models of both others mixed in: ${fresh}`,
      );
      assert.ok(!Object.keys(ls.at(-1)!.dropped).some((k) => k.startsWith('model:')), JSON.stringify(ls.at(-1)!.dropped));
      const res = JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8'));
      assert.equal(res.algorithm, 'gossip');
      assert.ok(res.accuracy > 0.8, `accuracy ${res.accuracy}`);
      assert.ok(res.bytesSent >= 2 * 3 * model && res.bytesSent <= 2 * 4 * (model + 256), `bytes sent ${res.bytesSent} vs model ${model}`);
      sent += res.bytesSent;
      got += res.bytesReceived;
    }
    assert.ok(got <= sent && got >= sent - 2 * (model + 256), `received ${got}, served ${sent}`);
  });

  for (const alg of ['fedrep', 'fedavg-ft'] as const) {
    it(`${alg} over libp2p (the FedAvg server and protocol) gives exactly the in-memory accuracy and bytes`, async () => {
      const { simulate } = await import('@dflmoe/core');
      const cfg = sim({ peers: 3, rounds: 3, algorithms: [alg] });
      const f = await consortium(alg, cfg);
      assert.equal(JSON.parse(readFileSync(f.server!.config, 'utf8')).algorithm, alg);
      const ps = [
        start(['server', '--config', f.server!.config], `${f.server!.out}.log`),
        ...f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`)),
      ];
      // The in-memory run while the processes run.
      const mem = await simulate(cfg, { logger: { debug() {}, info() {}, warn() {}, error() {} } });
      assert.deepEqual(await Promise.all(ps.map((p) => waitExit(p, 120000))), [0, 0, 0, 0]);
      f.sites.forEach((s, i) => {
        const ls = lines(metrics(s));
        assert.deepEqual(
          ls.map((l) => l.accuracy),
          mem.algorithms[alg]!.rounds.map((r) => r.peerAccuracy[i]),
          `site ${i}`,
        );
        const res = JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8'));
        assert.equal(res.bytesSent, mem.algorithms[alg]!.peers[i].bytesSent);
      });
    });
  }

  it('FedAvg over libp2p gives exactly the in-memory FedAvg accuracy for the same seed', async () => {
    const { simulate } = await import('@dflmoe/core');
    const cfg = sim({ peers: 3, rounds: 4, algorithms: ['fedavg'] });
    const f = await consortium('fedavg', cfg);
    const ps = [
      start(['server', '--config', f.server!.config], `${f.server!.out}.log`),
      ...f.sites.map((s) => start(['peer', '--config', s.config], `${s.out}.log`)),
    ];
    // The in-memory run while the processes run.
    const mem = await simulate(cfg, { logger: { debug() {}, info() {}, warn() {}, error() {} } });
    const codes = await Promise.all(ps.map((p) => waitExit(p, 120000)));
    assert.deepEqual(codes, [0, 0, 0, 0]);
    f.sites.forEach((s, i) => {
      const ls = lines(metrics(s));
      assert.equal(ls.length, 4);
      ls.forEach((l, r) => {
        const m = mem.algorithms.fedavg!.rounds[r].peerAccuracy[i];
        assert.ok(Math.abs(l.accuracy - m) <= 1e-9, `site ${i} round ${r + 1}: tcp ${l.accuracy} vs memory ${m}`);
      });
      // Same model bytes in both: one upload and one download per round.
      assert.equal(JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')).bytesSent, mem.algorithms.fedavg!.peers[i].bytesSent);
    });
  });
});
