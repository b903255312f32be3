/**
 * Network figures, measured in one run:
 * 1. head transfer MB/s through our head protocol against a raw libp2p
 *    stream between the same two nodes (1, 10 and 50 MiB, median of 5),
 *    with both nodes in this process, then with the serving node in a
 *    process of its own (benchmarks/network-serve.ts), as between two sites;
 * 2. bytes per peer per round for dFLMoE (heads) and FedAvg (models) on the
 *    same model;
 * 3. how long a dFLMoE round spends training, waiting for heads and moving
 *    bytes, from a 4-site consortium over TCP on breast-cancer.
 *
 *   node --import tsx benchmarks/network.ts [--out benchmarks/results/network.json]
 */
import { silentLogger } from '@dflmoe/core';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_SIMULATION, createHead, encodeHead, initBackend, tf } from '@dflmoe/core/internal';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { multiaddr } from '@multiformats/multiaddr';
import { Libp2pHeadExchange, createSiteNode, generateIdentity, saveIdentity, type RoundLine } from '@dflmoe/p2p/internal';
import { runConsortium, writeConsortium } from '@dflmoe/cli/internal';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'benchmarks/results/network.json' } } });
const quiet = silentLogger;
const RAW = '/dflmoe/bench/raw/1.0.0';
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// ------------------------------------------------------------ 1. transfer speed
const ids = await Promise.all([generateIdentity(), generateIdentity()]);
const allow = ids.map((i) => i.peerId);
const nodes = await Promise.all(ids.map((i) => createSiteNode({ privateKey: i.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow })));
const members = ids.map((i) => ({ peerId: i.peerId, addrs: [] as string[] }));
const exs = nodes.map((n) => new Libp2pHeadExchange(n, { members, maxHeadBytes: 64 * 1024 * 1024, logger: quiet, heartbeatMs: 60000 }));
for (const e of exs) await e.register();
let rawPayload: Uint8Array = new Uint8Array(0);
await nodes[0].handle(RAW, async (stream) => {
  // The raw baseline: write the bytes straight to the stream in 256 KiB sends, honouring backpressure.
  for (let i = 0; i < rawPayload.length; i += 256 * 1024) {
    if (!stream.send(rawPayload.subarray(i, Math.min(rawPayload.length, i + 256 * 1024)))) await stream.onDrain();
  }
  await stream.close();
});
for (const n of nodes) await n.start();
for (const e of exs) e.start();
await nodes[1].dial(nodes[0].getMultiaddrs()[0]);

async function rawOnce(bytes: Uint8Array): Promise<number> {
  rawPayload = bytes;
  const t0 = performance.now();
  const s = await nodes[1].dialProtocol(nodes[0].peerId, RAW);
  s.maxReadBufferLength = bytes.length + 1024;
  let got = 0;
  for await (const chunk of s) got += chunk.byteLength;
  if (got !== bytes.length) throw new Error(`raw: got ${got} of ${bytes.length}`);
  return (performance.now() - t0) / 1000;
}

let version = 0;
/** Seconds from publish to the verified head in the puller's inbox, and of that the pull alone (request to verified bytes). */
async function headOnce(bytes: Uint8Array): Promise<{ total: number; pull: number }> {
  const t0 = performance.now();
  const pulled = exs[1].transferSeconds;
  await exs[0].publish(bytes, ++version);
  const n = await exs[1].waitForHeads(1, 60000);
  const [m] = exs[1].drain();
  if (n < 1 || m.payload.length !== bytes.length) throw new Error('head did not arrive');
  return { total: (performance.now() - t0) / 1000, pull: exs[1].transferSeconds - pulled };
}

