/** The audit trail: hash chain and signatures, tampering reported with its line and round, and `dflmoe audit`. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { AUDIT_FILE, SiteAudit, generateIdentity, verifyAudit, verifySiteAudit } from '@dflmoe/p2p/internal';
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
    await a.round(
      {
        round: r,
        experts: [
          { peer: 'p1', version: r },
          { peer: 'p2', version: r - 1 },
        ],
        privacy: { epsilon: r / 10, delta: 1e-5, steps: r * 10 },
      },
      { digest: 'cd'.repeat(32) },
    );
  }
  return { dir, id, file: join(dir, AUDIT_FILE), sources };
}

/**
 * A site directory as a run leaves it: a trail of `rounds` rounds, each
 * naming its checkpoint's digest, the newest two checkpoints' manifests, and
 * results.json with the trail's signed seal.
 */
async function siteDirectory(rounds: number, o: { results?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'dflmoe-audit-site-'));
  const id = await generateIdentity();
  const a = await SiteAudit.open(dir, id.privateKey, id.peerId, 'dflmoe', 1, {});
  for (let r = 1; r <= rounds; r++) {
    const path = join(dir, 'checkpoints', `round-${String(r).padStart(6, '0')}`);
    mkdirSync(path, { recursive: true });
    const manifest = JSON.stringify({ format: 1, round: r, files: {} });
    writeFileSync(join(path, 'manifest.json'), manifest);
    if (r > 2) rmSync(join(dir, 'checkpoints', `round-${String(r - 2).padStart(6, '0')}`), { recursive: true });
    await a.round({ round: r, experts: [] }, { digest: createHash('sha256').update(manifest).digest('hex') });
  }
  writeFileSync(join(dir, 'site.json'), JSON.stringify({ format: 1, peerId: id.peerId, names: { [id.peerId]: 'site-a' } }));
  if (o.results !== false) writeFileSync(join(dir, 'results.json'), JSON.stringify({ peerId: id.peerId, audit: await a.seal() }));
  const file = join(dir, AUDIT_FILE);
  return { dir, id, file, lines: readFileSync(file, 'utf8').split('\n').filter(Boolean) };
}

