/**
 * Secure aggregation among site processes over libp2p: four `dflmoe peer`
 * processes on 127.0.0.1 (fedrep-p2p, `bodies.secureAggregation`), one
 * killed with SIGKILL in the middle of a round. The survivors complete that
 * round and every later one and stop by themselves, and no survivor's
 * records hold the digest of any member's own body: what crossed the body
 * channel was masked. One set-up, bounded in time; every process is killed
 * in `after` whatever happens.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, type SimulationConfig } from '@dflmoe/core';
import { startProcess, waitExit, writeConsortium, type ConsortiumFiles } from '@dflmoe/cli/internal';
import { readJsonLines, verifySiteAudit, type RoundLine } from '@dflmoe/p2p/internal';
import { processGroup, until } from './helpers.js';

const ROUNDS = 6;
const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');

interface AuditRound {
  kind: string;
  round: number;
  bodies?: { peer: string; digest: string }[];
  ownBody?: { version: number; digest: string } | null;
}

describe('secure aggregation among site processes (libp2p)', function () {
  this.timeout(120000);
  const group = processGroup();
  after(() => group.kill());

  it("fedrep-p2p, 4 sites, one killed with SIGKILL mid-round: the others complete that round and every later one, and no one holds a member's body", async () => {
    const t0 = performance.now();
    const sim: SimulationConfig = {
      ...DEFAULT_SIMULATION,
      dataset: 'breast-cancer',
      peers: 4,
      rounds: ROUNDS,
      partition: 'iid',
      seed: 5,
      algorithms: ['fedrep-p2p'],
      secureAggregation: true,
    };
    // The deadline is far above a round (under a second here): a round that waited it out would break the time bound below.
    const f: ConsortiumFiles = await writeConsortium({
      dir: mkdtempSync(join(tmpdir(), 'dflmoe-secagg-')),
      algorithm: 'fedrep-p2p',
      sim,
      deadlineMs: 30000,
      lingerMs: 1000,
    });
    const cfg = JSON.parse(read(f.sites[0].config)) as { bodies?: { secureAggregation?: boolean } };
    assert.equal(cfg.bodies?.secureAggregation, true, 'the site configs turn secure aggregation on');
    const [victim, ...rest] = [f.sites[3], ...f.sites.slice(0, 3)];
    const ps = rest.map((s) => group.start(['peer', '--config', s.config], `${s.out}.log`));
    // The victim logs its phases (debug): it is killed once its keys of round 3 are out, somewhere in that round's masking.
    const vlog = `${victim.out}.log`;
    const vp = startProcess(['peer', '--config', victim.config], vlog, { DFLMOE_LOG_LEVEL: 'debug' });
    await until('the victim to reach round 3 of secure aggregation', () => /secure aggregation, round 3 phase 1:/.test(read(vlog)), 60000);
    vp.kill('SIGKILL');
    await waitExit(vp, 10000);
    const codes = await Promise.all(ps.map((p) => waitExit(p, 60000)));
    const seconds = (performance.now() - t0) / 1000;
    process.stdout.write(`      (killed in round 3; survivors done ${seconds.toFixed(1)} s after the start)\n`);
    assert.deepEqual(codes, [0, 0, 0], `every survivor stops by itself\n${rest.map((s) => read(`${s.out}.log`).slice(-800)).join('\n---\n')}`);
    assert.ok(seconds < 60, `${seconds.toFixed(1)} s`);

    // The round the victim died in: the first it did not record.
    const dead = readJsonLines<RoundLine>(join(victim.out, 'metrics.jsonl')).length + 1;
    assert.ok(dead >= 3 && dead < ROUNDS, `killed in round ${dead}`);
    const audits = [victim, ...rest].map((s) => readJsonLines<AuditRound>(join(s.out, 'audit.jsonl')).filter((e) => e.kind === 'round'));
    // Every member's own body as its trail records it (the victim's up to its death); none ever left its site.
    const ownBodies = new Set(audits.flatMap((a) => a.map((e) => e.ownBody?.digest)).filter((d): d is string => d !== undefined));
    assert.ok(ownBodies.size >= 3 * ROUNDS + dead - 1, `${ownBodies.size} own-body digests`);
    for (const [i, s] of rest.entries()) {
      const ls = readJsonLines<RoundLine>(join(s.out, 'metrics.jsonl'));
      assert.deepEqual(
        ls.map((l) => l.round),
        Array.from({ length: ROUNDS }, (_, k) => k + 1),
        `${s.out}: every round once`,
      );
      const results = JSON.parse(read(join(s.out, 'results.json'))) as { rounds: unknown[]; accuracy: number };
      assert.equal(results.rounds.length, ROUNDS);
      assert.ok(results.accuracy > 0.6, `${s.out}: accuracy ${results.accuracy}`);
      const others = rest
        .filter((o) => o !== s)
        .map((o) => o.peerId)
        .sort();
      for (const l of ls) {
        const peers = (l.bodies ?? []).map((b) => b.peer).sort();
        // Before the kill: the three others' masked bodies. After it: the two other survivors', every round.
        if (l.round < dead) assert.deepEqual(peers, [...others, victim.peerId].sort(), `${s.out} round ${l.round}`);
        else if (l.round > dead) assert.deepEqual(peers, others, `${s.out} round ${l.round}`);
      }
      for (const e of audits[i + 1]) {
        assert.ok(e.ownBody, `${s.out} round ${e.round}: the own body's digest is in the trail`);
        for (const b of e.bodies ?? []) assert.ok(!ownBodies.has(b.digest), `${s.out} round ${e.round}: received ${b.digest} is a member's own body`);
      }
      assert.deepEqual((await verifySiteAudit(s.out)).problems, [], `${s.out}: the audit trail verifies`);
    }
  });
});
