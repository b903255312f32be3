/** Globals the shared code expects from Node, injected into the bundle: Buffer and process. */
export { Buffer } from 'buffer';
export { process } from './process.js';
export { setTimeout, setInterval, setImmediate, clearImmediate } from './timers.js';
