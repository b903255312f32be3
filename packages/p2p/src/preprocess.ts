/**
 * Federated preprocessing over libp2p, before round 1: the members agree on
 * the label set, the feature schema (columns, category vocabularies, sample
 * shape) and standardization statistics pooled from per-site counts, sums
 * and sums of squares. No row leaves a site: only its `SiteStatement` (its
 * `LocalSummary` and the label set it declares) does.
 *
 * Each member serves its statement on `/dflmoe/preprocess/1.0.0`: a
 * length-prefixed JSON request `{format}` is answered by one length-prefixed
 * JSON frame `{format, statement, agreedSites?}`; `agreedSites` is set once
 * the member has agreed. A member pulls every other member's statement
 * (retrying until all arrive or the deadline passes), then every member
 * computes the same agreement from the same statements
 * (`reconcileStatements`). A member that finds the others already agreed
 * (it started late, or restarted) adopts the sites they merged, but only when
 * its own classes, columns and categories are all in that agreement (it
 * warns that the statistics are the others'); else it stops, naming what
 * does not fit. The agreement is never reopened once a site has trained on
 * it. Statements are keyed by peer ID, which the transport authenticates.
 *
 * Everything received is untrusted: a response over the size limit, not
 * JSON, not matching the schema (zod), failing `validateSummary`, or naming
 * another sender is dropped, logged once per (member, reason) and counted.
 */
import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { z } from 'zod';
import { TASK_KINDS, throwIfInterrupted, type Logger } from '@dflmoe/core';
import { pause, waitLeft, waitNoticeMs } from '@dflmoe/core/internal';
import { DataError, reconcileStatements, validateSummary, type AgreedSchema, type SiteStatement } from '@dflmoe/data';
import { agreementFit, statementForm } from '@dflmoe/data/internal';
import { readFrames, writeFrames } from './frames.js';
import type { SiteNode } from './node.js';

export const PREPROCESS_PROTOCOL = '/dflmoe/preprocess/1.0.0';
const FORMAT = 1;
const MAX_REQUEST = 1024;

const finite = z.number().refine(Number.isFinite, 'not a finite number');
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const name = z.string().max(4096);
const names = z.array(name);
const column = z.discriminatedUnion('kind', [
  z.object({ name: name.min(1), kind: z.literal('numeric'), impute: finite, indicator: z.boolean() }).strict(),
  z.object({ name: name.min(1), kind: z.literal('categorical'), categories: names }).strict(),
]);
const featureSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('table'), labelColumn: name, classNames: names, columns: z.array(column) }).strict(),
  z
    .object({
      kind: z.literal('tensor'),
      classNames: names,
      shape: z
        .array(
          z
            .number()
            .int()
            .min(1)
            .max(1 << 20),
        )
        .min(1)
        .max(8),
    })
    .strict(),
]);

/** A `LocalSummary` as it must arrive (the structure; `validateSummary` checks that its parts fit together). */
export const localSummarySchema = z
  .object({
    version: z.literal(1),
    site: z.string().min(1).max(256),
    numRows: count,
    schema: featureSchema,
    labelCounts: z.array(count),
    featureNames: names,
    stats: z.object({ count: z.array(count), missing: z.array(count), sum: z.array(finite), sumSq: z.array(finite) }).strict(),
    task: z
      .object({ name: z.string().min(1).max(256), kind: z.enum(TASK_KINDS), sum: finite.optional(), sumSq: finite.optional() })
      .strict()
      .optional(),
    /** A multi-task site's tasks (`validateSummary` checks that they fit the rows). */
    tasks: z
      .array(
        z
          .object({
            name: z.string().min(1).max(256),
            kind: z.enum(TASK_KINDS),
            numRows: count,
            classNames: names,
            labelCounts: z.array(count),
            sum: finite.optional(),
            sumSq: finite.optional(),
            declared: names.min(1).optional(),
          })
          .strict(),
      )
      .min(1)
      .max(64)
      .optional(),
  })
  .strict();

const statementSchema = z.object({ summary: localSummarySchema, declaredClasses: names.min(1).optional() }).strict();
const responseSchema = z
  .object({
    format: z.literal(FORMAT),
    statement: statementSchema,
    agreedSites: z.array(z.string().min(1).max(256)).max(100000).optional(),
  })
  .strict();
