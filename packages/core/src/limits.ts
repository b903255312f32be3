/** The size limits a site has unless its config sets others (the site config's `limits`). */
export const DEFAULT_LIMITS = { maxHeadBytes: 64 * 1024 * 1024, maxModelBytes: 512 * 1024 * 1024 } as const satisfies Record<string, number>;
