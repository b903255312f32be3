/** Site identities: an Ed25519 key per site, kept in a file. */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import { generateKey as generatePskBytes } from '@libp2p/pnet';

const HEADER = 'dflmoe-ed25519-key-v1';

/** Create a new Ed25519 identity; returns the key and its peer ID. */
export async function generateIdentity(): Promise<{ privateKey: PrivateKey; peerId: string }> {
  const privateKey = await generateKeyPair('Ed25519');
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}

/** Write a key file (readable by its owner only). Refuses to overwrite unless `force`. */
export function saveIdentity(path: string, key: PrivateKey, force = false): void {
  if (existsSync(path) && !force) throw new Error(`${path} already exists; refusing to overwrite an identity (use --force)`);
  const body = Buffer.from(privateKeyToProtobuf(key)).toString('base64');
  writeFileSync(path, `${HEADER}\n${body}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** Read a key file written by `saveIdentity` (`dflmoe keygen`): the private key and its peer ID. */
export function loadIdentity(path: string): { privateKey: PrivateKey; peerId: string } {
  if (!existsSync(path)) throw new Error(`key file ${path} not found; create one with: dflmoe keygen --out ${path}`);
  const [header, body] = readFileSync(path, 'utf8').trim().split('\n');
  if (header !== HEADER || !body) throw new Error(`${path} is not a dflmoe key file (expected first line "${HEADER}")`);
  let privateKey: PrivateKey;
  try {
    privateKey = privateKeyFromProtobuf(Buffer.from(body, 'base64'));
  } catch (e) {
    throw new Error(`${path}: cannot read the key (${(e as Error).message})`, { cause: e });
  }
  if (privateKey.type !== 'Ed25519') throw new Error(`${path}: expected an Ed25519 key, found ${privateKey.type}`);
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() };
}

/** Create a pre-shared key file for a private network (libp2p pnet format). */
export function savePsk(path: string, force = false): void {
  if (existsSync(path) && !force) throw new Error(`${path} already exists (use --force)`);
  const bytes = new Uint8Array(95);
  generatePskBytes(bytes);
  writeFileSync(path, bytes, { mode: 0o600 });
}

/** Read a libp2p pre-shared key file (`dflmoe keygen --psk`). */
export function loadPsk(path: string): Uint8Array {
  if (!existsSync(path)) throw new Error(`pre-shared key file ${path} not found; create one with: dflmoe keygen --psk ${path}`);
  const b = readFileSync(path);
  if (!b.toString('utf8').startsWith('/key/swarm/psk/1.0.0/')) throw new Error(`${path} is not a libp2p pre-shared key file`);
  return new Uint8Array(b);
}