const requestSchema = z.object({ format: z.literal(FORMAT) }).strict();

export type PreprocessDrop = 'not-member' | 'too-large' | 'bad-json' | 'bad-schema' | 'invalid-summary' | 'sender-mismatch' | 'transfer-failed';

/**
 * Check a response received from `from` (its authenticated peer ID): the
 * statement, and the sites it agreed on (if it has), or the reason to drop it.
 */
export function checkPreprocessResponse(
  bytes: Uint8Array,
  from: string,
): { statement: SiteStatement; agreedSites?: string[] } | { reason: PreprocessDrop; detail: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    return { reason: 'bad-json', detail: (e as Error).message.slice(0, 200) };
  }
  const r = responseSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    return { reason: 'bad-schema', detail: `${i.path.join('.') || '(top level)'}: ${i.message}`.slice(0, 300) };
  }
  const st = r.data.statement as SiteStatement;
  try {
    validateSummary(st.summary);
  } catch (e) {
    return { reason: 'invalid-summary', detail: (e as Error).message.slice(0, 300) };
  }
  if (st.summary.site !== from) return { reason: 'sender-mismatch', detail: `summary names site ${st.summary.site.slice(0, 80)}` };
  return { statement: st, ...(r.data.agreedSites ? { agreedSites: r.data.agreedSites } : {}) };
}

export interface PreprocessMember {
  peerId: string;
  addrs: string[];
  name?: string;
}

export interface PreprocessOptions {
  members: PreprocessMember[];
  /** This site's statement; its summary's `site` must be this node's peer ID. */
  statement: SiteStatement;
  /** Wait at most this long for the other members' statements (ms)... */
  deadlineMs: number;
  /**
   * ...or, once this many other members' statements are in, `graceMs` more
   * for the rest (default: every other member, so the whole deadline).
   */
  quorum?: number;
  /** Default 2000 ms. */
  graceMs?: number;
  /** Largest response accepted, bytes. */
  maxBytes: number;
  logger: Logger;
  /** Give up on one request after this long (default 30 s, bounded by the deadline). */
  requestTimeoutMs?: number;
  /** Pause between attempts at members not yet heard from (default 250 ms). */
  retryMs?: number;
  /** The site is stopping (SIGINT/SIGTERM): gathering ends with `Interrupted`. */
  signal?: AbortSignal;
  /** This site's name, for messages (when `members` does not name it). */
  selfName?: string;
}

export interface Agreement {
  agreed: AgreedSchema;
  /** Peer IDs whose statements were merged, sorted. */
  included: string[];
  /** Members left out because their schema cannot be reconciled, with the reason. */
  excluded: { peer: string; reason: string }[];
  /** Members not heard from before the deadline. */
  missing: string[];
  /** True when the others had agreed already and this site took their agreement (its own statistics are not in it). */
  adopted: boolean;
  /** Members that hold the data in another form (tables beside images): they agree apart, and their heads are experts here; sorted. */
  otherForms: string[];
  warnings: string[];
  seconds: number;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** The preprocessing protocol of one site: serves its statement and gathers the others'. */
export class SchemaAgreement {
  private readonly selfId: string;
  private readonly others: PreprocessMember[];
  private readonly memberIds: Set<string>;
  private agreedSites?: string[];
  private logged = new Set<string>();
  /** Members that hold our statement (we served it to them). */
  private readonly servedTo = new Set<string>();
  /** Members whose statement we merged while they were still gathering (they had not agreed). */
  private readonly gathering = new Set<string>();
  readonly dropped: Partial<Record<PreprocessDrop, number>> = {};
  private readonly names: Map<string, string>;

