/**
 * What `dflmoe peer` tells the live view (`--ui`, `ui.listen`) beyond its
 * round lines: which members are connected, the strikes they earned, the
 * newest round of theirs this site knows of, and whether its audit trail
 * checks out. Members are refreshed on every connection change, after every
 * round and every two seconds (strikes come between rounds).
 */
import { existsSync } from 'node:fs';
import type { MemberUpdate, SiteFeed } from '@dflmoe/core';
import { verifyAudit } from './audit.js';
import type { SiteNode } from './node.js';

export interface PeerStatusSources {
  /** The other members (and the server, for server algorithms), with their names. */
  members: { peerId: string; name?: string }[];
  node?: SiteNode;
  /** Head (model) and body exchanges: strikes and announced rounds. */
  exchanges: { strikesOf(peer: string): number; isBlocked(peer: string): boolean; announced(): Map<string, number> }[];
  /** Server algorithms: the server's peer ID and the round of the last global model received. */
  server?: { peerId: string; lastRound(): number | undefined };
  auditFile: string;
  /** Refresh period (ms; default 2000). */
  periodMs?: number;
}

export class PeerStatusWatch {
  private timer?: NodeJS.Timeout;
  private readonly verified = new Set<string>();
  private readonly onConnection = () => this.refresh();
  private auditing?: Promise<void>;

  constructor(
    private readonly feed: SiteFeed,
    private readonly o: PeerStatusSources,
  ) {
    o.node?.addEventListener('connection:open', this.onConnection);
    o.node?.addEventListener('connection:close', this.onConnection);
    this.timer = setInterval(() => this.refresh(), o.periodMs ?? 2000);
    this.timer.unref();
    this.refresh();
  }

  /** Read the members' state now (the feed reports a change only when there is one). */
  refresh(): void {
    const open = new Set(this.o.node?.getConnections().map((c) => c.remotePeer.toString()) ?? []);
    const updates: MemberUpdate[] = this.o.members.map((m) => {
      const rounds = this.o.exchanges.map((x) => x.announced().get(m.peerId)).filter((r) => r !== undefined);
      if (m.peerId === this.o.server?.peerId) {
        const r = this.o.server.lastRound();
        if (r !== undefined) rounds.push(r);
      }
      return {
        id: m.name ?? m.peerId,
        peerId: m.peerId,
        connected: open.has(m.peerId),
        strikes: this.o.exchanges.reduce((a, x) => a + x.strikesOf(m.peerId), 0),
        blocked: this.o.exchanges.some((x) => x.isBlocked(m.peerId)),
        lastHeadRound: rounds.length ? Math.max(...rounds) : null,
      };
    });
    this.feed.members(updates);
  }

  /** Check the audit trail again (signatures only of lines not checked before); one check at a time. */
  checkAudit(): Promise<void> {
    this.auditing ??= (async () => {
      try {
        if (!existsSync(this.o.auditFile)) return;
        const r = await verifyAudit(this.o.auditFile, this.verified);
        const p = r.problems[0];
        this.feed.audit({ ok: r.problems.length === 0, lines: r.entries.length, ...(p ? { problem: `line ${p.line}: ${p.reason}` } : {}) });
      } catch (e) {
        this.feed.audit({ ok: false, lines: this.feed.status.audit.lines, problem: `cannot read ${this.o.auditFile}: ${(e as Error).message}` });
      } finally {
        this.auditing = undefined;
      }
    })();
    return this.auditing;
  }

  stop(): void {
    clearInterval(this.timer);
    this.o.node?.removeEventListener('connection:open', this.onConnection);
    this.o.node?.removeEventListener('connection:close', this.onConnection);
  }
}
