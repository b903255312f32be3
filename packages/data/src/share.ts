/**
 * A simulated site's share of a dataset, in one file: what `dflmoe simulate
 * --transport tcp` writes for each site so that a site process reads only
 * its own rows (not the whole dataset) and trains on exactly the rows the
 * in-memory simulation gives it.
 *
 * Layout: the ASCII magic `DFLMOE-SHARE-1\n`, a little-endian uint32 header
 * length, the header (JSON: dataset facts, row counts, where the share comes
 * from; padded with spaces so that what follows starts at a multiple of 4
 * bytes, and a reader can use the file's bytes as they are), then the features (float32, little-endian, training rows then test
 * rows, each row `prod(sampleShape)` values) and the labels (int32, same
 * order). Reading checks the magic, the header and every size.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { PeerSplit } from './partition.js';
import type { TableSchema } from './table.js';
import { DataError } from './errors.js';
import { featureSize, type Dataset } from './types.js';

const MAGIC = Buffer.from('DFLMOE-SHARE-1\n', 'ascii');

/** Where a share comes from. */
export interface ShareInfo {
  /** The dataset spec it was cut from (e.g. `fashion-mnist`). */
  dataset: string;
  peers: number;
  index: number;
  partition: string;
  seed: number;
}

interface ShareHeader extends ShareInfo {
  format: 1;
  name: string;
  classNames: string[];
  sampleShape: number[];
  featureNames?: string[];
  /** How a table was encoded (for reading new rows of it). */
  schema?: TableSchema;
  description: string;
  source: string;
  train: number;
  test: number;
  /** A regression task: its name (its targets follow the labels, one float32 per row). */
  regression?: string;
}

/** Write site `info.index`'s rows of `ds` (its `split`) to `path` (atomically). */
export function writeShare(path: string, ds: Dataset, split: PeerSplit, info: ShareInfo): void {
  const d = featureSize(ds);
  const rows = [...split.train, ...split.test];
  const header: ShareHeader = {
    format: 1, ...info, name: ds.name, classNames: ds.classNames, sampleShape: ds.sampleShape,
    ...(ds.featureNames ? { featureNames: ds.featureNames } : {}), ...(ds.schema ? { schema: ds.schema } : {}),
    description: ds.description, source: ds.source, train: split.train.length, test: split.test.length,
    ...(ds.task?.kind === 'regression' ? { regression: ds.task.name } : {}),
  };
  const json = JSON.stringify(header);
  const start = MAGIC.length + 4;
  const head = Buffer.from(json.padEnd(json.length + ((4 - ((start + Buffer.byteLength(json)) % 4)) % 4)), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(head.length);
  const features = new Float32Array(rows.length * d);
  const labels = new Int32Array(rows.length);
  rows.forEach((r, i) => {
    features.set(ds.features.subarray(r * d, (r + 1) * d), i * d);
    labels[i] = ds.labels[r];
  });
  const tmp = `${path}.tmp-${process.pid}`;
  const task = ds.task;
  const targets = task?.kind === 'regression' ? [Buffer.from(Float32Array.from(rows, (r) => task.values[r]).buffer)] : [];
  writeFileSync(tmp, Buffer.concat([MAGIC, len, head, Buffer.from(features.buffer), Buffer.from(labels.buffer), ...targets]));
  renameSync(tmp, path);
}

/** Read a share: the site's rows as a dataset (training rows first) and the split over them. */
export function readShare(path: string): { dataset: Dataset; split: PeerSplit; info: ShareInfo } {
  const file = resolve(path);
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new DataError(`cannot read the site's share ${file}: ${(e as Error).message}`);
  }
  const bad = (why: string) => new DataError(`${file} is not a valid dflmoe share (${why}); rerun dflmoe simulate to write it again`);
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw bad('wrong magic');
  const hlen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + hlen > buf.length) throw bad('header cut short');
  let h: ShareHeader;
  try {
    h = JSON.parse(buf.subarray(start, start + hlen).toString('utf8')) as ShareHeader;
  } catch {
    throw bad('header is not JSON');
  }
  const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (h?.format !== 1 || !count(h.train) || !count(h.test) || !Array.isArray(h.sampleShape) || !h.sampleShape.every((v) => Number.isInteger(v) && v > 0)
    || !Array.isArray(h.classNames) || h.classNames.length < 1 || !h.classNames.every((c) => typeof c === 'string')) {
    throw bad('bad header');
  }
  const n = h.train + h.test;
  const d = featureSize(h);
  const body = start + hlen;
  const regression = typeof h.regression === 'string' && h.regression !== '' ? h.regression : undefined;
  if (buf.length !== body + n * d * 4 + n * 4 + (regression ? n * 4 : 0)) throw bad(`size ${buf.length} does not match ${n} rows of ${d} features`);
  let features: Float32Array;
  let labels: Int32Array;
  if ((buf.byteOffset + body) % 4 === 0) {
    // Views of the file's bytes: no second copy of the rows.
    features = new Float32Array(buf.buffer, buf.byteOffset + body, n * d);
    labels = new Int32Array(buf.buffer, buf.byteOffset + body + n * d * 4, n);
  } else {
    // Typed arrays need aligned offsets: copy.
    features = new Float32Array(n * d);
    Buffer.from(features.buffer).set(buf.subarray(body, body + n * d * 4));
    labels = new Int32Array(n);
    Buffer.from(labels.buffer).set(buf.subarray(body + n * d * 4, body + n * d * 4 + n * 4));
  }
  // A regression share's targets (copied: 4 bytes a row), each a finite number.
  let values: Float32Array | undefined;
  if (regression) {
    values = new Float32Array(n);
    Buffer.from(values.buffer).set(buf.subarray(body + n * d * 4 + n * 4));
    if (!values.every(Number.isFinite)) throw bad('a target is not a finite number');
  }
  if (!labels.every((l) => l >= 0 && l < h.classNames.length)) throw bad('a label is out of range');
  const dataset: Dataset = {
    name: h.name, features, labels, numSamples: n, sampleShape: h.sampleShape, classNames: h.classNames,
    description: `${h.description} (site ${h.index} of ${h.peers}, ${h.partition}: ${h.train} training and ${h.test} test rows)`,
    source: h.source, ...(h.featureNames ? { featureNames: h.featureNames } : {}), ...(h.schema ? { schema: h.schema } : {}),
    ...(regression && values ? { task: { name: regression, kind: 'regression' as const, values } } : {}),
  };
  const split: PeerSplit = {
    train: Int32Array.from({ length: h.train }, (_, i) => i),
    test: Int32Array.from({ length: h.test }, (_, i) => h.train + i),
  };
  return { dataset, split, info: { dataset: h.dataset, peers: h.peers, index: h.index, partition: h.partition, seed: h.seed } };
}