const transfer: { mib: number; headMBps: number; pullMBps: number; rawMBps: number; ratio: number; pullRatio: number }[] = [];
const REPS = 5;
for (const mib of [1, 10, 50]) {
  const bytes = new Uint8Array(mib * 1024 * 1024).map((_, i) => (i * 31) & 255);
  const hs: number[] = [];
  const ps: number[] = [];
  const rs: number[] = [];
  for (let k = 0; k < REPS; k++) {
    rs.push(await rawOnce(bytes));
    const h = await headOnce(bytes);
    hs.push(h.total);
    ps.push(h.pull);
  }
  const mb = bytes.length / 1e6;
  const row = {
    mib,
    headMBps: mb / median(hs),
    pullMBps: mb / median(ps),
    rawMBps: mb / median(rs),
    ratio: median(rs) / median(hs),
    pullRatio: median(rs) / median(ps),
  };
  transfer.push(row);
  console.log(
    `${String(mib).padStart(2)} MiB: raw stream ${row.rawMBps.toFixed(0)} MB/s; head pull ${row.pullMBps.toFixed(0)} MB/s (pull/raw ${row.pullRatio.toFixed(2)}); ` +
      `publish to inbox ${row.headMBps.toFixed(0)} MB/s (${row.ratio.toFixed(2)})`,
  );
}
for (const e of exs) await e.close();
for (const n of nodes) await n.stop();

