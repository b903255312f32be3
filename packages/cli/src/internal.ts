/**
 * `@dflmoe/cli/internal`: the public API (`@dflmoe/cli`) and the helpers the
 * tests and the benchmarks use: a consortium of site processes on this
 * machine (`writeConsortium`, `runConsortium`, `startProcess`, ...), the run
 * report and its charts, progress bars and emulated slow links. Not part of
 * the documented API, not in `api/cli.api.md`, and free to change in any
 * release.
 */
export { program, run } from './main.js';
export { summaryTable } from './commands/simulate.js';
export * from './consortium.js';
export * from './report.js';
export * from './progress.js';
export * from './slow-link.js';
export * from './settings-options.js';
