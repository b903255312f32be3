/**
 * Multi-task sites with their own data: a site config with several tasks,
 * a CSV whose rows may lack some labels, the federated agreement per task,
 * and a consortium of site processes whose tasks exchange heads only among
 * the sites that learn them.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { namedSites, writeSiteConfigs } from './fixtures/sites.js';
import { encodeSiteData, loadSiteData, reconcileStatements, siteStatement, type SiteDataSpec } from '@dflmoe/data/internal';
import { waitExit } from '@dflmoe/cli/internal';
import { ConfigError, parsePeerConfig, type PeerRunResult } from '@dflmoe/p2p';
import { Rng } from '@dflmoe/data/internal';
import { processGroup } from './helpers.js';
import { listCheckpoints, loadSite } from '@dflmoe/core/internal';

/** Patients: age, bmi, ward; `died` (0/1, older patients more often) and `los_days` (longer with age); `blank` empties some label cells. */
function patients(
  dir: string,
  name: string,
  rows: number,
  seed: number,
  columns: ('died' | 'los_days')[],
  blank: (i: number) => ('died' | 'los_days')[] = () => [],
): string {
  const rng = new Rng(seed);
  const lines = Array.from({ length: rows }, (_, i) => {
    const age = 20 + Math.floor(rng.uniform() * 60);
    const bmi = (18 + rng.uniform() * 15).toFixed(1);
    const ward = rng.uniform() < 0.5 ? 'A' : 'B';
    const died = age + (rng.uniform() - 0.5) * 20 > 60 ? '1' : '0';
    const stay = (2 + 0.15 * age + (rng.uniform() - 0.5)).toFixed(2);
    const cells = { died, los_days: stay };
    return [age, bmi, ward, ...columns.map((c) => (blank(i).includes(c) ? '' : cells[c]))].join(',');
  });
  const file = join(dir, name);
  writeFileSync(file, `age,bmi,ward,${columns.join(',')}\n${lines.join('\n')}\n`);
  return file;
}

const TWO_TASKS = [
  { name: 'mortality', column: 'died', kind: 'classification' as const },
  { name: 'stay', column: 'los_days', kind: 'regression' as const },
];

