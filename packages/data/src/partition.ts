/**
 * Federated partitioners: split one dataset across peers the way federated
 * learning research does, deterministically for a seed.
 *
 * - `iid`: a uniform random split into near-equal parts.
 * - `dirichlet:<alpha>`: label skew. For every class, the share each peer gets
 *   is drawn from a symmetric Dirichlet(alpha) (Hsu et al., 2019); small alpha
 *   means each peer sees few classes. As in NIID-Bench (Li et al., ICDE 2022)
 *   a peer that already holds its fair share gets no more of later classes,
 *   which keeps sizes from running away; draws repeat until every peer has
 *   at least `minSize` samples.
 * - `shards:<k>`: every peer holds exactly k classes (classes are dealt out
 *   round-robin over a seeded permutation, so each class goes to about the
 *   same number of peers), and a class's samples are shared equally among
 *   the peers that hold it.
 *
 * Every sample goes to at most one peer. Each peer's samples are then split
 * into train and test, stratified by class, so that the test split follows
 * the peer's own label distribution (personalized evaluation).
 */
import { Rng, deriveSeed } from './rng.js';
import { DataError } from './errors.js';

/**
 * How a dataset is split among sites: at random (`iid`), by Dirichlet(alpha)
 * class proportions, or k class shards per site.
 */
export type PartitionSpec = { kind: 'iid' } | { kind: 'dirichlet'; alpha: number } | { kind: 'shards'; k: number };

export function parsePartition(s: string): PartitionSpec {
  const [kind, arg, extra] = s.trim().split(':');
  const bad = (why: string) => new DataError(`Bad partition "${s}": ${why}. Use iid, dirichlet:<alpha> (e.g. dirichlet:0.3) or shards:<k> (e.g. shards:2).`);
  if (extra !== undefined) throw bad('too many parts');
  if (kind === 'iid') {
    if (arg !== undefined) throw bad('iid takes no argument');
    return { kind: 'iid' };
  }
  if (kind === 'dirichlet') {
    const alpha = Number(arg);
    if (arg === undefined || arg === '' || !(alpha > 0) || !Number.isFinite(alpha)) throw bad('alpha must be a positive number');
    return { kind: 'dirichlet', alpha };
  }
  if (kind === 'shards') {
    const k = Number(arg);
    if (!Number.isInteger(k) || k < 1) throw bad('k must be a positive integer');
    return { kind: 'shards', k };
  }
  throw bad(`unknown kind "${kind}"`);
}

export function formatPartition(p: PartitionSpec): string {
  return p.kind === 'iid' ? 'iid' : p.kind === 'dirichlet' ? `dirichlet:${p.alpha}` : `shards:${p.k}`;
}

/** A site's rows of a dataset: train and test. */
export interface PeerSplit {
  /** Row indices into the dataset. */
  train: Int32Array;
  /** Row indices of the site's test split. */
  test: Int32Array;
}

/** The partition's seed, test share and minimum size per site. */
export interface PartitionOptions {
  /** Seed of the split: equal seeds give equal partitions. */
  seed: number;
  /** Share of each peer's samples held out for its test split (default 0.2). */
  testFraction?: number;
  /** Minimum samples (train + test) per peer (default 10). */
  minSize?: number;
  /** Dirichlet draws to try before giving up on `minSize` (default 1000). */
  maxTries?: number;
}

/**
 * Split a dataset's rows among `numPeers` sites (`iid`, `dirichlet:<alpha>` or
 * `shards:<k>`), each into train and test, seeded and stratified.
 */
