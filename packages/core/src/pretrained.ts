/**
 * Bodies pretrained on public data. Imaging sites rarely train a network
 * from scratch: they start from a backbone trained on a large public set.
 * Every site of a consortium can start from the same pretrained body
 * (`model.pretrainedBody` in a site config, `--pretrained-body` in
 * `dflmoe simulate`), and can keep it frozen (`model.freezeBody`), so that
 * only the head, and for dFLMoE the gate and transforms, train.
 *
 * A body file is the tfjs layers format: a directory holding `model.json`
 * and `weights.bin` (or the path of that `model.json`), as `dflmoe pretrain`
 * writes and as every checkpoint's `body/` holds. Only the weights are read;
 * they must fit the body the config describes, weight by weight.
 *
 * Beside them, `standardizer.json` (written by `dflmoe pretrain`) holds the
 * per-feature mean and standard deviation the body was trained with. A
 * body learns on inputs scaled one way; sites that scaled theirs with other
 * statistics would feed it shifted inputs (a pixel that is rarely non-zero
 * has a tiny deviation, so its scaled values depend on which rows estimated
 * it). When the file is there, every site standardizes with it instead of
 * the consortium's pooled statistics.
 */
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import type { Standardizer } from '@dflmoe/data';

/** The weights of a body, read from a file and not yet placed in a model. */
export interface BodyWeights {
  /** Where they came from, for error messages. */
  source: string;
  /** The tfjs weights manifest: each weight's name, shape and dtype, in the order of `data`. */
  specs: tf.io.WeightsManifestEntry[];
  /** The weights' values, concatenated as the manifest lists them. */
  data: ArrayBuffer;
  /** The statistics the body's inputs were standardized with, when the file says. */
  standardizer?: BodyStandardizer;
}

/** A body's input statistics, and for tables the encoded column of each input (their order matters). */
export interface BodyStandardizer extends Standardizer {
  /** Tables: the encoded column name of each input, in input order; a site's columns must match them. */
  featureNames?: string[];
}

export const STANDARDIZER_FILE = 'standardizer.json';

/**
 * A pretrained body's files that cannot be read or do not fit the site's body
 * (missing, malformed, other shapes or inputs).
 */
export class BodyFileError extends Error {
  /** Always `BodyFileError`. */
  override name = 'BodyFileError';
}

/** Read a body's weights from a layers-format directory or its `model.json`. */
export function readBodyWeights(path: string): BodyWeights {
  const json = existsSync(path) && statSync(path).isDirectory() ? join(path, 'model.json') : path;
  if (!existsSync(json))
    throw new BodyFileError(`${json}: no such file (a pretrained body is a directory with model.json and weights.bin, as "dflmoe pretrain" writes)`);
  let manifest: unknown;
  try {
    manifest = JSON.parse(readFileSync(json, 'utf8'));
  } catch (e) {
    throw new BodyFileError(`${json}: not JSON (${(e as Error).message})`);
  }
  const groups = (manifest as { weightsManifest?: { paths?: unknown; weights?: unknown }[] }).weightsManifest;
  if (!Array.isArray(groups) || groups.length === 0) throw new BodyFileError(`${json}: no weightsManifest; is it a tfjs layers model?`);
  const specs: tf.io.WeightsManifestEntry[] = [];
  const parts: Buffer[] = [];
  for (const g of groups) {
    if (!Array.isArray(g.paths) || !Array.isArray(g.weights)) throw new BodyFileError(`${json}: a weightsManifest entry lacks paths or weights`);
    for (const p of g.paths) {
      const file = join(dirname(json), String(p));
      if (!existsSync(file)) throw new BodyFileError(`${file}: missing (listed in ${json})`);
      parts.push(readFileSync(file));
    }
    for (const w of g.weights as tf.io.WeightsManifestEntry[]) {
      if (typeof w?.name !== 'string' || !Array.isArray(w.shape) || w.dtype !== 'float32') {
        throw new BodyFileError(`${json}: weight ${JSON.stringify(w?.name)} is not a float32 tensor with a shape`);
      }
      specs.push(w);
    }
  }
  const all = Buffer.concat(parts);
  const expected = specs.reduce((a, s) => a + 4 * s.shape.reduce((x, y) => x * y, 1), 0);
  if (all.length !== expected) throw new BodyFileError(`${json}: the weight files hold ${all.length} bytes, the manifest describes ${expected}`);
  const standardizer = readBodyStandardizer(path);
  return { source: json, specs, data: all.buffer.slice(all.byteOffset, all.byteOffset + all.length) as ArrayBuffer, ...(standardizer ? { standardizer } : {}) };
}

