/** npm's process polyfill (no types of its own). */
declare module 'process/browser.js' {
  const process: Record<string, unknown>;
  export default process;
}
