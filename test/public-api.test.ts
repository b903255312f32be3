/**
 * The public API of each package is its index and no more (#22): what only
 * the workspace uses is reachable through `@dflmoe/<package>/internal`, the
 * examples use the public entry points only, and the `exports` maps of
 * data, core, p2p and cli name both entries with the same conditions.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as data from '@dflmoe/data';
import * as dataInternal from '@dflmoe/data/internal';
import * as core from '@dflmoe/core';
import * as coreInternal from '@dflmoe/core/internal';
import * as p2p from '@dflmoe/p2p';
import * as p2pInternal from '@dflmoe/p2p/internal';
import * as cli from '@dflmoe/cli';
import * as cliInternal from '@dflmoe/cli/internal';

type Namespace = Record<string, unknown>;

const packages: { name: string; pub: Namespace; internal: Namespace; internals: string[] }[] = [
  {
    name: 'data',
    pub: data,
    internal: dataInternal,
    internals: [
      'Rng',
      'mulberry32',
      'deriveSeed',
      'parseIdx',
      'readShare',
      'writeShare',
      'siteShift',
      'shiftDatasetBySite',
      'capTrainPerSite',
      'holdoutSplit',
      'parsePartition',
      'labelHistogram',
      'summarizeTable',
      'mergeSummaries',
      'encodeWithSchema',
      'tableFromRows',
      'readCsvTable',
      'makeSynthetic',
      'loadFashionMnist',
      'sortNames',
      'IMAGE_EXTENSIONS',
    ],
  },
  {
    name: 'core',
    pub: core,
    internal: coreInternal,
    internals: [
      'KeyedAdam',
      'RowAdam',
      'chooseExperts',
      'registerWasmConvKernels',
      'setWasmFastInputGrad',
      'DflmoePeer',
      'DflmoeSite',
      'LocalPeer',
      'FedAvgClient',
      'REGISTRY',
      'getAlgorithm',
      'runSite',
      'memoryNetworks',
      'RoundAggregator',
      'encodeHead',
      'decodeHead',
      'encodeBundle',
      'decodeBundle',
      'quantize',
      'RdpAccountant',
      'noiseForEpsilon',
      'secureGaussian',
      'moeForward',
      'moeForwardStacked',
      'Gate',
      'ExpertPool',
      'createHead',
      'buildBody',
      'preparePeerData',
      'createOptimizer',
      'saveCheckpoint',
      'restoreNewest',
      'federatedAverage',
      'BodyShare',
      'combineBodies',
      'awaitRound',
      'pause',
      'parseSiteStatus',
      'siteKey',
      'Learner',
      'SavedSite',
      'SitePredictor',
      'tf',
    ],
  },
  {
    name: 'p2p',
    pub: p2p,
    internal: p2pInternal,
    internals: [
      'LinkEmulator',
      'createSiteNode',
      'Libp2pHeadExchange',
      'Libp2pExchangeService',
      'SchemaAgreement',
      'StrikeBook',
      'AdaptiveDeadline',
      'PartialHeads',
      'readFrames',
      'writeFrames',
      'Announce',
      'HeadResponse',
      'HEAD_PROTOCOL',
      'PREPROCESS_PROTOCOL',
      'checkAnnounce',
      'loopbackMembers',
      'siteSettings',
      'writeJsonAtomic',
      'readJsonLines',
      'prepareSiteData',
      'SiteAudit',
      'MemberFinder',
      'FedAvgServer',
      'startNode',
      'joinSchema',
    ],
  },
  {
    name: 'cli',
    pub: cli,
    internal: cliInternal,
    internals: ['writeConsortium', 'runConsortium', 'startProcess', 'waitExit', 'freePort', 'emulateLinks', 'summaryTable', 'writeRunReport', 'createProgress'],
  },
];

/** The names of the values (functions, classes, constants) an API report lists; types leave nothing at run time. */
function reportedValues(pkg: string): string[] {
  const report = readFileSync(join('api', `${pkg}.api.md`), 'utf8');
  return [...report.matchAll(/^export (?:declare )?(?:abstract )?(?:function|class|const|enum|namespace) ([A-Za-z0-9_$]+)/gm)].map((m) => m[1]);
}

describe('public API', () => {
  for (const p of packages) {
    describe(`@dflmoe/${p.name}`, () => {
      it('the index leaves the internals out, and ./internal has them', () => {
        for (const name of p.internals) {
          assert.ok(!(name in p.pub), `${name} is exported by @dflmoe/${p.name}`);
          assert.notEqual(p.internal[name], undefined, `${name} is missing from @dflmoe/${p.name}/internal`);
        }
      });

      it('./internal exports everything the index does, the same objects', () => {
        for (const [name, value] of Object.entries(p.pub)) assert.equal(p.internal[name], value, name);
        assert.ok(Object.keys(p.internal).length > Object.keys(p.pub).length);
      });

      it('the index exports at run time exactly the values its API report lists', () => {
        assert.deepEqual(Object.keys(p.pub).sort(), reportedValues(p.name).sort());
      });
    });
  }

  it('the check of the report can fail: a value left out of the report is found', () => {
    const listed = reportedValues('core').filter((n) => n !== 'createLearner');
    assert.notDeepEqual(Object.keys(core).sort(), listed.sort());
  });

  it('data, core, p2p and cli map "." and "./internal" with the same conditions; every package maps "." with them', () => {
    for (const pkg of readdirSync('packages')) {
      const file = join('packages', pkg, 'package.json');
      if (!existsSync(file)) continue;
      const exports = JSON.parse(readFileSync(file, 'utf8')).exports as Record<string, Record<string, string>>;
      const checked = ['data', 'core', 'p2p', 'cli'].includes(pkg) ? ['.', './internal'] : ['.'];
      if (checked.length > 1) assert.deepEqual(Object.keys(exports), checked, pkg);
      for (const sub of checked) {
        const entry = exports[sub];
        assert.deepEqual(Object.keys(entry), ['development', 'types', 'default'], `${pkg} ${sub}`);
        const base = sub === '.' ? 'index' : sub.slice(2);
        assert.equal(entry.development, `./src/${base}.ts`, `${pkg} ${sub}`);
        assert.ok(existsSync(join('packages', pkg, 'src', `${base}.ts`)), `${pkg} ${sub}`);
        assert.equal(entry.types, `./dist/${base}.d.ts`, `${pkg} ${sub}`);
        assert.equal(entry.default, `./dist/${base}.js`, `${pkg} ${sub}`);
      }
    }
  });

  it('the examples and the README programs import only the public entry points', () => {
    const programs = readdirSync('examples')
      .filter((f) => f.endsWith('.ts'))
      .map((f) => ({ name: f, code: readFileSync(join('examples', f), 'utf8') }));
    const readme = readFileSync('README.md', 'utf8');
    programs.push(...[...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m, i) => ({ name: `README block ${i}`, code: m[1] })));
    assert.ok(programs.length >= 5);
    for (const { name, code } of programs) {
      const specs = [...code.matchAll(/from\s+['"](@dflmoe\/[^'"]+)['"]/g)].map((m) => m[1]);
      for (const s of specs) assert.match(s, /^@dflmoe\/[a-z0-9]+$/, `${name} imports ${s}`);
    }
  });
});