  constructor(
    private readonly node: Pick<SiteNode, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol' | 'getConnections' | 'addEventListener'>,
    private readonly o: PreprocessOptions,
  ) {
    this.selfId = node.peerId.toString();
    if (o.statement.summary.site !== this.selfId) throw new Error(`the statement names site ${o.statement.summary.site}, not this node ${this.selfId}`);
    this.others = o.members.filter((m) => m.peerId !== this.selfId);
    this.memberIds = new Set(this.others.map((m) => m.peerId));
    this.names = new Map(o.members.filter((m) => m.name).map((m) => [m.peerId, m.name!]));
    if (o.selfName && !this.names.has(this.selfId)) this.names.set(this.selfId, o.selfName);
    // The site's own summary is checked before anything is served: bad data of its own is its own error, not a strike at its members.
    try {
      validateSummary(o.statement.summary);
    } catch (e) {
      throw new DataError(`this site's own data cannot be summarized for the others: ${this.named((e as Error).message)}`);
    }
  }

  /** Members seen connected since `agree` began (or before). */
  private readonly seen = new Set<string>();
  /** Members said to have gone (logged once). */
  private readonly saidGone = new Set<string>();
  private watching = false;

  private connected(peer: string): boolean {
    return this.node.getConnections(peerIdFromString(peer)).length > 0;
  }

  /** Whether `peer` was connected since gathering began and is not any more. */
  private gone(peer: string): boolean {
    return this.seen.has(peer) && !this.connected(peer);
  }

  /** Note the members connected now and every member that connects from now on. */
  private watchConnections(): void {
    if (this.watching) return;
    this.watching = true;
    for (const c of this.node.getConnections()) if (this.memberIds.has(c.remotePeer.toString())) this.seen.add(c.remotePeer.toString());
    this.node.addEventListener('peer:connect', (evt) => {
      const id = evt.detail.toString();
      if (this.memberIds.has(id)) this.seen.add(id);
    });
  }

  /** Register the protocol handler (before or after `node.start()`). */
  async register(): Promise<void> {
    this.watchConnections();
    await this.node.handle(PREPROCESS_PROTOCOL, (stream, connection) => this.serve(stream, connection), { maxInboundStreams: 32 });
  }

  /** Serve an agreement reached earlier (a restarted site), without gathering again. */
  useAgreed(sites: string[]): void {
    this.agreedSites = [...sites].sort();
  }

  private drop(peer: string, reason: PreprocessDrop, detail: string): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    const key = `${peer}:${reason}`;
    if (this.logged.has(key)) return;
    this.logged.add(key);
    this.o.logger.warn(`preprocessing: dropped input from ${this.label(peer)}: ${reason} (${detail})`);
  }

  /** A member's name (or its peer ID). */
  label(peer: string): string {
    return this.names.get(peer) ?? peer;
  }

  /** Member names in place of peer IDs, for messages. */
  private named(text: string): string {
    let out = text;
    for (const [id, n] of this.names) out = out.split(id).join(n);
    return out;
  }

  private async serve(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    try {
      if (!this.memberIds.has(from)) {
        this.drop(from, 'not-member', 'asked for our statement');
        stream.abort(new Error('not a member'));
        return;
      }
      const [req] = await readFrames(stream, 1, MAX_REQUEST, AbortSignal.timeout(10000));
      if (req === undefined) {
        // The asker gave up (its own timeout) before sending: nothing bad was received.
        stream.abort(new Error('no request'));
        return;
      }
      let ok = false;
      try {
        ok = requestSchema.safeParse(JSON.parse(Buffer.from(req).toString('utf8'))).success;
      } catch {
        ok = false;
      }
      if (!ok) {
        this.drop(from, 'bad-json', 'bad request');
        stream.abort(new Error('bad request'));
        return;
      }
      const body = { format: FORMAT, statement: this.o.statement, ...(this.agreedSites ? { agreedSites: this.agreedSites } : {}) };
      await writeFrames(stream, [Buffer.from(JSON.stringify(body), 'utf8')]);
      this.servedTo.add(from);
    } catch (e) {
      this.o.logger.debug(`preprocessing: serving ${this.label(from)} failed: ${(e as Error).message}`);
      stream.abort(e as Error);
    }
  }

