import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Command } from 'commander';
import { type SiteDescription } from '@dflmoe/core';
import { SITE_FILE, isZipFile, unpackSiteArchive } from '@dflmoe/core/internal';
import { AUDIT_FILE, verifyAudit, verifySiteAudit, type AuditEntry } from '@dflmoe/p2p';
import { isAuditTrail } from '@dflmoe/p2p/internal';

const short = (s: string | null | undefined, n = 12) => (s ? s.slice(0, n) : '-');
const peer = (p: string) => (p.length > 16 ? `...${p.slice(-8)}` : p);

/** The members' names by peer ID that the site's site.json (beside its audit trail) knows; none without one. */
function memberNames(auditFile: string): Record<string, string> {
  const file = join(dirname(auditFile), SITE_FILE);
  if (!existsSync(file)) return {};
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as Partial<SiteDescription>).names ?? {};
  } catch {
    return {};
  }
}

/** One line of history per entry; members by name where `names` knows them. */
export function formatAuditEntry(e: AuditEntry, names: Record<string, string> = {}): string {
  if (e.kind === 'start') return `${e.time}  start      ${e.algorithm}, from round ${e.fromRound}${e.note ? ` (${e.note})` : ''}`;
  const list = (ms: typeof e.mixed) =>
    ms.map((m) => `${m.task !== undefined ? `${m.task}:` : ''}${names[m.peer] ?? peer(m.peer)} v${m.version} ${short(m.digest, 8)}`).join(', ') || 'nothing';
  const own = e.own ? `v${e.own.version} ${short(e.own.digest, 8)}` : '-';
  const eps = e.privacy ? `  epsilon ${e.privacy.epsilon.toFixed(3)} (delta ${e.privacy.delta})` : '';
  const cross = e.cross ? `  cross-task [${list(e.cross.mixed)}]` : '';
  return `${e.time}  round ${String(e.round).padEnd(4)} mixed [${list(e.mixed)}]  own ${own}${cross}  checkpoint ${short(e.checkpoint, 8)}${eps}`;
}

/**
 * The trail to check, and the site directory beside it (undefined for a bare
 * audit.jsonl from elsewhere): a site directory, the zip a browser tab's
 * site downloads, or an audit.jsonl; anything else is refused in one line.
 */
function auditTarget(path: string): { file: string; dir?: string } {
  const notASite = `${path} is not a site directory, a site's zip or an audit trail (a site writes <out>/${AUDIT_FILE}; a browser tab downloads dflmoe-site.zip)`;
  if (!existsSync(path)) throw new Error(`${path}: no such site directory or file`);
  const dir = statSync(path).isDirectory() ? path : isZipFile(path) ? unpackSiteArchive(path).dir : undefined;
  if (dir !== undefined) {
    const file = join(dir, AUDIT_FILE);
    if (!existsSync(file)) throw new Error(`${existsSync(join(dir, SITE_FILE)) ? `${path} has no ${AUDIT_FILE}` : notASite}`);
    return { file, dir };
  }
  if (!isAuditTrail(path)) throw new Error(notASite);
  // An audit.jsonl in a site's directory is checked with that directory's checkpoint and results.json.
  return { file: path, ...(basename(path) === AUDIT_FILE && existsSync(join(dirname(path), SITE_FILE)) ? { dir: dirname(path) } : {}) };
}

export function auditCommand(): Command {
  return new Command('audit')
    .description(
      "Verify a site's audit trail (<site dir>/audit.jsonl): the hash chain, every signature, and its end against the site's newest checkpoint and results.json (lines removed from the end); print the history. Exit 1 if it does not check out.",
    )
    .argument('<site dir>', "the site's out directory, the .zip a browser tab's site downloads, or an audit.jsonl")
    .option('--quiet', 'print only the verdict')
    .action(async (path: string, o: { quiet?: boolean }) => {
      const { file, dir } = auditTarget(path);
      const r = dir !== undefined ? await verifySiteAudit(dir) : await verifyAudit(file);
      const names = memberNames(file);
      if (!o.quiet) for (const e of r.entries) process.stdout.write(`${formatAuditEntry(e, names)}\n`);
      for (const p of r.problems) process.stderr.write(`TAMPERED line ${p.line}${p.round !== undefined ? ` (round ${p.round})` : ''}: ${p.reason}\n`);
      if (r.problems.length) throw new Error(`${path}: ${r.problems.length} problem(s): the audit trail does not verify`);
      const rounds = r.entries.filter((e) => e.kind === 'round').length;
      const site = r.site && names[r.site] ? `${names[r.site]} (${r.site})` : (r.site ?? '?');
      const against = dir !== undefined ? '; its end matches the checkpoint and results.json' : ' (a bare trail: its end is not checked)';
      process.stdout.write(`audit trail of ${site}: ${r.entries.length} entries (${rounds} rounds); hash chain and signatures verified${against}\n`);
    });
}
