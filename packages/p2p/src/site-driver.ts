/**
 * The site driver: runs a site's rounds over any {@link SiteNetwork}, and
 * keeps what a run must not lose. It resumes from the newest good checkpoint,
 * writes one line per round to `<out>/metrics.jsonl`, saves a checkpoint and
 * an audit entry per round, and adds the bytes and seconds of a resumed run's
 * earlier parts. It knows nothing of libp2p: `runPeer` gives it a network
 * built on a node, and another transport would give it its own.
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prefixKeys, runSite, type AlgorithmSite, type SiteNetwork, type SiteRoundRecord } from '@dflmoe/core/internal';
import type { Logger } from '@dflmoe/core';
import { readJsonFile, readJsonLines, writeJsonLinesAtomic } from './files.js';
import type { AdaptiveDeadline } from './deadline.js';

/**
 * One round of a site, as a line of `metrics.jsonl`: the round loop's record
 * (`SiteRoundRecord`: accuracy, loss, experts, bytes so far, seconds, privacy
 * spent), its members named, and what the site adds: the transport's drops,
 * the checkpoint, the deadline, the time.
 */
export interface RoundLine extends Omit<SiteRoundRecord, 'experts' | 'bodies'> {
  /** dFLMoE: the experts in the pool, with the members' names. */
  experts: (SiteRoundRecord['experts'][number] & { name?: string })[];
  /** Sites that share bodies: the members' bodies combined this round (SHA-256 of what arrived), named. */
  bodies?: (NonNullable<SiteRoundRecord['bodies']>[number] & { name?: string })[];
  /** Input dropped so far by the transports and refused by the algorithm, by reason. */
  dropped: Record<string, number>;
  /** dFLMoE: time and size of this round's checkpoint. */
  checkpointSeconds?: number;
  /** ...and its size in bytes. */
  checkpointBytes?: number;
  /** With `round.adaptive`: the deadline this round's wait for heads had (ms). */
  deadlineMs?: number;
  /** Seconds since the site's run began (with the time of the earlier parts of a resumed run). */
  wallSeconds?: number;
  /** When the round finished (ISO 8601). */
  time: string;
}

/** Bytes and seconds of a run's earlier parts (zero for a run that did not resume). */
export interface EarlierParts {
  /** Bytes the earlier parts sent. */
  bytesSent: number;
  /** Bytes they received. */
  bytesReceived: number;
  /** The part of `bytesSent` that were bodies (sites that share bodies). */
  bodyBytesSent: number;
  /** The part of `bytesReceived` that were bodies. */
  bodyBytesReceived: number;
  /** Their wall-clock seconds. */
  seconds: number;
}

/** What the driver records each round in: the site's audit trail. */
export interface RoundAudit {
  /** Record a round's record, with its checkpoint's digest when one was saved. */
  round(m: SiteRoundRecord, checkpoint?: { digest: string }): Promise<void>;
}

/** How the driver runs a site. */
export interface SiteDriverOptions<A extends RoundAudit = RoundAudit> {
  /** The site's output directory: `metrics.jsonl`, `checkpoints/`, an earlier part's `results.json`. */
  out: string;
  /** The run's last round. */
  rounds: number;
  /** Save a checkpoint after every round, keeping the newest `keep`. */
  checkpoint: { enabled: boolean; keep: number };
  /** Resume from the newest good checkpoint in `out` (there is one). */
  resume: boolean;
  /** Where progress lines go (the resume, a missing checkpoint). */
  logger: Logger;
  /** Stops the run between rounds (it ends with `Interrupted`, what it finished saved). */
  signal?: AbortSignal;
  /** Members' names by peer ID, for the lines' experts and bodies. */
  names: ReadonlyMap<string, string | undefined>;
  /** Input the transports dropped so far, by reason; the algorithm's refusals are added as `<rejectedAs>:<reason>`. */
  dropped: () => Record<string, number>;
  /** The prefix of the algorithm's refusals in a line's `dropped` (what it receives: `head`, `model`, ...). */
  rejectedAs: string;
  /** Opens the audit trail once the first round of this part is known. */
  openAudit: (fromRound: number) => Promise<A>;
  /** With `round.adaptive`: the deadline, whose last wait each line reports. */
  adaptive?: AdaptiveDeadline;
  /** When the run began (`performance.now()`), for the lines' `wallSeconds`. */
  startedAt: number;
  /** Called once before the first round this part runs (`from`: 1, or the round after the checkpoint), when there is one. */
  beforeRounds?: (from: number) => Promise<void>;
  /** Called with each line: those a resumed run kept (`restored`), then each new one once it is written. */
  onLine?: (line: RoundLine, restored: boolean) => void | Promise<void>;
}

/** What the driver leaves: every round's line (earlier parts included) and what those parts moved and took. */
export interface DrivenSite<A extends RoundAudit = RoundAudit> {
  /** Every round's line, as in `metrics.jsonl`. */
  rounds: RoundLine[];
  /** What the earlier parts of a resumed run moved and took. */
  before: EarlierParts;
  /** The audit trail the run recorded its rounds in. */
  audit: A;
}

