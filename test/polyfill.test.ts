import assert from 'node:assert/strict';
import '@dflmoe/p2p';

describe('Promise.withResolvers polyfill', () => {
  it('exists after importing @dflmoe/p2p and behaves like the standard one', async () => {
    const P = Promise as unknown as { withResolvers<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: unknown): void } };
    assert.equal(typeof P.withResolvers, 'function');
    const a = P.withResolvers<number>();
    a.resolve(42);
    assert.equal(await a.promise, 42);
    const b = P.withResolvers<number>();
    b.reject(new Error('no'));
    await assert.rejects(b.promise, /no/);
  });
});
