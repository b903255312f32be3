/** Secure aggregation among peers: the protocol on its own (fixed point, masks, dropout recovery, thresholds, hostile input). */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FIXED_POINT,
  SecAggMember,
  boundSampleCounts,
  maskedDigest,
  decodeSecAgg,
  decodeSum,
  encodeFixed,
  encodeSecAgg,
  secAggGroups,
  secAggGroupOf,
  secAggThreshold,
  inputDigest,
  type SecAggGroup,
  type SecAggResult,
} from '@dflmoe/core/internal';
import { mutated } from './helpers.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `site-${String(i).padStart(2, '0')}`);
const group = (n: number, round = 3): SecAggGroup => secAggGroups(ids(n), round, n, 1)[0];

function inputs(n: number, length: number, seed: number): Float32Array[] {
  let x = seed;
  const next = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  return Array.from({ length: n }, () => Float32Array.from({ length }, () => next()));
}

function plainMean(values: Float32Array[], samples: number[]): Float64Array {
  const total = samples.reduce((a, b) => a + b, 0);
  const out = new Float64Array(values[0].length);
  values.forEach((v, i) => v.forEach((x, j) => (out[j] += (x * samples[i]) / total)));
  return out;
}

/** Deliver `msgs` (from member i) to every other live member; returns the refusals. */
function broadcast(members: SecAggMember[], msgs: (Uint8Array | undefined)[], alive: (i: number) => boolean = () => true): string[] {
  const refused: string[] = [];
  msgs.forEach((m, i) => {
    if (!m) return;
    members.forEach((r, j) => {
      if (j === i || !alive(j)) return;
      const got = r.receive(m, members[i].self);
      if (got !== 'ok') refused.push(`${members[i].self}->${r.self}: ${got}`);
    });
  });
  return refused;
}

/**
 * Run a round among `n` members with inputs `values`: members in `dropAfter[phase]` stop after sending that
 * phase's message (0: before advertising). Returns every live member's result.
 */
async function runRound(
  values: Float32Array[],
  samples: number[],
  dropAfter: Record<number, number[]> = {},
): Promise<{ members: SecAggMember[]; results: (SecAggResult | undefined)[] }> {
  const g = group(values.length);
  const members = await Promise.all(g.members.map((id, i) => SecAggMember.create(id, g, values[0].length, { samples: samples[i], arch: 'mlp' })));
  const gone = new Set<number>();
  const live = (i: number) => !gone.has(i);
  const step = async (phase: number, make: (m: SecAggMember) => Uint8Array | undefined | Promise<Uint8Array | undefined>) => {
    const msgs = await Promise.all(members.map(async (m, i) => (live(i) ? await make(m) : undefined)));
    const refused = broadcast(members, msgs, live);
    assert.deepEqual(refused, [], `phase ${phase}`);
    for (const i of dropAfter[phase] ?? []) gone.add(i);
  };
  for (const i of dropAfter[0] ?? []) gone.add(i);
  await step(1, (m) => m.advertise());
  await step(2, (m) => m.shareKeys());
  await step(3, (m) => m.maskedInput(values[members.indexOf(m)])?.message);
  await step(4, (m) => m.reveal());
  const results = await Promise.all(members.map((m, i) => (live(i) ? m.result() : undefined)));
  return { members, results };
}

function assertMean(r: SecAggResult | undefined, values: Float32Array[], samples: number[], who: number[]): Float32Array {
  assert.ok(r?.ok, r && !r.ok ? `${r.reason}: ${r.detail}` : 'no result');
  const want = plainMean(
    who.map((i) => values[i]),
    who.map((i) => samples[i]),
  );
  // Rounding: at most 2^-17 per member and coordinate (and the weight word's), divided by the total relative weight.
  const tol = ((who.length + 1) * 2 ** -17) / Math.min(1, r.weight);
  r.mean.forEach((x, j) => assert.ok(Math.abs(x - want[j]) < tol, `coordinate ${j}: ${x} against ${want[j]}`));
  return r.mean;
}

