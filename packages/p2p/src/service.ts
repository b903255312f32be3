/**
 * The head exchange (and the body exchange) as libp2p services: a host that
 * already runs libp2p adds them to its own node, the way it adds ping,
 * identify or gossipsub, and hands the service to `createLearner` as its
 * exchange:
 *
 *     const node = await createLibp2p({
 *       privateKey, addresses, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()],
 *       services: { identify: identify(), pubsub: gossipsub(), heads: headExchange({ members }) },
 *     });
 *     const site = await createLearner({ id: node.peerId.toString(), exchange: node.services.heads, ... });
 *
 * The service registers `/dflmoe/head/1.0.0` (or the body protocol) when
 * the node starts, subscribes to its announcement topic and dials the
 * members once it runs, and closes when the node stops. It keeps the
 * allowlist and strikes of `dflmoe peer` (which runs the same service on
 * its own node): only members' streams and announcements are served or
 * heard, bad input is counted and struck, a member with too many strikes is
 * hung up on and refused for a while. `membersOnlyGater` refuses everyone
 * else at the connection level too, as `dflmoe peer` does.
 *
 * A node without a pubsub service (gossipsub) is refused by `createLibp2p`
 * itself (this service declares it needs `@libp2p/pubsub`); one whose
 * transports can dial none of the members' addresses fails to start with
 * an error that says so, rather than waiting for heads that cannot come.
 */
import type { Connection, PeerId, PrivateKey, Startable, Stream } from '@libp2p/interface';
import { serviceDependencies } from '@libp2p/interface';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { silentLogger, type DataAgreement, type HeadExchange, type Logger, type StatementExchange } from '@dflmoe/core';
import type { SiteStatement } from '@dflmoe/data';
import { BODY_ANNOUNCE_TOPIC, BODY_PROTOCOL, Libp2pHeadExchange, type DropReason, type Libp2pExchangeOptions, type Member } from './head-exchange.js';
import type { ExchangeNode } from './node.js';
import { SchemaAgreement } from './preprocess.js';

/** What the service takes from the node (libp2p's components; structural, so any libp2p 3 node fits). */
export interface ExchangeComponents {
  /** This node's peer ID. */
  peerId: PeerId;
  /** This node's private key, as libp2p's components carry it. */
  privateKey?: PrivateKey;
  /** Where the service registers and removes its stream protocol handlers. */
  registrar: { handle(...a: unknown[]): Promise<void>; unhandle(...a: unknown[]): Promise<void> };
  /** Connections to members: list, open, open a stream, close. */
  connectionManager: {
    getConnections(peer?: PeerId): Connection[];
    openConnection(peer: unknown, o?: unknown): Promise<Connection>;
    openStream(peer: unknown, protocols: string[], o?: unknown): Promise<Stream>;
    closeConnections(peer: PeerId, o?: unknown): Promise<void>;
  };
  /** The node's event target, for the connection events the exchange listens to. */
  events: { addEventListener(type: string, l: (e: CustomEvent) => void): void };
  /** Used to check that members' addresses can be dialled by one of the node's transports (the check is skipped without it). */
  transportManager?: { dialTransportForMultiaddr?(ma: Multiaddr): unknown };
  /** The node's other services by name (libp2p's components carry them): the exchange looks up its pubsub here. */
  [service: string]: unknown;
}

/** What `headExchange` and `bodyExchange` take: the members, and the exchange's limits and timings. */
export interface ExchangeServiceInit extends Partial<Omit<Libp2pExchangeOptions, 'members' | 'logger'>> {
  /** The consortium: peer IDs (and addresses to dial, when known) of every member. */
  members: Member[];
  /** Where drops, strikes and transfer problems are logged (default: nowhere). */
  logger?: Logger;
  /** The name of the node's pubsub (gossipsub) service (default `pubsub`). */
  pubsub?: string;
}

const DEFAULT_MAX_HEAD_BYTES = 16 * 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024;

/** A clear error for a host whose node lacks what the exchange needs. */
export class ExchangeServiceError extends Error {
  /** Always `ExchangeServiceError`. */
  override name = 'ExchangeServiceError';
}

