/**
 * `@dflmoe/core/internal`: every module's exports, that is the public API
 * (`@dflmoe/core`) and what only the workspace uses: the algorithms' sites,
 * the registry and the round loop's parts, models and their layers, the
 * codec, optimisers (including the keyed Adam variants), checkpoints,
 * privacy accounting, expert selection and the wasm kernels (convolution
 * gradients, matrix products, max-pooling gradient, Adam).
 * Tests, benchmarks and the other `@dflmoe` packages import these from
 * here. Not part of the documented API, not in `api/core.api.md`, and free
 * to change in any release.
 */
export * from './log.js';
export * from './backend.js';
export * from './model.js';
export * from './custom-body.js';
export * from './codec.js';
export * from './experts.js';
export * from './exchange.js';
export * from './body-share.js';
export * from './secure-agg/index.js';
export * from './averaging.js';
export * from './train.js';
export * from './tasks/index.js';
export * from './metrics.js';
export * from './algorithms/common.js';
export * from './algorithms/dflmoe.js';
export * from './algorithms/dflmoe-settings.js';
export * from './algorithms/lora.js';
export * from './settings.js';
export * from './algorithms/fedavg.js';
export * from './algorithms/local.js';
export * from './algorithms/api.js';
export * from './algorithms/site.js';
export * from './algorithms/dflmoe-site.js';
export * from './algorithms/fedavg-ft.js';
export * from './algorithms/fedrep.js';
export * from './algorithms/gossip.js';
export * from './algorithms/multi-task.js';
export * from './algorithms/cross-task.js';
export * from './algorithms/registry.js';
export * from './rounds.js';
export * from './interrupt.js';
export * from './simulate.js';
export * from './site-views.js';
export * from './learner.js';
export * from './agree.js';
export * from './checkpoint.js';
export * from './algorithms/dflmoe-checkpoint.js';
export * from './pretrained.js';
export * from './pretrain.js';
export * from './privacy.js';
export * from './predict.js';
export * from './trained-site.js';
export * from './site-archive.js';
export * from './keyed-adam.js';
export * from './status.js';
export * from './selection.js';
export { registerWasmConvKernels, setWasmFastInputGrad } from './wasm-conv.js';
export { registerWasmMatMulKernels, setWasmFastMatMul, setWasmMatMulSwap, stockWasmKernels, swapPays } from './wasm-matmul.js';
export { registerWasmPoolKernels, setWasmFastPoolGrad } from './wasm-pool.js';
export { FusedAdam, registerWasmAdamKernel } from './fused-adam.js';
