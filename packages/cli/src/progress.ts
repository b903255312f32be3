/**
 * Progress for long commands: a live bar on a terminal (cli-progress), plain
 * lines when stderr is not a terminal (CI logs, pipes).
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** Report that `done` of `total` steps are finished; `info` is shown beside the bar. */
  update(done: number, info: string): void;
  /** A line that stays in the output (printed above the bar on a terminal). */
  log(line: string): void;
  stop(): void;
}

export function createProgress(label: string, total: number, unit = 'round', stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) {
    return {
      update: (done, info) => stream.write(`${label} ${unit} ${done}/${total}  ${info}\n`),
      log: (line) => stream.write(`${line}\n`),
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${label.padEnd(8)} [{bar}] ${unit} {value}/{total}  {info}  elapsed {duration_formatted}, left {eta_formatted}`,
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 4,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { info: '' });
  return {
    update: (done, info) => bar.update(done, { info }),
    log: (line) => {
      bar.stop();
      stream.write(`${line}\n`);
    },
    stop: () => bar.stop(),
  };
}