  /** Ask one member for its statement; undefined when it cannot be reached or sent bad data (counted). */
  private async ask(m: PreprocessMember, timeoutMs: number): Promise<{ statement: SiteStatement; agreedSites?: string[] } | undefined> {
    const signal = this.o.signal ? AbortSignal.any([this.o.signal, AbortSignal.timeout(Math.max(1, timeoutMs))]) : AbortSignal.timeout(Math.max(1, timeoutMs));
    let lastError = 'no address';
    // The configured addresses, then a connection that is already open (the member dialled us, came
    // through a relay, or was found at run time); no lookup here: finding members is discovery's job.
    const open = () => this.node.getConnections(peerIdFromString(m.peerId)).length > 0;
    for (const a of [...m.addrs, undefined]) {
      if (a === undefined && !open()) break;
      let stream: Stream;
      try {
        const target = a === undefined ? peerIdFromString(m.peerId) : multiaddr(`${a}/p2p/${m.peerId}`);
        stream = await this.node.dialProtocol(target, PREPROCESS_PROTOCOL, { signal });
      } catch (e) {
        lastError = (e as Error).message;
        continue;
      }
      let frames: Uint8Array[];
      try {
        stream.maxReadBufferLength = this.o.maxBytes + 64;
        [, frames] = await Promise.all([
          writeFrames(stream, [Buffer.from(JSON.stringify({ format: FORMAT }), 'utf8')]),
          readFrames(stream, 1, this.o.maxBytes, signal),
        ]);
      } catch (e) {
        // Not every rejection of a stream is an Error with a message.
        const msg = String((e as Error | undefined)?.message ?? e);
        if (String((e as Error)?.name).startsWith('InvalidDataLength')) this.drop(m.peerId, 'too-large', `over ${this.o.maxBytes} bytes`);
        else this.drop(m.peerId, 'transfer-failed', msg.slice(0, 200));
        stream.abort(e as Error);
        return undefined;
      }
      if (frames.length === 0) {
        this.drop(m.peerId, 'transfer-failed', 'no response');
        return undefined;
      }
      const r = checkPreprocessResponse(frames[0], m.peerId);
      if ('reason' in r) {
        this.drop(m.peerId, r.reason, r.detail);
        return undefined;
      }
      return r;
    }
    this.o.logger.debug(`preprocessing: ${this.label(m.peerId)} not reachable yet (${lastError})`);
    return undefined;
  }

  /**
   * Gather the members' statements (bounded by the deadline) and agree.
   * Throws a DataError naming the columns or classes when this site's own
   * schema cannot be reconciled with the others'.
   */
  async agree(): Promise<Agreement> {
    const t0 = performance.now();
    this.watchConnections();
    const end = Date.now() + this.o.deadlineMs;
    const left = () => Math.max(0, end - Date.now());
    const got = new Map<string, SiteStatement>([[this.selfId, this.o.statement]]);
    const agreedBy = new Map<string, string[]>();
    const form = statementForm(this.o.statement);
    const take = (m: PreprocessMember, r: Awaited<ReturnType<SchemaAgreement['ask']>>) => {
      if (!r) return;
      got.set(m.peerId, r.statement);
      // The agreement of a member holding the data in another form is its form's, not ours to take.
      if (r.agreedSites && statementForm(r.statement) !== form) this.gathering.delete(m.peerId);
      else if (r.agreedSites) {
        agreedBy.set(m.peerId, r.agreedSites);
        this.gathering.delete(m.peerId);
      } else this.gathering.add(m.peerId);
    };
    const timeout = () => Math.min(this.o.requestTimeoutMs ?? 30000, left());
    const quorum = Math.min(this.o.quorum ?? this.others.length, this.others.length);
    // Once others report an agreement, the sites it merged are what this site needs (the smallest peer ID's word when they differ).
    const agreedSites = () => (agreedBy.size > 0 ? agreedBy.get([...agreedBy.keys()].sort()[0])! : undefined);
    const noticeMs = waitNoticeMs(this.o.deadlineMs);
    let noticed = Date.now();
    const gather = async () => {
      let quorumAt: number | undefined;
      let goneAt: number | undefined;
      for (;;) {
        throwIfInterrupted(this.o.signal);
        const sites = agreedSites();
        const missing = this.others.filter((m) => !got.has(m.peerId) && (!sites || sites.includes(m.peerId)));
        if (missing.length === 0 || left() === 0) return;
        // A member that was connected and is not any more, without having sent its statement, stopped (or
        // crashed): not waited for (after the grace, in case it only reconnects); it counts again when it is back.
        const waiting = missing.filter((m) => !this.gone(m.peerId));
        for (const m of missing) {
          if (waiting.includes(m) || this.saidGone.has(m.peerId)) continue;
          this.saidGone.add(m.peerId);
          this.o.logger.warn(
            `preprocessing: ${this.label(m.peerId)} disconnected before sending its statement: not waiting for it (it takes the agreement when it comes back, if its data fits)`,
          );
        }
        if (waiting.length === 0) {
          goneAt ??= Date.now();
          if (Date.now() - goneAt >= (this.o.graceMs ?? 2000)) return;
        } else goneAt = undefined;
        if (!sites && got.size - 1 >= quorum) {
          quorumAt ??= Date.now();
          if (Date.now() - quorumAt >= (this.o.graceMs ?? 2000)) return;
        }
        if (waiting.length > 0 && Date.now() - noticed >= noticeMs) {
          noticed = Date.now();
          this.o.logger.info(
            `preprocessing: waiting for the statements of ${waiting.map((m) => this.label(m.peerId)).join(', ')} ${waitLeft(left(), this.o.deadlineMs)}`,
          );
        }
        await Promise.all(waiting.map(async (m) => take(m, await this.ask(m, timeout()))));
        if (missing.some((m) => !got.has(m.peerId)) && left() > 0) await pause(Math.min(this.o.retryMs ?? 250, left()), this.o.signal);
      }
    };
    await gather();
    // Someone may have agreed meanwhile (without us, if we came late): ask once more, and fetch what that agreement needs.
    if (agreedBy.size === 0) {
      await Promise.all(this.others.filter((m) => got.has(m.peerId)).map(async (m) => take(m, await this.ask(m, Math.min(5000, Math.max(1000, timeout()))))));
      throwIfInterrupted(this.o.signal);
      await gather();
    }
    return this.conclude(got, agreedSites(), agreedBy, t0, left);
  }

