/**
 * `node:fs` in the tab: an in-memory file system (memfs). The site's files
 * (key, config, data, checkpoints, metrics, audit trail) live here while the
 * tab is open, exactly where `dflmoe peer` would write them on disk, and the
 * "download" button zips them.
 */
import { fs } from 'memfs';

export default fs;
export const {
  appendFileSync,
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
  promises,
} = fs;
