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
 * order), then a regression share's targets (float32) and a multi-task
 * share's task columns (each an int32 label per row, -1 where the row lacks
 * it, and for a regression a float32 target per row, NaN where it lacks it).
 * Reading checks the magic, the header and every size.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { PeerSplit } from './partition.js';
import type { TableSchema } from './table.js';
import { DataError } from './errors.js';
import { featureSize, type Dataset, type DatasetTaskColumn } from './types.js';

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
  /** A multi-task share: the tasks whose columns follow. */
  tasks?: { name: string; kind: 'classification' | 'regression'; classNames: string[] }[];
}

/** Write site `info.index`'s rows of `ds` (its `split`) to `path` (atomically). */
export function writeShare(path: string, ds: Dataset, split: PeerSplit, info: ShareInfo): void {
  const d = featureSize(ds);
  const rows = [...split.train, ...split.test];
  const header: ShareHeader = {
    format: 1,
    ...info,
    name: ds.name,
    classNames: ds.classNames,
    sampleShape: ds.sampleShape,
    ...(ds.featureNames ? { featureNames: ds.featureNames } : {}),
    ...(ds.schema ? { schema: ds.schema } : {}),
    description: ds.description,
    source: ds.source,
    train: split.train.length,
    test: split.test.length,
    ...(ds.task?.kind === 'regression' ? { regression: ds.task.name } : {}),
    ...(ds.tasks ? { tasks: ds.tasks.map((t) => ({ name: t.name, kind: t.kind, classNames: t.classNames })) } : {}),
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
  const columns = (ds.tasks ?? []).flatMap((t) => [
    Buffer.from(Int32Array.from(rows, (r) => t.labels[r]).buffer),
    ...(t.values ? [Buffer.from(Float32Array.from(rows, (r) => t.values![r]).buffer)] : []),
  ]);
  writeFileSync(tmp, Buffer.concat([MAGIC, len, head, Buffer.from(features.buffer), Buffer.from(labels.buffer), ...targets, ...columns]));
  renameSync(tmp, path);
}

/** A share header's tasks, checked (none: a one-task share). */
function shareTasks(v: unknown, bad: (why: string) => DataError): NonNullable<ShareHeader['tasks']> {
  if (v === undefined) return [];
  const ok =
    Array.isArray(v) &&
    v.length > 0 &&
    v.every(
      (t) =>
        typeof t?.name === 'string' &&
        t.name !== '' &&
        (t.kind === 'classification' || t.kind === 'regression') &&
        Array.isArray(t.classNames) &&
        t.classNames.every((c: unknown) => typeof c === 'string'),
    );
  if (!ok) throw bad('bad tasks');
  return v as NonNullable<ShareHeader['tasks']>;
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
  if (
    h?.format !== 1 ||
    !count(h.train) ||
    !count(h.test) ||
    !Array.isArray(h.sampleShape) ||
    !h.sampleShape.every((v) => Number.isInteger(v) && v > 0) ||
    !Array.isArray(h.classNames) ||
    h.classNames.length < 1 ||
    !h.classNames.every((c) => typeof c === 'string')
  ) {
    throw bad('bad header');
  }
  const n = h.train + h.test;
  const d = featureSize(h);
  const body = start + hlen;
  const regression = typeof h.regression === 'string' && h.regression !== '' ? h.regression : undefined;
  const taskHeads = shareTasks(h.tasks, bad);
  const columnBytes = taskHeads.reduce((a, t) => a + n * 4 * (t.kind === 'regression' ? 2 : 1), 0);
  if (buf.length !== body + n * d * 4 + n * 4 + (regression ? n * 4 : 0) + columnBytes)
    throw bad(`size ${buf.length} does not match ${n} rows of ${d} features`);
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
    Buffer.from(values.buffer).set(buf.subarray(body + n * d * 4 + n * 4, body + n * d * 4 + n * 8));
    if (!values.every(Number.isFinite)) throw bad('a target is not a finite number');
  }
  // A multi-task share's columns (copied), each label in range or -1, each target finite or NaN (the row lacks it).
  let at = body + n * d * 4 + n * 4 + (regression ? n * 4 : 0);
  const take = <T extends Int32Array | Float32Array>(out: T): T => {
    Buffer.from(out.buffer).set(buf.subarray(at, at + n * 4));
    at += n * 4;
    return out;
  };
  const tasks = taskHeads.map((t): DatasetTaskColumn => {
    const labels = take(new Int32Array(n));
    if (!labels.every((l) => l >= -1 && l < Math.max(t.classNames.length, 5))) throw bad(`a label of task "${t.name}" is out of range`);
    if (t.kind === 'classification') return { ...t, labels };
    const vs = take(new Float32Array(n));
    if (!vs.every((v) => Number.isNaN(v) || Number.isFinite(v))) throw bad(`a target of task "${t.name}" is not a finite number`);
    return { ...t, labels, values: vs };
  });
  if (!labels.every((l) => l >= 0 && l < h.classNames.length)) throw bad('a label is out of range');
  const dataset: Dataset = {
    name: h.name,
    features,
    labels,
    numSamples: n,
    sampleShape: h.sampleShape,
    classNames: h.classNames,
    description: `${h.description} (site ${h.index} of ${h.peers}, ${h.partition}: ${h.train} training and ${h.test} test rows)`,
    source: h.source,
    ...(h.featureNames ? { featureNames: h.featureNames } : {}),
    ...(h.schema ? { schema: h.schema } : {}),
    ...(regression && values ? { task: { name: regression, kind: 'regression' as const, values } } : {}),
    ...(taskHeads.length > 0 ? { tasks } : {}),
  };
  const split: PeerSplit = {
    train: Int32Array.from({ length: h.train }, (_, i) => i),
    test: Int32Array.from({ length: h.test }, (_, i) => h.train + i),
  };
  return { dataset, split, info: { dataset: h.dataset, peers: h.peers, index: h.index, partition: h.partition, seed: h.seed } };
}
