/**
 * Small SVG charts for the live view, drawn with DOM calls only: every text
 * goes in through textContent and every attribute through setAttribute, so a
 * hostile site or member name stays text.
 */
const NS = 'http://www.w3.org/2000/svg';

export function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgRoot(width: number, height: number, cls: string, label: string): SVGSVGElement {
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, width: '100%', class: cls, role: 'img' });
  svg.setAttribute('aria-label', label);
  return svg;
}

export interface Series {
  name: string;
  color: string;
  values: readonly (number | null)[];
}

/** Nice round ticks between lo and hi. */
function ticks(lo: number, hi: number, n = 4): number[] {
  if (!(hi > lo)) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n));
  const nice = [1, 2, 2.5, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= n) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(+v.toFixed(10));
  return out;
}

/** Lines over rounds, one per series; rounds without a value break the line. */
export function lineChart(series: Series[], o: { label: string; cls: string; format: (v: number) => string; min?: number; max?: number }): SVGSVGElement {
  const W = 460,
    H = 236,
    L = 48,
    R = 12,
    T = 10,
    B = 40;
  const svg = svgRoot(W, H, `chart ${o.cls}`, o.label);
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const rounds = Math.max(1, ...series.map((s) => s.values.length));
  let lo = o.min ?? Math.min(...all);
  let hi = o.max ?? Math.max(...all);
  if (!all.length) [lo, hi] = [0, 1];
  if (hi - lo < 1e-9) [lo, hi] = [lo - 0.5, hi + 0.5];
  const x = (r: number) => L + (rounds === 1 ? (W - L - R) / 2 : ((r - 1) / (rounds - 1)) * (W - L - R));
  const y = (v: number) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  for (const t of ticks(lo, hi)) {
    svg.append(el('line', { x1: L, x2: W - R, y1: y(t), y2: y(t), class: 'grid' }));
    svg.append(el('text', { x: L - 6, y: y(t) + 4, 'text-anchor': 'end', class: 'tick' }, o.format(t)));
  }
  for (const t of ticks(1, rounds, 6).filter((t) => Number.isInteger(t))) {
    svg.append(el('text', { x: x(t), y: H - 22, 'text-anchor': 'middle', class: 'tick' }, String(t)));
  }
  svg.append(el('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis-label' }, 'round'));
  for (const s of series) {
    let d = '';
    let pen = false;
    let points = 0;
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(i + 1).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      points++;
    });
    const g = el('g', { class: 'series' });
    g.setAttribute('data-points', String(points));
    g.append(el('title', {}, s.name));
    if (d) g.append(el('path', { d, stroke: s.color, fill: 'none', 'stroke-width': 2, class: 'line' }));
    const lastIndex = s.values.reduce<number>((a, v, i) => (v !== null && Number.isFinite(v) ? i : a), -1);
    if (lastIndex >= 0) {
      const dot = el('circle', { cx: x(lastIndex + 1), cy: y(s.values[lastIndex]!), r: 3, fill: s.color });
      dot.append(el('title', {}, `${s.name}, round ${lastIndex + 1}: ${o.format(s.values[lastIndex]!)}`));
      g.append(dot);
    }
    svg.append(g);
  }
  return svg;
}

/** Gate weights: one row per expert, one column per round, darker for more weight. */
export function heatmap(experts: string[], rounds: number, weight: (expert: string, round: number) => number | undefined, label: string): SVGSVGElement {
  const cell = Math.max(4, Math.min(22, Math.floor(360 / Math.max(1, rounds))));
  const rowH = 20,
    L = 110,
    T = 4,
    B = 18;
  const W = L + rounds * cell + 8,
    H = T + experts.length * rowH + B;
  const svg = svgRoot(W, H, 'gate-heatmap', label);
  svg.setAttribute('width', String(W));
  experts.forEach((ex, i) => {
    const name = ex.length > 16 ? `${ex.slice(0, 15)}…` : ex;
    const t = el('text', { x: L - 6, y: T + i * rowH + 14, 'text-anchor': 'end', class: 'tick' }, name);
    t.append(el('title', {}, ex));
    svg.append(t);
    for (let r = 1; r <= rounds; r++) {
      const w = weight(ex, r);
      if (w === undefined) continue;
      const rect = el('rect', {
        x: L + (r - 1) * cell,
        y: T + i * rowH,
        width: cell - 1,
        height: rowH - 2,
        class: 'cell',
        'fill-opacity': (0.08 + 0.92 * Math.min(1, Math.max(0, w))).toFixed(3),
      });
      rect.append(el('title', {}, `${ex}, round ${r}: ${(w * 100).toFixed(1)}%`));
      svg.append(rect);
    }
  });
  for (let r = 1; r <= rounds; r++) {
    if (rounds <= 12 || r === 1 || r === rounds || r % Math.ceil(rounds / 8) === 0) {
      svg.append(el('text', { x: L + (r - 0.5) * cell, y: H - 5, 'text-anchor': 'middle', class: 'tick' }, String(r)));
    }
  }
  return svg;
}

export interface TimelineRow {
  name: string;
  color: string;
  /** Start and end of each round (ms since the epoch). */
  rounds: { round: number; start: number; end: number }[];
}

/** Each site's rounds on one time axis. */
export function timeline(rows: TimelineRow[], now: number): SVGSVGElement {
  const W = 940,
    rowH = 18,
    L = 150,
    R = 12,
    T = 4,
    B = 22;
  const H = T + Math.max(1, rows.length) * rowH + B;
  const svg = svgRoot(W, H, 'timeline', 'round timeline per site');
  const all = rows.flatMap((r) => r.rounds);
  const t0 = Math.min(...all.map((r) => r.start), now);
  const t1 = Math.max(...all.map((r) => r.end), t0 + 1000);
  const x = (t: number) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  rows.forEach((row, i) => {
    const y = T + i * rowH;
    const name = row.name.length > 22 ? `${row.name.slice(0, 21)}…` : row.name;
    const label = el('text', { x: L - 6, y: y + 12, 'text-anchor': 'end', class: 'tick' }, name);
    label.append(el('title', {}, row.name));
    svg.append(label);
    for (const r of row.rounds) {
      const rect = el('rect', { x: x(r.start), y: y + 2, width: Math.max(1, x(r.end) - x(r.start) - 1), height: rowH - 5, fill: row.color, class: 'round' });
      rect.append(el('title', {}, `${row.name}: round ${r.round}, ${((r.end - r.start) / 1000).toFixed(2)} s`));
      svg.append(rect);
    }
  });
  const secs = (t1 - t0) / 1000;
  for (const s of ticks(0, secs, 8)) {
    svg.append(el('text', { x: x(t0 + s * 1000), y: H - 6, 'text-anchor': 'middle', class: 'tick' }, `${s}s`));
  }
  return svg;
}

/** A horizontal gauge of `value` against `max` (no max: the bar shows the value alone). */
export function gauge(value: number, max: number | null, label: string): SVGSVGElement {
  const W = 200,
    H = 14;
  const svg = svgRoot(W, H, 'gauge', label);
  svg.append(el('rect', { x: 0, y: 0, width: W, height: H, class: 'gauge-bg', rx: 3 }));
  const frac = max ? Math.min(1, value / max) : 0;
  svg.append(el('rect', { x: 0, y: 0, width: (W * frac).toFixed(1), height: H, class: max && value > max ? 'gauge-over' : 'gauge-fill', rx: 3 }));
  return svg;
}
