/**
 * Algorithm settings have one home (their group's schema): every entry
 * point (the CLI's flags, the simulator, site configs, the learner, the
 * algorithms' own options) takes each setting from there, with its default,
 * its check and, for dFLMoE with shared bodies, its variant's defaults.
 */
import assert from 'node:assert/strict';
import { Command } from 'commander';
import {
  DEFAULT_SIMULATION,
  DflmoePeer,
  MemoryHub,
  SETTINGS,
  SettingError,
  configPath,
  createLearner,
  dflmoe,
  disposePeerData,
  fromSections,
  getAlgorithm,
  settingDefault,
  settingsList,
  simulationSettings,
  toSections,
  type AlgorithmName,
} from '@dflmoe/core/internal';
import { ConfigError, parsePeerConfig, siteSettings } from '@dflmoe/p2p/internal';
import { addSettingsOptions, givenSettings } from '@dflmoe/cli/internal';
import { backend, cli, tinyDataset, tinyPeers } from './helpers.js';

const site = { key: 'k', listen: ['/ip4/127.0.0.1/tcp/1'], rounds: 1, out: 'o', data: { dataset: 'breast-cancer' } };
/** A value of a setting other than its default, that its schema accepts. */
function otherValue(name: string, dflt: unknown): unknown {
  const special: Record<string, unknown> = {
    alpha: 0.5,
    fst: 'diag',
    headPrecision: 'float16',
    bodyCombiner: 'median',
    topology: 'ring',
    admission: 0.5,
    gossipPeers: 4,
    crossTaskWeight: 0.3,
    loraScale: 0.5,
  };
  if (name in special) return special[name];
  if (typeof dflt === 'boolean') return !dflt;
  if (typeof dflt === 'number') return dflt + 1;
  throw new Error(`no other value for ${name}`);
}
const flagOf = (name: string) => `--${name === 'fineTuneEpochs' ? 'finetune-epochs' : name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

describe('algorithm settings: one schema, every entry point', () => {
  before(backend);
  const all = settingsList(SETTINGS);

  it('every setting has a one-line description and reaches the CLI, the site config and back with the same value', () => {
    assert.ok(all.length >= 15, `${all.length} settings`);
    const cmd = addSettingsOptions(new Command('x').exitOverride());
    for (const { name, schema } of all) {
      assert.ok((schema.description ?? '').length > 10 && !schema.description!.includes('\n'), `${name}: a one-line description`);
      const v = otherValue(name, settingDefault(schema));
      // Site config: its section and key, parsed and resolved.
      // Adapters need a frozen body.
      const model = name === 'loraRank' ? { model: { freezeBody: true } } : {};
      const c = parsePeerConfig({ ...site, algorithm: 'dflmoe', ...model, ...toSections(SETTINGS, { [name]: v }) });
      assert.deepEqual(fromSections(SETTINGS, c as never)[name], v, `${name} through ${configPath(SETTINGS, name)}`);
      // CLI: its flag, checked by the schema, and given (not defaulted).
      const args = typeof v === 'boolean' ? [flagOf(name)] : [flagOf(name), String(v)];
      const parsed = addSettingsOptions(new Command('x').exitOverride()).parse(args, { from: 'user' });
      assert.deepEqual(givenSettings(parsed)[name as never], v, `${name} through ${args.join(' ')}`);
    }
    assert.deepEqual(givenSettings(cmd.parse([], { from: 'user' })), {}, 'defaults are not reported as given');
  });

  it('a bad value is refused where it enters, naming the setting as that entry names it', () => {
    assert.throws(
      () => parsePeerConfig({ ...site, dflmoe: { alpha: 2 } }),
      (e: Error) => e instanceof ConfigError && /dflmoe\.alpha: .*<=1/.test(e.message),
    );
    assert.throws(
      () => parsePeerConfig({ ...site, bodies: { every: 0 } }),
      (e: Error) => e instanceof ConfigError && /bodies\.every/.test(e.message),
    );
    assert.throws(() => parsePeerConfig({ ...site, dflmoe: { alpah: 0.3 } }), /unknown key "alpah" \(did you mean "alpha"\?\)/);
    assert.throws(
      () => addSettingsOptions(new Command('x').exitOverride().configureOutput({ writeErr: () => {} })).parse(['--alpha', '2'], { from: 'user' }),
      /alpha.*<=1/,
    );
    assert.throws(
      () => simulationSettings({ ...DEFAULT_SIMULATION, dataset: 'digits', maxExperts: -1 }, 'dflmoe'),
      (e: Error) => e instanceof SettingError && e.setting === 'maxExperts',
    );
    const r = cli(['simulate', '--dataset', 'breast-cancer', '--max-experts', 'some']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--max-experts/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('dFLMoE with shareBody brings the settings that won (no FST, two epochs) unless they are set, in the simulator, site configs and the learner', async () => {
    const sim = { ...DEFAULT_SIMULATION, dataset: 'digits' };
    assert.deepEqual(pick(simulationSettings({ ...sim, shareBody: true }, 'dflmoe')), { fst: 'none', epochs: 2 });
    assert.deepEqual(pick(simulationSettings({ ...sim, shareBody: true, fst: 'full', epochs: 1 }, 'dflmoe')), { fst: 'full', epochs: 1 }, 'set values win');
    assert.deepEqual(pick(simulationSettings(sim, 'dflmoe')), { fst: 'full', epochs: 1 }, 'heads only: as always');
    // Other algorithms in the same run keep their own defaults.
    for (const a of ['local', 'fedrep-p2p', 'fedavg'] as AlgorithmName[]) assert.equal(simulationSettings({ ...sim, shareBody: true }, a).epochs, 1, a);
    const c = parsePeerConfig({ ...site, dflmoe: { shareBody: true } });
    assert.deepEqual([c.dflmoe.fst, c.train.epochs], ['none', 2]);
    const f = parsePeerConfig({ ...site, algorithm: 'fedrep-p2p', dflmoe: { shareBody: true } });
    assert.deepEqual([f.dflmoe.fst, f.train.epochs], ['full', 1], "the variant is dFLMoE's own");
    assert.deepEqual(siteSettings({ ...sim, shareBody: true }, 0, 'dflmoe').train.epochs, 2, 'simulate --transport tcp writes what the simulator runs');
    const hub = new MemoryHub();
    const bodies = new MemoryHub();
    const l = await createLearner({ id: 'a', dataset: tinyDataset(), exchange: hub.join('a'), bodies: bodies.join('a') });
    const peer = (l as unknown as { peer: DflmoePeer }).peer;
    assert.deepEqual([peer.fstKind, peer.train.epochs], ['none', 2]);
    l.dispose();
  });

  it('the learner takes every dFLMoE setting (maxExperts included) with the same defaults as a site config', async () => {
    const hub = new MemoryHub();
    const c = parsePeerConfig(site);
    const l = await createLearner({ id: 'a', dataset: tinyDataset(), exchange: hub.join('a') });
    const k = await createLearner({ id: 'b', dataset: tinyDataset(), exchange: hub.join('b'), maxExperts: 3, gateHidden: 4 });
    const peer = (x: unknown) => (x as { peer: DflmoePeer }).peer;
    assert.equal(peer(l).maxExperts, c.dflmoe.maxExperts);
    assert.equal(peer(k).maxExperts, 3);
    assert.equal(peer(k).gate.hiddenDim, 4);
    await assert.rejects(
      createLearner({ id: 'c', dataset: tinyDataset(), exchange: hub.join('c'), alpha: -1 }),
      (e: Error) => e instanceof SettingError && e.setting === 'alpha',
    );
    l.dispose();
    k.dispose();
  });

  it('an algorithm site made from options that skip the schema is still checked (a frozen body cannot be shared)', () => {
    const { datas } = tinyPeers(1);
    const base = { id: 'p0', data: datas[0], body: { kind: 'mlp' as const, hidden: [8] }, featureDim: 4, headHidden: [], train: { seed: 1 }, freezeBody: true };
    const o = {
      ...simulationSettings({ ...DEFAULT_SIMULATION, dataset: 'digits' }, 'dflmoe'),
      shareBody: true,
      seed: 1,
      maxHeadBytes: 1 << 20,
      maxModelBytes: 1 << 20,
    };
    assert.throws(() => getAlgorithm('dflmoe').createSite(base, o), /shareBody needs a body that trains/);
    assert.equal(dflmoe.settings.length, 3);
    datas.forEach(disposePeerData);
  });
});

function pick(s: { fst: string; epochs: number }) {
  return { fst: s.fst, epochs: s.epochs };
}
