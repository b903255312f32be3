/**
 * The page of a site in a browser tab: its identity, the join details, the
 * data it picks, and the live view of its run (the live view's own drawing,
 * fed by a StatusBoard in the tab). Messages about bad input say what to fix.
 */
import { StatusBoard, isInterrupted, type Logger } from '@dflmoe/core';
import { JoinError, browserDialable, parseJoinDetails, type JoinDetails } from '@dflmoe/p2p';
import { mountLiveView, take } from '@dflmoe/live/view';
import { tabIdentity } from './key.js';
import { readImageFolder } from './images.js';
import { runTabSite, siteArchive, tabBackend, tabKernels } from './site.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const logBox = $('log');

function logLine(level: string, msg: string): void {
  const line = `${new Date().toLocaleTimeString()} ${level === 'info' ? '' : `${level}: `}${msg}\n`;
  logBox.append(line);
  logBox.scrollTop = logBox.scrollHeight;
  (level === 'error' ? console.error : console.log)(`[dflmoe] ${line.trim()}`);
}
const logger: Logger = {
  debug: () => {},
  info: (m) => logLine('info', m),
  warn: (m) => logLine('warn', m),
  error: (m) => logLine('error', m),
} as Logger;

function message(text: string, kind: 'bad' | 'ok' | '' = ''): void {
  const m = $('message');
  m.textContent = text;
  m.className = kind;
}

type Phase = 'not joined' | 'running' | 'done' | 'stopped' | 'failed';
function phase(p: Phase): void {
  const el = $('phase');
  el.textContent = p;
  el.className = `pill ${p === 'running' ? 'live' : p === 'failed' ? 'unauthorized' : p === 'done' ? 'ended' : ''}`;
  document.body.dataset.phase = p;
}

// The live view shows the run under way: each run gets a fresh board.
mountLiveView($('view'));
let board = new StatusBoard();
let unwatch = () => {};
function newBoard(): StatusBoard {
  unwatch();
  board = new StatusBoard();
  unwatch = board.onChange(() => take(board.snapshot(), true));
  take(board.snapshot(), true);
  return board;
}

const identity = tabIdentity();
void identity.then(
  (id) => {
    $('peer-id').textContent = id.peerId;
    document.body.dataset.peerId = id.peerId;
  },
  (e) => message(`this browser cannot keep a key (IndexedDB: ${(e as Error).message}); allow site data for this page and reload`, 'bad'),
);
$('copy-id').addEventListener('click', () => void identity.then((id) => navigator.clipboard?.writeText(id.peerId)));

const pageParams = new URLSearchParams(location.search);
void tabBackend(logger, pageParams.get('backend') ?? undefined, pageParams.get('kernels') ?? undefined).then(
  (b) => {
    const kernels = tabKernels(b);
    const wasm = `SIMD ${b.simd ? 'on' : 'off'}${kernels === 'stock' ? ", tfjs's own kernels" : ''}`;
    $('backend').textContent = `compute: ${b.name}${b.name === 'wasm' ? ` (${wasm})` : ''}`;
    document.body.dataset.backend = b.name;
    document.body.dataset.kernels = kernels;
    for (const s of b.skipped) logger.info(`${s.name} not used: ${s.reason}`);
  },
  (e) => message(`no compute backend could start in this browser: ${(e as Error).message}`, 'bad'),
);

$<HTMLInputElement>('join-file').addEventListener('change', async (e) => {
  const f = (e.target as HTMLInputElement).files?.[0];
  if (f) $<HTMLTextAreaElement>('join-text').value = await f.text();
});

/** The join details typed or picked, checked; a message says what is wrong. */
function readJoin(): JoinDetails | undefined {
  const text = $<HTMLTextAreaElement>('join-text').value.trim();
  if (!text) {
    message('paste the join details (or pick their file) first: a member prints them with dflmoe peer --config <file> --print-join', 'bad');
    return undefined;
  }
  try {
    return parseJoinDetails(text);
  } catch (e) {
    message(e instanceof JoinError ? e.message : `the join details cannot be read: ${(e as Error).message}`, 'bad');
    return undefined;
  }
}

let running: AbortController | undefined;
/** How long a run may go without any member connected before the page says so (?unreachable=<ms> for tests). */
const UNREACHABLE_MS = Number(pageParams.get('unreachable') ?? 15000);

