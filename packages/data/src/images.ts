/**
 * Image folders: `images:<dir>` holds one sub-folder per class (class names
 * are the folder names, sorted like labels: numerically when all are
 * numbers), each with PNG or JPEG files. Images are decoded with sharp,
 * turned upright from their EXIF orientation, flattened onto black when they
 * have an alpha channel, converted to grayscale (`channels: 1`, the default)
 * or sRGB (`channels: 3`), resized to `imageSize` ([height, width]; default:
 * the size of the first image, the first file of the first class) with
 * sharp's Lanczos-3 kernel, stretching unless `fit` says otherwise, and
 * scaled to [0, 1]. Samples are [h, w, c], row-major, class by class, files
 * in name order. Other files and hidden entries are ignored.
 */
import { readdirSync, statSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { loadDataset, subsample, type LoadOptions } from './datasets.js';
import { sortNames } from './table.js';
import { DataError } from './errors.js';
import { type Dataset } from './types.js';

export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg'];

/** How an image folder is decoded: the samples' size, grayscale or RGB, how to fit a different aspect ratio. */
export interface ImageFolderOptions {
  /** [height, width] of every sample; default: the first image's size. */
  imageSize?: [number, number];
  /** 1 for grayscale (default), 3 for RGB. */
  channels?: 1 | 3;
  /** How to reach `imageSize` when the aspect ratio differs: stretch (`fill`, default), crop (`cover`) or pad with black (`contain`). */
  fit?: 'fill' | 'cover' | 'contain';
  /** Images decoded at once (default 8). */
  concurrency?: number;
}

type Sharp = (typeof import('sharp'))['default'];

async function loadSharp(): Promise<Sharp> {
  try {
    return (await import('sharp')).default;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new DataError(`image folders need the sharp package, which did not load (${msg}). Reinstall with npm install sharp.`);
  }
}

function listClasses(dir: string): { name: string; files: string[] }[] {
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new DataError(`image folder not found: ${dir}`);
  }
  if (!st.isDirectory()) throw new DataError(`${dir} is not a folder: images:<dir> needs a folder with one sub-folder per class`);
  const visible = readdirSync(dir, { withFileTypes: true }).filter((e) => !e.name.startsWith('.'));
  const classes = sortNames(visible.filter((e) => e.isDirectory()).map((e) => e.name));
  if (classes.length === 0) {
    throw new DataError(`${dir} is empty: it needs one sub-folder per class, each holding that class's PNG or JPEG images`);
  }
  if (classes.length < 2) {
    throw new DataError(`${dir} holds a single class folder ("${classes[0]}"): it needs at least 2 classes, one sub-folder each`);
  }
  return classes.map((name) => {
    const sub = join(dir, name);
    const files = readdirSync(sub, { withFileTypes: true })
      .filter((e) => e.isFile() && !e.name.startsWith('.') && IMAGE_EXTENSIONS.includes(extname(e.name).toLowerCase()))
      .map((e) => e.name)
      .sort();
    if (files.length === 0) throw new DataError(`class folder ${sub} holds no PNG or JPEG images`);
    return { name, files: files.map((f) => join(sub, f)) };
  });
}

/** Decode a folder of class sub-folders into a dataset (see the policies at the top of this file). */
export async function loadImageFolder(dir: string, opts: ImageFolderOptions = {}): Promise<Dataset> {
  const root = resolve(dir);
  const classes = listClasses(root);
  const files = classes.flatMap((c, k) => c.files.map((file) => ({ file, label: k })));
  const { features, sampleShape } = await decodeImages(
    files.map((f) => f.file),
    opts,
  );
  const [h, w, channels] = sampleShape;
  const counts = classes.map((c) => `${c.name} ${c.files.length}`).join(', ');
  return {
    name: `images:${dir}`,
    features,
    labels: Int32Array.from(files, (f) => f.label),
    numSamples: files.length,
    sampleShape,
    classNames: classes.map((c) => c.name),
    description: `Images from ${root}: ${files.length} ${channels === 1 ? 'grayscale' : 'RGB'} images at ${h}x${w}, ${classes.length} classes (${counts}).`,
    source: root,
  };
}

/**
 * Image files to predict from a folder: the images directly in it, or, when
 * it has none, those of its sub-folders (a labelled folder), by name. Labels
 * are the sub-folder names (undefined for images directly in the folder).
 */
