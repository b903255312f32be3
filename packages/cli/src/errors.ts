/** Errors print as one line, without a stack trace (DFLMOE_DEBUG=1 shows it). */
export function formatError(e: unknown): string {
  if (e instanceof Error) {
    if (process.env.DFLMOE_DEBUG) return e.stack ?? e.message;
    return e.message;
  }
  return String(e);
}
