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
 *   combined into theirs that round) and `"ownBody":{"version","digest"}`.
 *
 * `verifyAudit` checks the chain and every signature and names the first
 * line (and round) that does not check out.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, truncateSync } from 'node:fs';
import type { PrivateKey } from '@libp2p/interface';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';

/** The audit trail's file name in a site's out directory. */
export const AUDIT_FILE = 'audit.jsonl';
const GENESIS = '0'.repeat(64);

/** A head (or body) a site mixed in a round: whose, which version, and its SHA-256. */
export interface AuditDigest {
  peer: string;
  version: number;
  digest: string | null;
}

/**
 * What a site's audit trail records for one round: what it mixed, its own
 * head, its checkpoint and the privacy spent.
 */
export interface AuditRound {
  round: number;
  mixed: AuditDigest[];
  own: { version: number; digest: string } | null;
  checkpoint: string | null;
  privacy: { epsilon: number; delta: number; steps: number } | null;
  /** Sites that share bodies: the members' bodies combined into this site's body this round, and the body it published. */
  bodies?: AuditDigest[];
  ownBody?: { version: number; digest: string } | null;
}

/** One line of an audit trail: the start of a run, or a round. */
export type AuditEntry =
  | ({ kind: 'start'; site: string; time: string; algorithm: string; fromRound: number; note?: string })
  | ({ kind: 'round'; site: string; time: string } & AuditRound);

const sha256 = (s: string | Uint8Array) => createHash('sha256').update(s).digest('hex');

/** The text that is signed: the line without its `sig` field. */
function signedText(line: string): string | undefined {
  const m = /,"sig":"[A-Za-z0-9+/=]*"\}$/.exec(line);
  return m ? `${line.slice(0, m.index)}}` : undefined;
}

export class AuditLog {
  private prev: string;

  private constructor(private readonly file: string, private readonly key: PrivateKey, readonly site: string, prev: string) {
    this.prev = prev;
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
      const last = text.slice(0, end).trimEnd().split('\n').at(-1);
      if (last) prev = sha256(last);
    }
    return { log: new AuditLog(file, key, site, prev), tornBytes };
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
  }
}

/** Where an audit trail does not check out, and why. */
export interface AuditProblem {
  /** 1-based line number. */
  line: number;
  round?: number;
  reason: string;
}

/** The result of `verifyAudit`: the entries read and the problems found (none when the trail checks out). */
export interface AuditReport {
  site?: string;
  entries: AuditEntry[];
  problems: AuditProblem[];
}

/**
 * Check the chain and every signature of an audit log. Never throws for bad
 * content. `verified` (the live view's repeated checks): the SHA-256 of lines
 * whose signature checked out before, not verified again; lines that check
 * out now are added.
 */
export async function verifyAudit(file: string, verified?: Set<string>): Promise<AuditReport> {
  const entries: AuditEntry[] = [];
  const problems: AuditProblem[] = [];
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
      continue;
    }
    const round = typeof (e as { round?: unknown }).round === 'number' ? (e as { round: number }).round : undefined;
    const bad = (reason: string) => problems.push({ line: n, ...(round !== undefined ? { round } : {}), reason });
    if (e.prev !== prev) bad(i === 0 ? 'the first line does not start the chain' : 'the chain is broken: prev is not the hash of the line before (a line was changed, removed or inserted)');
    prev = sha256(line);
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
  return { site, entries, problems };
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

/** What a site's transport knows of what it sent and received (`Libp2pHeadExchange`, `Libp2pServerLink`). */
export interface AuditSources {
  exchange?: {
    receivedDigest(peer: string, version: number): string | undefined;
    takeReceived(): AuditDigest[];
    published(): { version: number; digest: string } | undefined;
  };
  server?: { lastGlobal?: { round: number; digest: string }; lastUpload(): { round: number; digest: string } | undefined };
  serverPeer?: string;
  /** Sites that share bodies: the body exchange (what the site published). */
  bodies?: { published(): { version: number; digest: string } | undefined };
}

/** The audit trail of a running site: a `start` entry when opened, a `round` entry per round. */
export class SiteAudit {
  private constructor(private readonly log: AuditLog, private readonly sources: AuditSources) {}

  static async open(
    out: string, key: PrivateKey, site: string, algorithm: string, fromRound: number, sources: AuditSources,
  ): Promise<SiteAudit> {
    const { log, tornBytes } = AuditLog.open(join(out, AUDIT_FILE), key, site);
    await log.append({
      kind: 'start', site, time: new Date().toISOString(), algorithm, fromRound,
      ...(tornBytes ? { note: `removed ${tornBytes} bytes of a line cut by a crash` } : {}),
    });
    return new SiteAudit(log, sources);
  }

  /** Record round `m.round`: the experts in the pool (dFLMoE) or what arrived (gossip, server), what was sent, the checkpoint. */
  async round(
    m: {
      round: number; experts: { peer: string; version: number }[]; privacy?: { epsilon: number; delta: number; steps: number };
      bodies?: AuditDigest[];
    },
    checkpoint?: { digest: string },
  ): Promise<void> {
    const { exchange, server, serverPeer } = this.sources;
    const arrived = exchange?.takeReceived() ?? [];
    const mixed: AuditDigest[] = m.experts.length > 0
      ? m.experts.map((e) => ({ peer: e.peer, version: e.version, digest: exchange?.receivedDigest(e.peer, e.version) ?? null }))
      : server?.lastGlobal
        ? [{ peer: serverPeer ?? 'server', version: server.lastGlobal.round, digest: server.lastGlobal.digest }]
        : arrived;
    const up = server?.lastUpload();
    const own = exchange?.published() ?? (up ? { version: up.round, digest: up.digest } : null);
    await this.log.append({
      kind: 'round', site: this.log.site, time: new Date().toISOString(), round: m.round, mixed, own,
      checkpoint: checkpoint?.digest ?? null, privacy: m.privacy ?? null,
      ...(this.sources.bodies ? { bodies: m.bodies ?? [], ownBody: this.sources.bodies.published() ?? null } : {}),
    });
  }
}
