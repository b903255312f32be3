/**
 * `--ui`: the live view of `dflmoe peer` and `dflmoe simulate` in a browser
 * (`@dflmoe/live`). The server binds before anything else starts, so a port
 * in use stops the command at once, with a line that names the option.
 */
import type { Command } from 'commander';
import { StatusBoard } from '@dflmoe/core';
import { LiveServer, RemoteSites } from '@dflmoe/live';
import { num } from './format.js';

/** Add `--ui`, `--ui-keep`, `--ui-token` and `--ui-epsilon-budget` to a command. */
export function withUiOptions(cmd: Command, what: string): Command {
  return cmd
    .option(
      '--ui <host:port>',
      `serve a live view of ${what} in a browser at this address (host default 127.0.0.1; another address than loopback needs a token)`,
    )
    .option('--ui-keep', 'keep serving the live view after the run has ended, until Ctrl-C (else it closes with the run)')
    .option(
      '--ui-token <token>',
      'the token every request to the live view must carry (Authorization: Bearer, or ?token=); generated and printed once when --ui is not loopback',
    )
    .option('--ui-epsilon-budget <x>', 'live view: show the DP epsilon spent against this budget', num('--ui-epsilon-budget', 1e-9, 1e9));
}

export interface LiveView {
  board: StatusBoard;
  server: LiveServer;
  close(): Promise<void>;
}

/** Start the live view at `listen`; prints its address (with the token, once) on stderr. */
export async function startLiveView(o: { listen: string; token?: string; epsilonBudget?: number; option?: string; tokenOption?: string }): Promise<LiveView> {
  const board = new StatusBoard({ epsilonBudget: o.epsilonBudget });
  const server = await LiveServer.start({ board, listen: o.listen, token: o.token, option: o.option, tokenOption: o.tokenOption });
  process.stderr.write(
    server.generatedToken
      ? `live view: ${server.url}  (a token was generated for this run and is printed only here; give it as ?token= or Authorization: Bearer)\n`
      : `live view: ${server.url}\n`,
  );
  return { board, server, close: () => server.close() };
}

/**
 * Close the live view when the run is over; with `keep` (`--ui-keep`) and a
 * run that finished, first go on serving it until SIGINT or SIGTERM.
 */
export async function endLiveView(view: LiveView | undefined, keep: boolean | undefined, finished: boolean): Promise<void> {
  if (view && keep && finished) {
    process.stderr.write(`live view: the run has ended; still serving ${view.server.url} until Ctrl-C\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
  }
  await view?.close();
}

/**
 * A command action with the live view of `--ui`: bound before the action
 * starts, closed (after sending the final state) when it ends, or with
 * `--ui-keep` kept until Ctrl-C after a run that finished.
 */
export function withLiveView<O extends { ui?: string; uiKeep?: boolean; uiToken?: string; uiEpsilonBudget?: number }>(
  action: (o: O, board: StatusBoard | undefined) => Promise<void>,
): (o: O) => Promise<void> {
  return async (o) => {
    if (o.uiKeep && o.ui === undefined) throw new Error('--ui-keep keeps the live view of --ui: give --ui <host:port> too');
    const view = o.ui !== undefined ? await startLiveView({ listen: o.ui, token: o.uiToken, epsilonBudget: o.uiEpsilonBudget }) : undefined;
    let finished = false;
    try {
      await action(o, view?.board);
      finished = true;
    } finally {
      await endLiveView(view, o.uiKeep, finished);
    }
  };
}

/** Follow the live views of site processes on 127.0.0.1 at `ports` into `board`. */
export function followSites(board: StatusBoard, ports: number[]): RemoteSites {
  const remote = new RemoteSites(board);
  for (const port of ports) remote.follow({ url: `http://127.0.0.1:${port}` });
  return remote;
}
