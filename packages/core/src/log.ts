/**
 * A deliberately small logging interface. Library users can pass their own
 * implementation (pino, winston, console) wherever a `Logger` is accepted.
 */
export interface Logger {
  /** Detail for debugging, hidden by default. */
  debug(msg: string): void;
  /** Progress a person running the site wants to see. */
  info(msg: string): void;
  /** Something went wrong but the run goes on (a refused head, a late member). */
  warn(msg: string): void;
  /** Something the run cannot get past. */
  error(msg: string): void;
}

/** How much a `createLogger` logger writes: its level and every level above it (`silent`: nothing). */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const LEVELS: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function envLevel(): LogLevel {
  const v = (process.env.DFLMOE_LOG_LEVEL ?? 'info').toLowerCase();
  return v in LEVELS ? (v as LogLevel) : 'info';
}

/** A logger that writes `[dflmoe:<scope>] message` lines to stderr. */
export function createLogger(scope: string, level: LogLevel = envLevel()): Logger {
  const min = LEVELS[level];
  const out = (lvl: Exclude<LogLevel, 'silent'>, msg: string) => {
    if (LEVELS[lvl] >= min) process.stderr.write(`[dflmoe:${scope}] ${lvl === 'info' ? '' : lvl + ': '}${msg}\n`);
  };
  return {
    debug: (m) => out('debug', m),
    info: (m) => out('info', m),
    warn: (m) => out('warn', m),
    error: (m) => out('error', m),
  };
}

/** A `Logger` that writes nothing. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
