import type { TableSchema } from './table.js';

/** A labelled dataset held in flat typed arrays (no tensor library needed). */
export interface Dataset {
  /** Short name, e.g. `breast-cancer` or `csv:/path/to/file.csv`. */
  name: string;
  /** Row-major features, `numSamples * prod(sampleShape)` values. */
  features: Float32Array;
  /** Class index per sample, in `[0, classNames.length)`. */
  labels: Int32Array;
  numSamples: number;
  /** Shape of one sample: `[30]` for a table, `[28, 28, 1]` for an image. */
  sampleShape: number[];
  classNames: string[];
  /** One or two sentences: what it is and where it comes from. */
  description: string;
  /** Where the data comes from, with its licence and citation when known. */
  source: string;
  /** Name of each encoded feature, when the features have names (tables). */
  featureNames?: string[];
  /** How a table was encoded: columns, kinds, vocabularies, imputation. */
  schema?: TableSchema;
}

/** The number of values in one sample (the product of `sampleShape`). */
export function featureSize(ds: Pick<Dataset, 'sampleShape'>): number {
  return ds.sampleShape.reduce((a, b) => a * b, 1);
}
