/**
 * A site's audit trail: `<out>/audit.jsonl`, append-only, one JSON line per
 * event, hash-chained and signed with the site's Ed25519 key.
 *
 * Every line is a JSON object whose last two fields are `prev` (hex SHA-256
 * of the previous line's text, 64 zeros for the first) and `sig` (base64
 * Ed25519 signature, by the key of `site`, over the line's text without
 * `,"sig":...`). Lines:
 *
 * - `{"kind":"start","site","algorithm","time","fromRound",...}`: the site
 *   started (`fromRound` > 1 after resuming from a checkpoint);
 * - `{"kind":"round","site","round","time","mixed":[{"peer","version","digest"}],
 *    "own":{"version","digest"},"checkpoint":<digest|null>,"privacy":{"epsilon","delta","steps"}|null}`:
 *   what the site mixed this round (heads for dFLMoE, models for gossip, the
 *   global model for server algorithms; `digest` is the SHA-256 of the bytes
 *   received, null when unknown), the digest of what it sent, the digest of
 *   its checkpoint's manifest, and its privacy spend so far; sites that share
 *   bodies add `"bodies":[{"peer","version","digest"}]` (the members' bodies
 *   combined into theirs that round) and `"ownBody":{"version","digest"}`;
 *   a multi-task site names each mixed head's `task` (its digest from that
 *   task's channel) and adds `"ownTasks":{"<task>":{"version","digest"}}`;
 *   with `crossTask`, `"cross":{"mixed":[{"peer","version","digest"}],"own"}`
 *   (the members' bundles its read-outs read, the bundle it published).
 *
 * `verifyAudit` checks the chain and every signature and names the first
 * line (and round) that does not check out. A chain alone cannot show that
 * lines were removed from its end, so `verifySiteAudit` also checks the
 * trail against what the site wrote after it: the newest checkpoint (its
 * round and the digest of its manifest must be the trail's last round's) and
 * the seal in `results.json` (`audit`: the number of lines and the SHA-256 of
 * the last line when the run ended, signed with the site's key).
 */
import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, statSync, truncateSync } from 'node:fs';
import type { PrivateKey } from '@libp2p/interface';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { CHECKPOINT_DIR, listCheckpoints } from '@dflmoe/core/internal';

/** The audit trail's file name in a site's out directory. */
export const AUDIT_FILE = 'audit.jsonl';
const GENESIS = '0'.repeat(64);

/** A head (or body) a site mixed in a round: whose, which version, and its SHA-256. */
export interface AuditDigest {
  /** The member (peer ID) whose head, model or body it was; `server` for a FedAvg global model without a known server peer. */
  peer: string;
  /** Its version: the round it was published for. */
  version: number;
  /** null; | Hex SHA-256 of the bytes received; null where the site no longer holds them. */
  digest: string | null;
  /** A multi-task site's head: the task (its digest is from that task's channel). */
  task?: string;
}

/** What a site published on one channel: the version and its SHA-256 (hex). */
export interface AuditPublished {
  version: number;
  digest: string;
}

/**
 * What a site's audit trail records for one round: what it mixed, its own
 * head, its checkpoint and the privacy spent.
 */
export interface AuditRound {
  /** The round (from 1). */
  round: number;
  /** What the site took in: the experts it mixed (dFLMoE), the server's global model (FedAvg), else the models that arrived. */
  mixed: AuditDigest[];
  /** null; | The head or model this site published (or uploaded) this round; null when none. */
  own: { version: number; digest: string } | null;
  /** null; | Hex SHA-256 of the checkpoint manifest written after the round; null when none was written. */
  checkpoint: string | null;
  /** null; | With DP-SGD: privacy spent so far over the run (cumulative); null without. */
  privacy: { epsilon: number; delta: number; steps: number } | null;
  /** Sites that share bodies: the members' bodies combined into this site's body this round, and the body it published. */
  bodies?: AuditDigest[];
  /** null; | Sites that share bodies: the body this site published; null before it published one. */
  ownBody?: { version: number; digest: string } | null;
  /** A multi-task site (dFLMoE): the head each task published on its channel, by task; null before one was (the heads it mixed are in `mixed`, each with its task). */
  ownTasks?: Record<string, AuditPublished | null>;
  /** `crossTask`: the members' bundles of all their tasks' heads that the read-outs read, and the bundle this site published (null before it did). */
  cross?: { mixed: AuditDigest[]; own: AuditPublished | null };
}

