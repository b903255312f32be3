/**
 * `@dflmoe/data`: the public API, written down in `api/data.api.md` (`npm run api`).
 *
 * Reading data (built-in datasets, CSV files, image folders, a site's own
 * source), partitioning a dataset among simulated sites, a site's rows held in
 * memory, the federated preprocessing as pure functions (statement, agreed
 * schema, encoding) and standardization.
 *
 * What only the other `@dflmoe` packages, the tests and the benchmarks use
 * is in `./internal.ts` (`@dflmoe/data/internal`): not part of the API, and
 * free to change in any release.
 * @packageDocumentation
 */
export { DataError } from './errors.js';
export { featureSize, quantileStrata, type Dataset, type DatasetTask, type DatasetTaskColumn } from './types.js';
export { FASHION_MNIST_GROUPS, labelledRows, taskDataset, withDerivedTasks } from './multi-task.js';
export { BUILTIN_DATASETS, loadCsv, loadDataset, subsampleRows, takeRows, type CsvOptions, type LoadOptions } from './datasets.js';
export { loadDatasetAsync, loadImageFolder, type AsyncLoadOptions, type ImageFolderOptions } from './images.js';
export { partition, type PartitionOptions, type PartitionSpec, type PeerSplit } from './partition.js';
export { applyStandardizer, fitStandardizer, pooledStandardizer, type Standardizer } from './standardize.js';
export {
  type CategoricalColumnSchema,
  type ColumnSchema,
  type NumericColumnSchema,
  type RawColumn,
  type RawTable,
  type TableOptions,
  type TableSchema,
} from './table.js';
export {
  federatedStandardizer,
  validateSummary,
  type AgreedSchema,
  type AgreedTask,
  type FeatureSchema,
  type FeatureStats,
  type LocalSummary,
  type SummaryTask,
  type SummaryTaskEntry,
  type TensorSchema,
} from './federated.js';
export {
  encodeSiteData,
  loadSiteData,
  readInputs,
  reconcileStatements,
  siteStatement,
  type EncodedInputs,
  type EncodedSite,
  type InputSpec,
  type InputTask,
  type ReadInputsOptions,
  type Reconciled,
  type SiteData,
  type SiteDataBase,
  type SiteDataSpec,
  type SiteStatement,
  type SiteTask,
} from './site-data.js';
export {
  encodeRows,
  siteDataFromRows,
  siteDataFromSamples,
  type Cell,
  type Row,
  type RowsOptions,
  type SamplesInput,
  type SamplesOptions,
  type SplitOptions,
} from './in-memory.js';
export { SHIFT_KINDS, type ShiftKind } from './shift.js';
export { MODALITIES, modalityOf, modalityView, type Modality } from './modality.js';
