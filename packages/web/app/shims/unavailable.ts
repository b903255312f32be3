/**
 * Every other Node built-in in the tab (`node:net`, `node:http`, `node:os`,
 * ...): the shared code imports them for what a browser site never does
 * (serving metrics, emulating links, reading /proc). Using one is an error
 * that says so, not a silent no-op.
 */
const unavailable = new Proxy(
  {},
  {
    get(_, name) {
      if (name === '__esModule' || name === 'default' || typeof name === 'symbol') return undefined;
      return () => {
        throw new Error(`${String(name)} is a Node.js facility that a site in a browser tab does not have`);
      };
    },
  },
);
module.exports = unavailable;
