/**
 * A 4-site dFLMoE consortium over TCP, every site behind an emulated weak
 * link (1 MB/s per connection and direction, 100 ms round trip, 2% of
 * connections reset, and the first connection into site-1 reset for sure),
 * with adaptive round deadlines; once with float32 heads and once with
 * float16. Used by `npm run bench:links`.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_SIMULATION, type Precision, type SimulationConfig } from '@dflmoe/core';
import { emulateLinks, runConsortium, writeConsortium } from '@dflmoe/cli/internal';
import type { PeerRunResult, RoundLine } from '@dflmoe/p2p';

export interface SlowLinkOptions {
  log: (s: string) => void;
  rounds?: number;
  precisions?: Precision[];
  seed?: number;
}

export const SLOW_LINK = { bytesPerSecond: 1e6, rttMs: 100, resetProbability: 0.02, resetWithinMs: 30000 };

export async function slowLinkRun(o: SlowLinkOptions) {
  const rounds = o.rounds ?? 12;
  const runs: Record<string, unknown>[] = [];
  for (const precision of o.precisions ?? (['float32', 'float16'] as Precision[])) {
    const dir = mkdtempSync(join(tmpdir(), `dflmoe-slow-${precision}-`));
    const sim: SimulationConfig = {
      ...DEFAULT_SIMULATION,
      dataset: 'digits',
      peers: 4,
      rounds,
      partition: 'dirichlet:0.5',
      seed: o.seed ?? 1,
      algorithms: ['dflmoe'],
      bodies: ['mlp:128'],
      featureDim: 128,
      headHidden: [256],
      learningRate: 3e-3,
      headPrecision: precision,
    };
    const files = await writeConsortium({ dir, algorithm: 'dflmoe', sim, deadlineMs: 30000, lingerMs: 5000 });
    const links = await emulateLinks(files, { ...SLOW_LINK, forceResets: 0, seed: o.seed ?? 1 }, (cfg, i) => {
      cfg.round = { ...(cfg.round as object), adaptive: true, minDeadlineMs: 2000 };
      if (i === 1) cfg.lingerMs = 5000;
    });
    const t0 = performance.now();
    try {
      await runConsortium(files, 20 * 60 * 1000);
    } finally {
      await links.close();
    }
    const wall = (performance.now() - t0) / 1000;
    const res = files.sites.map((s) => JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')) as PeerRunResult);
    const lines: RoundLine[] = res.flatMap((r) => r.rounds);
    const later = res.flatMap((r) => r.rounds.filter((l) => l.round > 1));
    const complete = later.filter((l) => l.fresh >= 3);
    const withinDeadline = later.filter((l) => l.deadlineMs !== undefined && l.waitSeconds * 1000 <= l.deadlineMs + 250);
    const deadlines = later.map((l) => l.deadlineMs ?? 0);
    const headBytes = res.reduce((a, r) => a + r.bytesSent, 0) / (rounds * 4 * 3);
    const row = {
      precision,
      rounds,
      sites: 4,
      wallSeconds: wall,
      linkStats: links.stats(),
      roundsCompleted: Math.min(...res.map((r) => r.rounds.length)),
      siteRounds: later.length,
      allHeadsWithinDeadline: complete.length,
      waitWithinDeadline: withinDeadline.length,
      deadlineMs: { min: Math.min(...deadlines), median: [...deadlines].sort((a, b) => a - b)[Math.floor(deadlines.length / 2)], max: Math.max(...deadlines) },
      meanRoundSeconds: lines.reduce((a, l) => a + l.seconds, 0) / lines.length,
      meanWaitSeconds: later.reduce((a, l) => a + l.waitSeconds, 0) / later.length,
      headBytes,
      meanAccuracy: res.reduce((a, r) => a + r.accuracy, 0) / res.length,
    };
    runs.push(row);
    o.log(
      `slow link, ${precision}: ${row.roundsCompleted}/${rounds} rounds at every site; all 3 heads within the deadline in ${row.allHeadsWithinDeadline}/${row.siteRounds} site-rounds ` +
        `(waits within the deadline: ${row.waitWithinDeadline}/${row.siteRounds}); deadline ${row.deadlineMs.min}-${row.deadlineMs.max} ms (median ${row.deadlineMs.median}); ` +
        `head ${(headBytes / 1024).toFixed(1)} KiB; round ${row.meanRoundSeconds.toFixed(2)} s (wait ${row.meanWaitSeconds.toFixed(2)} s); ` +
        `${row.linkStats.connections} connections, ${row.linkStats.resets} reset; accuracy ${(100 * row.meanAccuracy).toFixed(2)}%; ${wall.toFixed(0)} s`,
    );
  }
  return {
    link: SLOW_LINK,
    settings: { dataset: 'digits', body: 'mlp:128', featureDim: 128, headHidden: [256], deadlineMs: 30000, minDeadlineMs: 2000, adaptive: true },
    runs,
  };
}
