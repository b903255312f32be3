/** Secure aggregation of shared bodies among peers: fixed-point encoding, the wire format, groups and one member's protocol. */
export * from './fixed-point.js';
export * from './messages.js';
export * from './groups.js';
export * from './protocol.js';
export * from './body-rounds.js';
