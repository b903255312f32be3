/** Errors a user can cause (bad flags, bad files) print as one line, without a stack trace. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function formatError(e: unknown): string {
  if (e instanceof Error) {
    if (process.env.DFLMOE_DEBUG) return e.stack ?? e.message;
    return e.message;
  }
  return String(e);
}