export function partition(labels: Int32Array, numClasses: number, numPeers: number, spec: PartitionSpec | string, opts: PartitionOptions): PeerSplit[] {
  const p = typeof spec === 'string' ? parsePartition(spec) : spec;
  if (!Number.isInteger(numPeers) || numPeers < 1) throw new DataError(`number of sites must be a positive integer, got ${numPeers}`);
  const testFraction = opts.testFraction ?? 0.2;
  if (!(testFraction > 0 && testFraction < 1)) throw new DataError(`testFraction must be in (0, 1), got ${testFraction}`);
  const minSize = opts.minSize ?? 10;
  if (minSize * numPeers > labels.length) {
    throw new DataError(`${labels.length} samples cannot give ${numPeers} sites at least ${minSize} each: use fewer sites or a smaller minimum size.`);
  }
  const rng = new Rng(deriveSeed(opts.seed, 'partition', formatPartition(p), numPeers));
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  labels.forEach((l, i) => {
    if (l < 0 || l >= numClasses) throw new DataError(`label ${l} at row ${i} is outside [0, ${numClasses})`);
    byClass[l].push(i);
  });
  let peers: number[][];
  if (p.kind === 'iid') peers = splitIid(labels.length, numPeers, rng);
  else if (p.kind === 'dirichlet') peers = splitDirichlet(byClass, numPeers, p.alpha, minSize, opts.maxTries ?? 1000, rng);
  else peers = splitShards(byClass, numPeers, p.k, rng);
  peers.forEach((rows, i) => {
    if (rows.length < minSize) {
      throw new DataError(
        `partition ${formatPartition(p)} gives site ${i} only ${rows.length} samples (minimum ${minSize}): ` +
          'use fewer sites, a larger dataset, or a smaller minimum size.',
      );
    }
  });
  return peers.map((rows, i) => trainTestSplit(rows, labels, testFraction, new Rng(deriveSeed(opts.seed, 'split', i))));
}

function splitIid(n: number, numPeers: number, rng: Rng): number[][] {
  const idx = rng.shuffle(Array.from({ length: n }, (_, i) => i)) as number[];
  const out: number[][] = [];
  for (let i = 0; i < numPeers; i++) {
    out.push(idx.slice(Math.floor((i * n) / numPeers), Math.floor(((i + 1) * n) / numPeers)));
  }
  return out;
}

function splitDirichlet(byClass: number[][], numPeers: number, alpha: number, minSize: number, maxTries: number, rng: Rng): number[][] {
  const n = byClass.reduce((a, c) => a + c.length, 0);
  let best: number[][] = [];
  let bestMin = -1;
  for (let attempt = 0; attempt < maxTries; attempt++) {
    const peers: number[][] = Array.from({ length: numPeers }, () => []);
    for (const cls of byClass) {
      if (cls.length === 0) continue;
      const idx = rng.shuffle([...cls]) as number[];
      let props = rng.dirichlet(alpha, numPeers);
      props = props.map((q, j) => (peers[j].length < n / numPeers ? q : 0));
      let s = props.reduce((a, b) => a + b, 0);
      if (!(s > 0)) {
        props = new Array(numPeers).fill(1);
        s = numPeers;
      }
      let start = 0;
      let acc = 0;
      for (let j = 0; j < numPeers; j++) {
        acc += props[j] / s;
        const end = j === numPeers - 1 ? idx.length : Math.round(acc * idx.length);
        for (let t = start; t < end; t++) peers[j].push(idx[t]);
        start = Math.max(start, end);
      }
    }
    const m = Math.min(...peers.map((q) => q.length));
    if (m >= minSize) return peers;
    if (m > bestMin) {
      bestMin = m;
      best = peers;
    }
  }
  return best; // the caller reports which peer is too small
}

function splitShards(byClass: number[][], numPeers: number, k: number, rng: Rng): number[][] {
  const present = byClass.map((c, i) => (c.length > 0 ? i : -1)).filter((i) => i >= 0);
  if (k > present.length) {
    throw new DataError(`shards:${k} asks for ${k} classes per site but the data has only ${present.length} classes`);
  }
  const perm = rng.shuffle([...present]) as number[];
  const holders: number[][] = byClass.map(() => []);
  for (let i = 0; i < numPeers; i++) {
    for (let j = 0; j < k; j++) holders[perm[(i * k + j) % perm.length]].push(i);
  }
  const peers: number[][] = Array.from({ length: numPeers }, () => []);
  byClass.forEach((cls, c) => {
    const h = holders[c];
    if (h.length === 0) return;
    const idx = rng.shuffle([...cls]) as number[];
    h.forEach((peer, t) => {
      const part = idx.slice(Math.floor((t * idx.length) / h.length), Math.floor(((t + 1) * idx.length) / h.length));
      if (part.length === 0) {
        throw new DataError(`shards:${k}: class ${c} has too few samples (${idx.length}) for the ${h.length} sites that hold it`);
      }
      peers[peer].push(...part);
    });
  });
  return peers;
}

