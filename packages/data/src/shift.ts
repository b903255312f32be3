/**
 * Feature shift between sites, as different scanners or labs produce: each
 * site gets its own transformation of the input, deterministic for a
 * (seed, site). Labels are untouched; this is covariate shift, the
 * counterpart of the label skew the partitioners make.
 *
 * Images (sample shape [h, w, c]):
 * - `rotate`: the sites' angles are spread evenly over [-maxAngle, maxAngle]
 *   (default 30 degrees) and dealt to the sites in a seeded order; rotation
 *   is counter-clockwise as displayed, about the image centre, bilinear,
 *   with black (0) outside the original image.
 * - `contrast`: x -> (x - m) * c + m + b, with m the sample's mean, c drawn
 *   in [1 / (1 + contrast), 1 + contrast] (log-uniform) and b in
 *   [-brightness, brightness] times the value range.
 * - `noise`: Gaussian noise with a per-site std drawn in [0, noise] times the
 *   value range.
 * Tables (sample shape [d]):
 * - `affine`: every feature j gets x -> x * s_j + o_j with log s_j ~
 *   N(0, affineScale^2) and o_j ~ N(0, affineOffset^2) times the feature's std.
 * - `noise`: Gaussian noise with a per-site std drawn in [0, noise] times the
 *   feature's std.
 *
 * The value range (images) and feature stds (tables) come from `opts.scale`,
 * else from the rows given. Noise for a row depends on (seed, site, row), not
 * on the other rows passed. Values are not clipped.
 */
import { Rng, deriveSeed } from './rng.js';
import type { PeerSplit } from './partition.js';
import { fitStandardizer } from './standardize.js';
import { DataError } from './errors.js';
import { featureSize, type Dataset } from './types.js';
import { modalityOf } from './modality.js';

/** A feature shift the simulator gives each site's images: rotation, contrast, noise, or an affine change. */
export type ShiftKind = 'rotate' | 'contrast' | 'noise' | 'affine';
/** Every `ShiftKind`. */
export const SHIFT_KINDS: readonly ShiftKind[] = ['rotate', 'contrast', 'noise', 'affine'];

export interface ShiftOptions {
  /** Largest rotation in degrees (default 30). */
  maxAngle?: number;
  /** Largest contrast change: factors in [1 / (1 + contrast), 1 + contrast] (default 0.3). */
  contrast?: number;
  /** Largest brightness offset as a share of the value range (default 0.1). */
  brightness?: number;
  /** Largest noise std as a share of the value range or feature std (default 0.1). */
  noise?: number;
  /** Std of the log of the per-feature scale (default 0.2). */
  affineScale?: number;
  /** Std of the per-feature offset, in units of the feature's std (default 0.3). */
  affineOffset?: number;
  /** Value range (images: one number) or per-feature std (tables); default: measured on the rows given. */
  scale?: number | ArrayLike<number>;
}

/** One site's transformation (what {@link applyFeatureShift} applies). */
export interface SiteShift {
  site: number;
  /** Degrees, counter-clockwise. */
  angle: number;
  contrast: number;
  /** Brightness offset as a share of the value range. */
  brightness: number;
  /** Noise std as a share of the value range or feature std. */
  noise: number;
  /** Per-feature scale and offset (offset in units of the feature's std), for tables. */
  affineScale: Float64Array;
  affineOffset: Float64Array;
}

