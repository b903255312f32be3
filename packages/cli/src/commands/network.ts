import { writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Interrupted, PRECISIONS, createLogger, type Precision } from '@dflmoe/core';
import {
  generateIdentity,
  joinDetails,
  loadIdentity,
  loadPeerConfig,
  loadRelayConfig,
  loadServerConfig,
  runPeer,
  runServer,
  saveIdentity,
  savePsk,
  startRelay,
} from '@dflmoe/p2p';
import { formatBytes, siteScore } from '../format.js';
import { checkOutputPath } from '../output.js';
import { DATA_POLICY } from './predict.js';
import { endLiveView, startLiveView, withUiOptions } from '../live.js';

/** Aborts on the first SIGINT or SIGTERM (a second SIGINT kills the process as usual). */
export function stopSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return ac.signal;
}

/** Run `fn`; once `signal` has aborted, whatever it fails with (a dial or stream cut short, say) is `Interrupted`. */
export async function interruptible<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (signal.aborted) throw new Interrupted();
    throw e;
  }
}

export function keygenCommand(): Command {
  return new Command('keygen')
    .description('Create an Ed25519 site identity (and optionally a pre-shared key for a private network); prints the peer ID.')
    .option('--out <file>', 'where to write the key (mode 0600)')
    .option('--psk <file>', 'also write a pre-shared key file for a private network (share it with every member)')
    .option('--force', 'overwrite existing files')
    .action(async (o) => {
      if (!o.out && !o.psk) throw new Error('say what to create: --out <key file> and/or --psk <file>');
      if (o.out) checkOutputPath(o.out, '--out');
      if (o.psk) checkOutputPath(o.psk, '--psk');
      if (o.out) {
        const id = await generateIdentity();
        saveIdentity(o.out, id.privateKey, Boolean(o.force));
        process.stdout.write(`${id.peerId}\n`);
        process.stderr.write(`wrote ${o.out}; give the peer ID above to the other members\n`);
      }
      if (o.psk) {
        savePsk(o.psk, Boolean(o.force));
        process.stderr.write(`wrote pre-shared key ${o.psk}\n`);
      }
    });
}

export function peerCommand(): Command {
  return withUiOptions(
    new Command('peer')
      .description("Run one site of a consortium from its config file (its `algorithm`: dflmoe, a server algorithm's client, gossip or local-only).")
      .requiredOption('--config <file>', 'site config (JSON)')
      .addHelpText('after', DATA_POLICY)
      .option('--quiet', 'no per-round lines')
      .option(
        '--fresh',
        "start over: remove an earlier run's checkpoints, agreement, audit trail and metrics from the config's out (without it, a rerun resumes)",
      )
      .addOption(
        new Option(
          '--head-precision <p>',
          'dflmoe: precision of the heads this site publishes (overrides dflmoe.headPrecision): float32, float16, int8',
        ).choices([...PRECISIONS]),
      )
      .option('--metrics <port>', 'serve Prometheus metrics on 127.0.0.1:<port>/metrics', (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('--metrics needs a port number (0-65535).');
        return n;
      })
      .option('--print-join [file]', "print the consortium's join details (for a site joining from a browser tab: dflmoe web) to stdout or <file>, and exit"),
    'this site',
  ).action(async (o) => {
    const cfg = loadPeerConfig(o.config);
    if (o.printJoin !== undefined) {
      const { join, warnings } = joinDetails(cfg, loadIdentity(cfg.key).peerId);
      for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
      const text = `${JSON.stringify(join, null, 2)}\n`;
      if (typeof o.printJoin === 'string') {
        writeFileSync(o.printJoin, text);
        process.stderr.write(`wrote the join details to ${o.printJoin}\n`);
      } else process.stdout.write(text);
      return;
    }
    if (o.headPrecision) cfg.dflmoe.headPrecision = o.headPrecision as Precision;
    const log = createLogger(`peer:${cfg.name ?? 'site'}`);
    // The live view (--ui, or ui.listen in the config) binds before anything starts.
    const listen: string | undefined = o.ui ?? cfg.ui?.listen;
    const view =
      listen === undefined
        ? undefined
        : await startLiveView({
            listen,
            token: o.uiToken ?? cfg.ui?.token,
            epsilonBudget: o.uiEpsilonBudget ?? cfg.ui?.epsilonBudget,
            option: o.ui !== undefined ? '--ui' : 'ui.listen',
            tokenOption: o.uiToken !== undefined ? '--ui-token' : 'ui.token',
          });
    const signal = stopSignal();
    const r = await interruptible(signal, () =>
      runPeer(cfg, {
        logger: log,
        signal,
        status: view?.board,
        metricsPort: o.metrics,
        fresh: Boolean(o.fresh),
        // Bytes so far (the run's, with its earlier parts); experts only where the algorithm mixes them (dFLMoE).
        onRound: o.quiet
          ? undefined
          : (l) =>
              process.stderr.write(
                `round ${l.round}/${cfg.rounds}  ${siteScore(l.tasks, l.accuracy)}  ${cfg.algorithm === 'dflmoe' ? `experts ${l.experts.length}  ` : ''}` +
                  `so far in ${formatBytes(l.bytesReceived)} out ${formatBytes(l.bytesSent)}  ${l.seconds.toFixed(2)} s\n`,
              ),
      }),
    ).catch(async (e: unknown) => {
      await view?.close();
      throw e;
    });
    await endLiveView(view, o.uiKeep, true);
    process.stdout.write(`final ${siteScore(r.tasks, r.accuracy)} after ${r.rounds.length} rounds; results in ${cfg.out}\n`);
  });
}

export function relayCommand(): Command {
  return new Command('relay')
    .description('Run a circuit relay for the members of a consortium (sites behind NAT put its address in relay.via); it relays for members only.')
    .requiredOption('--config <file>', 'relay config (JSON): key, listen, members, psk')
    .action(async (o) => {
      const cfg = loadRelayConfig(o.config);
      const r = await startRelay(cfg, createLogger(`relay:${cfg.name ?? 'relay'}`));
      process.stdout.write(`${r.addrs.join('\n')}\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await r.stop();
    });
}

export function serverCommand(): Command {
  return new Command('server')
    .description('Run the aggregation server of a server algorithm (fedavg, fedavg-ft, fedrep; config `algorithm`) over the same libp2p stack.')
    .requiredOption('--config <file>', 'server config (JSON)')
    .action(async (o) => {
      const cfg = loadServerConfig(o.config);
      const signal = stopSignal();
      const r = await interruptible(signal, () => runServer(cfg, createLogger('server'), signal));
      process.stdout.write(`served ${r.rounds.length} rounds; results in ${cfg.out}\n`);
    });
}