/** The standardizer saved beside a body (`standardizer.json`), or undefined when there is none. */
export function readBodyStandardizer(path: string): BodyStandardizer | undefined {
  const dir = existsSync(path) && statSync(path).isDirectory() ? path : dirname(path);
  const file = join(dir, STANDARDIZER_FILE);
  if (!existsSync(file)) return undefined;
  let raw: { mean?: unknown; std?: unknown; featureNames?: unknown };
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new BodyFileError(`${file}: not JSON (${(e as Error).message})`);
  }
  const arr = (v: unknown, positive: boolean) =>
    Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)) ? Float32Array.from(v) : undefined;
  const mean = arr(raw?.mean, false);
  const std = arr(raw?.std, true);
  if (!mean || !std || mean.length !== std.length) {
    throw new BodyFileError(`${file}: needs "mean" and "std", arrays of one finite number per input feature (std above 0), of equal length`);
  }
  const names = raw.featureNames;
  if (names !== undefined && !(Array.isArray(names) && names.length === mean.length && names.every((n) => typeof n === 'string'))) {
    throw new BodyFileError(`${file}: "featureNames" must list one name per input feature`);
  }
  return { mean, std, ...(names ? { featureNames: names as string[] } : {}) };
}

/**
 * Throws unless the body's inputs are this data's: as many features, and for
 * tables (when both sides name their encoded columns) the same columns in the
 * same order.
 */
export function checkBodyStandardizer(w: Pick<BodyWeights, 'source' | 'standardizer'>, features: number, featureNames?: string[]): void {
  const st = w.standardizer;
  if (!st) return;
  if (st.mean.length !== features) throw new BodyFileError(`${w.source}: the body was trained on ${st.mean.length} input features, this data has ${features}`);
  if (st.featureNames && featureNames) {
    const i = featureNames.findIndex((n, k) => n !== st.featureNames![k]);
    if (i >= 0)
      throw new BodyFileError(
        `${w.source}: input feature ${i + 1} is "${featureNames[i]}" here but "${st.featureNames[i]}" in the body's public data; the encoded columns must match`,
      );
  }
}

/** Place `w` into `body`; throws when the two do not match weight by weight. */
export function applyBodyWeights(body: tfl.LayersModel, w: BodyWeights): void {
  const own = body.weights;
  if (own.length !== w.specs.length) {
    throw new BodyFileError(
      `${w.source}: the file holds ${w.specs.length} body weights, this body has ${own.length}; was it written for another body (model.body, featureDim) or input shape?`,
    );
  }
  const decoded = tf.io.decodeWeights(w.data, w.specs);
  try {
    const ordered = w.specs.map((s, i) => {
      const t = decoded[s.name];
      if (t.shape.join() !== own[i].shape.join()) {
        throw new BodyFileError(
          `${w.source}: body weight ${s.name} has shape [${t.shape}], this body expects [${own[i].shape}] (another body, featureDim or input shape?)`,
        );
      }
      return t;
    });
    body.setWeights(ordered);
  } finally {
    tf.dispose(Object.values(decoded));
  }
}

/** A body's files in the tfjs layers format (`body/model.json` + `body/weights.bin`, loadable by `tf.loadLayersModel`). */
export async function bodyFiles(body: tfl.LayersModel): Promise<Record<string, Uint8Array | string>> {
  const out: Record<string, Uint8Array | string> = {};
  await body.save(
    tf.io.withSaveHandler(async (a) => {
      out['body/weights.bin'] = new Uint8Array(a.weightData as ArrayBuffer);
      out['body/model.json'] = JSON.stringify({
        format: 'layers-model',
        generatedBy: 'dflmoe',
        convertedBy: null,
        modelTopology: a.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: a.weightSpecs }],
      });
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return out;
}

/**
 * Write `body` to `dir` as `model.json` + `weights.bin` (readable by
 * `readBodyWeights` and `tf.loadLayersModel`), and the standardizer its
 * inputs were scaled with, if given.
 */
export async function writeBody(dir: string, body: tfl.LayersModel, standardizer?: BodyStandardizer): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const files = await bodyFiles(body);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name.replace(/^body\//, '')), content);
  if (standardizer) {
    const { mean, std, featureNames } = standardizer;
    writeFileSync(join(dir, STANDARDIZER_FILE), JSON.stringify({ mean: Array.from(mean), std: Array.from(std), ...(featureNames ? { featureNames } : {}) }));
  }
}
