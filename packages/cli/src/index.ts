export { program, run } from './main.js';
export { summaryTable, writeJsonAtomic } from './commands/simulate.js';
export * from './consortium.js';