describe('multi-task site configs', () => {
  const base = { key: 'k.key', listen: ['/ip4/127.0.0.1/tcp/9001'], rounds: 2, out: 'run', data: { dataset: 'csv:site.csv', tasks: TWO_TASKS } };

  it('accepts several tasks, each with its column and kind; refuses two tasks of one name or one column, and labelColumn beside them', () => {
    const c = parsePeerConfig(base, 'site.json', '/tmp');
    assert.deepEqual(
      c.data.tasks!.map((t) => [t.name, t.column, t.kind]),
      [
        ['mortality', 'died', 'classification'],
        ['stay', 'los_days', 'regression'],
      ],
    );
    const bad = (data: Record<string, unknown>) => () => parsePeerConfig({ ...base, data: { ...base.data, ...data } }, 'site.json', '/tmp');
    assert.throws(
      bad({ tasks: [TWO_TASKS[0], { ...TWO_TASKS[1], name: 'mortality' }] }),
      (e: Error) => e instanceof ConfigError && /data\.tasks\.1: name "mortality" is task 0's too/.test(e.message),
    );
    assert.throws(bad({ tasks: [TWO_TASKS[0], { ...TWO_TASKS[1], column: 'died' }] }), /data\.tasks\.1: column "died" is task 0's too/);
    assert.throws(bad({ labelColumn: 'died' }), /data\.labelColumn: with several tasks, each names its label column in data\.tasks\[\]\.column/);
    assert.throws(bad({ tasks: [TWO_TASKS[0], { ...TWO_TASKS[1], classes: ['a', 'b'] }] }), /data\.tasks\.1\.classes: task "stay" is a regression/);
  });
});

describe('multi-task site data and its agreement', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dflmoe-mt-data-'));
  const spec = (file: string, tasks: SiteDataSpec['tasks']): SiteDataSpec => ({ dataset: `csv:${file}`, tasks, seed: 1, testFraction: 0.25 });
  const oneTask = (file: string, column: string, name: string, kind: 'classification' | 'regression'): SiteDataSpec => ({
    dataset: `csv:${file}`,
    labelColumn: column,
    task: { name, kind },
    seed: 1,
    testFraction: 0.25,
  });

  it('reads every task column as a label: an empty cell keeps the row for the other task, a row without any label is left out, both counted', async () => {
    // Rows 3 and 7 lack `died`, row 5 lacks `los_days`, row 9 lacks both.
    const blank = (i: number): ('died' | 'los_days')[] => (i === 9 ? ['died', 'los_days'] : i === 3 || i === 7 ? ['died'] : i === 5 ? ['los_days'] : []);
    const file = patients(dir, 'blanks.csv', 40, 1, ['died', 'los_days'], blank);
    const d = await loadSiteData(spec(file, TWO_TASKS));
    assert.equal(d.kind, 'table');
    if (d.kind !== 'table') return;
    assert.equal(d.table.labels.length, 39, 'the row without any label is left out');
    assert.deepEqual(
      d.table.columns.map((c) => c.name),
      ['age', 'bmi', 'ward'],
      'task columns are never features',
    );
    assert.ok(d.warnings.includes('1 row(s) without a label in any of the columns "died", "los_days" left out (line 11)'), d.warnings.join('; '));
    assert.ok(d.warnings.includes('2 row(s) without a label in column "died": left out of that task only'), d.warnings.join('; '));
    assert.ok(d.warnings.includes('1 row(s) without a label in column "los_days": left out of that task only'), d.warnings.join('; '));
    const st = siteStatement(d, 'north');
    const [mortality, stay] = st.summary.tasks!;
    const lacking = (col: string) => [...d.split.train].filter((r) => d.table.taskLabels![col][r] === '').length;
    assert.equal(st.summary.numRows, d.split.train.length);
    assert.equal(mortality.numRows, d.split.train.length - lacking('died'));
    assert.equal(stay.numRows, d.split.train.length - lacking('los_days'));
    assert.deepEqual(mortality.classNames, ['0', '1']);
    assert.deepEqual(st.summary.labelCounts, [], "the classes are each task's");
    // Encoded: the row keeps its features; the task it lacks reads -1 (a class) or NaN (a target).
    const { agreed } = reconcileStatements([st], 'north');
    const enc = encodeSiteData(d, agreed, 'federated');
    const [died, los] = enc.dataset.tasks!;
    assert.equal(died.labels.filter((l) => l === -1).length, 2);
    assert.equal([...los.values!].filter((v) => Number.isNaN(v)).length, 1);
    assert.ok(enc.targetScales?.stay, "the target's pooled scale");
  });

  it("agrees per task name: the label set over the sites that learn it, a target's scale from sums, a one-task site as a site with that task", async () => {
    const north = await loadSiteData(spec(patients(dir, 'n.csv', 80, 2, ['died', 'los_days']), TWO_TASKS));
    const south = await loadSiteData(oneTask(patients(dir, 's.csv', 60, 3, ['died']), 'died', 'mortality', 'classification'));
    const east = await loadSiteData(oneTask(patients(dir, 'e.csv', 50, 4, ['los_days']), 'los_days', 'stay', 'regression'));
    const statements = [siteStatement(north, 'north'), siteStatement(south, 'south'), siteStatement(east, 'east')];
    const r = reconcileStatements(statements, 'south');
    assert.deepEqual(r.included, ['east', 'north', 'south'], "every site whose data fits: the features are the consortium's");
    assert.deepEqual(
      r.agreed.tasks!.map((t) => [t.name, t.kind, t.sites]),
      [
        ['mortality', 'classification', ['north', 'south']],
        ['stay', 'regression', ['east', 'north']],
      ],
    );
    const mortality = r.agreed.tasks![0];
    assert.deepEqual(mortality.classNames, ['0', '1']);
    assert.equal(mortality.numRows, north.split.train.length + south.split.train.length);
    // The target's scale is that of the training targets of the two sites that learn it, together.
    const targets = [north, east].flatMap((d) =>
      d.kind === 'table' ? [...d.split.train].map((i) => Number((d.table.taskLabels?.los_days ?? d.table.labels)[i])) : [],
    );
    const mean = targets.reduce((a, b) => a + b, 0) / targets.length;
    const sd = Math.sqrt(targets.reduce((a, b) => a + (b - mean) ** 2, 0) / targets.length);
    const scale = r.agreed.tasks![1].scale!;
    assert.ok(Math.abs(scale.mean - mean) < 1e-6 && Math.abs(scale.std - sd) < 1e-6, `${JSON.stringify(scale)} vs ${mean}, ${sd}`);
    // The same agreement at every site, in any order.
    assert.deepEqual(reconcileStatements([...statements].reverse(), 'north').agreed, r.agreed);
    // A one-task site encodes its task as the agreement has it.
    const enc = encodeSiteData(east, r.agreed, 'federated');
    assert.deepEqual(
      enc.dataset.tasks!.map((t) => t.name),
      ['stay'],
    );
    assert.deepEqual(enc.targetScales, { stay: scale });
  });

  it('a task of two kinds is refused naming both sites; a task no other site has trains alone, said once', async () => {
    const north = await loadSiteData(spec(patients(dir, 'n2.csv', 60, 5, ['died', 'los_days']), TWO_TASKS));
    const west = await loadSiteData(oneTask(patients(dir, 'w.csv', 60, 6, ['died']), 'died', 'stay', 'classification'));
    const r = reconcileStatements([siteStatement(north, 'north'), siteStatement(west, 'west')], 'north');
    assert.deepEqual(r.included, ['north']);
    assert.match(r.excluded[0].reason, /the label is a regression target at "north" but classes at "west": declare one kind for task "stay" at every site/);
    const cost = [
      { name: 'mortality', column: 'died', kind: 'classification' as const },
      { name: 'cost', column: 'los_days', kind: 'regression' as const },
    ];
    const solo = await loadSiteData(spec(patients(dir, 'c.csv', 60, 7, ['died', 'los_days']), cost));
    const r2 = reconcileStatements([siteStatement(north, 'north'), siteStatement(solo, 'solo')], 'solo');
    assert.deepEqual(
      r2.warnings.filter((w) => /trains alone/.test(w)),
      ['no other site learns task "cost": this site trains alone on it'],
    );
  });
});

