import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { AUDIT_FILE, verifyAudit, type AuditEntry } from '@dflmoe/p2p';

const short = (s: string | null | undefined, n = 12) => (s ? s.slice(0, n) : '-');
const peer = (p: string) => (p.length > 16 ? `...${p.slice(-8)}` : p);

/** One line of history per entry. */
export function formatAuditEntry(e: AuditEntry): string {
  if (e.kind === 'start') return `${e.time}  start      ${e.algorithm}, from round ${e.fromRound}${e.note ? ` (${e.note})` : ''}`;
  const mixed = e.mixed.map((m) => `${peer(m.peer)} v${m.version} ${short(m.digest, 8)}`).join(', ') || 'nothing';
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
      if (!o.quiet) for (const e of r.entries) process.stdout.write(`${formatAuditEntry(e)}\n`);
      for (const p of r.problems) process.stderr.write(`TAMPERED line ${p.line}${p.round !== undefined ? ` (round ${p.round})` : ''}: ${p.reason}\n`);
      if (r.problems.length) throw new Error(`${file}: ${r.problems.length} line(s) fail verification`);
      const rounds = r.entries.filter((e) => e.kind === 'round').length;
      process.stdout.write(`audit trail of ${r.site ?? '?'}: ${r.entries.length} entries (${rounds} rounds); hash chain and signatures verified\n`);
    });
}
