/**
 * Bring your own libp2p node: three sites in one program, each a libp2p
 * node the application creates itself (its own key, transports and
 * services) that also serves something else (here ping, which the program
 * uses between rounds). The dFLMoE head exchange is one more service on it,
 * `headExchange`, with the consortium's members; the learner takes it as
 * its exchange.
 *
 *   node --import tsx examples/libp2p-service.ts
 */
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { gossipsub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import { createLearner } from '@dflmoe/core';
import { headExchange, membersOnlyGater } from '@dflmoe/p2p';
import { loadDataset, partition, pooledStandardizer, featureSize } from '@dflmoe/data';

const names = ['hospital-a', 'hospital-b', 'hospital-c'];
const keys = await Promise.all(names.map(() => generateKeyPair('Ed25519')));
const ids = keys.map((k) => peerIdFromPrivateKey(k).toString());
// Fixed ports would do as well; here each node listens on a free port, and the program dials them once they run.
const members = names.map((name, i) => ({ name, peerId: ids[i], addrs: [] as string[] }));

const nodes = await Promise.all(
  keys.map((privateKey) =>
    createLibp2p({
      privateKey,
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionGater: membersOnlyGater(ids), // optional: refuse everyone else at the door
      services: {
        identify: identify(),
        ping: ping(), // the application's own service
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true }),
        heads: headExchange({ members }),
      },
    }),
  ),
);
for (const [i, node] of nodes.entries()) {
  for (const other of nodes.slice(i + 1)) await node.dial(other.getMultiaddrs()[0]);
}

const ds = loadDataset('breast-cancer');
const splits = partition(ds.labels, ds.classNames.length, 3, 'dirichlet:0.5', { seed: 7 });
const standardizer = pooledStandardizer(ds.features, featureSize(ds), splits);
const sites = await Promise.all(
  nodes.map((node, i) =>
    createLearner({
      id: ids[i],
      dataset: ds,
      split: splits[i],
      standardizer,
      model: { body: 'mlp:32', featureDim: 16 },
      train: { epochs: 2, seed: i },
      exchange: node.services.heads,
      quorum: 2,
      roundDeadlineMs: 10000, // wait (at most 10 s) for both other heads each round
    }),
  ),
);

for (let round = 1; round <= 4; round++) {
  const metrics = await Promise.all(sites.map((s) => s.runRound()));
  const rtt = await nodes[0].services.ping.ping(nodes[1].peerId);
  metrics.forEach((m, i) => console.log(`round ${round} ${names[i]}: accuracy ${(m.accuracy * 100).toFixed(1)}%  experts ${m.experts.length}`));
  console.log(`round ${round} ping ${names[0]} -> ${names[1]}: ${rtt} ms`);
}
sites.forEach((s) => s.dispose());
await Promise.all(nodes.map((n) => n.stop()));
