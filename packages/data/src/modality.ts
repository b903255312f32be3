/**
 * The form in which a site holds its samples (issue #28): the same digits as
 * 8x8 images at one site and as 64-column tables at another. A site's
 * modality decides the shape its body takes in (an image's [h, w, c], a
 * table's [d]) and the sites it agrees its preprocessing with.
 */
import { DataError } from './errors.js';
import { featureSize, type Dataset } from './types.js';

/** The forms a simulated site may hold a dataset of images in. */
export const MODALITIES = ['image', 'table'] as const;
/** One of `MODALITIES`. */
export type Modality = (typeof MODALITIES)[number];

/** `image` for samples of shape [h, w, c], `table` for [d]; undefined for any other shape. */
export function modalityOf(ds: Pick<Dataset, 'sampleShape'>): Modality | undefined {
  return ds.sampleShape.length === 3 ? 'image' : ds.sampleShape.length === 1 ? 'table' : undefined;
}

/**
 * `ds` held as `m`: an image dataset as it is (`image`), or read as a table
 * (`table`): one row of `h * w * c` numeric columns per image, named
 * `pixel_<row>_<column>` (`_<channel>` after them for more than one channel),
 * the same values in the same order. A table cannot be read as images.
 */
export function modalityView(ds: Dataset, m: Modality): Dataset {
  const own = modalityOf(ds);
  if (own === m) return ds;
  if (m === 'image' || own !== 'image') {
    throw new DataError(
      `${ds.name} has samples of shape [${ds.sampleShape.join(', ')}]: it can be held as ${own ?? 'neither'} only, not as ${m}s (a table cannot be read as images)`,
    );
  }
  const [h, w, c] = ds.sampleShape;
  const featureNames: string[] = [];
  for (let r = 0; r < h; r++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) featureNames.push(c === 1 ? `pixel_${r}_${x}` : `pixel_${r}_${x}_${k}`);
  return { ...ds, sampleShape: [featureSize(ds)], featureNames, description: `${ds.description} Held as a table of ${featureNames.length} pixel columns.` };
}
