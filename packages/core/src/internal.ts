/**
 * `@dflmoe/core/internal`: the public API (`@dflmoe/core`) plus what only
 * the workspace uses (expert selection, the wasm convolution kernels): tests, benchmarks and the other `@dflmoe`
 * packages import these from here. Not part of the documented API, not in
 * `api/core.api.md`, and free to change in any release.
 */
export * from './index.js';
export * from './selection.js';
export { registerWasmConvKernels, setWasmFastInputGrad } from './wasm-conv.js';
