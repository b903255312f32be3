/**
 * `process` in the tab (npm's process polyfill), with what the shared code
 * reads: an empty environment, a pid, and stderr/stdout that go to the console.
 */
import proc from 'process/browser.js';

const p = proc as unknown as Record<string, unknown>;
p.pid = 1;
p.env = {};
const stream = (write: (s: string) => void) => ({ write: (s: string) => (write(String(s).replace(/\n$/, '')), true), isTTY: false });
p.stderr = stream((s) => console.log(s));
p.stdout = stream((s) => console.log(s));
p.uptime = () => performance.now() / 1000;
// A tab has no resident set size to report: peak RSS reads as 0.
p.resourceUsage = () => ({ maxRSS: 0 });
p.memoryUsage = () => ({ rss: 0, heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0 });
export const process = proc;
