/**
 * `@dflmoe/p2p`: the public API, written down in `api/p2p.api.md` (`npm run api`).
 *
 * The dflmoe exchanges as libp2p services for a host's own node
 * (`headExchange`, `bodyExchange`, `statementExchange`, `membersOnlyGater`),
 * a site, a FedAvg server or a relay run from its config (`runPeer`,
 * `runServer`, `startRelay`, the config parsers), identities, join details
 * and the audit trail's check.
 *
 * What only the other `@dflmoe` packages, the tests and the benchmarks use
 * (the node builder, the wire messages and frames, the preprocessing
 * protocol, strikes, deadlines, the link emulator, ...) is in `./internal.ts`
 * (`@dflmoe/p2p/internal`): not part of the API, and free to change in any
 * release.
 * @packageDocumentation
 */
import './polyfill.js';
export { generateIdentity, loadIdentity, loadPsk, saveIdentity, savePsk } from './identity.js';
export {
  ConfigError,
  loadPeerConfig,
  loadRelayConfig,
  loadServerConfig,
  parsePeerConfig,
  parseRelayConfig,
  parseServerConfig,
  peerConfigSchema,
  relayConfigSchema,
  serverConfigSchema,
  type ParsedConfig,
  type PeerConfig,
  type RelayConfig,
  type ServerConfig,
} from './config.js';
export { type NodeTransport, type SiteNode } from './node.js';
export { type DropReason, type Libp2pExchangeOptions, type Member } from './head-exchange.js';
export {
  ExchangeServiceError,
  StatementService,
  bodyExchange,
  headExchange,
  membersOnlyGater,
  statementExchange,
  type ExchangeComponents,
  type ExchangeService,
  type ExchangeServiceInit,
  type StatementServiceInit,
} from './service.js';
export { runServer, type ServerRoundLine } from './fedavg-net.js';
export { runPeer, type PeerRunResult, type RunPeerOptions } from './run-peer.js';
export type { RoundLine } from './site-driver.js';
export {
  AUDIT_FILE,
  verifyAudit,
  verifySiteAudit,
  type AuditDigest,
  type AuditEntry,
  type AuditProblem,
  type AuditReport,
  type AuditRound,
  type AuditPublished,
  type AuditSeal,
  type AuditTail,
} from './audit.js';
export { startRelay, type RelayHandle } from './relay.js';
export { JOIN_FORMAT, JoinError, browserDialable, joinDetails, parseJoinDetails, siteConfigFromJoin, type JoinDetails, type JoiningSite } from './join.js';