describe('secure aggregation', () => {
  it('fixed point: encoding then decoding a single input gives it back within the rounding step, clipped to the bound', () => {
    const v = Float32Array.from([0, 1e-6, -0.5, 3.25, 31.9, -40, 1000]);
    const { words, clipped } = encodeFixed(v, 1);
    assert.equal(clipped, 2);
    const d = decodeSum(words, 1);
    assert.ok(!('reason' in d));
    const want = [0, 1e-6, -0.5, 3.25, 31.9, -FIXED_POINT.clip, FIXED_POINT.clip];
    d.mean.forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 2 ** -17, `${i}: ${x}`));
    assert.ok('reason' in decodeSum(Uint32Array.from([0, 5]), 1), 'zero weight');
    assert.ok('reason' in decodeSum(Uint32Array.from([FIXED_POINT.weightScale, (100 * FIXED_POINT.scale) >>> 0]), 1), 'beyond the clip');
  });

  it('groups: every member in exactly one group of at least the size asked, the same draw at every site, re-drawn per round', () => {
    for (const [n, size] of [
      [10, 9],
      [50, 9],
      [7, 3],
      [5, 9],
      [300, 300],
    ] as const) {
      const gs = secAggGroups(ids(n), 4, size, 7);
      assert.deepEqual(gs.flatMap((g) => g.members).sort(), ids(n).sort());
      for (const g of gs) {
        assert.ok(g.members.length >= Math.min(size, n) || gs.length > 1, `${n}/${size}`);
        assert.ok(g.members.length <= 255);
        assert.equal(g.threshold, secAggThreshold(g.members.length));
      }
      if (n >= size && size < 255) assert.ok(gs.every((g) => g.members.length >= size));
      assert.deepEqual(secAggGroups([...ids(n)].reverse(), 4, size, 7), gs);
      assert.deepEqual(
        secAggGroupOf(
          ids(n)[3],
          ids(n).filter((m) => m !== ids(n)[3]),
          4,
          size,
          7,
        ).members,
        gs.find((g) => g.members.includes(ids(n)[3]))!.members,
      );
    }
    assert.notDeepEqual(
      secAggGroups(ids(50), 4, 9, 7).map((g) => g.members),
      secAggGroups(ids(50), 5, 9, 7).map((g) => g.members),
    );
    assert.equal(secAggThreshold(10), 7);
    assert.equal(secAggThreshold(3), 2);
  });

  it("the unmasked sum is the plain weighted mean up to fixed-point rounding, at every member, and no masked input is a member's input", async () => {
    const values = inputs(6, 200, 11);
    const samples = [120, 80, 200, 50, 90, 3000];
    const { members, results } = await runRound(values, samples);
    // 3000 rows are bounded to 10 times the median (as the plain mean bounds them).
    const bounded = boundSampleCounts(samples);
    assert.equal(bounded[5], 900);
    const means = results.map((r) => assertMean(r, values, bounded, [0, 1, 2, 3, 4, 5]));
    for (const m of means) assert.deepEqual(m, means[0], 'every member sums to the same bits');
    const own = new Set(values.map(inputDigest));
    for (const r of results) if (r?.ok) for (const d of r.digests.values()) assert.ok(!own.has(d));
    assert.equal(members.length, 6);
  });

  it('a member that drops after sending its masked input is recovered; one that drops after sharing its keys is unmasked away', async () => {
    const values = inputs(7, 64, 5);
    const samples = [100, 100, 100, 100, 100, 100, 100];
    const a = await runRound(values, samples, { 3: [2] });
    for (const [i, r] of a.results.entries()) if (i !== 2) assertMean(r, values, samples, [0, 1, 2, 3, 4, 5, 6]);
    const b = await runRound(values, samples, { 2: [4, 6] });
    for (const [i, r] of b.results.entries()) {
      if (i === 4 || i === 6) continue;
      const mean = assertMean(r, values, samples, [0, 1, 2, 3, 5]);
      assert.ok(r?.ok && r.dropped.join() === [b.members[4].self, b.members[6].self].join(), 'the dropped members are named');
      assert.ok(mean.length === 64);
    }
  });

  it('fewer than t survivors: every member refuses the round', async () => {
    const values = inputs(6, 16, 2);
    const samples = [10, 10, 10, 10, 10, 10];
    assert.equal(secAggThreshold(6), 4);
    // Three drop after sharing keys: 3 masked inputs < t = 4.
    const { results } = await runRound(values, samples, { 2: [0, 1, 2] });
    for (const r of results.slice(3)) {
      assert.ok(r && !r.ok);
      assert.match(r.reason, /^(not-masked|too-few)$/);
    }
    // Three never advertise: the others do not even share their keys.
    const g = group(6);
    const members = await Promise.all(g.members.map((id) => SecAggMember.create(id, g, 16, { samples: 10, arch: 'mlp' })));
    broadcast(
      members,
      members.map((m, i) => (i < 3 ? undefined : m.advertise())),
    );
    assert.equal(await members[4].shareKeys(), undefined);
  });

  it('fast-check: for any inputs, weights and dropouts within the threshold, the unmasked mean equals the plain mean', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 3, max: 8 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 0, max: 1000 }),
        fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 8, maxLength: 8 }),
        fc.integer({ min: 2, max: 3 }),
        fc.nat(),
        async (n, length, seed, rows, phase, pick) => {
          const values = inputs(n, length, seed);
          const samples = rows.slice(0, n);
          const drops = Math.min(n - secAggThreshold(n), 1 + (pick % 2));
          const dropped = Array.from({ length: drops }, (_, i) => (pick + i) % n);
          const { results } = await runRound(values, samples, { [phase]: dropped });
          // Members that drop after sharing their keys still count in the relative weights (bounded as a server bounds them).
          const weights = boundSampleCounts(samples);
          const survivors = [...Array(n).keys()].filter((i) => phase === 3 || !dropped.includes(i));
          for (const [i, r] of results.entries()) if (!dropped.includes(i)) assertMean(r, values, weights, survivors);
          return true;
        },
      ),
      { numRuns: 25 },
    );
  });
});

