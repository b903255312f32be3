/**
 * Stopping on SIGINT/SIGTERM: a site's waits take an AbortSignal and end
 * with `Interrupted` as soon as it aborts (what the site finished is on
 * disk, and a rerun resumes from it); the CLI exits 130 on it.
 */

/** The run was stopped by a signal (Ctrl-C): what it finished is saved, and running it again resumes. */
export class Interrupted extends Error {
  /** Always `Interrupted`. */
  override name = 'Interrupted';
  constructor() {
    super('interrupted; rerun to resume');
  }
}

/** Whether `e` is an `Interrupted` (also across copies of this module). */
export function isInterrupted(e: unknown): boolean {
  return e instanceof Interrupted || (e instanceof Error && e.name === 'Interrupted');
}

/** Throw `Interrupted` when `signal` has aborted. */
export function throwIfInterrupted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new Interrupted();
}

/** `p`, or `Interrupted` as soon as `signal` aborts (whatever `p` does later is ignored). */
export function unlessInterrupted<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(new Interrupted());
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(new Interrupted());
    signal.addEventListener('abort', abort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', abort));
  });
}

/** Resolve after `ms` (the timer does not hold the process), or reject with `Interrupted` when `signal` aborts first. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return unlessInterrupted(new Promise<void>((r) => setTimeout(r, ms).unref()), signal);
}
