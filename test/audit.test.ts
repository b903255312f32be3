/** The audit trail: hash chain and signatures, tampering reported with its line and round, and `dflmoe audit`. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUDIT_FILE, SiteAudit, generateIdentity, verifyAudit } from '@dflmoe/p2p/internal';
import { cli } from './helpers.js';

async function trail(rounds: number) {
  const dir = mkdtempSync(join(tmpdir(), 'dflmoe-audit-'));
  const id = await generateIdentity();
  const sources = {
    exchange: {
      receivedDigest: (p: string, v: number) => `${p}-${v}`.padEnd(64, '0'),
      takeReceived: () => [],
      published: () => ({ version: 1, digest: 'ab'.repeat(32) }),
    },
  };
  const a = await SiteAudit.open(dir, id.privateKey, id.peerId, 'dflmoe', 1, sources);
  for (let r = 1; r <= rounds; r++) {
    await a.round({ round: r, experts: [{ peer: 'p1', version: r }, { peer: 'p2', version: r - 1 }], privacy: { epsilon: r / 10, delta: 1e-5, steps: r * 10 } }, { digest: 'cd'.repeat(32) });
  }
  return { dir, id, file: join(dir, AUDIT_FILE), sources };
}

describe('audit trail', function () {
  // Two CLI runs from source: slow on a busy machine.
  this.timeout(180000);

  it('records each round (heads mixed with digests, own head, checkpoint, privacy) and verifies, also after a restart', async () => {
    const { dir, id, file, sources } = await trail(3);
    // A restart appends to the same chain.
    const again = await SiteAudit.open(dir, id.privateKey, id.peerId, 'dflmoe', 4, sources);
    await again.round({ round: 4, experts: [] });
    const r = await verifyAudit(file);
    assert.deepEqual(r.problems, []);
    assert.equal(r.site, id.peerId);
    assert.deepEqual(r.entries.map((e) => (e.kind === 'round' ? e.round : `start@${e.fromRound}`)), ['start@1', 1, 2, 3, 'start@4', 4]);
    const r2 = r.entries[2];
    assert.ok(r2.kind === 'round');
    assert.deepEqual(r2.mixed, [{ peer: 'p1', version: 2, digest: 'p1-2'.padEnd(64, '0') }, { peer: 'p2', version: 1, digest: 'p2-1'.padEnd(64, '0') }]);
    assert.deepEqual(r2.own, { version: 1, digest: 'ab'.repeat(32) });
    assert.equal(r2.checkpoint, 'cd'.repeat(32));
    assert.deepEqual(r2.privacy, { epsilon: 0.2, delta: 1e-5, steps: 20 });
  });

  it('a changed, removed or forged line is reported with its line and round', async () => {
    const { file } = await trail(5);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    // Line 4 is round 3: raise its privacy spend... the signature no longer matches.
    writeFileSync(file, [...lines.slice(0, 3), lines[3].replace('"epsilon":0.3', '"epsilon":0.01'), ...lines.slice(4)].join('\n') + '\n');
    let r = await verifyAudit(file);
    assert.deepEqual(r.problems, [{ line: 4, round: 3, reason: 'the signature does not match (the line was changed)' }, { line: 5, round: 4, reason: r.problems[1]?.reason }]);
    assert.match(r.problems[1].reason, /chain is broken/);
    // Drop round 2: the chain breaks at the line after the gap.
    writeFileSync(file, [...lines.slice(0, 2), ...lines.slice(3)].join('\n') + '\n');
    r = await verifyAudit(file);
    assert.equal(r.problems.length, 1);
    assert.equal(r.problems[0].round, 3);
    assert.match(r.problems[0].reason, /chain is broken/);
    // A line signed by another key, chained correctly, is still refused.
    const other = await generateIdentity();
    const forged = JSON.parse(lines[1]);
    forged.site = other.peerId;
    writeFileSync(file, [lines[0], JSON.stringify(forged), ...lines.slice(2)].join('\n') + '\n');
    r = await verifyAudit(file);
    assert.ok(r.problems.some((p) => p.line === 2 && p.round === 1 && /written for/.test(p.reason)), JSON.stringify(r.problems));
  });

  it('dflmoe audit prints the history, and exits 1 naming the tampered round', async () => {
    const { dir, file, id } = await trail(2);
    let r = cli(['audit', dir]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /round 1 +mixed \[p1 v1 p1-10000, p2 v0 p2-00000\] {2}own v1 abababab {2}checkpoint cdcdcdcd {2}epsilon 0\.100/);
    assert.match(r.stdout, new RegExp(`audit trail of ${id.peerId}: 3 entries \\(2 rounds\\); hash chain and signatures verified`));
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    writeFileSync(file, [lines[0], lines[1], lines[2].replace('"round":2', '"round":7')].join('\n') + '\n');
    r = cli(['audit', dir]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /TAMPERED line 3 \(round 7\): the signature does not match/);
    assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
  });
});
