export { program, run } from './main.js';
export { summaryTable } from './commands/simulate.js';
export * from './consortium.js';
export * from './report.js';
export * from './progress.js';
export * from './slow-link.js';