/** The node, as the exchange uses it, from a libp2p service's components. */
function nodeFromComponents(c: ExchangeComponents, pubsubName: string): ExchangeNode {
  const pubsub = () => {
    let p: unknown;
    try {
      p = c[pubsubName];
    } catch {
      p = undefined;
    }
    const ps = p as { subscribe?: unknown; publish?: unknown; addEventListener?: unknown } | undefined;
    if (!ps || typeof ps.subscribe !== 'function' || typeof ps.publish !== 'function' || typeof ps.addEventListener !== 'function') {
      throw new ExchangeServiceError(
        `the dflmoe exchange needs a pubsub service named "${pubsubName}" on the node (services: { ${pubsubName}: gossipsub() }, with identify()); ` +
          'give headExchange({ pubsub: "<name>" }) if yours has another name',
      );
    }
    return p as ExchangeNode['services']['pubsub'];
  };
  const node = {
    peerId: c.peerId,
    handle: (protocol: string, handler: unknown, o?: unknown) => c.registrar.handle(protocol, handler, o),
    unhandle: (protocol: string) => c.registrar.unhandle(protocol),
    getConnections: (peer?: PeerId) => c.connectionManager.getConnections(peer),
    hangUp: (peer: PeerId) => c.connectionManager.closeConnections(peer),
    dialProtocol: (peer: unknown, protocols: string | string[], o?: unknown) =>
      c.connectionManager.openStream(peer, Array.isArray(protocols) ? protocols : [protocols], o),
    dial: (peer: unknown, o?: unknown) => c.connectionManager.openConnection(peer, { priority: 75, ...(o as object | undefined) }),
    addEventListener: (type: string, l: (e: CustomEvent) => void) => c.events.addEventListener(type, l),
    get services() {
      return { pubsub: pubsub() };
    },
  };
  return node satisfies ExchangeNode;
}

/**
 * The exchange as a libp2p service (what `headExchange` and `bodyExchange`
 * add to a node): a `HeadExchange` (give it to `createLearner`) that starts
 * and stops with the node, and what it holds against members that send bad
 * data.
 */
export interface ExchangeService extends HeadExchange, Startable {
  /** Messages dropped so far, by reason. */
  readonly dropped: Partial<Record<DropReason, number>>;
  /** Seconds spent moving bytes (both directions). */
  readonly transferSeconds: number;
  /** Whether `peer` is refused for now because it kept sending bad data. */
  isBlocked(peer: string): boolean;
  /** Strikes given to `peer` since the exchange started. */
  strikesOf(peer: string): number;
}

/** The libp2p service behind `headExchange` and `bodyExchange`: the site's `Libp2pHeadExchange` on the host's node. */
export class Libp2pExchangeService extends Libp2pHeadExchange implements ExchangeService {
  readonly [Symbol.toStringTag] = '@dflmoe/exchange';
  readonly [serviceDependencies]: string[] = ['@libp2p/pubsub'];
  private running = false;

  constructor(
    private readonly components: ExchangeComponents,
    private readonly init: ExchangeServiceInit & { maxHeadBytes: number },
  ) {
    super(nodeFromComponents(components, init.pubsub ?? 'pubsub'), { ...init, logger: init.logger ?? silentLogger });
  }

  /** libp2p: the node is starting. Registers the protocol and listens for announcements and connections. */
  override async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.checkTransports();
    await this.register();
  }

  /** libp2p: the node runs. Subscribes, dials the members and starts re-announcing. */
  async afterStart(): Promise<void> {
    super.start();
  }

  /** libp2p: the node is stopping. */
  async stop(): Promise<void> {
    await this.close();
  }

  /** Members with addresses must be dialable by one of the node's transports, or heads could never come. */
  private checkTransports(): void {
    const tm = this.components.transportManager;
    if (!tm?.dialTransportForMultiaddr) return;
    const addrs = this.init.members.filter((m) => m.peerId !== this.selfId).flatMap((m) => m.addrs);
    if (addrs.length === 0) return;
    const dialable = addrs.some((a) => {
      try {
        return tm.dialTransportForMultiaddr!(multiaddr(a)) !== undefined;
      } catch {
        return false;
      }
    });
    if (!dialable) {
      throw new ExchangeServiceError(
        `the dflmoe exchange cannot reach any member: no transport of this node dials ${addrs.slice(0, 3).join(', ')}${addrs.length > 3 ? ', ...' : ''} ` +
          '(add the transport those addresses need, e.g. tcp() from @libp2p/tcp, with a connection encrypter and a stream muxer)',
      );
    }
  }
}

/**
 * The head exchange as a libp2p service factory: `services: { heads:
 * headExchange({ members }) }`. Options as `Libp2pHeadExchange` takes them
 * (`maxHeadBytes` default 16 MiB; strikes, heartbeat, timeouts), plus the
 * pubsub service's name.
 */
export function headExchange(init: ExchangeServiceInit): (components: ExchangeComponents) => ExchangeService {
  return (components) => new Libp2pExchangeService(components, { ...init, maxHeadBytes: init.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES });
}