/** One line of an audit trail: the start of a run, or a round. */
export type AuditEntry =
  | { kind: 'start'; site: string; time: string; algorithm: string; fromRound: number; note?: string }
  | ({ kind: 'round'; site: string; time: string } & AuditRound);

const sha256 = (s: string | Uint8Array) => createHash('sha256').update(s).digest('hex');

/** The text that is signed: the line without its `sig` field. */
function signedText(line: string): string | undefined {
  const m = /,"sig":"[A-Za-z0-9+/=]*"\}$/.exec(line);
  return m ? `${line.slice(0, m.index)}}` : undefined;
}

/**
 * The end of a trail when a run ended (`results.json`'s `audit`): how many
 * lines it had and the SHA-256 of the last one, signed (base64 Ed25519) by the
 * site's key over {@link sealText}. A trail that verifies but has fewer lines,
 * or another line there, was cut.
 */
export interface AuditSeal {
  /** Lines in the trail when the run ended. */
  lines: number;
  /** Hex SHA-256 of line `lines` (64 zeros for an empty trail). */
  hash: string;
  /** Base64 Ed25519 signature by the site's key over `sealText`. */
  sig: string;
}

/** The text an {@link AuditSeal} signs. */
export const sealText = (lines: number, hash: string): string => `dflmoe audit seal ${lines} ${hash}`;

export class AuditLog {
  private prev: string;
  private count: number;

  private constructor(
    private readonly file: string,
    private readonly key: PrivateKey,
    readonly site: string,
    prev: string,
    count: number,
  ) {
    this.prev = prev;
    this.count = count;
  }

  /**
   * Open (or create) the log of `site`. A last line cut by a crash (no
   * newline) is removed, and said so in the next `start` entry.
   */
  static open(file: string, key: PrivateKey, site: string): { log: AuditLog; tornBytes: number } {
    let prev = GENESIS;
    let tornBytes = 0;
    if (existsSync(file)) {
      const text = readFileSync(file, 'utf8');
      const end = text.lastIndexOf('\n') + 1;
      if (end < text.length) {
        tornBytes = Buffer.byteLength(text.slice(end));
        truncateSync(file, Buffer.byteLength(text.slice(0, end)));
      }
      const lines = text.slice(0, end).trimEnd().split('\n').filter(Boolean);
      if (lines.length) prev = sha256(lines.at(-1)!);
      return { log: new AuditLog(file, key, site, prev, lines.length), tornBytes };
    }
    return { log: new AuditLog(file, key, site, prev, 0), tornBytes };
  }

  /** The trail's end as it stands, signed: what `results.json` keeps so that removing lines at the end shows. */
  async seal(): Promise<AuditSeal> {
    const sig = Buffer.from(await this.key.sign(new TextEncoder().encode(sealText(this.count, this.prev)))).toString('base64');
    return { lines: this.count, hash: this.prev, sig };
  }

