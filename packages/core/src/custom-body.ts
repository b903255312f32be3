/**
 * Bodies the host brings: a tfjs `LayersModel`, a function that builds one
 * from the input shape and the feature size, or a saved tfjs layers model
 * (`tfjs:<dir>`: `model.json` + weights) named in a site config.
 *
 * A site owns its body: a given model is copied (topology and weights), so
 * the host's model is never trained, shared between sites or disposed by
 * them. The copy is made from the model's serialized configuration, which
 * is also what a checkpoint's `body/model.json` holds and what `loadSite`
 * rebuilds the body from: a body whose layers cannot be serialized that way
 * is refused when the site is created, naming the layer, as is a body whose
 * output is not one vector of `featureDim` values per sample.
 *
 * Body sharing combines bodies only when their architecture strings match;
 * a custom body's is `custom:<digest>`, from its layers' classes and
 * configurations (without names, initializers, regularizers and
 * constraints) and its weights' shapes, so that two sites with the same
 * network agree whatever their layers are called.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { parseBodySpec, type BodySpec, type CustomBodySpec } from './model.js';
import { BodyFileError, readBodyWeights } from './pretrained.js';

/** Builds a body for one sample of `inputShape` that outputs `featureDim` features. */
export type BodyBuilder = (inputShape: number[], featureDim: number) => tfl.LayersModel;

/**
 * What the library accepts as a body: a spec (`mlp:64`, `cnn:16x32`,
 * `tfjs:<dir>` for a saved tfjs layers model), a tfjs `LayersModel` (each
 * site trains its own copy), or a function building one.
 */
export type BodyInput = BodySpec | string | tfl.LayersModel | BodyBuilder;

/** The prefix of a site config's body that names a saved tfjs layers model. */
export const SAVED_BODY_PREFIX = 'tfjs:';

/**
 * A body the host brought that cannot serve as one (wrong input or output
 * shape, a layer tfjs cannot save, ...), naming the problem.
 */
export class BodyError extends Error {
  /** Always `BodyError`. */
  override name = 'BodyError';
}

function isLayersModel(x: unknown): x is tfl.LayersModel {
  return (
    x instanceof tfl.LayersModel ||
    (typeof x === 'object' && x !== null && typeof (x as tfl.LayersModel).getConfig === 'function' && Array.isArray((x as tfl.LayersModel).layers))
  );
}

/** A model's class and configuration: enough to build an equal model (`fromConfig`). */
interface ModelConfig {
  className: string;
  config: tf.serialization.ConfigDict;
}

function modelConfig(m: tfl.LayersModel, what: string): ModelConfig {
  checkSerializable(m, what);
  return { className: m.getClassName(), config: m.getConfig() };
}

function fromConfig(c: ModelConfig, what: string): tfl.LayersModel {
  const entry = tf.serialization.SerializationMap.getMap().classNameMap[c.className];
  if (!entry) throw new BodyError(`${what}: a ${c.className} cannot be rebuilt from its configuration; build the body with tf.sequential or tf.model`);
  try {
    // A copy each time: tfjs's Sequential.fromConfig takes the layers out of the config it is given.
    return entry[1](entry[0], structuredClone(c.config)) as unknown as tfl.LayersModel;
  } catch (e) {
    throw new BodyError(`${what}: cannot be rebuilt from its configuration (${(e as Error).message.split('\n')[0]})`);
  }
}

/** Throws unless every layer can be written to model.json and read back. */
function checkSerializable(m: tfl.LayersModel, what: string): void {
  const known = tf.serialization.SerializationMap.getMap().classNameMap;
  for (const l of m.layers) {
    const cls = l.getClassName();
    const why = !known[cls]
      ? `its class ${cls} is not registered for serialization (tf.serialization.registerClass)`
      : (() => {
          try {
            l.getConfig();
            return undefined;
          } catch (e) {
            return `its getConfig() fails (${(e as Error).message.split('\n')[0]})`;
          }
        })();
    if (why) {
      throw new BodyError(`${what}: layer "${l.name}" cannot be saved: ${why}; a site checkpoints its body as model.json and rebuilds it from there`);
    }
    for (const w of l.weights) {
      if (w.dtype !== 'float32')
        throw new BodyError(`${what}: layer "${l.name}" holds weight ${w.originalName} of type ${w.dtype}; body weights must be float32`);
    }
  }
}

/** Throws unless `m` maps one sample of `inputShape` to one vector of `featureDim` values. */
export function checkBody(m: tfl.LayersModel, inputShape: number[], featureDim: number, what = 'custom body'): void {
  if (m.inputs.length !== 1 || m.outputs.length !== 1) {
    throw new BodyError(`${what}: has ${m.inputs.length} inputs and ${m.outputs.length} outputs; a body takes one sample and outputs one feature vector`);
  }
  const first = m.layers[0];
  const inShape = m.inputs[0].shape.slice(1);
  if (inShape.length !== inputShape.length || inShape.some((d, i) => d !== null && d !== inputShape[i])) {
    throw new BodyError(
      `${what}: its input "${first?.name ?? 'input'}" takes samples of shape [${inShape.map((d) => d ?? '?')}]; this data's samples have shape [${inputShape}]`,
    );
  }
  const last = m.layers.at(-1)!;
  const out = m.outputs[0].shape.slice(1);
  if (out.length !== 1 || out[0] !== featureDim) {
    throw new BodyError(
      `${what}: its last layer "${last.name}" outputs [${out.map((d) => d ?? '?')}] per sample; the head takes a vector of featureDim = ${featureDim} ` +
        `(end the body with a layer of ${featureDim} units, flattened, or set featureDim to match)`,
    );
  }
  checkSerializable(m, what);
}

