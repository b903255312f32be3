/**
 * The live view's page: reads `/api/events` (Server-Sent Events) and draws
 * every site's status with view.ts.
 */
import type { StatusSnapshot } from '@dflmoe/core';
import { FINAL, drawnSites, mountLiveView, take as draw } from './view.js';

const $ = (id: string) => document.getElementById(id)!;
let lastEvent = 0;
const take = (snapshot: StatusSnapshot, full: boolean) => {
  lastEvent = Date.now();
  draw(snapshot, full);
};

// ------------------------------------------------------------ the token: kept for this tab, out of the address bar
const TOKEN_KEY = 'dflmoe-live-token';
const fromUrl = new URLSearchParams(location.search).get('token');
if (fromUrl) {
  sessionStorage.setItem(TOKEN_KEY, fromUrl);
  history.replaceState(null, '', location.pathname);
}
const token = sessionStorage.getItem(TOKEN_KEY);

// ------------------------------------------------------------ connection state
type Conn = 'connecting' | 'live' | 'reconnecting' | 'ended' | 'unauthorized';
let conn: Conn = 'connecting';
function setConn(c: Conn): void {
  conn = c;
  const text: Record<Conn, string> = {
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'connection lost: showing the last state, reconnecting…',
    ended: 'the run has ended: showing its final state',
    unauthorized: 'not authorized: open the address with ?token=<token>',
  };
  const pill = $('conn');
  pill.textContent = text[c];
  pill.className = `pill ${c}`;
}

/** Whether every site drawn has finished (then a lost stream means the run ended). */
function allFinal(): boolean {
  const list = drawnSites();
  return list.length > 0 && list.every((s) => FINAL.has(s.state));
}

mountLiveView($('view'), (list) => {
  if (conn === 'reconnecting' && list.length > 0 && list.every((s) => FINAL.has(s.state))) setConn('ended');
});

function connect(): void {
  const es = new EventSource(`/api/events${token ? `?token=${encodeURIComponent(token)}` : ''}`);
  es.addEventListener('status', (e) => {
    setConn('live');
    take(JSON.parse((e as MessageEvent<string>).data) as StatusSnapshot, true);
  });
  es.addEventListener('update', (e) => take(JSON.parse((e as MessageEvent<string>).data) as StatusSnapshot, false));
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (a wrong token), or is gone for good.
      void fetch(`/api/status`, { headers: token ? { Authorization: `Bearer ${token}` } : {} }).then(
        (r) => setConn(r.status === 401 ? 'unauthorized' : 'ended'),
        () => setConn(allFinal() ? 'ended' : 'reconnecting'),
      );
      return;
    }
    setConn(allFinal() ? 'ended' : 'reconnecting');
  };
}

setInterval(() => {
  $('updated').textContent = lastEvent ? `last update ${Math.round((Date.now() - lastEvent) / 1000)} s ago` : '';
}, 1000);
setConn('connecting');
connect();