export function listImageInputs(dir: string): { file: string; label?: string }[] {
  const root = resolve(dir);
  let st;
  try {
    st = statSync(root);
  } catch {
    throw new DataError(`image folder not found: ${root}`);
  }
  if (!st.isDirectory()) throw new DataError(`${root} is not a folder of PNG or JPEG images`);
  const entries = readdirSync(root, { withFileTypes: true }).filter((e) => !e.name.startsWith('.'));
  const isImage = (name: string) => IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
  const direct = entries
    .filter((e) => e.isFile() && isImage(e.name))
    .map((e) => e.name)
    .sort();
  if (direct.length > 0) return direct.map((f) => ({ file: join(root, f) }));
  const out = sortNames(entries.filter((e) => e.isDirectory()).map((e) => e.name)).flatMap((label) =>
    readdirSync(join(root, label), { withFileTypes: true })
      .filter((e) => e.isFile() && !e.name.startsWith('.') && isImage(e.name))
      .map((e) => e.name)
      .sort()
      .map((f) => ({ file: join(root, label, f), label })),
  );
  if (out.length === 0) throw new DataError(`${root} holds no PNG or JPEG images (directly or in sub-folders)`);
  return out;
}

/**
 * Decode image files into `[h, w, c]` samples in [0, 1] (see the policies at
 * the top of this file); `imageSize` defaults to the first image's size.
 */
export async function decodeImages(files: string[], opts: ImageFolderOptions = {}): Promise<{ features: Float32Array; sampleShape: [number, number, number] }> {
  const channels = opts.channels ?? 1;
  if (channels !== 1 && channels !== 3) throw new DataError(`channels must be 1 or 3, got ${String(channels)}`);
  if (files.length === 0) throw new DataError('no images to decode');
  const sharp = await loadSharp();
  const unreadable = (file: string, err: unknown) => new DataError(`cannot read image ${file}: ${err instanceof Error ? err.message : String(err)}`);
  let size = opts.imageSize;
  if (size === undefined) {
    const first = files[0];
    let meta;
    try {
      meta = await sharp(first).metadata();
    } catch (err) {
      throw unreadable(first, err);
    }
    // autoOrient reports the size the image has once turned upright.
    const w = meta.autoOrient?.width ?? meta.width;
    const h = meta.autoOrient?.height ?? meta.height;
    if (!w || !h) throw new DataError(`cannot read the size of image ${first}`);
    size = [h, w];
  }
  const [h, w] = size;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1)
    throw new DataError(`imageSize must be two positive integers [height, width], got ${JSON.stringify(size)}`);
  const d = h * w * channels;
  const features = new Float32Array(files.length * d);

  const decode = async (i: number) => {
    const file = files[i];
    let data: Buffer;
    let info: { width: number; height: number; channels: number };
    try {
      let img = sharp(file)
        .autoOrient()
        .flatten({ background: '#000000' })
        .resize(w, h, { fit: opts.fit ?? 'fill', background: '#000000' });
      img = channels === 1 ? img.grayscale() : img.toColourspace('srgb');
      ({ data, info } = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }));
    } catch (err) {
      throw unreadable(file, err);
    }
    if (info.width !== w || info.height !== h || info.channels !== channels || data.length !== d) {
      throw new DataError(`image ${file} decoded to ${info.width}x${info.height}x${info.channels}, expected ${w}x${h}x${channels}`);
    }
    const off = i * d;
    for (let j = 0; j < d; j++) features[off + j] = data[j] / 255;
  };
  let next = 0;
  const worker = async () => {
    while (next < files.length) await decode(next++);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 8, files.length)) }, worker));
  return { features, sampleShape: [h, w, channels] };
}

/** `loadDatasetAsync`'s options: `loadDataset`'s, and an image folder's. */
export interface AsyncLoadOptions extends LoadOptions, ImageFolderOptions {}

/** {@link loadDataset}, plus image folders (`images:<dir>`), which decode asynchronously. */
export async function loadDatasetAsync(spec: string, opts: AsyncLoadOptions = {}): Promise<Dataset> {
  if (!spec.startsWith('images:')) return loadDataset(spec, opts);
  const dir = spec.slice('images:'.length);
  if (!dir) throw new DataError('image dataset needs a folder: use images:<dir>');
  let ds = await loadImageFolder(dir, opts);
  if (opts.maxSamples != null && opts.maxSamples < ds.numSamples) ds = subsample(ds, opts.maxSamples, opts.seed ?? 0);
  return ds;
}