describe('secure aggregation: hostile input', () => {
  const g = group(4);
  const fresh = () => Promise.all(g.members.map((id) => SecAggMember.create(id, g, 8, { samples: 10, arch: 'mlp' })));

  it('fuzzing the decoder: random and mutated messages of every phase raise SecAggError or decode to a message that the member checks', async () => {
    const ms = await fresh();
    const adv = ms.map((m) => m.advertise());
    broadcast(ms, adv);
    const shares = await Promise.all(ms.map((m) => m.shareKeys()));
    broadcast(ms, shares);
    const masked = ms.map((m) => m.maskedInput(new Float32Array(8).fill(0.25))!.message);
    const reveal = ms.map((m) => m.reveal()!);
    for (const base of [adv[1], shares[1]!, masked[1], reveal[1]]) {
      const target = (await fresh())[0];
      fc.assert(
        fc.property(fc.oneof(mutated(base), fc.uint8Array({ maxLength: 400 })), (b) => {
          try {
            decodeSecAgg(b, { maxBytes: 1 << 20 });
          } catch (e) {
            if ((e as Error).name !== 'SecAggError') throw e;
          }
          const r = target.receive(b, g.members[1]);
          return typeof r === 'string';
        }),
        { numRuns: 1500 },
      );
    }
  });

  it('a share for the wrong round or group, a spoofed sender, changed keys, a bad ciphertext: refused with a reason', async () => {
    const ms = await fresh();
    const other = group(4, 4);
    const stranger = await SecAggMember.create(g.members[1], other, 8, { samples: 10, arch: 'mlp' });
    assert.equal(ms[0].receive(stranger.advertise(), g.members[1]), 'wrong-round');
    const g5 = secAggGroups([...ids(4), 'site-99'], 3, 5, 1)[0];
    const outsider = await SecAggMember.create(g.members[1], g5, 8, { samples: 10, arch: 'mlp' });
    assert.equal(ms[0].receive(outsider.advertise(), g.members[1]), 'wrong-group');
    assert.equal(ms[0].receive(ms[1].advertise(), g.members[2]), 'sender-mismatch');
    assert.equal(ms[0].receive(ms[1].advertise(), g.members[1]), 'ok');
    // The same member advertising other keys in the same round.
    const twin = await SecAggMember.create(g.members[1], g, 8, { samples: 10, arch: 'mlp' });
    assert.equal(ms[0].receive(twin.advertise(), g.members[1]), 'changed-keys');
    const otherArch = await SecAggMember.create(g.members[2], g, 8, { samples: 10, arch: 'cnn' });
    assert.equal(ms[0].receive(otherArch.advertise(), g.members[2]), 'other-architecture');
    // A low-order public key: found when the member agrees secrets (before sharing its keys), and its sender left out.
    const bad = decodeSecAgg(ms[3].advertise(), { maxBytes: 1 << 20 });
    bad.keys.s = new Uint8Array(32);
    const probe = (await fresh())[0];
    assert.equal(probe.receive(encodeSecAgg(bad), g.members[3]), 'ok');
    assert.equal(probe.receive(ms[1].advertise(), g.members[1]), 'ok');
    assert.equal(probe.receive(ms[2].advertise(), g.members[2]), 'ok');
    assert.ok(await probe.shareKeys());
    assert.deepEqual(probe.refusals(), [{ peer: g.members[3], reason: 'bad-key' }]);
    assert.deepEqual(probe.advertised(), g.members.slice(0, 3));
    assert.equal(probe.receive(encodeSecAgg(bad), g.members[3]), 'bad-key');
    // A ciphertext that does not decrypt.
    broadcast(
      ms,
      ms.map((m) => m.advertise()),
    );
    await Promise.all(ms.map((m) => m.shareKeys()));
    const sh = decodeSecAgg((await ms[1].shareKeys())!, { maxBytes: 1 << 20 });
    sh.shares!.get(g.members[0])![5] ^= 1;
    assert.equal(ms[0].receive(encodeSecAgg(sh), g.members[1]), 'bad-share');
  });

  it('a member that sends different masked bodies to different peers: the others refuse the round and name it', async () => {
    const ms = await fresh();
    broadcast(
      ms,
      ms.map((m) => m.advertise()),
    );
    broadcast(ms, await Promise.all(ms.map((m) => m.shareKeys())));
    const honest = ms.map((m, i) => m.maskedInput(new Float32Array(8).fill(0.1 * i))!.message);
    // Member 3 sends its real input to members 0 and 1 and another one (masked alike, a different body) to member 2.
    const forged = decodeSecAgg(honest[3], { maxBytes: 1 << 20 });
    forged.vector = forged.vector!.slice();
    forged.vector[4] = (forged.vector[4] + 12345) >>> 0;
    forged.masked = { ...forged.masked!, digest: maskedDigest(forged.vector) };
    const forgedBytes = encodeSecAgg(forged);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) if (i !== j) assert.equal(ms[j].receive(honest[i], ms[i].self), 'ok');
    for (const j of [0, 1]) assert.equal(ms[j].receive(honest[3], ms[3].self), 'ok');
    assert.equal(ms[2].receive(forgedBytes, ms[3].self), 'ok');
    // A second, different input from the same member to the same peer is refused at once.
    assert.equal(ms[2].receive(honest[3], ms[3].self), 'changed-input');
    const reveals = ms.map((m) => m.reveal());
    broadcast(ms.slice(0, 3), reveals.slice(0, 3));
    for (const m of ms.slice(0, 3)) {
      const r = await m.result();
      assert.ok(!r.ok && r.reason === 'equivocation', m.self);
      assert.deepEqual(r.faulty, [ms[3].self]);
    }
  });
});
