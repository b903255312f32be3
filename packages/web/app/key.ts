/**
 * The tab's identity: an Ed25519 key made once and kept in IndexedDB
 * (idb-keyval), so that the peer ID the members allowlisted stays this tab's
 * across reloads.
 */
import { get, set } from 'idb-keyval';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';

const KEY = 'dflmoe-site-key';

export async function tabIdentity(): Promise<{ privateKey: PrivateKey; peerId: string }> {
  const saved = await get<Uint8Array>(KEY);
  let privateKey: PrivateKey;
  if (saved instanceof Uint8Array) privateKey = privateKeyFromProtobuf(saved);
  else {
    privateKey = await generateKeyPair('Ed25519');
    await set(KEY, privateKeyToProtobuf(privateKey));
  }
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}
