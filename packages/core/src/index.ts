/**
 * `@dflmoe/core`: the public API, written down in `api/core.api.md` (`npm run api`).
 * Workspace-only internals are in `./internal.ts` (`@dflmoe/core/internal`).
 */
export * from './log.js';
export * from './backend.js';
export * from './model.js';
export * from './custom-body.js';
export * from './codec.js';
export * from './experts.js';
export * from './exchange.js';
export * from './body-share.js';
export * from './averaging.js';
export * from './train.js';
export * from './metrics.js';
export * from './algorithms/common.js';
export * from './algorithms/dflmoe.js';
export * from './algorithms/fedavg.js';
export * from './algorithms/local.js';
export * from './algorithms/api.js';
export * from './algorithms/site.js';
export * from './algorithms/dflmoe-site.js';
export * from './algorithms/fedavg-ft.js';
export * from './algorithms/fedrep.js';
export * from './algorithms/gossip.js';
export * from './algorithms/registry.js';
export * from './rounds.js';
export * from './interrupt.js';
export * from './simulate.js';
export * from './learner.js';
export * from './agree.js';
export * from './checkpoint.js';
export * from './pretrained.js';
export * from './pretrain.js';
export * from './privacy.js';
export * from './predict.js';
export * from './trained-site.js';
// The keyed optimisers stay public while the performance work on them is under way (benchmarks import them); they belong in ./internal.ts.
export * from './keyed-adam.js';
export * from './status.js';