/**
 * The body exchange (sites that share bodies: `createLearner({ bodies })`)
 * as a libp2p service factory, on `/dflmoe/body/1.0.0` and its own topic
 * (`maxHeadBytes`, the largest body, default 256 MiB).
 */
export function bodyExchange(init: ExchangeServiceInit): (components: ExchangeComponents) => ExchangeService {
  return (components) =>
    new Libp2pExchangeService(components, {
      protocol: BODY_PROTOCOL,
      topic: BODY_ANNOUNCE_TOPIC,
      ...init,
      maxHeadBytes: init.maxHeadBytes ?? DEFAULT_MAX_BODY_BYTES,
    });
}

/**
 * A connection gater for a host's `createLibp2p({ connectionGater })` that
 * admits only these peers (and, while `isBlocked` says so, not even them):
 * what `dflmoe peer` does on its own node. Spread it into a gater of your
 * own to keep other rules.
 */
export function membersOnlyGater(allow: readonly string[], isBlocked: (peer: string) => boolean = () => false) {
  const ok = new Set(allow);
  const deny = (peer: PeerId) => !ok.has(peer.toString()) || isBlocked(peer.toString());
  return { denyDialPeer: deny, denyInboundEncryptedConnection: deny, denyOutboundEncryptedConnection: deny };
}

/** What `statementExchange` takes: the members, how long to wait for their statements, the largest one accepted. */
export interface StatementServiceInit {
  /** The consortium: peer IDs (and addresses to dial, when known) of every member. */
  members: Member[];
  /** Wait at most this long for the other members' statements (default 120 s)... */
  deadlineMs?: number;
  /** ...or, once this many other members' statements are in, `graceMs` (default 2 s) more for the rest (default: every member). */
  quorum?: number;
  /** See `quorum`: extra milliseconds to wait for the rest once the quorum is in (default 2000). */
  graceMs?: number;
  /** Largest statement accepted, bytes (default 32 MiB). */
  maxBytes?: number;
  /** Where drops and who was left out are logged (default: nowhere). */
  logger?: Logger;
}

/**
 * Federated preprocessing as a libp2p service: the `StatementExchange` that
 * `agreeOnData` takes, on `/dflmoe/preprocess/1.0.0` (what `dflmoe peer`
 * runs). `agree` serves this site's statement to the members, pulls
 * theirs (members only; bad input dropped and counted) and agrees; it
 * keeps serving the statement, for members that come later, until the
 * node stops. A site agrees once per service.
 */
export class StatementService implements StatementExchange, Startable {
  /** libp2p's service tag. */
  readonly [Symbol.toStringTag] = '@dflmoe/statements';
  /** This site's peer ID: the statement is made under it. */
  readonly selfId: string;
  private agreement?: SchemaAgreement;

  constructor(
    private readonly components: ExchangeComponents,
    private readonly init: StatementServiceInit,
  ) {
    this.selfId = components.peerId.toString();
  }

  /** Serve this site's statement to the members, pull theirs (up to the deadline) and agree on the data; one agreement per service (a second call throws). */
  async agree(statement: SiteStatement, o: { signal?: AbortSignal } = {}): Promise<DataAgreement> {
    if (this.agreement) throw new Error('this site has agreed already (one agreement per statement service)');
    const logger = this.init.logger ?? silentLogger;
    this.agreement = new SchemaAgreement(nodeFromComponents(this.components, 'pubsub'), {
      members: this.init.members,
      statement,
      deadlineMs: this.init.deadlineMs ?? 120000,
      quorum: this.init.quorum,
      graceMs: this.init.graceMs,
      maxBytes: this.init.maxBytes ?? 32 * 1024 * 1024,
      logger,
      signal: o.signal,
    });
    await this.agreement.register();
    const a = await this.agreement.agree();
    return {
      agreed: a.agreed,
      included: a.included,
      excluded: a.excluded.map((x) => ({ site: x.peer, reason: x.reason })),
      missing: a.missing,
      warnings: a.warnings,
    };
  }

  /** libp2p's start hook: nothing to do until `agree`. */
  start(): void {}

  /** libp2p: the node is stopping; stop serving the statement. */
  async stop(): Promise<void> {
    await this.agreement?.close();
  }
}

/**
 * Federated preprocessing as a libp2p service factory: `services: {
 * statements: statementExchange({ members }) }`, then
 * `agreeOnData(data, node.services.statements)`.
 */
export function statementExchange(init: StatementServiceInit): (components: ExchangeComponents) => StatementService {
  return (components) => new StatementService(components, init);
}
