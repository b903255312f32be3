import { Command } from 'commander';
import { writeReport } from '../report.js';
import { checkOutputPath } from '../output.js';

export function reportCommand(): Command {
  return new Command('report')
    .description(
      "Write report.html (charts, self-contained): for a run directory holding results.json (simulate, bench), or for a consortium from its sites' directories (each dflmoe peer's out, or a directory holding them).",
    )
    .argument('<dir...>', "the --out of simulate or bench; or sites' out directories, or the directory holding them")
    .option('--output <file>', 'where to write the page (default: <dir>/report.html; for several site directories, beside the first)')
    .action(async (dirs: string[], o: { output?: string }) => {
      const output = o.output ? checkOutputPath(o.output, '--output') : undefined;
      process.stdout.write(`${await writeReport(dirs, output)}\n`);
    });
}
