/**
 * X25519 key agreement: the platform's Web Crypto when it has X25519 (Node
 * 20 and current browsers: some 30 times faster), else `@noble/curves`.
 * Both compute RFC 7748's function, so members on either agree; both refuse
 * a public key whose shared secret is all zeros (a small-order point).
 */
import type { webcrypto } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';

type CryptoKey = webcrypto.CryptoKey;
const subtle = (globalThis as { crypto?: webcrypto.Crypto }).crypto?.subtle;
let nativeOk: Promise<boolean> | undefined;

/** Whether Web Crypto does X25519 here (checked once). */
function hasNative(): Promise<boolean> {
  nativeOk ??= (async () => {
    try {
      if (!subtle) return false;
      await subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
      return true;
    } catch {
      return false;
    }
  })();
  return nativeOk;
}

const fromB64url = (s: string): Uint8Array => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));

/** A fresh X25519 key pair that agrees secrets with members' public keys. */
export class X25519Key {
  private constructor(
    readonly secretKey: Uint8Array,
    readonly publicKey: Uint8Array,
    private readonly native?: CryptoKey,
  ) {}

  static async generate(): Promise<X25519Key> {
    if (await hasNative()) {
      const kp = (await subtle!.generateKey({ name: 'X25519' }, true, ['deriveBits'])) as webcrypto.CryptoKeyPair;
      const jwk = await subtle!.exportKey('jwk', kp.privateKey);
      return new X25519Key(fromB64url(jwk.d!), fromB64url(jwk.x!), kp.privateKey);
    }
    const secret = x25519.utils.randomSecretKey();
    return new X25519Key(secret, x25519.getPublicKey(secret));
  }

  /** The shared secret with `publicKey`; rejects a key that gives none. */
  async agree(publicKey: Uint8Array): Promise<Uint8Array> {
    if (!this.native) return x25519.getSharedSecret(this.secretKey, publicKey);
    const pub = await subtle!.importKey('raw', Uint8Array.from(publicKey), { name: 'X25519' }, false, []);
    const bits = new Uint8Array(await subtle!.deriveBits({ name: 'X25519', public: pub }, this.native, 256));
    if (bits.every((b) => b === 0)) throw new Error('small-order public key');
    return bits;
  }
}

/** X25519 of a secret key (a reconstructed one) with a public key, in `@noble/curves`. */
export const agreeWith = (secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array => x25519.getSharedSecret(secretKey, publicKey);

/** The public key of a secret key. */
export const publicKeyOf = (secretKey: Uint8Array): Uint8Array => x25519.getPublicKey(secretKey);