/** The transformation of site `siteIndex` of `numSites` for a seed, for samples of `dim` values. */
export function siteShift(siteIndex: number, numSites: number, seed: number, dim: number, opts: ShiftOptions = {}): SiteShift {
  if (!Number.isInteger(numSites) || numSites < 1 || !Number.isInteger(siteIndex) || siteIndex < 0 || siteIndex >= numSites) {
    throw new DataError(`site index ${siteIndex} is not in [0, ${numSites})`);
  }
  const maxAngle = opts.maxAngle ?? 30;
  const angles = Array.from({ length: numSites }, (_, i) => (numSites === 1 ? 0 : -maxAngle + (2 * maxAngle * i) / (numSites - 1)));
  const order = new Rng(deriveSeed(seed, 'feature-shift-angles', numSites)).shuffle(angles.map((_, i) => i)) as number[];
  const rng = new Rng(deriveSeed(seed, 'feature-shift', siteIndex));
  // Drawn in a fixed order whatever the kinds, so that one kind's parameters do not depend on the others.
  const contrast = Math.exp((2 * rng.uniform() - 1) * Math.log(1 + (opts.contrast ?? 0.3)));
  const brightness = (2 * rng.uniform() - 1) * (opts.brightness ?? 0.1);
  const noise = rng.uniform() * (opts.noise ?? 0.1);
  const affineScale = new Float64Array(dim);
  const affineOffset = new Float64Array(dim);
  for (let j = 0; j < dim; j++) {
    affineScale[j] = Math.exp(rng.normal() * (opts.affineScale ?? 0.2));
    affineOffset[j] = rng.normal() * (opts.affineOffset ?? 0.3);
  }
  return { site: siteIndex, angle: angles[order[siteIndex]], contrast, brightness, noise, affineScale, affineOffset };
}

/**
 * Rotate one [h, w, c] image counter-clockwise (as displayed) by `degrees`
 * about its centre, bilinear, black outside. Returns a new array.
 */
export function rotateImage(img: Float32Array, h: number, w: number, c: number, degrees: number): Float32Array {
  if (img.length !== h * w * c) throw new DataError(`rotateImage: ${img.length} values for a ${h}x${w}x${c} image`);
  if (degrees % 360 === 0) return img.slice();
  const t = (degrees * Math.PI) / 180;
  const snap = (v: number) => (Math.abs(v - Math.round(v)) < 1e-9 ? Math.round(v) : v);
  const cos = snap(Math.cos(t));
  const sin = snap(Math.sin(t));
  const cy = (h - 1) / 2;
  const cx = (w - 1) / 2;
  const out = new Float32Array(img.length);
  const at = (y: number, x: number, ch: number) => (y >= 0 && y < h && x >= 0 && x < w ? img[(y * w + x) * c + ch] : 0);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const dx = x - cx;
      const dy = y - cy;
      const sx = snap(cx + dx * cos - dy * sin);
      const sy = snap(cy + dx * sin + dy * cos);
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      for (let ch = 0; ch < c; ch++) {
        const top = at(y0, x0, ch) * (1 - fx) + at(y0, x0 + 1, ch) * fx;
        const bottom = at(y0 + 1, x0, ch) * (1 - fx) + at(y0 + 1, x0 + 1, ch) * fx;
        out[(y * w + x) * c + ch] = top * (1 - fy) + bottom * fy;
      }
    }
  }
  return out;
}

/** Largest absolute value over the rows (1 when all are 0): the value range of images in [0, 1] or [0, 16]. */
function valueRange(features: Float32Array, d: number, rows: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < rows.length; i++) {
    for (let j = rows[i] * d; j < (rows[i] + 1) * d; j++) m = Math.max(m, Math.abs(features[j]));
  }
  return m > 0 ? m : 1;
}

function checkKinds(sampleShape: number[], kinds: readonly ShiftKind[]): 'image' | 'table' {
  const what = modalityOf({ sampleShape });
  if (!what) throw new DataError(`feature shift needs images [h, w, c] or tables [d], got samples of shape [${sampleShape.join(', ')}]`);
  for (const k of kinds) {
    if (!SHIFT_KINDS.includes(k)) throw new DataError(`unknown feature shift "${k}": use ${SHIFT_KINDS.join(', ')}`);
    if (what === 'table' && (k === 'rotate' || k === 'contrast')) throw new DataError(`feature shift "${k}" is for images; tables take affine and noise`);
    if (what === 'image' && k === 'affine') throw new DataError('feature shift "affine" is for tables; images take rotate, contrast and noise');
  }
  return what;
}