describe('a multi-task consortium of site processes (dFLMoE over TCP)', function () {
  this.timeout(120_000);
  const procs = processGroup();
  after(() => procs.kill());

  it("north learns two tasks, south and east one each: each task's heads go only to the sites that learn it, and the run stops by itself", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dflmoe-mt-tcp-'));
    const plan = {
      north: { columns: ['died', 'los_days'] as ('died' | 'los_days')[], tasks: TWO_TASKS },
      south: { columns: ['died'] as ('died' | 'los_days')[], tasks: [TWO_TASKS[0]] },
      east: { columns: ['los_days'] as ('died' | 'los_days')[], tasks: [TWO_TASKS[1]] },
    };
    const sites = await namedSites(
      dir,
      Object.entries(plan).map(([name, p]) => ({ name, tasks: p.tasks.map((t) => t.name), p })),
      (s, i) => patients(dir, `${s.name}.csv`, 80, 11 + i, s.p.columns, (r) => (s.name === 'north' && r % 9 === 4 ? ['died'] : [])),
    );
    writeSiteConfigs(dir, sites, (s) => ({
      data: { dataset: `csv:${s.name}.csv`, tasks: s.p.tasks },
      model: { body: 'mlp:16', featureDim: 8 },
      train: { learningRate: 0.01 },
      rounds: 2,
      round: { deadlineMs: 15000 },
      preprocess: { deadlineMs: 30000 },
      lingerMs: 1000,
    }));
    const t0 = Date.now();
    const ps = sites.map((s) => procs.start(['peer', '--config', s.config], `${s.out}.log`));
    const logs = () => sites.map((s) => `${s.name}:\n${readFileSync(`${s.out}.log`, 'utf8').slice(-2000)}`).join('\n');
    assert.deepEqual(await Promise.all(ps.map((p) => waitExit(p, 90000))), [0, 0, 0], logs());
    assert.ok(Date.now() - t0 < 90000, 'the run stopped by itself');
    const learners = (task: string) => sites.filter((s) => s.tasks.includes(task)).map((s) => s.peerId);
    for (const s of sites) {
      const r = JSON.parse(readFileSync(join(s.out, 'results.json'), 'utf8')) as PeerRunResult;
      assert.deepEqual(Object.keys(r.tasks).sort(), [...s.tasks].sort(), `${s.name}: results.json lists every task`);
      if (r.tasks.mortality) assert.ok((r.tasks.mortality.accuracy as number) > 0.5, `${s.name}: accuracy ${r.tasks.mortality.accuracy}`);
      if (r.tasks.stay) assert.ok(Number.isFinite(r.tasks.stay.rmse), `${s.name}: rmse ${r.tasks.stay.rmse}`);
      assert.deepEqual(
        r.rounds.map((l) => l.round),
        [1, 2],
      );
      const last = r.rounds.at(-1)!;
      // Every expert is a head of one of the site's tasks, from a site that learns that task: each other learner's.
      for (const t of s.tasks) {
        const from = last.experts
          .filter((e) => e.task === t)
          .map((e) => e.peer)
          .sort();
        assert.deepEqual(
          from,
          learners(t)
            .filter((p) => p !== s.peerId)
            .sort(),
          `${s.name}: experts of ${t}`,
        );
      }
      assert.ok(
        last.experts.every((e) => e.task !== undefined && s.tasks.includes(e.task)),
        `${s.name}: ${JSON.stringify(last.experts)}`,
      );
      assert.deepEqual(
        Object.keys(last.dropped).filter((k) => /other-task|not-member/.test(k)),
        [],
        `${s.name}: ${JSON.stringify(last.dropped)}`,
      );
      const pre = JSON.parse(readFileSync(join(s.out, 'preprocessing.json'), 'utf8')) as { agreed: { tasks: { name: string; sites: string[] }[] } };
      assert.deepEqual(
        pre.agreed.tasks.map((t) => [t.name, [...t.sites].sort()]),
        [
          ['mortality', learners('mortality').sort()],
          ['stay', learners('stay').sort()],
        ],
      );
    }
    const north = readFileSync(join(dir, 'north.log'), 'utf8');
    assert.match(north, /agreed with 3 site\(s\) on 2 task\(s\): "mortality" \(2 classes, 2 site\(s\)\), "stay" \(target pooled mean/);
    assert.match(north, /round 2\/2 .*mortality accuracy \d/);
    assert.match(north, /round 2\/2 .*stay rmse \d/);
    // Every round left a checkpoint of all of north's tasks (what a restart resumes from), which loadSite rebuilds with a head per task.
    const ckpt = sites.find((s) => s.name === 'north')!;
    assert.deepEqual(listCheckpoints(join(ckpt.out, 'checkpoints')), [1, 2]);
    const site = JSON.parse(readFileSync(join(ckpt.out, 'site.json'), 'utf8')) as { model: { tasks: { name: string; column: string }[] } };
    assert.deepEqual(
      site.model.tasks.map((t) => [t.name, t.column]),
      [
        ['mortality', 'died'],
        ['stay', 'los_days'],
      ],
    );
    const northSite = await loadSite(ckpt.out);
    try {
      assert.deepEqual(
        northSite.tasks.map((t) => t.name),
        ['mortality', 'stay'],
      );
      // south.csv has the died column only: north evaluates its mortality task on it.
      const { evaluations } = await northSite.evaluateTasksFile(join(dir, 'south.csv'));
      assert.deepEqual(Object.keys(evaluations), ['mortality']);
      assert.equal(evaluations.mortality.samples, 80);
    } finally {
      northSite.dispose();
    }
    // south learns one task under a multi-task agreement: it loads as a one-task site; north's rows without `died` are skipped.
    const southSite = await loadSite(sites.find((s) => s.name === 'south')!.out);
    try {
      assert.deepEqual(
        southSite.tasks.map((t) => t.name),
        ['mortality'],
      );
      const { evaluation } = await southSite.evaluateFile(join(dir, 'north.csv'));
      const blank = Array.from({ length: 80 }, (_, r) => r % 9 === 4).filter(Boolean).length;
      assert.deepEqual([evaluation.samples, evaluation.skipped], [80 - blank, blank]);
    } finally {
      southSite.dispose();
    }
  });
});