function trainTestSplit(rows: number[], labels: Int32Array, testFraction: number, rng: Rng): PeerSplit {
  const byClass = new Map<number, number[]>();
  for (const r of rows) {
    const l = labels[r];
    if (!byClass.has(l)) byClass.set(l, []);
    byClass.get(l)!.push(r);
  }
  const train: number[] = [];
  const test: number[] = [];
  for (const cls of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = rng.shuffle(byClass.get(cls)!) as number[];
    // Probabilistic rounding keeps the expected test share exact for small classes.
    const exact = idx.length * testFraction;
    let nTest = Math.floor(exact) + (rng.uniform() < exact - Math.floor(exact) ? 1 : 0);
    if (nTest >= idx.length) nTest = idx.length - 1;
    test.push(...idx.slice(0, nTest));
    train.push(...idx.slice(nTest));
  }
  if (test.length === 0 && train.length > 1) test.push(train.pop()!);
  return { train: Int32Array.from(rng.shuffle(train) as number[]), test: Int32Array.from(rng.shuffle(test) as number[]) };
}

/** Count of each class among the given rows. */
export function labelHistogram(labels: Int32Array, rows: ArrayLike<number>, numClasses: number): number[] {
  const h = new Array<number>(numClasses).fill(0);
  for (let i = 0; i < rows.length; i++) h[labels[rows[i]]]++;
  return h;
}

/** Per-peer label histograms (train + test) for a partition. */
export function partitionHistograms(labels: Int32Array, splits: PeerSplit[], numClasses: number): number[][] {
  return splits.map((s) => {
    const a = labelHistogram(labels, s.train, numClasses);
    const b = labelHistogram(labels, s.test, numClasses);
    return a.map((v, i) => v + b[i]);
  });
}

/**
 * Cut every site's training split to at most `n` samples, keeping the site's
 * label distribution; test splits are unchanged (copied). Classes are dealt out in a seeded stratified order (each
 * next sample goes to the class furthest below its share, its rows taken in
 * a seeded order), so a smaller `n` keeps a subset of what a larger `n` keeps
 * for the same seed: a sweep over `n` adds samples, never swaps them.
 */
export function capTrainPerSite(splits: PeerSplit[], labels: Int32Array, n: number, seed: number): PeerSplit[] {
  if (!Number.isInteger(n) || n < 1) throw new DataError(`training samples per site must be a positive integer, got ${n}`);
  return splits.map((s, site) => {
    const test = Int32Array.from(s.test);
    if (s.train.length <= n) return { train: Int32Array.from(s.train), test };
    const rng = new Rng(deriveSeed(seed, 'cap-train', site));
    const byClass = new Map<number, number[]>();
    for (const r of s.train) {
      if (!byClass.has(labels[r])) byClass.set(labels[r], []);
      byClass.get(labels[r])!.push(r);
    }
    // A seeded class order breaks ties; each class's rows in a seeded order.
    const classes = rng.shuffle([...byClass.keys()].sort((a, b) => a - b)) as number[];
    const rows = classes.map((c) => rng.shuffle(byClass.get(c)!) as number[]);
    const share = rows.map((r) => r.length / s.train.length);
    const taken = new Array<number>(rows.length).fill(0);
    const train = new Int32Array(n);
    for (let t = 0; t < n; t++) {
      let best = -1;
      let deficit = -Infinity;
      for (let k = 0; k < rows.length; k++) {
        if (taken[k] >= rows[k].length) continue;
        const d = (t + 1) * share[k] - taken[k];
        if (d > deficit) {
          deficit = d;
          best = k;
        }
      }
      train[t] = rows[best][taken[best]++];
    }
    return { train, test };
  });
}

/**
 * A seeded split of a site's training rows into train and validation,
 * stratified by class (every class keeps at least one training row), for
 * hyperparameter searches that must not touch the test split.
 */
export function holdoutSplit(
  rows: ArrayLike<number>,
  labels: Int32Array,
  opts: { seed: number; validationFraction?: number },
): { train: Int32Array; validation: Int32Array } {
  const fraction = opts.validationFraction ?? 0.2;
  if (!(fraction > 0 && fraction < 1)) throw new DataError(`validationFraction must be in (0, 1), got ${fraction}`);
  if (rows.length < 2) throw new DataError(`a holdout split needs at least 2 rows, got ${rows.length}`);
  const { train, test } = trainTestSplit(Array.from(rows), labels, fraction, new Rng(deriveSeed(opts.seed, 'holdout')));
  return { train, validation: test };
}
