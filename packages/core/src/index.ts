/**
 * `@dflmoe/core`: the public API, written down in `api/core.api.md` (`npm run api`).
 *
 * A site as a library (`createLearner`), its in-memory transports
 * (`MemoryHub`, `MemoryStatementHub`) and the interfaces a transport of
 * one's own implements (`HeadExchange`, `StatementExchange`), agreeing on
 * the data (`agreeOnData`), a trained site (`loadSite`), a body pretrained
 * on public data (`pretrainBody`), the simulator (`simulate`), the compute
 * backend, logging, interruption and the live view's status model.
 *
 * What only the other `@dflmoe` packages, the tests and the benchmarks use
 * (the algorithms' sites and registry, models and their layers, the codec,
 * optimisers, checkpoints, privacy accounting, ...) is in `./internal.ts`
 * (`@dflmoe/core/internal`): not part of the API, and free to change in any
 * release.
 * @packageDocumentation
 */
export { createLogger, silentLogger, type LogLevel, type Logger } from './log.js';
export {
  BACKENDS,
  BROWSER_BACKENDS,
  initBackend,
  selectBackend,
  type BackendInfo,
  type BackendLoader,
  type BackendName,
  type SelectOptions,
} from './backend.js';
export { FST_KINDS, type BodySpec, type CustomBodySpec, type FstKind, type HeadSpec, type MoeFusion } from './model.js';
export { BodyError, type BodyBuilder, type BodyInput } from './custom-body.js';
export { CodecError, PRECISIONS, type CodecReason, type Precision } from './codec.js';
export { HeadInbox, MemoryExchange, MemoryHub, type ExchangeStats, type HeadExchange, type HeadMessage, type MembershipEvent } from './exchange.js';
export { type BodyCombiner, type MixedBody, type Topology } from './body-share.js';
export { DEFAULT_TRAIN, OPTIMIZERS, type DpOptions, type OptimizerKind, type TrainOptions } from './train.js';
export { type AccuracySummary } from './metrics.js';
export { type ReceiveResult } from './algorithms/dflmoe.js';
export { type LoraReason } from './algorithms/lora.js';
export { type AlgorithmBaseOptions, type ExpertInfo } from './algorithms/api.js';
export { SETTINGS, algorithmSettings, type AlgorithmOptions, type AlgorithmSettings } from './algorithms/registry.js';
export { SettingError, type SectionOf, type SectionShape, type SettingsContext, type SettingsGroup, type SettingsOf } from './settings.js';
export { dflmoeSettings, type DflmoeSettings } from './algorithms/dflmoe-settings.js';
export { bodySettings, type BodySettings } from './body-share.js';
export { stalenessSettings, type StalenessSettings } from './experts.js';
export { fineTuneSettings, type FineTuneSettings } from './algorithms/fedavg-ft.js';
export { fedrepSettings, type FedRepSettings } from './algorithms/fedrep.js';
export { ALGORITHMS, type AlgorithmName } from './algorithms/registry.js';
export { TrainingDiverged, type SiteRoundRecord } from './rounds.js';
export { Interrupted, isInterrupted, throwIfInterrupted, unlessInterrupted } from './interrupt.js';
export {
  DEFAULT_SIMULATION,
  simulate,
  type AlgorithmResult,
  type PeerResult,
  type RoundHeadline,
  type RoundResult,
  type SimulationConfig,
  type SimulationHooks,
  type SimulationResults,
  type TaskSummary,
} from './simulate.js';
export {
  TASK_KINDS,
  metricOf,
  taskKind,
  type TargetScale,
  type TaskInfo,
  type TaskKind,
  type TaskKindName,
  type TaskMetrics,
  type TaskResult,
} from './tasks/index.js';
export { createLearner, type DflmoeLearner, type LearnerLoopOptions, type LearnerOptions, type LearnerRoundMetrics } from './learner.js';
export { MemoryStatementHub, agreeOnData, type AgreedData, type DataAgreement, type StatementExchange } from './agree.js';
export { BodyFileError, type BodyStandardizer, type BodyWeights } from './pretrained.js';
export { pretrainBody, type PretrainOptions, type PretrainResult } from './pretrain.js';
export { type Evaluation, type Predictions, type SampleInput, type TaskEvaluations, type TaskPredictions } from './predict.js';
export {
  loadSite,
  type ReadOptions,
  type SiteInputs,
  type TrainedSite,
  type SiteDescription,
  type SitePreprocessing,
  type SiteTaskInfo,
} from './trained-site.js';
export {
  SITE_STATES,
  SiteFeed,
  StatusBoard,
  type AuditStatus,
  type MemberStatus,
  type MemberUpdate,
  type RecordedRound,
  type RoundUpdate,
  type SiteInit,
  type SiteState,
  type SiteStatus,
  type StatusListener,
  type StatusSnapshot,
} from './status.js';
