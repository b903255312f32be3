/**
 * `@dflmoe/data/internal`: every module's exports, that is the public API
 * (`@dflmoe/data`) and what only the workspace uses (seeded random numbers, the simulator's partition and shift
 * helpers, dataset shares, the table and summary building blocks, the idx
 * reader): the other `@dflmoe` packages, the tests and the benchmarks import
 * these from here. Not part of the documented API, not in `api/data.api.md`,
 * and free to change in any release.
 */
export * from './errors.js';
export * from './types.js';
export * from './multi-task.js';
export * from './rng.js';
export * from './idx.js';
export * from './datasets.js';
export * from './partition.js';
export * from './standardize.js';
export * from './table.js';
export * from './federated.js';
export * from './images.js';
export * from './shift.js';
export * from './modality.js';
export * from './share.js';
export * from './site-data.js';
export * from './in-memory.js';
export * from './multi-task.js';