// ------------------------------------------------------------ 1b. the same between two OS processes (as between two sites)
const serverId = await generateIdentity();
const pullerId = await generateIdentity();
const keyDir = mkdtempSync(join(tmpdir(), 'dflmoe-bench-net-key-'));
saveIdentity(join(keyDir, 'serve.key'), serverId.privateKey, true);
const child = fork(fileURLToPath(new URL('./network-serve.ts', import.meta.url)), [join(keyDir, 'serve.key'), pullerId.peerId], {
  execArgv: process.execArgv,
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
const fromChild = () =>
  new Promise<{ addr?: string; ready?: boolean }>((resolve) => child.once('message', (m) => resolve(m as { addr?: string; ready?: boolean })));
const { addr } = await fromChild();
const pullerNode = await createSiteNode({ privateKey: pullerId.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow: [serverId.peerId, pullerId.peerId] });
const puller = new Libp2pHeadExchange(pullerNode, {
  members: [serverId, pullerId].map((i) => ({ peerId: i.peerId, addrs: [] as string[] })),
  maxHeadBytes: 64 * 1024 * 1024,
  logger: quiet,
  heartbeatMs: 60000,
});
await puller.register();
await pullerNode.start();
puller.start();
await pullerNode.dial(multiaddr(addr!));
let version2 = 0;
const twoProcess: { mib: number; pullMBps: number; rawMBps: number; pullRatio: number }[] = [];
for (const mib of [1, 10, 50]) {
  const ps: number[] = [];
  const rs: number[] = [];
  for (let k = 0; k < REPS; k++) {
    const pulled = puller.transferSeconds;
    const ready = fromChild();
    child.send({ mib, version: ++version2 });
    await ready;
    if ((await puller.waitForHeads(1, 60000)) < 1) throw new Error('head did not arrive');
    const [m] = puller.drain();
    if (m.payload.length !== mib * 1024 * 1024) throw new Error('wrong head size');
    ps.push(puller.transferSeconds - pulled);
    const t0 = performance.now();
    const s = await pullerNode.dialProtocol(multiaddr(addr!), RAW);
    s.maxReadBufferLength = mib * 1024 * 1024 + 1024;
    let got = 0;
    for await (const chunk of s) got += chunk.byteLength;
    if (got !== mib * 1024 * 1024) throw new Error(`raw: got ${got}`);
    rs.push((performance.now() - t0) / 1000);
  }
  const mb = (mib * 1024 * 1024) / 1e6;
  const row = { mib, pullMBps: mb / median(ps), rawMBps: mb / median(rs), pullRatio: median(rs) / median(ps) };
  twoProcess.push(row);
  console.log(
    `${String(mib).padStart(2)} MiB, two processes: raw stream ${row.rawMBps.toFixed(0)} MB/s; head pull ${row.pullMBps.toFixed(0)} MB/s (pull/raw ${row.pullRatio.toFixed(2)})`,
  );
}
child.send({ stop: true });
await puller.close();
await pullerNode.stop();

// ------------------------------------------------------------ 2. bytes per peer per round
await initBackend({ logger: quiet });
function headBytes(featureDim: number, classes: number): number {
  const spec = { inputDim: featureDim, hidden: [], outputDim: classes };
  const h = createHead(spec, 1);
  const b = encodeHead(
    { spec, version: 1, peer: ids[0].peerId },
    h.map((l) => ({ kernel: l.kernel.dataSync() as Float32Array, bias: l.bias.dataSync() as Float32Array })),
  );
  h.forEach((l) => tf.dispose([l.kernel, l.bias]));
  return b.length;
}
const { FedAvgClient, preparePeerData } = await import('@dflmoe/core/internal');
const { loadDataset, partition } = await import('@dflmoe/data');
function modelBytes(dataset: string, body: string): number {
  const ds = loadDataset(dataset, { maxSamples: 200 });
  const split = partition(ds.labels, ds.classNames.length, 1, 'iid', { seed: 1 })[0];
  const data = preparePeerData(ds, split);
  const [kind, arg] = body.split(':');
  const c = new FedAvgClient({
    id: 'x',
    data,
    body: kind === 'mlp' ? { kind, hidden: arg?.split('x').map(Number) } : { kind: 'cnn' },
    featureDim: 64,
    headHidden: [],
    train: {},
  });
  const n = c.encodeModel(1).length;
  c.dispose();
  return n;
}
const sizes = [
  { dataset: 'breast-cancer', body: 'mlp', classes: 2 },
  { dataset: 'fashion-mnist', body: 'mlp:256', classes: 10 },
  { dataset: 'fashion-mnist', body: 'cnn', classes: 10 },
].map((s) => {
  const head = headBytes(64, s.classes);
  const model = modelBytes(s.dataset, s.body);
  return { ...s, headBytes: head, modelBytes: model };
});
console.log('\nbytes per peer per round (N peers): dFLMoE sends its head to N-1 peers; FedAvg uploads and downloads the model');
for (const s of sizes) {
  console.log(
    `${s.dataset} ${s.body}: head ${s.headBytes} B, model ${s.modelBytes} B -> N=4: dFLMoE ${((3 * s.headBytes) / 1024).toFixed(1)} KiB, FedAvg ${((2 * s.modelBytes) / 1024).toFixed(1)} KiB; N=10: dFLMoE ${((9 * s.headBytes) / 1024).toFixed(1)} KiB, FedAvg ${((2 * s.modelBytes) / 1024).toFixed(1)} KiB`,
  );
}

// ------------------------------------------------------------ 3. network vs training time
const dir = mkdtempSync(join(tmpdir(), 'dflmoe-bench-net-'));
const sim = { ...DEFAULT_SIMULATION, dataset: 'breast-cancer', peers: 4, rounds: 10, partition: 'dirichlet:0.3', seed: 1 };
const files = await writeConsortium({ dir, algorithm: 'dflmoe', sim, deadlineMs: 30000, lingerMs: 1000 });
const t0 = performance.now();
await runConsortium(files, 300000);
const wall = (performance.now() - t0) / 1000;
const lines: RoundLine[] = files.sites.flatMap((s) =>
  readFileSync(join(s.out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l)),
);
const mean = (k: keyof RoundLine) => lines.reduce((a, l) => a + (l[k] as number), 0) / lines.length;
const timing = {
  rounds: lines.length,
  seconds: mean('seconds'),
  trainSeconds: mean('trainSeconds'),
  waitSeconds: mean('waitSeconds'),
  networkSeconds: mean('networkSeconds'),
  wallSeconds: wall,
};
console.log(
  `\n4-site dFLMoE round over TCP (breast-cancer, mean of ${lines.length} site-rounds): ${timing.seconds.toFixed(3)} s per round, ` +
    `training ${timing.trainSeconds.toFixed(3)} s, waiting for heads ${timing.waitSeconds.toFixed(3)} s, moving head bytes ${timing.networkSeconds.toFixed(3)} s; whole run ${wall.toFixed(1)} s with process start`,
);

mkdirSync(dirname(values.out!), { recursive: true });
writeFileSync(values.out!, JSON.stringify({ date: new Date().toISOString(), node: process.version, transfer, twoProcess, sizes, timing }, null, 2) + '\n');
console.log(`wrote ${values.out}`);
