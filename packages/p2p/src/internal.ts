/**
 * `@dflmoe/p2p/internal`: every module's exports, that is the public API
 * (`@dflmoe/p2p`) and what only the workspace uses: the site's libp2p node
 * and how it reaches members (relays, discovery), the head exchange's
 * implementation, the wire messages, frames and resumable transfers, the
 * preprocessing protocol, strikes, adaptive deadlines, the FedAvg server,
 * the audit log writer, the site set-up steps of `dflmoe peer`, the link
 * emulator and test helpers. The CLI, the tests and the benchmarks import
 * these from here. Not part of the documented API, not in `api/p2p.api.md`,
 * and free to change in any release.
 */
import './polyfill.js';
export * from './identity.js';
export * from './config.js';
export * from './node.js';
export * from './head-exchange.js';
export * from './service.js';
export * from './frames.js';
export * from './fedavg-net.js';
export * from './run-peer.js';
export * from './site-driver.js';
export * from './files.js';
export * from './strikes.js';
export * from './audit.js';
export * from './live-status.js';
export { Announce, HeadRequest, HeadResponse, FedAvgRequest, FedAvgResponse } from './proto/messages.js';
export * from './metrics.js';
export * from './preprocess.js';
export * from './reach.js';
export * from './discovery.js';
export * from './link-emulator.js';
export * from './deadline.js';
export * from './resume.js';
export * from './relay.js';
export * from './relay-keeper.js';
export * from './site-setup.js';
export * from './loopback.js';
export * from './join.js';
export * from './process-stats.js';
