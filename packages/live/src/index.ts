export * from './address.js';
export * from './server.js';
export * from './remote.js';