$('join').addEventListener('click', async () => {
  if (running) return;
  message('');
  const join = readJoin();
  if (!join) return;
  const csvFile = $<HTMLInputElement>('csv-file').files?.[0];
  const images = [...($<HTMLInputElement>('image-folder').files ?? [])];
  if (!csvFile && images.length === 0) {
    message("pick this site's data: a CSV file, or a folder of images with one sub-folder per class", 'bad');
    return;
  }
  const ac = new AbortController();
  running = ac;
  // One run per browser profile: its tabs share the key (IndexedDB), so a second tab would be the same peer.
  const lock = await acquireSiteLock();
  if (!lock) {
    running = undefined;
    message(
      'this site is already running in another tab of this browser (the tabs share its key); use that tab, or another browser profile for another site',
      'bad',
    );
    return;
  }
  $<HTMLButtonElement>('join').disabled = true;
  $<HTMLButtonElement>('stop').disabled = false;
  $<HTMLButtonElement>('download').disabled = true;
  phase('running');
  // No member reached after a while: say what to check (the run goes on, and the message clears once one connects).
  const started = Date.now();
  const reachCheck = setInterval(() => {
    const site = board.snapshot().sites[0];
    if (!site || site.members.length === 0) return;
    if (site.members.some((m) => m.connected)) {
      if (document.body.dataset.unreachable) message('');
      delete document.body.dataset.unreachable;
    } else if (Date.now() - started > UNREACHABLE_MS && !document.body.dataset.unreachable) {
      document.body.dataset.unreachable = 'true';
      const addrs = join.members.flatMap((m) => m.addrs.filter(browserDialable));
      message(
        `no member can be reached yet (tried ${addrs.length ? addrs.join(', ') : 'no WebSockets address'}). Check that the members are running, that one of them ` +
          'listens on a WebSockets address ("/ws" in its "listen") that this browser can reach, that this tab\'s peer ID is in their "members", and that a page ' +
          'served over https dials wss:// addresses only. Still trying.',
        'bad',
      );
    }
  }, 1000);
  try {
    const id = await identity;
    const samples = csvFile ? undefined : await readImageFolder(images, join.data, logger);
    const r = await runTabSite({
      join,
      name: $<HTMLInputElement>('site-name').value.trim() || undefined,
      privateKey: id.privateKey,
      peerId: id.peerId,
      ...(csvFile ? { csv: await csvFile.text() } : { samples }),
      logger,
      status: newBoard(),
      signal: ac.signal,
    });
    // For scripts driving the page (and tests): the outcome, and whose heads were mixed in the last round.
    document.body.dataset.accuracy = String(r.accuracy);
    document.body.dataset.rounds = String(r.rounds.length);
    document.body.dataset.experts = (r.rounds.at(-1)?.experts ?? []).map((e) => e.peer).join(' ');
    // Each round's wall and training seconds, and the training rows (bench:tab reads them).
    document.body.dataset.roundSeconds = r.rounds.map((l) => l.seconds).join(' ');
    document.body.dataset.trainSeconds = r.rounds.map((l) => l.trainSeconds).join(' ');
    document.body.dataset.trainSamples = String(r.trainSamples);
    message(`done: accuracy ${(r.accuracy * 100).toFixed(1)}% after ${r.rounds.length} rounds; download the trained site to run dflmoe predict on it`, 'ok');
    phase('done');
    $<HTMLButtonElement>('download').disabled = false;
  } catch (e) {
    if (isInterrupted(e) || ac.signal.aborted) {
      phase('stopped');
      message('stopped; what was trained so far can be downloaded');
      $<HTMLButtonElement>('download').disabled = false;
    } else {
      phase('failed');
      message((e as Error).message ?? String(e), 'bad');
      // Input the user can fix is one line; anything else keeps its stack for a bug report.
      const known = ['JoinError', 'ConfigError', 'DataError', 'Interrupted'].includes((e as Error).name);
      logger.error(known ? `${(e as Error).message}` : ((e as Error).stack ?? String(e)));
    }
  } finally {
    lock();
    clearInterval(reachCheck);
    running = undefined;
    $<HTMLButtonElement>('join').disabled = false;
    $<HTMLButtonElement>('stop').disabled = true;
  }
});

/** Hold the Web Lock of this browser's site while a run lasts; undefined when another tab holds it. Returns the release. */
async function acquireSiteLock(): Promise<(() => void) | undefined> {
  if (!navigator.locks) return () => {};
  return new Promise((resolve) => {
    void navigator.locks.request('dflmoe-site', { ifAvailable: true }, (l) => {
      if (!l) {
        resolve(undefined);
        return undefined;
      }
      return new Promise<void>((release) => resolve(release));
    });
  });
}

$('stop').addEventListener('click', () => running?.abort());

$('download').addEventListener('click', () => {
  const zip = siteArchive();
  const url = URL.createObjectURL(new Blob([zip as BlobPart], { type: 'application/zip' }));
  const a = Object.assign(document.createElement('a'), { href: url, download: 'dflmoe-site.zip' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

phase('not joined');
