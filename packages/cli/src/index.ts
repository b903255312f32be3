/**
 * `@dflmoe/cli`: the `dflmoe` command as a program (`program`, the commander
 * command) and as a function (`run`, which returns the exit code), written
 * down in `api/cli.api.md` (`npm run api`).
 *
 * The helpers the tests and the benchmarks use (a consortium of site
 * processes, reports, progress bars, emulated links) are in `./internal.ts`
 * (`@dflmoe/cli/internal`): not part of the API, and free to change in any
 * release.
 * @packageDocumentation
 */
export { program, run } from './main.js';
