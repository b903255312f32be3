import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { simulateCommand } from './commands/simulate.js';
import { keygenCommand, peerCommand, relayCommand, serverCommand } from './commands/network.js';
import { auditCommand } from './commands/audit.js';
import { pretrainCommand } from './commands/pretrain.js';
import { webCommand } from './commands/web.js';
import { evaluateCommand, predictCommand } from './commands/predict.js';
import { isInterrupted } from '@dflmoe/core';
import { formatError } from './errors.js';
import { plainHelp } from './format.js';
import { reportCommand } from './commands/report.js';

/**
 * The `dflmoe` command (commander), with its subcommands: simulate, peer,
 * server, relay, keygen, predict, evaluate, pretrain, report, ...
 */
export function program(): Command {
  return plainHelp(
    new Command('dflmoe')
      .description('Decentralized federated learning with a mixture of experts, with a FedAvg baseline.')
      .version('0.1.0')
      .showHelpAfterError('(run with --help for usage)')
      .addCommand(simulateCommand())
      .addCommand(peerCommand())
      .addCommand(serverCommand())
      .addCommand(relayCommand())
      .addCommand(keygenCommand())
      .addCommand(auditCommand())
      .addCommand(predictCommand())
      .addCommand(evaluateCommand())
      .addCommand(pretrainCommand())
      .addCommand(webCommand())
      .addCommand(reportCommand()),
  );
}

/** Output into a closed pipe (`dflmoe simulate --help | head -2`) ends the program quietly. */
let pipeWatched = false;
function quietOnClosedPipe(): void {
  if (pipeWatched) return;
  pipeWatched = true;
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
      throw e;
    });
  }
}

/** Run the CLI; returns the exit code (0 ok, 1 runtime failure, 2 usage error, 130 interrupted). */
export async function run(argv: string[]): Promise<number> {
  quietOnClosedPipe();
  const p = program().exitOverride();
  for (const c of p.commands) c.exitOverride();
  try {
    await p.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    // Ctrl-C (SIGINT) or SIGTERM: what was finished is saved; the shell's code for SIGINT.
    if (isInterrupted(e)) {
      process.stderr.write(`dflmoe: ${(e as Error).message}\n`);
      return 130;
    }
    process.stderr.write(`dflmoe: error: ${formatError(e)}\n`);
    return 1;
  }
}

// Run when executed directly (`node dist/main.js`, or through tsx in development).
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await run(process.argv);
}
