import './polyfill.js';
export * from './identity.js';
export * from './config.js';
export * from './node.js';
export * from './head-exchange.js';
export * from './frames.js';
export * from './fedavg-net.js';
export * from './run-peer.js';
export { Announce, HeadRequest, HeadResponse, FedAvgRequest, FedAvgResponse } from './proto/messages.js';