/**
 * Site `siteIndex`'s transformation of the given rows: returns a new
 * `rows.length * prod(sampleShape)` array, rows in the order given.
 */
export function applyFeatureShift(
  features: Float32Array,
  sampleShape: number[],
  rows: ArrayLike<number>,
  siteIndex: number,
  numSites: number,
  seed: number,
  kinds: readonly ShiftKind[],
  opts: ShiftOptions = {},
): Float32Array {
  const what = checkKinds(sampleShape, kinds);
  const d = featureSize({ sampleShape });
  const p = siteShift(siteIndex, numSites, seed, what === 'table' ? d : 0, opts);
  const out = new Float32Array(rows.length * d);
  const has = (k: ShiftKind) => kinds.includes(k);
  if (what === 'image') {
    const [h, w, c] = sampleShape;
    const range = typeof opts.scale === 'number' ? opts.scale : valueRange(features, d, rows);
    for (let i = 0; i < rows.length; i++) {
      let x: Float32Array = features.slice(rows[i] * d, (rows[i] + 1) * d);
      if (has('rotate')) x = rotateImage(x, h, w, c, p.angle);
      if (has('contrast')) {
        const m = x.reduce((a, b) => a + b, 0) / d;
        for (let j = 0; j < d; j++) x[j] = (x[j] - m) * p.contrast + m + p.brightness * range;
      }
      if (has('noise') && p.noise > 0) {
        const rng = new Rng(deriveSeed(seed, 'feature-shift-noise', siteIndex, rows[i]));
        for (let j = 0; j < d; j++) x[j] += rng.normal() * p.noise * range;
      }
      out.set(x, i * d);
    }
    return out;
  }
  const sd = opts.scale !== undefined && typeof opts.scale !== 'number' ? Float64Array.from(opts.scale) : fitStandardizer(features, d, rows).std;
  if (sd.length !== d) throw new DataError(`scale holds ${sd.length} feature stds for ${d} features`);
  for (let i = 0; i < rows.length; i++) {
    const rng = has('noise') ? new Rng(deriveSeed(seed, 'feature-shift-noise', siteIndex, rows[i])) : undefined;
    for (let j = 0; j < d; j++) {
      let v = features[rows[i] * d + j];
      if (has('affine')) v = v * p.affineScale[j] + p.affineOffset[j] * sd[j];
      if (rng) v += rng.normal() * p.noise * sd[j];
      out[i * d + j] = v;
    }
  }
  return out;
}

/**
 * Give each site of a partition its own feature shift: every site's rows
 * (train and test) are transformed with that site's transformation; rows in
 * no split are left as they are. The value range or feature stds are
 * measured once over the whole dataset, so every site shares the reference.
 */
export function shiftDatasetBySite(ds: Dataset, splits: PeerSplit[], seed: number, kinds: readonly ShiftKind[], opts: ShiftOptions = {}): Dataset {
  const what = checkKinds(ds.sampleShape, kinds);
  const d = featureSize(ds);
  const all = Array.from({ length: ds.numSamples }, (_, i) => i);
  const scale = opts.scale ?? (what === 'image' ? valueRange(ds.features, d, all) : fitStandardizer(ds.features, d, all).std);
  const features = ds.features.slice();
  splits.forEach((s, site) => {
    const rows = [...s.train, ...s.test];
    const x = applyFeatureShift(ds.features, ds.sampleShape, rows, site, splits.length, seed, kinds, { ...opts, scale });
    rows.forEach((r, i) => features.set(x.subarray(i * d, (i + 1) * d), r * d));
  });
  return { ...ds, features, description: `${ds.description} Feature shift per site (${kinds.join(', ')}, seed ${seed}).` };
}
