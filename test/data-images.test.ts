import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { DataError, loadDataset, loadDatasetAsync, loadImageFolder } from '@dflmoe/data';

/** Raw pixels of a w x h image with `c` channels, from a function of (x, y, channel). */
function pixels(w: number, h: number, c: number, f: (x: number, y: number, ch: number) => number): Buffer {
  const b = Buffer.alloc(w * h * c);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let ch = 0; ch < c; ch++) b[(y * w + x) * c + ch] = f(x, y, ch);
  return b;
}

async function writeImage(file: string, w: number, h: number, c: 1 | 3 | 4, f: (x: number, y: number, ch: number) => number) {
  const img = sharp(pixels(w, h, c, f), { raw: { width: w, height: h, channels: c } });
  await (file.endsWith('.png') ? img.png() : img.jpeg({ quality: 95 })).toFile(file);
}

function tmpDir(): string {
  return mkdtempSync(join(tmpdir(), 'dflmoe-img-'));
}

/**
 * Two classes, sorted numerically ("2" before "10"): class "2" holds flat gray
 * images (PNG and JPEG), class "10" images whose left half is white.
 */
async function fixture(): Promise<string> {
  const dir = tmpDir();
  for (const cls of ['10', '2']) mkdirSync(join(dir, cls));
  await writeImage(join(dir, '2', 'a.png'), 12, 10, 1, () => 64);
  await writeImage(join(dir, '2', 'b.jpg'), 12, 10, 3, () => 64);
  await writeImage(join(dir, '2', 'c.PNG'), 24, 20, 1, () => 64); // another size: resized
  await writeImage(join(dir, '10', 'a.png'), 12, 10, 1, (x) => (x < 6 ? 255 : 0));
  await writeImage(join(dir, '10', 'b.jpeg'), 12, 10, 3, (x) => (x < 6 ? 255 : 0));
  writeFileSync(join(dir, '10', 'notes.txt'), 'not an image, ignored');
  writeFileSync(join(dir, 'README'), 'top-level files are ignored');
  mkdirSync(join(dir, '.cache'));
  return dir;
}

describe('image folders', () => {
  let dir: string;
  before(async () => {
    dir = await fixture();
  });

  it("defaults: the first image's size, grayscale, classes from sorted folder names, pixels in [0, 1]", async () => {
    const ds = await loadImageFolder(dir);
    // The first file of the first class ("2"/a.png) is 12 wide, 10 high.
    assert.deepEqual(ds.sampleShape, [10, 12, 1]);
    assert.deepEqual(ds.classNames, ['2', '10']);
    assert.equal(ds.numSamples, 5);
    assert.deepEqual(Array.from(ds.labels), [0, 0, 0, 1, 1]);
    assert.equal(ds.features.length, 5 * 120);
    // PNG is lossless: exactly 64 / 255.
    assert.ok(ds.features.subarray(0, 120).every((v) => v === Math.fround(64 / 255)));
    // JPEG and the resized PNG: close to it.
    for (const i of [1, 2])
      assert.ok(
        ds.features.subarray(i * 120, (i + 1) * 120).every((v) => Math.abs(v - 64 / 255) < 0.03),
        `sample ${i}`,
      );
    // Left half white, right half black (away from the edge, where JPEG and resizing blur).
    for (const i of [3, 4]) {
      for (let y = 0; y < 10; y++) {
        assert.ok(ds.features[i * 120 + y * 12 + 1] > 0.9 && ds.features[i * 120 + y * 12 + 10] < 0.1, `sample ${i} row ${y}`);
      }
    }
    assert.ok(ds.features.every((v) => v >= 0 && v <= 1));
    assert.match(ds.description, /5 grayscale images at 10x12, 2 classes \(2 3, 10 2\)/);
  });

  it('imageSize and channels: RGB, resized, transparent pixels flattened to black', async () => {
    const d = tmpDir();
    for (const c of ['red', 'clear']) mkdirSync(join(d, c));
    await writeImage(join(d, 'red', 'r.png'), 16, 16, 3, (_x, _y, ch) => (ch === 0 ? 255 : 0));
    await writeImage(join(d, 'red', 'r.jpg'), 40, 20, 3, (_x, _y, ch) => (ch === 0 ? 255 : 0));
    await writeImage(join(d, 'clear', 'c.png'), 16, 16, 4, (_x, _y, ch) => (ch === 3 ? 0 : 200));
    const ds = await loadImageFolder(d, { imageSize: [4, 6], channels: 3 });
    assert.deepEqual(ds.sampleShape, [4, 6, 3]);
    assert.deepEqual(ds.classNames, ['clear', 'red']);
    const px = 4 * 6 * 3;
    assert.ok(
      ds.features.subarray(0, px).every((v) => v === 0),
      'fully transparent becomes black',
    );
    for (const i of [1, 2]) {
      const s = ds.features.subarray(i * px, (i + 1) * px);
      for (let p = 0; p < 24; p++) assert.ok(s[p * 3] > 0.95 && s[p * 3 + 1] < 0.05 && s[p * 3 + 2] < 0.05, `sample ${i} pixel ${p}`);
    }
    // Grayscale of pure red is its luminance, well below 1.
    const gray = await loadImageFolder(d, { imageSize: [4, 4] });
    assert.deepEqual(gray.sampleShape, [4, 4, 1]);
    assert.ok(gray.features[16] > 0.1 && gray.features[16] < 0.7, `red as gray: ${gray.features[16]}`);
  });

  it('loadDatasetAsync reads images: and delegates the rest; the sync loader points to it', async () => {
    const ds = await loadDatasetAsync(`images:${dir}`, { imageSize: [5, 6], maxSamples: 3, seed: 1 });
    assert.equal(ds.numSamples, 3);
    assert.deepEqual(ds.sampleShape, [5, 6, 1]);
    assert.equal((await loadDatasetAsync('digits')).numSamples, 1797);
    assert.throws(() => loadDataset(`images:${dir}`), /loadDatasetAsync/);
  });

  it('clear errors: empty folder, a single class, a class without images, an unreadable image named', async () => {
    const empty = tmpDir();
    await assert.rejects(loadImageFolder(empty), (e: Error) => e instanceof DataError && /is empty: it needs one sub-folder per class/.test(e.message));
    await assert.rejects(loadImageFolder(join(empty, 'nope')), /image folder not found/);
    const one = tmpDir();
    mkdirSync(join(one, 'cats'));
    await writeImage(join(one, 'cats', 'a.png'), 4, 4, 1, () => 0);
    await assert.rejects(loadImageFolder(one), /a single class folder \("cats"\): it needs at least 2 classes/);
    mkdirSync(join(one, 'dogs'));
    writeFileSync(join(one, 'dogs', 'x.txt'), 'no images here');
    await assert.rejects(loadImageFolder(one), /class folder .*dogs holds no PNG or JPEG images/);
    const broken = join(one, 'dogs', 'broken.png');
    writeFileSync(broken, 'this is not a PNG');
    await assert.rejects(loadImageFolder(one), (e: Error) => e instanceof DataError && e.message.includes(`cannot read image ${broken}`));
    // Also when it is the first image, whose size sets the default.
    const first = tmpDir();
    for (const c of ['a', 'b']) mkdirSync(join(first, c));
    writeFileSync(join(first, 'a', '0.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0x00]));
    await writeImage(join(first, 'b', '0.png'), 4, 4, 1, () => 0);
    await assert.rejects(loadImageFolder(first), /cannot read image .*a\/0\.jpg/);
  });
});