/** Run `site` over `net` from round 1, or from the round after its newest checkpoint, to `o.rounds`. */
export async function driveSite<A extends RoundAudit>(site: AlgorithmSite, net: SiteNetwork, o: SiteDriverOptions<A>): Promise<DrivenSite<A>> {
  const metricsFile = join(o.out, 'metrics.jsonl');
  const ckptDir = join(o.out, 'checkpoints');
  const checkpoint = o.checkpoint.enabled ? site.checkpoint : undefined;
  const { rounds, before, from } = await resumeSite(o, checkpoint);
  const audit = await o.openAudit(from);
  if (from <= o.rounds) await o.beforeRounds?.(from);
  await runSite(site, net, {
    from,
    rounds: o.rounds,
    signal: o.signal,
    onRound: async (m) => {
      const line = roundLine(m, o.names, { ...o.dropped(), ...prefixKeys(m.rejected, `${o.rejectedAs}:`) });
      if (o.adaptive?.history.length) line.deadlineMs = o.adaptive.history.at(-1)!.deadlineMs;
      addEarlierParts(line, before);
      line.wallSeconds = before.seconds + (performance.now() - o.startedAt) / 1000;
      const w = checkpoint ? await checkpoint.save(ckptDir, m.round, { line }, o.checkpoint.keep) : undefined;
      if (w) {
        line.checkpointSeconds = w.seconds;
        line.checkpointBytes = w.bytes;
      }
      await audit.round(m, w);
      rounds.push(line);
      appendFileSync(metricsFile, JSON.stringify(line) + '\n');
      await o.onLine?.(line, false);
    },
  });
  // Without per-round checkpoints, one of the final model, so that `dflmoe predict` can load it.
  if (!checkpoint && site.checkpoint && rounds.length > 0) await site.checkpoint.save(ckptDir, rounds.at(-1)!.round, { final: true }, 1);
  return { rounds, before, audit };
}

/**
 * Restore the newest good checkpoint when resuming, keeping the metrics lines
 * of the rounds it covers (and putting back its own round's line if a crash
 * lost it); else start `metrics.jsonl` afresh.
 */
async function resumeSite(
  o: SiteDriverOptions<RoundAudit>,
  checkpoint: AlgorithmSite['checkpoint'],
): Promise<{ rounds: RoundLine[]; before: EarlierParts; from: number }> {
  const metricsFile = join(o.out, 'metrics.jsonl');
  const restored = checkpoint && o.resume ? await checkpoint.restore(join(o.out, 'checkpoints'), o.logger) : undefined;
  if (!restored) {
    if (checkpoint && o.resume) o.logger.warn('no usable checkpoint: starting from round 1');
    writeFileSync(metricsFile, '');
    return { rounds: [], before: { bytesSent: 0, bytesReceived: 0, bodyBytesSent: 0, bodyBytesReceived: 0, seconds: 0 }, from: 1 };
  }
  const kept = readJsonLines<RoundLine>(metricsFile).filter((l) => l.round <= restored.round);
  if (!kept.some((l) => l.round === restored.round) && restored.extra.line) kept.push(restored.extra.line as RoundLine);
  writeJsonLinesAtomic(metricsFile, kept);
  for (const l of kept) await o.onLine?.(l, true);
  o.logger.info(`resumed from round ${restored.round} (its checkpoint, with ${restored.summary}: ${restored.path})`);
  return { rounds: kept, before: earlierParts(o.out, kept, restored.round), from: restored.round + 1 };
}

/** A resumed run reports the whole run: what its earlier parts moved is added to this part's counts. */
function addEarlierParts(line: RoundLine, before: EarlierParts): void {
  line.bytesReceived += before.bytesReceived;
  line.bytesSent += before.bytesSent;
  if (line.bodyBytesReceived !== undefined && line.bodyBytesSent !== undefined) {
    line.bodyBytesReceived += before.bodyBytesReceived;
    line.bodyBytesSent += before.bodyBytesSent;
  }
}

/**
 * What the earlier parts of a run resumed from the checkpoint of `round`
 * moved and took: an earlier part's results.json when it ended at that round
 * (its figures include what it served while lingering), else the round's
 * metrics line (bytes and seconds so far, including the parts before it).
 */
function earlierParts(out: string, lines: RoundLine[], round: number): EarlierParts {
  const done = readJsonFile<{
    rounds?: RoundLine[];
    bytesSent: number;
    bytesReceived: number;
    bodyBytesSent?: number;
    bodyBytesReceived?: number;
    wallSeconds: number;
  }>(join(out, 'results.json'));
  if (done?.rounds?.at(-1)?.round === round && Number.isFinite(done.bytesSent)) {
    return {
      bytesSent: done.bytesSent,
      bytesReceived: done.bytesReceived,
      bodyBytesSent: done.bodyBytesSent ?? 0,
      bodyBytesReceived: done.bodyBytesReceived ?? 0,
      seconds: done.wallSeconds,
    };
  }
  const l = lines.find((x) => x.round === round);
  return {
    bytesSent: l?.bytesSent ?? 0,
    bytesReceived: l?.bytesReceived ?? 0,
    bodyBytesSent: l?.bodyBytesSent ?? 0,
    bodyBytesReceived: l?.bodyBytesReceived ?? 0,
    seconds: l?.wallSeconds ?? 0,
  };
}

function roundLine(m: SiteRoundRecord, names: ReadonlyMap<string, string | undefined>, dropped: Record<string, number>): RoundLine {
  return {
    ...m,
    experts: m.experts.map((e) => ({ ...e, name: names.get(e.peer) })),
    ...(m.bodies ? { bodies: m.bodies.map((b) => ({ ...b, name: names.get(b.peer) })) } : {}),
    dropped,
    time: new Date().toISOString(),
  };
}