  /** Agree from the statements gathered: the sites of this site's form merged (or the agreement they made), the rest left out or set apart. */
  private async conclude(
    got: Map<string, SiteStatement>,
    sites: string[] | undefined,
    agreedBy: Map<string, string[]>,
    t0: number,
    left: () => number,
  ): Promise<Agreement> {
    const missing = this.others.filter((m) => !got.has(m.peerId)).map((m) => m.peerId);
    let adopted = false;
    let pool = [...got.values()];
    if (sites) {
      const absent = sites.filter((s) => !got.has(s));
      if (absent.length > 0) {
        throw new DataError(
          `the other members agreed on a schema that includes ${absent.map((s) => this.label(s)).join(', ')}, whose statement this site could not fetch ` +
            `within ${Math.round(this.o.deadlineMs / 1000)} s; start it again when ${absent.length > 1 ? 'they are' : 'it is'} reachable`,
        );
      }
      pool = sites.map((s) => got.get(s)!);
      adopted = !sites.includes(this.selfId);
    }
    let r;
    try {
      r = reconcileStatements(pool, this.selfId);
    } catch (e) {
      throw e instanceof DataError ? new DataError(this.named(e.message)) : e;
    }
    const excluded = r.excluded.map((x) => ({ peer: x.site, reason: this.named(x.reason) }));
    // Statements outside an agreement taken from the others (ours, if we came late): those that do not fit it are left out.
    for (const st of got.values()) {
      if (pool.includes(st)) continue;
      const why = reconcileStatements([...pool, st], this.selfId).excluded.find((x) => x.site === st.summary.site);
      if (why) excluded.push({ peer: st.summary.site, reason: this.named(why.reason) });
    }
    const self = excluded.find((x) => x.peer === this.selfId);
    if (self) {
      // Before stopping, serve our statement to the members still gathering (connected, not agreed): without it they
      // would wait out their whole deadline for us, while a member that already agreed trains on alone.
      const owed = () => this.others.map((m) => m.peerId).filter((p) => !agreedBy.has(p) && !this.servedTo.has(p) && this.connected(p));
      await this.servedOrTimeout(owed, Math.min(left(), 30000), this.o.signal);
      throw new DataError(`this site's data cannot join the consortium: ${self.reason}`);
    }
    // Data that would merge with the others', but came after they agreed: their agreement must hold all of it.
    if (adopted) this.checkAdoption(r.agreed);
    for (const x of excluded) this.o.logger.warn(`preprocessing: left out ${this.label(x.peer)}: ${x.reason}`);
    if (missing.length > 0) {
      const waited = Math.round((performance.now() - t0) / 1000);
      this.o.logger.warn(
        `preprocessing: no statement from ${missing.map((p) => this.label(p)).join(', ')} within ${waited} s; agreeing without them (when they come, they take the agreement if their data fits it, else they stop)`,
      );
    }
    const warnings = r.warnings.map((w) => this.named(w));
    for (const w of warnings) this.o.logger.warn(`preprocessing: ${w}`);
    const otherForms = this.otherForms(got);
    this.agreedSites = r.included;
    return { agreed: r.agreed, included: r.included, excluded, missing, adopted, otherForms, warnings, seconds: (performance.now() - t0) / 1000 };
  }

