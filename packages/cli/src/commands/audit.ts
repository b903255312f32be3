import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command } from 'commander';
import { type SiteDescription } from '@dflmoe/core';
import { SITE_FILE } from '@dflmoe/core/internal';
import { AUDIT_FILE, verifyAudit, type AuditEntry } from '@dflmoe/p2p';

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
  const mixed = e.mixed.map((m) => `${names[m.peer] ?? peer(m.peer)} v${m.version} ${short(m.digest, 8)}`).join(', ') || 'nothing';
  const own = e.own ? `v${e.own.version} ${short(e.own.digest, 8)}` : '-';
  const eps = e.privacy ? `  epsilon ${e.privacy.epsilon.toFixed(3)} (delta ${e.privacy.delta})` : '';
  return `${e.time}  round ${String(e.round).padEnd(4)} mixed [${mixed}]  own ${own}  checkpoint ${short(e.checkpoint, 8)}${eps}`;
}

export function auditCommand(): Command {
  return new Command('audit')
    .description("Verify a site's audit trail (<site dir>/audit.jsonl): the hash chain and every signature; print the history. Exit 1 if a line does not check out.")
    .argument('<site dir>', "the site's out directory, or its audit.jsonl")
    .option('--quiet', 'print only the verdict')
    .action(async (dir: string, o: { quiet?: boolean }) => {
      const file = existsSync(dir) && statSync(dir).isDirectory() ? join(dir, AUDIT_FILE) : dir;
      if (!existsSync(file)) throw new Error(`${file} not found: a site writes its audit trail to <out>/${AUDIT_FILE}`);
      const r = await verifyAudit(file);
      const names = memberNames(file);
      if (!o.quiet) for (const e of r.entries) process.stdout.write(`${formatAuditEntry(e, names)}\n`);
      for (const p of r.problems) process.stderr.write(`TAMPERED line ${p.line}${p.round !== undefined ? ` (round ${p.round})` : ''}: ${p.reason}\n`);
      if (r.problems.length) throw new Error(`${file}: ${r.problems.length} line(s) fail verification`);
      const rounds = r.entries.filter((e) => e.kind === 'round').length;
      const site = r.site && names[r.site] ? `${names[r.site]} (${r.site})` : r.site ?? '?';
      process.stdout.write(`audit trail of ${site}: ${r.entries.length} entries (${rounds} rounds); hash chain and signatures verified\n`);
    });
}
