/** `node:url` in the tab: file URLs are paths in the tab's in-memory file system. */
export const fileURLToPath = (u: string | URL): string => decodeURIComponent(new URL(u).pathname);
export const pathToFileURL = (p: string): URL => new URL(`file://${p}`);
export default { fileURLToPath, pathToFileURL };
