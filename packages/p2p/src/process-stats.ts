import { readFileSync } from 'node:fs';

/**
 * Peak resident set size of this process, MiB. On Linux this is `VmHWM`
 * from /proc/self/status: the high-water mark of this program's own memory.
 * (getrusage's maxRSS carries over across fork and exec, so a site process
 * started by a big parent would report the parent's size.) Elsewhere, maxRSS.
 */
export function peakRssMiB(): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) / 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS / 1024;
}
