export * from './types.js';
export * from './rng.js';
export * from './idx.js';
export * from './datasets.js';
export * from './partition.js';
export * from './standardize.js';
export * from './table.js';
export * from './federated.js';