  /** The members whose statements hold the data in another form than ours (said once): they agree among themselves. */
  private otherForms(got: Map<string, SiteStatement>): string[] {
    const form = statementForm(this.o.statement);
    const other = [...got.values()].filter((st) => statementForm(st) !== form);
    if (other.length > 0) {
      const theirs = statementForm(other[0]);
      this.o.logger.info(
        `preprocessing: ${other.map((st) => this.label(st.summary.site)).join(', ')} hold the data as ${theirs}s (this site: ${form}s): ` +
          'they agree on a schema of their own; their heads are experts here, bodies are combined only within a form',
      );
    }
    return other.map((st) => st.summary.site).sort();
  }

  /**
   * A site that came after the others agreed takes their agreement only when
   * its own classes, columns and categories are all in it (and says what it
   * takes in differently); else it stops, naming what does not fit and how to
   * start the consortium so that every site is taken in.
   */
  private checkAdoption(agreed: AgreedSchema): void {
    const { problems, notes } = agreementFit(this.o.statement.summary, agreed);
    const by = agreed.sites.map((p) => this.label(p)).join(', ');
    if (problems.length > 0) {
      const classes = problems.some((p) => p.startsWith('class'));
      throw new DataError(
        `this site came after ${by} had agreed on the data without it, and the agreement leaves out its ${this.named(problems.join('; '))}. ` +
          'Stop every site and start them over together (each with --fresh), within preprocess.deadlineMs of each other (raise it at every site)' +
          `${classes ? ', with every class declared in data.classes at every site' : ''}`,
      );
    }
    this.o.logger.warn(`preprocessing: this site came after ${by} had agreed and takes their agreement: ${this.named(notes.join('; '))}`);
  }

  /**
   * Members of the agreement that were still gathering when we took their
   * statement and have not fetched ours since. A site whose run ends quickly
   * (local-only, few rounds) waits for them before it stops serving, or such
   * a member would wait out its whole deadline. Members that had agreed
   * already (we came late, or resumed) need nothing from us, nor do members
   * that disconnected since (they stopped).
   */
  unserved(): string[] {
    const sites = this.agreedSites ?? [];
    return [...this.gathering].filter((p) => sites.includes(p) && !this.servedTo.has(p) && !this.gone(p));
  }

  /** Wait (at most `ms`, polling) until every member of the agreement holds our statement. */
  waitServed(ms: number, signal?: AbortSignal): Promise<void> {
    return this.servedOrTimeout(() => this.unserved(), ms, signal);
  }

  /** Poll until `owed()` is empty (the members it lists fetched our statement), at most `ms`. */
  private async servedOrTimeout(owed: () => string[], ms: number, signal?: AbortSignal): Promise<void> {
    const end = Date.now() + ms;
    while (owed().length > 0 && Date.now() < end && !signal?.aborted) await delay(Math.min(100, Math.max(1, end - Date.now())));
  }

  async close(): Promise<void> {
    await this.node.unhandle(PREPROCESS_PROTOCOL).catch(() => {});
  }
}
