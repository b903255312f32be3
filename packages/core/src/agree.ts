/**
 * Federated preprocessing for the library: a site's in-memory data
 * (`siteDataFromRows`, `siteDataFromSamples`, or `loadSiteData`) agrees
 * with the other sites on the label set, the schema and the pooled
 * standardization over a `StatementExchange`, without writing files, and
 * the result goes to `createLearner({ data })`.
 *
 * Only a site's statement (`siteStatement`: counts, sums and sums of
 * squares of its training rows, its schema and label set) travels. Every
 * site computes the same agreement from the same statements
 * (`reconcileStatements`). `MemoryStatementHub` exchanges them between
 * sites of one program; `@dflmoe/p2p`'s `statementExchange()` is the libp2p
 * service (the `/dflmoe/preprocess/1.0.0` protocol that `dflmoe peer` uses).
 */
import {
  DataError,
  encodeSiteData,
  reconcileStatements,
  siteStatement,
  type AgreedSchema,
  type Dataset,
  type PeerSplit,
  type SiteData,
  type SiteStatement,
  type Standardizer,
} from '@dflmoe/data';
import { Interrupted, throwIfInterrupted } from './interrupt.js';

/** What the sites agreed on, as one site sees it. */
export interface DataAgreement {
  /** The merged schema every included site encodes its rows with: columns, categories, classes and pooled statistics. */
  agreed: AgreedSchema;
  /** Sites whose statements were merged, sorted. */
  included: string[];
  /** Sites left out because their data cannot join the others, with the reason. */
  excluded: { site: string; reason: string }[];
  /** Sites not heard from before the deadline. */
  missing: string[];
  /** Things that merge but look wrong (a site sharing no class with the others). */
  warnings: string[];
}

/**
 * A channel for the sites' statements (as `HeadExchange` is for heads):
 * `agree` offers this site's statement, gathers the others' and returns
 * the agreement. Throws a `DataError` naming the columns or classes when
 * this site's data cannot join the others.
 */
export interface StatementExchange {
  /** This site's id; the statement is made under it. */
  readonly selfId: string;
  /** Offer this site's statement, wait for the others' (up to the deadline) and return the agreement; `signal` stops the wait. */
  agree(statement: SiteStatement, o?: { signal?: AbortSignal }): Promise<DataAgreement>;
}

/**
 * Statements exchanged in memory, between sites of one program. A site's
 * `agree` waits until every expected site has stated (`sites`: their ids,
 * or how many), at most `deadlineMs` (default 60 s); then it agrees with
 * what arrived and lists the rest as missing.
 *
 *     const hub = new MemoryStatementHub({ sites: ['a', 'b'] });
 *     const [a, b] = await Promise.all([agreeOnData(rowsA, hub.join('a')), agreeOnData(rowsB, hub.join('b'))]);
 */
export class MemoryStatementHub {
  private readonly statements = new Map<string, SiteStatement>();
  private readonly joined = new Set<string>();
  private readonly waiters = new Set<() => void>();

  constructor(private readonly o: { sites: number | string[]; deadlineMs?: number }) {
    const n = typeof o.sites === 'number' ? o.sites : o.sites.length;
    if (!Number.isInteger(n) || n < 1) throw new Error(`MemoryStatementHub: sites must be at least one site, got ${JSON.stringify(o.sites)}`);
  }

  private get expected(): number {
    return typeof this.o.sites === 'number' ? this.o.sites : this.o.sites.length;
  }

  /** The statement exchange of site `id`. Throws when `id` has joined already, is not among the hub's `sites`, or would be one site too many. */
  join(id: string): StatementExchange {
    if (this.joined.has(id)) throw new Error(`site ${id} already joined`);
    if (Array.isArray(this.o.sites) && !this.o.sites.includes(id)) throw new Error(`site ${id} is not one of the hub's sites (${this.o.sites.join(', ')})`);
    if (this.joined.size >= this.expected) throw new Error(`the hub expects ${this.expected} sites, and ${id} would be one more`);
    this.joined.add(id);
    return { selfId: id, agree: (statement, a) => this.agree(id, statement, a?.signal) };
  }

  private async agree(id: string, statement: SiteStatement, signal?: AbortSignal): Promise<DataAgreement> {
    throwIfInterrupted(signal);
    if (statement.summary.site !== id) throw new Error(`the statement names site ${statement.summary.site}, not ${id}`);
    // A copy as plain JSON, as it would travel.
    this.statements.set(id, JSON.parse(JSON.stringify(statement)) as SiteStatement);
    for (const w of this.waiters) w();
    const deadline = this.o.deadlineMs ?? 60000;
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        if (this.statements.size < this.expected) return;
        finish();
        resolve();
      };
      const timer = setTimeout(() => {
        finish();
        resolve();
      }, deadline);
      const abort = () => {
        finish();
        reject(new Interrupted());
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener('abort', abort);
      };
      this.waiters.add(done);
      signal?.addEventListener('abort', abort, { once: true });
      done();
    });
    const got = [...this.statements.values()];
    const missing = Array.isArray(this.o.sites) ? this.o.sites.filter((s) => !this.statements.has(s)).sort() : [];
    if (missing.length === 0 && got.length < this.expected) missing.push(`${this.expected - got.length} site(s) not joined`);
    const r = reconcileStatements(got, id);
    const self = r.excluded.find((x) => x.site === id);
    if (self) throw new DataError(`this site's data cannot join the consortium: ${self.reason}`);
    return { agreed: r.agreed, included: r.included, excluded: r.excluded, missing, warnings: r.warnings };
  }
}

/** A site's data encoded in the agreed layout, ready for `createLearner({ data })`. */
export interface AgreedData extends DataAgreement {
  /** The site's rows in the agreed layout (not standardized). */
  dataset: Dataset;
  /** Which of `dataset`'s rows are the site's training and test splits. */
  split: PeerSplit;
  /** The pooled statistics (`federated`) or the site's own (`local`) that the learner standardizes with. */
  standardizer: Standardizer;
  /** A regression target's pooled mean and standard deviation (`federated` only). */
  targetScale?: { mean: number; std: number };
}

/**
 * Agree with the other sites on the schema and the standardization over
 * `exchange` (without one, the site agrees with itself), and encode the
 * site's rows with the agreement. `standardize`: the pooled statistics
 * (`federated`, default) or the site's own training rows (`local`).
 */
export async function agreeOnData(
  data: SiteData,
  exchange?: StatementExchange | string,
  o: { standardize?: 'federated' | 'local'; signal?: AbortSignal } = {},
): Promise<AgreedData> {
  const self = typeof exchange === 'string' || exchange === undefined ? (exchange ?? 'site') : exchange.selfId;
  const statement = siteStatement(data, self);
  let ag: DataAgreement;
  if (typeof exchange === 'object') ag = await exchange.agree(statement, { signal: o.signal });
  else {
    const r = reconcileStatements([statement]);
    ag = { agreed: r.agreed, included: r.included, excluded: r.excluded, missing: [], warnings: r.warnings };
  }
  const enc = encodeSiteData(data, ag.agreed, o.standardize ?? 'federated');
  return { ...ag, dataset: enc.dataset, split: enc.split, standardizer: enc.standardizer, ...(enc.targetScale ? { targetScale: enc.targetScale } : {}) };
}
