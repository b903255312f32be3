export * from './log.js';
export * from './backend.js';
export { registerWasmConvKernels, setWasmFastInputGrad } from './wasm-conv.js';
