/**
 * The serving side of bench:network's two-process transfer: a node in its
 * own OS process (as a real site is) that serves heads on the head protocol
 * and the same bytes on a raw stream. Started by benchmarks/network.ts:
 *
 *   node --import tsx benchmarks/network-serve.ts <key file> <puller peer ID>
 *
 * Messages from the parent (IPC): `{ mib, version }` publishes a head of
 * that size and sets the raw payload; it answers `{ ready: true }`. It first
 * sends `{ addr }`, its listen address.
 */
import { silentLogger } from '@dflmoe/core';
import { Libp2pHeadExchange, createSiteNode, loadIdentity } from '@dflmoe/p2p/internal';

const RAW_PROTOCOL = '/dflmoe/bench/raw/1.0.0'; // the same as in network.ts

const [keyFile, puller] = process.argv.slice(2);
const id = loadIdentity(keyFile);
const allow = [id.peerId, puller];
const node = await createSiteNode({ privateKey: id.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], allow });
const ex = new Libp2pHeadExchange(node, {
  members: allow.map((peerId) => ({ peerId, addrs: [] })),
  maxHeadBytes: 64 * 1024 * 1024,
  logger: silentLogger,
  heartbeatMs: 60000,
});
await ex.register();
let raw: Uint8Array = new Uint8Array(0);
await node.handle(RAW_PROTOCOL, async (stream) => {
  // Straight to the stream in 256 KiB sends, honouring backpressure.
  for (let i = 0; i < raw.length; i += 256 * 1024) {
    if (!stream.send(raw.subarray(i, Math.min(raw.length, i + 256 * 1024)))) await stream.onDrain();
  }
  await stream.close();
});
await node.start();
ex.start();
process.on('message', (m: { mib?: number; version?: number; stop?: boolean }) => {
  void (async () => {
    if (m.stop) {
      await ex.close();
      await node.stop();
      process.exit(0);
    }
    raw = new Uint8Array(m.mib! * 1024 * 1024).map((_, i) => (i * 31 + m.version!) & 255);
    await ex.publish(raw, m.version!);
    process.send!({ ready: true });
  })();
});
process.send!({ addr: node.getMultiaddrs()[0].toString() });
