export { program, run } from './main.js';
export { summaryTable } from './commands/simulate.js';
export * from './consortium.js';
