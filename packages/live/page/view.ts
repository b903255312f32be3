/**
 * The live view's drawing, apart from where its status comes from: the
 * page of `--ui` feeds it from the server's event stream (main.ts), a site
 * in a browser tab (`@dflmoe/web`) from its own StatusBoard. `mountLiveView`
 * writes the panels into a root element; `take` draws a snapshot. Every name
 * that came from a site or member goes into the page as text (textContent,
 * setAttribute), never as markup.
 */
import type { SiteStatus, StatusSnapshot } from '@dflmoe/core';
import { gauge, heatmap, lineChart, timeline, type Series } from './svg.js';

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563', '#65a30d'];
export const FINAL = new Set(['done', 'failed', 'interrupted']);

const sites = new Map<string, SiteStatus>();
const keyOf = (s: Pick<SiteStatus, 'algorithm' | 'id'>) => `${s.algorithm}/${s.id}`;
/** A site's colour: by its place among the sites in order (set at each render). */
const colors = new Map<string, string>();
const colorOf = (key: string) => colors.get(key) ?? PALETTE[0];

// ------------------------------------------------------------ small DOM helpers (text only)
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
const $ = (id: string) => document.getElementById(id)!;

export const pct = (v: number | null | undefined) => (v === null || v === undefined ? '–' : `${(v * 100).toFixed(1)}%`);
export function bytes(n: number | undefined): string {
  if (n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${u[i]}`;
}
const last = <T>(xs: readonly (T | null)[]): T | null => {
  for (let i = xs.length - 1; i >= 0; i--) if (xs[i] !== null) return xs[i];
  return null;
};

// ------------------------------------------------------------ the panels (static markup: nothing from a site in it)
const PANELS = `
  <p id="summary" class="muted">waiting for the first site…</p>
  <section class="panel">
    <h2>Sites</h2>
    <table id="overview">
      <thead><tr><th>site</th><th>algorithm</th><th>state</th><th>round</th><th>accuracy</th><th>members up</th><th>strikes</th><th>bytes out</th><th>bytes in</th><th>privacy</th><th>audit</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="panel charts">
    <div><h2>Accuracy</h2><div id="accuracy"></div></div>
    <div><h2>Training loss</h2><div id="loss"></div></div>
    <div id="legend" class="wide"></div>
  </section>
  <section class="panel">
    <h2>Round timeline</h2>
    <div id="timeline"></div>
  </section>
  <div id="cards"></div>`;

/** Called after each drawing (main.ts updates its connection pill). */
let afterRender: (list: SiteStatus[]) => void = () => {};

/** Write the live view's panels into `root`; `onRender` runs after each drawing with the sites drawn. */
export function mountLiveView(root: HTMLElement, onRender?: (list: SiteStatus[]) => void): void {
  root.innerHTML = PANELS;
  if (onRender) afterRender = onRender;
}

// ------------------------------------------------------------ rendering (at most once per frame)
let scheduled = false;
const dirty = new Set<string>();
function schedule(keys: string[]): void {
  keys.forEach((k) => dirty.add(k));
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

function sorted(): SiteStatus[] {
  return [...sites.values()].sort((a, b) => a.algorithm.localeCompare(b.algorithm) || a.id.localeCompare(b.id, undefined, { numeric: true }));
}

function render(): void {
  const list = sorted();
  list.forEach((s, i) => colors.set(keyOf(s), PALETTE[i % PALETTE.length]));
  document.body.dataset.sites = String(list.length);
  document.body.dataset.maxRound = String(Math.max(0, ...list.map((s) => s.round)));
  $('summary').textContent =
    list.length === 0
      ? 'waiting for the first site…'
      : `${list.length} site${list.length === 1 ? '' : 's'}, ${[...new Set(list.map((s) => s.algorithm))].join(', ')}; ` +
        `${list.filter((s) => FINAL.has(s.state)).length} finished`;
  renderOverview(list);
  renderCharts(list);
  renderTimeline(list);
  for (const s of list) if (dirty.has(keyOf(s)) || !document.querySelector(`[data-card="${CSS.escape(keyOf(s))}"]`)) renderCard(s);
  // Cards in the sites' order (appending moves a card that is there already).
  const cards = $('cards');
  for (const s of list) cards.append(document.querySelector(`[data-card="${CSS.escape(keyOf(s))}"]`)!);
  dirty.clear();
  afterRender(list);
}

function stateCell(s: SiteStatus): HTMLElement {
  const c = h('span', { class: `state ${s.state}` }, s.state);
  if (s.error) c.title = s.error;
  return c;
}

function auditText(s: SiteStatus): string {
  if (s.audit.ok === null) return s.audit.lines ? `${s.audit.lines} lines` : 'not kept';
  return s.audit.ok ? `intact (${s.audit.lines} lines)` : `BROKEN: ${s.audit.problem ?? 'see dflmoe audit'}`;
}

function epsilonText(s: SiteStatus): string {
  if (s.epsilon === null) return 'DP off';
  return `ε ${s.epsilon.toFixed(2)}${s.epsilonBudget !== null ? ` of ${s.epsilonBudget}` : ''}`;
}

/** The site's accuracy, or its task's headline metric when it is not a classification (`rmse 54.2`). */
function scoreText(s: SiteStatus): string {
  if (!s.metric) return pct(last(s.accuracy));
  const v = last(s.metric.values);
  return v === null || v === undefined ? '–' : `${s.metric.name} ${v.toPrecision(4)}`;
}

function renderOverview(list: SiteStatus[]): void {
  const body = h('tbody');
  for (const s of list) {
    const key = keyOf(s);
    const swatch = h('span', { class: 'swatch' });
    swatch.style.background = colorOf(key);
    const connected = s.members.filter((m) => m.connected).length;
    const tr = h(
      'tr',
      { 'data-site': key, 'data-round': String(s.round), 'data-state': s.state },
      h('td', {}, swatch, s.id),
      h('td', {}, s.algorithm),
      h('td', {}, stateCell(s)),
      h('td', { class: 'num' }, `${s.round}/${s.rounds}`),
      h('td', { class: 'num' }, scoreText(s)),
      h('td', { class: 'num' }, s.members.length ? `${connected}/${s.members.length}` : '–'),
      h('td', { class: 'num' }, String(s.members.reduce((a, m) => a + m.strikes, 0))),
      h('td', { class: 'num' }, bytes(s.bytesSent)),
      h('td', { class: 'num' }, bytes(s.bytesReceived)),
      h('td', {}, epsilonText(s)),
      h('td', { class: s.audit.ok === false ? 'bad' : '' }, auditText(s)),
    );
    body.append(tr);
  }
  $('overview').querySelector('tbody')!.replaceWith(body);
}

function renderCharts(list: SiteStatus[]): void {
  const series = (f: (s: SiteStatus) => readonly (number | null)[]): Series[] =>
    list.map((s) => ({ name: `${s.id} (${s.algorithm})`, color: colorOf(keyOf(s)), values: f(s) }));
  // Sites of a task that is not a classification chart its headline metric (one metric for the chart: the first such site's).
  const metric = list.find((s) => s.metric)?.metric;
  $('accuracy').replaceChildren(
    metric
      ? lineChart(
          series((s) => s.metric?.values ?? []),
          { label: `${metric.name} per round (task "${metric.task}")`, cls: 'accuracy-chart', format: (v) => v.toPrecision(3), min: 0 },
        )
      : lineChart(
          series((s) => s.accuracy),
          { label: 'accuracy per round', cls: 'accuracy-chart', format: (v) => `${Math.round(v * 100)}%`, min: 0, max: 1 },
        ),
  );
  $('loss').replaceChildren(
    lineChart(
      series((s) => s.loss),
      { label: 'training loss per round', cls: 'loss-chart', format: (v) => v.toFixed(2), min: 0 },
    ),
  );
  const legend = h('div', { class: 'legend' });
  for (const s of list) {
    const sw = h('span', { class: 'swatch' });
    sw.style.background = colorOf(keyOf(s));
    legend.append(h('span', { class: 'legend-item' }, sw, `${s.id} (${s.algorithm})`));
  }
  $('legend').replaceChildren(legend);
}

function renderTimeline(list: SiteStatus[]): void {
  const rows = list.map((s) => ({
    name: `${s.id} (${s.algorithm})`,
    color: colorOf(keyOf(s)),
    rounds: s.finishedAt.flatMap((end, i) => (end === null ? [] : [{ round: i + 1, end, start: end - (s.seconds[i] ?? 0) * 1000 }])),
  }));
  $('timeline').replaceChildren(timeline(rows, Date.now()));
}

function renderCard(s: SiteStatus): void {
  const key = keyOf(s);
  const card = h('section', { class: 'card', 'data-card': key });
  const title = h(
    'h3',
    {},
    `${s.id} `,
    h('small', {}, `${s.algorithm}${s.modality ? ` · ${s.modality}` : ''}${s.peerId && s.peerId !== s.id ? ` · ${s.peerId}` : ''}`),
  );
  card.append(title);
  if (s.error) card.append(h('p', { class: 'bad' }, s.error));
  // Members.
  const members = h(
    'table',
    { class: 'members' },
    h('thead', {}, h('tr', {}, h('th', {}, 'member'), h('th', {}, 'connection'), h('th', {}, 'strikes'), h('th', {}, 'last head'))),
  );
  const mb = h('tbody');
  for (const m of s.members) {
    const dot = h('span', { class: `dot ${m.blocked ? 'blocked' : m.connected ? 'up' : 'down'}` });
    const name = h('td', {}, m.id);
    if (m.peerId && m.peerId !== m.id) name.title = m.peerId;
    mb.append(
      h(
        'tr',
        { 'data-member': m.id },
        name,
        h('td', {}, dot, m.blocked ? 'refused' : m.connected ? 'connected' : 'not connected'),
        h('td', { class: m.strikes > 0 ? 'num bad' : 'num' }, String(m.strikes)),
        h('td', { class: 'num' }, m.lastHeadRound === null ? '–' : String(m.lastHeadRound)),
      ),
    );
  }
  if (!s.members.length) mb.append(h('tr', {}, h('td', { colspan: '4' }, 'no members (local training)')));
  members.append(mb);
  // Gate heatmap: experts by round.
  const experts = [...new Set(s.gate.flatMap((g) => (g ? Object.keys(g) : [])))];
  const gate = h(
    'div',
    { class: 'gate' },
    h('h4', {}, 'gate weights (experts by round)'),
    h(
      'p',
      { class: 'muted small' },
      'mean gate weight per head on the test rows, own head first; darker: more weight. A weight near 1 is where the gate routes rows, not a measure of trust',
    ),
  );
  if (experts.length) gate.append(heatmap(experts, s.gate.length, (e, r) => s.gate[r - 1]?.[e], `gate weights of ${s.id}`));
  else gate.append(h('p', { class: 'muted' }, 'no gate (this algorithm mixes no experts)'));
  if (experts.length) gate.append(...modalityHeatmap(s, experts));
  if (s.reliance?.some(Boolean)) gate.append(...relianceHeatmap(s, s.reliance));
  // Bytes, privacy, audit.
  const facts = h(
    'dl',
    { class: 'facts' },
    h('dt', {}, 'bytes out'),
    h('dd', {}, bytes(s.bytesSent), s.bodyBytesSent !== undefined ? ` (bodies ${bytes(s.bodyBytesSent)})` : ''),
    h('dt', {}, 'bytes in'),
    h('dd', {}, bytes(s.bytesReceived), s.bodyBytesReceived !== undefined ? ` (bodies ${bytes(s.bodyBytesReceived)})` : ''),
    h('dt', {}, 'privacy'),
    h('dd', {}, epsilonText(s), s.delta !== null ? ` (δ ${s.delta})` : ''),
    h('dt', {}, 'audit trail'),
    h('dd', { class: s.audit.ok === false ? 'bad' : '' }, auditText(s)),
  );
  if (s.epsilon !== null) facts.append(h('dt', {}, 'budget spent'), h('dd', {}, gauge(s.epsilon, s.epsilonBudget, `epsilon of ${s.id} against its budget`)));
  card.append(h('div', { class: 'card-body' }, h('div', {}, h('h4', {}, 'members'), members, facts), gate));
  const old = document.querySelector(`[data-card="${CSS.escape(key)}"]`);
  if (old) old.replaceWith(card);
  else $('cards').append(card);
}

/**
 * Where the sites hold the data in several forms (images, tables): the gate
 * weights of a site summed over the heads of each form, by round (the own
 * head in the site's form). Nothing when the experts' forms are not known.
 */
function modalityHeatmap(s: SiteStatus, experts: string[]): Node[] {
  const formOf = (e: string) => (e === s.id ? s.modality : sites.get(keyOf({ algorithm: s.algorithm, id: e }))?.modality);
  const forms = [...new Set(experts.map(formOf))];
  if (forms.includes(undefined) || forms.length < 2) return [];
  const weight = (form: string | undefined, r: number) => {
    const g = s.gate[r - 1];
    return g ? experts.filter((e) => formOf(e) === form).reduce((a, e) => a + (g[e] ?? 0), 0) : undefined;
  };
  return [
    h('h4', {}, "gate weights by the experts' modality (by round)"),
    h('p', { class: 'muted small' }, "the weights above summed over the heads of the sites that hold the data in each form, the own head's form included"),
    heatmap(forms as string[], s.gate.length, weight, `gate weights of ${s.id} by modality`),
  ];
}

/** A multi-task site with `crossTask`: how much each task's read-out leans on each other task's heads, by round. */
function relianceHeatmap(s: SiteStatus, reliance: (Record<string, number> | null)[]): Node[] {
  const pairs = [...new Set(reliance.flatMap((g) => (g ? Object.keys(g) : [])))].sort();
  return [
    h('h4', {}, 'experts across tasks: what each task reads (by round)'),
    h('p', { class: 'muted small' }, "each row a task and another task whose heads its read-out takes: that task's share of the read-out's weights"),
    heatmap(pairs, reliance.length, (k, r) => reliance[r - 1]?.[k], `read-outs of ${s.id} across tasks`),
  ];
}

// ------------------------------------------------------------ taking status
/** Draw a snapshot: `full` replaces every site, else the sites in it are updated. */
export function take(snapshot: StatusSnapshot, full: boolean): void {
  if (full) {
    sites.clear();
    $('cards').replaceChildren();
  }
  for (const s of snapshot.sites) sites.set(keyOf(s), s);
  schedule(snapshot.sites.map(keyOf));
}

/** The sites drawn so far. */
export function drawnSites(): SiteStatus[] {
  return [...sites.values()];
}
