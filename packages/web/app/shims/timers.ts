/**
 * Node's timers return objects with `unref()` (the shared code unrefs its
 * background timers so that a Node process can exit); a browser's return
 * numbers. These wrappers return a handle with `unref`/`ref` that the
 * browser's clearTimeout/clearInterval still take (it converts to the id).
 */
type Handle = { unref(): Handle; ref(): Handle; hasRef(): boolean; [Symbol.toPrimitive](): number };

const handle = (id: number): Handle => {
  const h: Handle = { unref: () => h, ref: () => h, hasRef: () => true, [Symbol.toPrimitive]: () => id };
  return h;
};
const native = { setTimeout: globalThis.setTimeout.bind(globalThis), setInterval: globalThis.setInterval.bind(globalThis) };

export const setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) =>
  handle(native.setTimeout(fn, ms, ...args) as unknown as number)) as unknown as typeof globalThis.setTimeout;
export const setInterval = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) =>
  handle(native.setInterval(fn, ms, ...args) as unknown as number)) as unknown as typeof globalThis.setInterval;

// setImmediate (training yields to the event loop with it between batches): a MessageChannel
// message runs as soon as the loop is free, without the 4 ms floor of nested setTimeout(0).
const queue = new Map<number, () => void>();
let nextId = 1;
const channel = new MessageChannel();
channel.port1.onmessage = (e: MessageEvent<number>) => {
  const run = queue.get(e.data);
  queue.delete(e.data);
  run?.();
};

export const setImmediate = (fn: (...a: unknown[]) => void, ...args: unknown[]): Handle => {
  const id = nextId++;
  queue.set(id, () => fn(...args));
  channel.port2.postMessage(id);
  return handle(id);
};
export const clearImmediate = (h: Handle | number | undefined): void => {
  if (h !== undefined) queue.delete(Number(h));
};
