/**
 * One view of sites that run in other processes (`simulate --transport tcp
 * --ui`): each site process serves its own status (`ui.listen` on
 * 127.0.0.1), and this follows their event streams and copies every site
 * status into a board. What arrives is checked (`parseSiteStatus`) and
 * bounded; a stream that fails is opened again until the site has finished.
 */
import { request, type ClientRequest } from 'node:http';
import { type SiteState, type StatusBoard } from '@dflmoe/core';
import { parseSiteStatus, siteKey } from '@dflmoe/core/internal';

/** A site process's own live view to follow: its URL and token. */
export interface RemoteSite {
  /** `http://127.0.0.1:<port>` of the site's live view. */
  url: string;
  /** The token its live view requires, when it requires one. */
  token?: string;
}

/** One event at most this large (a status of very many rounds); a larger one ends the stream. */
const MAX_EVENT_BYTES = 32 << 20;
const FINAL: ReadonlySet<SiteState> = new Set(['done', 'failed', 'interrupted']);

/**
 * Follows the live views of site processes (`dflmoe simulate --transport tcp
 * --ui`) and puts their sites on one board.
 */
export class RemoteSites {
  private stopped = false;
  private readonly requests = new Set<ClientRequest>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Keys of the sites each remote reported. */
  private readonly seen = new Map<string, Set<string>>();
  /** Events that could not be used, by reason (tests). */
  readonly refused = new Map<string, number>();

  constructor(
    private readonly board: StatusBoard,
    private readonly o: { retryMs?: number } = {},
  ) {}

  /** Follow `site` until it reports every one of its sites finished, or until `stop`. */
  follow(site: RemoteSite): void {
    this.seen.set(site.url, new Set());
    this.open(site);
  }

  private open(site: RemoteSite): void {
    if (this.stopped) return;
    const url = new URL('/api/events', site.url);
    const req = request(url, { headers: { Accept: 'text/event-stream', ...(site.token ? { Authorization: `Bearer ${site.token}` } : {}) } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        this.note(`http-${res.statusCode}`);
        return;
      }
      res.setEncoding('utf8');
      let buf = '';
      res.on('data', (d: string) => {
        buf += d;
        if (buf.length > MAX_EVENT_BYTES) {
          this.note('too-large');
          req.destroy();
          return;
        }
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          this.event(site, buf.slice(0, end));
          buf = buf.slice(end + 2);
        }
      });
    });
    this.requests.add(req);
    req.setTimeout(60000, () => req.destroy());
    req.on('error', () => {});
    req.on('close', () => {
      this.requests.delete(req);
      if (!this.finished(site)) this.later(() => this.open(site));
    });
    req.end();
  }

  private event(site: RemoteSite, block: string): void {
    const data = block
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trimStart())
      .join('\n');
    if (!data) return;
    let sites: unknown[];
    try {
      const v = JSON.parse(data) as { sites?: unknown };
      if (!Array.isArray(v.sites)) throw new Error('no sites');
      sites = v.sites;
    } catch {
      this.note('not-json');
      return;
    }
    for (const x of sites) {
      try {
        const s = parseSiteStatus(x);
        this.seen.get(site.url)!.add(siteKey(s));
        this.board.put(s);
      } catch {
        this.note('not-a-status');
      }
    }
  }

  /** Resolve once every followed site has reported its end, or after `timeoutMs`. */
  async settled(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until && ![...this.seen.keys()].every((url) => this.finished({ url }))) await new Promise((r) => setTimeout(r, 50));
  }

  private finished(site: RemoteSite): boolean {
    const keys = [...(this.seen.get(site.url) ?? [])];
    return this.stopped || (keys.length > 0 && keys.every((k) => FINAL.has(this.board.get(k)!.state)));
  }

  private later(fn: () => void): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, this.o.retryMs ?? 500);
    this.timers.add(t);
  }

  private note(reason: string): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  /**
   * Stop following. Sites that never reported an end get `state` (their
   * process ended without saying, or was stopped), with `error` when given.
   */
  stop(state?: SiteState, error?: string): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const r of this.requests) r.destroy();
    this.requests.clear();
    if (!state) return;
    for (const keys of this.seen.values()) {
      for (const k of keys) {
        const s = this.board.get(k)!;
        if (!FINAL.has(s.state)) this.board.put({ ...s, state, ...(error ? { error } : {}), updatedAt: Date.now() });
      }
    }
  }
}