const keep = (file: string, lines: string[], n: number) => writeFileSync(file, lines.slice(0, n).join('\n') + '\n');

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
    assert.deepEqual(
      r.entries.map((e) => (e.kind === 'round' ? e.round : `start@${e.fromRound}`)),
      ['start@1', 1, 2, 3, 'start@4', 4],
    );
    const r2 = r.entries[2];
    assert.ok(r2.kind === 'round');
    assert.deepEqual(r2.mixed, [
      { peer: 'p1', version: 2, digest: 'p1-2'.padEnd(64, '0') },
      { peer: 'p2', version: 1, digest: 'p2-1'.padEnd(64, '0') },
    ]);
    assert.deepEqual(r2.own, { version: 1, digest: 'ab'.repeat(32) });
    assert.equal(r2.checkpoint, 'cd'.repeat(32));
    assert.deepEqual(r2.privacy, { epsilon: 0.2, delta: 1e-5, steps: 20 });
    assert.equal(r2.ownTasks, undefined, 'a one-task site has no task channels');
    assert.equal(r2.cross, undefined);
  });

  it("a multi-task site records each task channel's heads (with their task) and its own, and with crossTask the bundles its read-outs read", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-audit-tasks-'));
    const id = await generateIdentity();
    // Each channel knows the digests of what it carried: a head of another channel has none here.
    const channel = (tag: string, own?: number) => ({
      receivedDigest: (p: string, v: number) => (p.startsWith(tag) ? `${tag}-${p}-${v}`.padEnd(64, '0') : undefined),
      takeReceived: () => [],
      published: () => (own === undefined ? undefined : { version: own, digest: tag.repeat(64).slice(0, 64) }),
    });
    const a = await SiteAudit.open(dir, id.privateKey, id.peerId, 'dflmoe', 1, {
      exchange: channel('x'),
      tasks: { digit: channel('d', 2), high: channel('h') },
      cross: { ...channel('c', 2), used: () => [{ peer: 'c1', version: 2 }] },
    });
    await a.round({
      round: 2,
      experts: [
        { peer: 'd1', version: 2, task: 'digit' },
        { peer: 'h1', version: 1, task: 'high' },
        { peer: 'd2', version: 2, task: 'high' },
      ],
    });
    const r = await verifyAudit(join(dir, AUDIT_FILE));
    assert.deepEqual(r.problems, []);
    const e = r.entries[1];
    assert.ok(e.kind === 'round');
    assert.deepEqual(e.mixed, [
      { peer: 'd1', version: 2, digest: 'd-d1-2'.padEnd(64, '0'), task: 'digit' },
      { peer: 'h1', version: 1, digest: 'h-h1-1'.padEnd(64, '0'), task: 'high' },
      { peer: 'd2', version: 2, digest: null, task: 'high' },
    ]);
    assert.deepEqual(e.ownTasks, { digit: { version: 2, digest: 'd'.repeat(64) }, high: null });
    assert.deepEqual(e.cross, { mixed: [{ peer: 'c1', version: 2, digest: 'c-c1-2'.padEnd(64, '0') }], own: { version: 2, digest: 'c'.repeat(64) } });
  });

  it('a changed, removed or forged line is reported with its line and round', async () => {
    const { file } = await trail(5);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    // Line 4 is round 3: raise its privacy spend... the signature no longer matches.
    writeFileSync(file, [...lines.slice(0, 3), lines[3].replace('"epsilon":0.3', '"epsilon":0.01'), ...lines.slice(4)].join('\n') + '\n');
    let r = await verifyAudit(file);
    assert.deepEqual(r.problems, [
      { line: 4, round: 3, reason: 'the signature does not match (the line was changed)' },
      { line: 5, round: 4, reason: r.problems[1]?.reason },
    ]);
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
    assert.ok(
      r.problems.some((p) => p.line === 2 && p.round === 1 && /written for/.test(p.reason)),
      JSON.stringify(r.problems),
    );
  });

  it('a trail cut at its end verifies as a chain, but not against the checkpoint and the signed seal in results.json', async () => {
    const { dir, file, lines } = await siteDirectory(5);
    assert.equal(lines.length, 6);
    assert.deepEqual((await verifySiteAudit(dir)).problems, []);
    // The last line (round 5) removed: the chain alone is fine; the checkpoint of round 5 and the seal of 6 lines are not.
    keep(file, lines, 5);
    assert.deepEqual((await verifyAudit(file)).problems, []);
    let r = await verifySiteAudit(dir);
    assert.deepEqual(
      r.problems.map((p) => [p.line, p.round]),
      [
        [5, 4],
        [5, 4],
      ],
    );
    assert.match(r.problems[0].reason, /ends at round 4 but the newest checkpoint .*round-000005\) is of round 5: lines were removed from the end/);
    assert.match(r.problems[1].reason, /results\.json seals 6 lines, the trail has 5: 1 line\(s\) were removed/);
    // Half the trail kept (3 of 6 lines).
    keep(file, lines, 3);
    r = await verifySiteAudit(dir);
    assert.equal(r.problems.length, 2);
    assert.match(r.problems[1].reason, /seals 6 lines, the trail has 3: 3 line/);
    // The seal must be the site's: one signed by another key is reported, not trusted.
    keep(file, lines, 6);
    const res = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
    const other = await siteDirectory(5);
    res.audit = JSON.parse(readFileSync(join(other.dir, 'results.json'), 'utf8')).audit;
    writeFileSync(join(dir, 'results.json'), JSON.stringify(res));
    r = await verifySiteAudit(dir);
    assert.deepEqual(
      r.problems.map((p) => p.reason),
      ["results.json's audit seal is not signed by the site's key"],
    );
  });

  it('during a run (no results.json yet) the newest checkpoint alone shows a removed last line, and a replaced checkpoint', async () => {
    const { dir, file, lines } = await siteDirectory(4, { results: false });
    assert.deepEqual((await verifySiteAudit(dir)).problems, []);
    keep(file, lines, 4);
    let r = await verifySiteAudit(dir);
    assert.equal(r.problems.length, 1);
    assert.match(r.problems[0].reason, /ends at round 3 but the newest checkpoint .* is of round 4/);
    keep(file, lines, 5);
    writeFileSync(join(dir, 'checkpoints', 'round-000004', 'manifest.json'), JSON.stringify({ format: 1, round: 4, files: { x: 1 } }));
    r = await verifySiteAudit(dir);
    assert.deepEqual(
      r.problems.map((p) => [p.line, p.round]),
      [[5, 4]],
    );
    assert.match(r.problems[0].reason, /checkpoint digest of round 4 is not that of .*round-000004/);
  });

  it('a line torn by a crash is cut when the site starts again, and said so in the new start line', async () => {
    const { dir, id, file, sources } = await trail(2);
    const whole = readFileSync(file, 'utf8');
    appendFileSync(file, '{"kind":"round","site":"x","rou');
    let r = await verifyAudit(file);
    assert.deepEqual(
      r.problems.map((p) => [p.line, p.reason]),
      [
        [4, 'the last line is cut off (no newline)'],
        [4, 'not valid JSON'],
      ],
    );
    const again = await SiteAudit.open(dir, id.privateKey, id.peerId, 'dflmoe', 3, sources);
    await again.round({ round: 3, experts: [] });
    const text = readFileSync(file, 'utf8');
    assert.ok(text.startsWith(whole), 'the whole lines are kept as they were');
    r = await verifyAudit(file);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(
      r.entries.map((e) => (e.kind === 'start' ? (e.note ?? '') : e.round)),
      ['', 1, 2, 'removed 31 bytes of a line cut by a crash', 3],
    );
  });

  it("dflmoe audit reads a browser tab's zip, checks a site directory's end, and calls a CSV not a trail (one line)", async () => {
    const { dir, file, lines } = await siteDirectory(3);
    const zip = join(dir, 'dflmoe-site.zip');
    const entries: Record<string, Uint8Array> = {};
    for (const f of ['site.json', 'results.json', AUDIT_FILE, 'checkpoints/round-000002/manifest.json', 'checkpoints/round-000003/manifest.json']) {
      entries[`site/${f}`] = readFileSync(join(dir, f));
    }
    writeFileSync(zip, zipSync(entries));
    let r = cli(['audit', zip]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /audit trail of site-a \(.*\): 4 entries \(3 rounds\); hash chain and signatures verified; its end matches the checkpoint and results\.json/,
    );
    keep(file, lines, 3);
    r = cli(['audit', dir]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /TAMPERED line 3 \(round 2\): the trail ends at round 2 but the newest checkpoint/);
    const csv = join(dir, 'data.csv');
    writeFileSync(csv, 'age,bp\n1,2\n3,4\n');
    r = cli(['audit', csv]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /data\.csv is not a site directory, a site's zip or an audit trail/);
    assert.doesNotMatch(r.stderr, /TAMPERED/);
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