/** The body as a spec that builds a fresh copy of `model` for each site (its topology and current weights). */
export function customBody(model: tfl.LayersModel | BodyBuilder, o: { source?: string } = {}): CustomBodySpec {
  if (typeof model === 'function') return { kind: 'custom', build: model, ...(o.source ? { source: o.source } : {}) };
  const what = o.source ? `body ${o.source}` : 'custom body';
  const config = modelConfig(model, what);
  const weights = model.getWeights().map((w) => ({ shape: w.shape, data: w.dataSync() as Float32Array }));
  return {
    kind: 'custom',
    build: () => {
      const m = fromConfig(config, what);
      const ts = weights.map((w) => tf.tensor(w.data, w.shape));
      try {
        m.setWeights(ts);
      } finally {
        tf.dispose(ts);
      }
      return m;
    },
    ...(o.source ? { source: o.source } : {}),
  };
}

/** Read a saved tfjs layers model (a directory with model.json and its weights, or the model.json) as a body spec. */
export async function loadBodyModel(path: string): Promise<CustomBodySpec> {
  const json = existsSync(path) && statSync(path).isDirectory() ? join(path, 'model.json') : path;
  if (!existsSync(json))
    throw new BodyFileError(`${json}: no such file (a saved body is a directory with model.json and its weights, as tfjs's model.save writes)`);
  const w = readBodyWeights(json);
  let topology: unknown;
  try {
    topology = (JSON.parse(readFileSync(json, 'utf8')) as { modelTopology?: unknown }).modelTopology;
  } catch (e) {
    throw new BodyFileError(`${json}: not JSON (${(e as Error).message})`);
  }
  if (!topology || typeof topology !== 'object') throw new BodyFileError(`${json}: no modelTopology; is it a tfjs layers model?`);
  let model: tfl.LayersModel;
  try {
    model = await tfl.loadLayersModel(tf.io.fromMemory({ modelTopology: topology as object, weightSpecs: w.specs, weightData: w.data }));
  } catch (e) {
    throw new BodyFileError(`${json}: cannot be read as a tfjs layers model (${(e as Error).message.split('\n')[0]})`);
  }
  try {
    return customBody(model, { source: `${SAVED_BODY_PREFIX}${resolve(dirname(json))}` });
  } finally {
    model.dispose();
  }
}

/**
 * Any body input as a spec a site can build synchronously: strings are
 * parsed (`tfjs:<path>` is read, relative to `baseDir`), models and
 * functions are wrapped; undefined is the default MLP.
 */
export async function resolveBody(input: BodyInput | undefined, baseDir = '.'): Promise<BodySpec> {
  if (input === undefined) return { kind: 'mlp' };
  if (typeof input === 'string') {
    if (input.startsWith(SAVED_BODY_PREFIX)) return loadBodyModel(resolve(baseDir, input.slice(SAVED_BODY_PREFIX.length)));
    return parseBodySpec(input);
  }
  if (typeof input === 'function' || isLayersModel(input)) return customBody(input);
  if (input.kind === 'custom' && !input.build && input.source?.startsWith(SAVED_BODY_PREFIX))
    return loadBodyModel(input.source.slice(SAVED_BODY_PREFIX.length));
  return input;
}

/** A body spec from what `PeerModelOptions.body` takes (synchronous: a model or function is wrapped). */
export function bodySpecOf(input: BodySpec | tfl.LayersModel | BodyBuilder): BodySpec {
  return typeof input === 'function' || isLayersModel(input) ? customBody(input) : input;
}

/** Build and check a custom body for one site; returns it with its architecture string. */
export function buildCustomBody(spec: CustomBodySpec, inputShape: number[], featureDim: number): { model: tfl.LayersModel; arch: string } {
  if (!spec.build) {
    throw new BodyError(`body ${spec.source ?? 'custom'} has not been read yet: pass it through resolveBody (createLearner, loadSite and dflmoe peer do)`);
  }
  const what = spec.source ? `body ${spec.source}` : 'custom body';
  let model: tfl.LayersModel;
  try {
    model = spec.build(inputShape, featureDim);
  } catch (e) {
    if (e instanceof BodyError) throw e;
    throw new BodyError(
      `${what}: building it for samples of shape [${inputShape}] and featureDim ${featureDim} failed: ${(e as Error).message.split('\n')[0]}`,
    );
  }
  if (!isLayersModel(model)) throw new BodyError(`${what}: the body function returned ${typeof model}, not a tfjs LayersModel (tf.sequential or tf.model)`);
  try {
    checkBody(model, inputShape, featureDim, what);
    return { model, arch: bodyArchitecture(model) };
  } catch (e) {
    model.dispose();
    throw e;
  }
}

const IGNORED = /(^name$|Initializer$|Regularizer$|Constraint$)/;

function stripConfig(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripConfig);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k]) => !IGNORED.test(k))
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, x]) => [k, stripConfig(x)]),
    );
  }
  return v;
}

/**
 * A stable architecture string of a body: a digest of its layers (class,
 * configuration without names, initializers, regularizers or constraints,
 * and which layers feed it) and its weights' shapes.
 */
export function bodyArchitecture(m: tfl.LayersModel): string {
  const index = new Map(m.layers.map((l, i) => [l, i]));
  const layers = m.layers.map((l) => ({
    cls: l.getClassName(),
    config: stripConfig(l.getConfig()),
    from: l.inboundNodes.flatMap((n) => n.inboundLayers.map((x) => index.get(x) ?? -1)),
    weights: l.weights.map((w) => [w.shape, w.trainable]),
  }));
  return `custom:${bytesToHex(sha256(new TextEncoder().encode(JSON.stringify(layers)))).slice(0, 16)}`;
}
