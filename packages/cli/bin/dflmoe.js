#!/usr/bin/env node
// Entry point of the `dflmoe` command. The compiled program lives in ../dist.
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('dflmoe: the CLI is not built yet. Run `npm run build` (or `npm ci`, which builds it) in the repository root.\n');
  process.exit(2);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv);