  /** Append one entry (signed, chained, fsynced). */
  async append(entry: AuditEntry): Promise<void> {
    const body = JSON.stringify({ ...entry, prev: this.prev });
    const sig = Buffer.from(await this.key.sign(new TextEncoder().encode(body))).toString('base64');
    const line = `${body.slice(0, -1)},"sig":"${sig}"}`;
    const fd = openSync(this.file, 'a');
    try {
      appendFileSync(fd, line + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    this.prev = sha256(line);
    this.count++;
  }
}

/** Where an audit trail does not check out, and why. */
export interface AuditProblem {
  /** 1-based line number. */
  line: number;
  /** The round of the entry, when the line could be read. */
  round?: number;
  /** What is wrong, in words. */
  reason: string;
}

/** The result of `verifyAudit`: the entries read and the problems found (none when the trail checks out). */
export interface AuditReport {
  /** The site (peer ID) the trail belongs to, as its first readable entry says. */
  site?: string;
  /** Every entry that could be read, in order. */
  entries: AuditEntry[];
  /** Every problem found, in line order; empty when the trail checks out. */
  problems: AuditProblem[];
}

/**
 * Check the chain and every signature of an audit log. Never throws for bad
 * content. `verified` (the live view's repeated checks): the SHA-256 of lines
 * whose signature checked out before, not verified again; lines that check
 * out now are added.
 */
export async function verifyAudit(file: string, verified?: Set<string>, tail?: AuditTail): Promise<AuditReport> {
  const entries: AuditEntry[] = [];
  const problems: AuditProblem[] = [];
  const hashes: string[] = [];
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  else if (lines.length) problems.push({ line: lines.length, reason: 'the last line is cut off (no newline)' });
  let prev = GENESIS;
  let site: string | undefined;
  let key: { verify(data: Uint8Array, sig: Uint8Array): boolean | Promise<boolean> } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const n = i + 1;
    let e: AuditEntry & { prev?: unknown; sig?: unknown };
    try {
      e = JSON.parse(line);
    } catch {
      problems.push({ line: n, reason: 'not valid JSON' });
      prev = sha256(line);
      hashes.push(prev);
      continue;
    }
    const round = typeof (e as { round?: unknown }).round === 'number' ? (e as { round: number }).round : undefined;
    const bad = (reason: string) => problems.push({ line: n, ...(round !== undefined ? { round } : {}), reason });
    if (e.prev !== prev)
      bad(
        i === 0
          ? 'the first line does not start the chain'
          : 'the chain is broken: prev is not the hash of the line before (a line was changed, removed or inserted)',
      );
    prev = sha256(line);
    hashes.push(prev);
    const known = verified?.has(prev) ?? false;
    if (typeof e.site !== 'string') {
      bad('no site');
      continue;
    }
    if (site === undefined) {
      site = e.site;
      try {
        key = peerIdFromString(site).publicKey;
      } catch {
        key = undefined;
      }
      if (!key) bad(`${site.slice(0, 80)} is not a peer ID with an Ed25519 key`);
    } else if (e.site !== site) {
      bad(`written for ${e.site.slice(0, 80)}, not ${site}`);
    }
    const signed = signedText(line);
    if (!signed || typeof e.sig !== 'string') bad('no signature');
    else if (key && !known && !(await checkSignature(key, signed, e.sig))) bad('the signature does not match (the line was changed)');
    else if (key) verified?.add(prev);
    const { prev: _p, sig: _s, ...entry } = e;
    entries.push(entry as AuditEntry);
  }
  if (tail) problems.push(...(await tailProblems(entries, hashes, key, tail)));
  return { site, entries, problems };
}

/** What a site wrote after its trail, to check the trail's end against (`verifySiteAudit` reads them from the site's directory). */
export interface AuditTail {
  /** `results.json`'s seal, when the site's run ended. */
  seal?: AuditSeal;
  /** The newest checkpoint: its round, the SHA-256 of its manifest and its path. */
  checkpoint?: { round: number; digest: string; path: string };
}

/** The round a trail ends at: its last round line's, or the round before where its last start line goes on. */
function lastRound(entries: AuditEntry[]): number {
  const e = entries.at(-1);
  if (!e) return 0;
  return e.kind === 'round' ? e.round : e.fromRound - 1;
}

/** Lines removed from the end of a trail, shown by the checkpoint and the seal the site wrote after them. */
async function tailProblems(
  entries: AuditEntry[],
  hashes: string[],
  key: { verify(data: Uint8Array, sig: Uint8Array): boolean | Promise<boolean> } | undefined,
  tail: AuditTail,
): Promise<AuditProblem[]> {
  const out: AuditProblem[] = [];
  const n = hashes.length;
  const end = lastRound(entries);
  const c = tail.checkpoint;
  if (c && c.round > end) {
    out.push({
      line: n,
      round: end,
      reason: `the trail ends at round ${end} but the newest checkpoint (${c.path}) is of round ${c.round}: lines were removed from the end (or the site stopped between the two writes; starting it again records that)`,
    });
  } else if (c) {
    const at = entries.findLastIndex((e) => e.kind === 'round' && e.round === c.round);
    const digest = at >= 0 ? (entries[at] as { checkpoint: string | null }).checkpoint : null;
    if (digest !== null && digest !== c.digest)
      out.push({
        line: at + 1,
        round: c.round,
        reason: `the checkpoint digest of round ${c.round} is not that of ${c.path} (the checkpoint or the line was replaced)`,
      });
  }
  const s = tail.seal;
  if (s) {
    const signed = key && typeof s.sig === 'string' && (await checkSignature(key, sealText(s.lines, s.hash), s.sig));
    if (!signed) out.push({ line: n, reason: "results.json's audit seal is not signed by the site's key" });
    else if (s.lines > n)
      out.push({ line: n, round: end, reason: `results.json seals ${s.lines} lines, the trail has ${n}: ${s.lines - n} line(s) were removed from the end` });
    else if (s.lines > 0 && hashes[s.lines - 1] !== s.hash)
      out.push({ line: s.lines, reason: `line ${s.lines} is not the one results.json seals (lines were replaced at the end)` });
  }
  return out;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const readJsonOr = <T>(file: string): T | undefined => parseJson(readFileSync(file, 'utf8')) as T | undefined;

/** The newest checkpoint of a site directory with a readable manifest: its round, manifest digest and path. */
function newestCheckpoint(dir: string): AuditTail['checkpoint'] {
  const root = join(dir, CHECKPOINT_DIR);
  for (const round of listCheckpoints(root).reverse()) {
    const path = join(root, `round-${String(round).padStart(6, '0')}`);
    const mf = join(path, 'manifest.json');
    if (!existsSync(mf)) continue;
    const text = readFileSync(mf);
    const m = parseJson(text.toString('utf8')) as { round?: unknown } | undefined;
    if (typeof m?.round === 'number') return { round: m.round, digest: sha256(text), path };
  }
  return undefined;
}

/**
 * Verify a site directory's audit trail: the chain and every signature
 * (`verifyAudit`), and its end against the newest checkpoint and the seal
 * in `results.json`, so that lines removed from the end are reported too.
 */
export async function verifySiteAudit(dir: string, verified?: Set<string>): Promise<AuditReport> {
  const results = existsSync(join(dir, 'results.json')) ? readJsonOr<{ audit?: AuditSeal }>(join(dir, 'results.json')) : undefined;
  const checkpoint = newestCheckpoint(dir);
  return verifyAudit(join(dir, AUDIT_FILE), verified, { ...(results?.audit ? { seal: results.audit } : {}), ...(checkpoint ? { checkpoint } : {}) });
}

/** Whether `file` reads as an audit trail: its first line is a JSON object with a `kind` and a `prev` (a CSV or a zip does not). */
export function isAuditTrail(file: string): boolean {
  if (!existsSync(file) || !statSync(file).isFile()) return false;
  const first = readFileSync(file, 'utf8').split('\n', 1)[0];
  const e = parseJson(first);
  return typeof e === 'object' && e !== null && typeof (e as { kind?: unknown }).kind === 'string' && typeof (e as { prev?: unknown }).prev === 'string';
}

/** Whether `sig` (base64) signs `text`; false, not an exception, for a signature of the wrong length. */
async function checkSignature(key: { verify(data: Uint8Array, sig: Uint8Array): boolean | Promise<boolean> }, text: string, sig: string): Promise<boolean> {
  try {
    return await key.verify(new TextEncoder().encode(text), Buffer.from(sig, 'base64'));
  } catch {
    return false;
  }
}

/** Digest helper for what a site sends and receives. */
export const auditDigest = (bytes: Uint8Array): string => sha256(bytes);

/** What a channel knows of what it carried (`Libp2pHeadExchange`): digests of what arrived, and of what the site published. */
export interface AuditChannel {
  receivedDigest(peer: string, version: number): string | undefined;
  takeReceived(): AuditDigest[];
  published(): { version: number; digest: string } | undefined;
}

/** What a site's transport knows of what it sent and received (`Libp2pHeadExchange`, `Libp2pServerLink`). */
export interface AuditSources {
  exchange?: AuditChannel;
  /** A multi-task dFLMoE site: each task's head channel, by task. */
  tasks?: Record<string, AuditChannel>;
  /** `crossTask`: the cross-task channel, and the members' bundles (peer, round) the read-outs read now. */
  cross?: AuditChannel & { used(): { peer: string; version: number }[] };
  server?: { lastGlobal?: { round: number; digest: string }; lastUpload(): { round: number; digest: string } | undefined };
  serverPeer?: string;
  /** Sites that share bodies: the body exchange (what the site published). */
  bodies?: { published(): { version: number; digest: string } | undefined };
}

/** The audit trail of a running site: a `start` entry when opened, a `round` entry per round. */
export class SiteAudit {
  private constructor(
    private readonly log: AuditLog,
    private readonly sources: AuditSources,
  ) {}

  static async open(out: string, key: PrivateKey, site: string, algorithm: string, fromRound: number, sources: AuditSources): Promise<SiteAudit> {
    const { log, tornBytes } = AuditLog.open(join(out, AUDIT_FILE), key, site);
    await log.append({
      kind: 'start',
      site,
      time: new Date().toISOString(),
      algorithm,
      fromRound,
      ...(tornBytes ? { note: `removed ${tornBytes} bytes of a line cut by a crash` } : {}),
    });
    return new SiteAudit(log, sources);
  }

  /** The trail's end, signed (what `results.json` keeps as `audit`). */
  seal(): Promise<AuditSeal> {
    return this.log.seal();
  }

  /** Record round `m.round`: the experts in the pool (dFLMoE) or what arrived (gossip, server), what was sent, the checkpoint. */
  async round(
    m: {
      round: number;
      experts: { peer: string; version: number; task?: string }[];
      privacy?: { epsilon: number; delta: number; steps: number };
      bodies?: AuditDigest[];
    },
    checkpoint?: { digest: string },
  ): Promise<void> {
    const { exchange, server, serverPeer, tasks, cross } = this.sources;
    const arrived = exchange?.takeReceived() ?? [];
    // A multi-task site's experts came on their tasks' channels.
    const digestOf = (e: { peer: string; version: number; task?: string }) =>
      (e.task !== undefined && tasks ? tasks[e.task] : exchange)?.receivedDigest(e.peer, e.version) ?? null;
    const mixed: AuditDigest[] =
      m.experts.length > 0
        ? m.experts.map((e) => ({ peer: e.peer, version: e.version, digest: digestOf(e), ...(e.task !== undefined ? { task: e.task } : {}) }))
        : server?.lastGlobal
          ? [{ peer: serverPeer ?? 'server', version: server.lastGlobal.round, digest: server.lastGlobal.digest }]
          : arrived;
    const up = server?.lastUpload();
    const own = exchange?.published() ?? (up ? { version: up.round, digest: up.digest } : null);
    await this.log.append({
      kind: 'round',
      site: this.log.site,
      time: new Date().toISOString(),
      round: m.round,
      mixed,
      own,
      checkpoint: checkpoint?.digest ?? null,
      privacy: m.privacy ?? null,
      ...(this.sources.bodies ? { bodies: m.bodies ?? [], ownBody: this.sources.bodies.published() ?? null } : {}),
      ...(tasks ? { ownTasks: Object.fromEntries(Object.entries(tasks).map(([t, ch]) => [t, ch.published() ?? null])) } : {}),
      ...(cross ? { cross: crossEntry(cross) } : {}),
    });
  }
}

/** The cross-task channel's part of a round line: the bundles read, with the digests they arrived with, and the one published. */
function crossEntry(cross: NonNullable<AuditSources['cross']>): NonNullable<AuditRound['cross']> {
  return {
    mixed: cross.used().map((b) => ({ peer: b.peer, version: b.version, digest: cross.receivedDigest(b.peer, b.version) ?? null })),
    own: cross.published() ?? null,
  };
}
