/**
 * Poisoned experts: honest sites' mean accuracy with 1 of 5 sites adversarial
 * (random heads, or a head trained on flipped labels) against none, with and
 * without the admission check, and the gate weight honest sites give the
 * attacker. FedAvg and local-only on the same data for reference. Then
 * shared bodies: 1 of 10 members sending random or sign-flipped bodies,
 * with each body combiner (mean, median, trimmed mean).
 *
 *   node --import tsx benchmarks/poisoning.ts [--dataset digits] [--rounds 10]
 */
import { silentLogger } from '@dflmoe/core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { simulate, type SimulationConfig } from '@dflmoe/core';

const { values } = parseArgs({
  options: {
    dataset: { type: 'string', default: 'digits' },
    rounds: { type: 'string', default: '10' },
    out: { type: 'string', default: 'benchmarks/results/poisoning.json' },
  },
});
const quiet = silentLogger;
const base: Partial<SimulationConfig> & { dataset: string } = {
  dataset: values.dataset!,
  peers: 5,
  partition: 'dirichlet:0.5',
  rounds: Number(values.rounds),
  seed: 1,
};
const cases: { name: string; cfg: Partial<SimulationConfig> }[] = [
  { name: 'no attacker', cfg: { poisoned: 0 } },
  { name: '1 of 5 random heads', cfg: { poisoned: 1, poisonKind: 'random' } },
  { name: '1 of 5 flipped labels', cfg: { poisoned: 1, poisonKind: 'flipped' } },
  { name: 'no attacker, admission 0.5', cfg: { poisoned: 0, admission: 0.5 } },
  { name: '1 of 5 random heads, admission 0.5', cfg: { poisoned: 1, poisonKind: 'random', admission: 0.5 } },
  { name: '1 of 5 flipped labels, admission 0.5', cfg: { poisoned: 1, poisonKind: 'flipped', admission: 0.5 } },
];
const rows = [];
for (const c of cases) {
  const withBaselines = !c.cfg.admission;
  const r = await simulate({ ...base, ...c.cfg, algorithms: withBaselines ? ['dflmoe', 'fedavg', 'local'] : ['dflmoe'] }, { logger: quiet });
  // The same four sites count as honest in every case (site-4 is the attacker when there is one).
  const honestIds = r.algorithms.dflmoe!.peers.slice(0, 4).map((p) => p.id);
  const honestMean = (alg: 'dflmoe' | 'fedavg' | 'local') => {
    const a = r.algorithms[alg];
    if (!a) return undefined;
    const ps = a.peers.filter((p) => honestIds.includes(p.id));
    return ps.reduce((s, p) => s + p.accuracy, 0) / ps.length;
  };
  const attacker = c.cfg.poisoned ? 'site-4' : undefined;
  const gate = attacker
    ? r.algorithms.dflmoe!.peers.filter((p) => honestIds.includes(p.id)).reduce((s, p) => s + (p.gateWeights?.[attacker] ?? 0), 0) / honestIds.length
    : undefined;
  const refused = r.algorithms.dflmoe!.peers.filter((p) => honestIds.includes(p.id)).reduce((s, p) => s + (p.rejectedHeads?.admission ?? 0), 0);
  const row = {
    case: c.name,
    dflmoe: honestMean('dflmoe'),
    fedavg: honestMean('fedavg'),
    local: honestMean('local'),
    attackerGateWeight: gate,
    refusedByAdmission: refused,
  };
  rows.push(row);
  const f = (x?: number) => (x === undefined ? '   -  ' : `${(100 * x).toFixed(2)}%`);
  console.log(
    `${c.name.padEnd(38)} honest mean accuracy: dFLMoE ${f(row.dflmoe)}  FedAvg ${f(row.fedavg)}  local ${f(row.local)}` +
      (gate !== undefined ? `  gate weight on the attacker ${gate.toFixed(3)}` : '') +
      (c.cfg.admission ? `  heads refused ${refused}` : ''),
  );
}

// Shared bodies: 1 of 10 members sends random or sign-flipped bodies; each combiner. dFLMoE with shared bodies
// (fst none) and fedrep-p2p; honest sites are the first nine.
const bodyBase: Partial<SimulationConfig> & { dataset: string } = { ...base, peers: 10, shareBody: true, fst: 'none', learningRate: 3e-3 };
const bodyRows = [];
for (const attack of ['none', 'random', 'sign-flip'] as const) {
  for (const bodyCombiner of ['mean', 'median', 'trimmed:0.1']) {
    const r = await simulate(
      {
        ...bodyBase,
        algorithms: ['dflmoe', 'fedrep-p2p'],
        bodyCombiner,
        ...(attack === 'none' ? { poisoned: 0 } : { poisoned: 1, poisonKind: attack }),
      },
      { logger: quiet },
    );
    const honest = (alg: 'dflmoe' | 'fedrep-p2p') => r.algorithms[alg]!.peers.slice(0, 9).reduce((a, x) => a + x.accuracy, 0) / 9;
    const row = {
      attack: attack === 'none' ? 'no attacker' : `1 of 10 ${attack} bodies`,
      combiner: bodyCombiner,
      dflmoe: honest('dflmoe'),
      fedrepP2p: honest('fedrep-p2p'),
    };
    bodyRows.push(row);
    console.log(
      `shared bodies, ${row.attack.padEnd(24)} ${bodyCombiner.padEnd(12)} honest mean accuracy: dFLMoE+body ${(100 * row.dflmoe).toFixed(2)}%  fedrep-p2p ${(100 * row.fedrepP2p).toFixed(2)}%`,
    );
  }
}
mkdirSync('benchmarks/results', { recursive: true });
writeFileSync(values.out!, JSON.stringify({ date: new Date().toISOString(), base, rows, bodies: { base: bodyBase, rows: bodyRows } }, null, 2) + '\n');
console.log(`wrote ${values.out}`);
