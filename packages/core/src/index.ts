export * from './log.js';
export * from './backend.js';
export { registerWasmConvKernels } from './wasm-conv.js';
