/**
 * An image folder picked in the page (one sub-folder per class), decoded
 * by the browser: each image drawn onto a canvas at the consortium's
 * `imageSize` (default: the first image's size), grayscale or RGB as
 * `channels` says, scaled to [0, 1]. Browsers resample with their own
 * filter, not sharp's Lanczos-3, so pixel values differ slightly from a
 * Node site's; the layout ([h, w, c], classes by folder name) is the same.
 */
import type { Logger } from '@dflmoe/core';
import { siteDataFromSamples, type SiteData } from '@dflmoe/data';
import { IMAGE_EXTENSIONS, sortNames } from '@dflmoe/data/internal';
import type { JoinDetails } from '@dflmoe/p2p';

export async function readImageFolder(files: File[], data: JoinDetails['data'], logger: Logger): Promise<SiteData> {
  // webkitRelativePath: <picked folder>/<class>/<file>
  const byClass = new Map<string, File[]>();
  for (const f of files) {
    const parts = f.webkitRelativePath.split('/');
    const ext = f.name.slice(f.name.lastIndexOf('.')).toLowerCase();
    if (parts.length !== 3 || parts.some((p) => p.startsWith('.')) || !IMAGE_EXTENSIONS.includes(ext)) continue;
    byClass.set(parts[1], [...(byClass.get(parts[1]) ?? []), f]);
  }
  const classes = sortNames([...byClass.keys()]);
  if (classes.length < 2) throw new Error(`the folder needs at least 2 class sub-folders holding PNG or JPEG images; found ${classes.length}`);
  const channels = data.channels ?? 1;
  let size = data.imageSize;
  const samples: Float32Array[] = [];
  const labels: string[] = [];
  for (const c of classes) {
    for (const f of byClass.get(c)!.sort((a, b) => a.name.localeCompare(b.name))) {
      let bitmap: ImageBitmap;
      try {
        bitmap = await createImageBitmap(f);
      } catch {
        throw new Error(`${f.webkitRelativePath} is not an image this browser can decode`);
      }
      size ??= [bitmap.height, bitmap.width];
      const [h, w] = size;
      const canvas = new OffscreenCanvas(w, h);
      const ctx = canvas.getContext('2d')!;
      ctx.fillStyle = '#000';
      ctx.fillRect(0, 0, w, h);
      ctx.drawImage(bitmap, 0, 0, w, h);
      bitmap.close();
      const px = ctx.getImageData(0, 0, w, h).data;
      const x = new Float32Array(h * w * channels);
      for (let i = 0; i < h * w; i++) {
        const [r, g, b] = [px[4 * i], px[4 * i + 1], px[4 * i + 2]];
        if (channels === 1) x[i] = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
        else for (let k = 0; k < 3; k++) x[3 * i + k] = px[4 * i + k] / 255;
      }
      samples.push(x);
      labels.push(c);
    }
  }
  logger.info(`image folder: ${samples.length} images in ${classes.length} classes, ${size![0]}x${size![1]}x${channels}`);
  const flat = new Float32Array(samples.reduce((n, s) => n + s.length, 0));
  samples.reduce((at, s) => (flat.set(s, at), at + s.length), 0);
  const site = siteDataFromSamples(flat, labels, {
    sampleShape: [size![0], size![1], channels],
    name: 'the image folder',
    seed: data.seed,
    testFraction: data.testFraction,
    ...(data.classes ? { classes: data.classes } : {}),
  });
  // New inputs for the trained site are image folders too (stretched to the size, as drawn here).
  return { ...site, input: { kind: 'images' }, description: `${samples.length} images in ${classes.length} classes (${site.description})` };
}
