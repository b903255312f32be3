/**
 * One point of the in-process scale sweep of `speed-scale.ts`, in its own
 * process so that its peak RSS is its own: N sites in one process, dFLMoE
 * with all experts or at most k, and optionally FedAvg and (in a second simulation)
 * local-only. Prints one JSON line.
 *
 *   node --import tsx benchmarks/scale-point.ts --dataset synthetic:... --peers 64 --rounds 10 --max-experts 8 [--fedavg] [--local] [--lr 3e-3]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { simulate, silentLogger } from '@dflmoe/core';

const { values } = parseArgs({
  options: {
    dataset: { type: 'string' },
    peers: { type: 'string' },
    rounds: { type: 'string', default: '10' },
    'max-experts': { type: 'string', default: '0' },
    partition: { type: 'string', default: 'dirichlet:0.5' },
    body: { type: 'string', default: 'mlp:64' },
    'feature-dim': { type: 'string', default: '32' },
    'min-size': { type: 'string', default: '20' },
    fedavg: { type: 'boolean', default: false },
    local: { type: 'boolean', default: false },
    lr: { type: 'string', default: '1e-3' },
  },
});
const peers = Number(values.peers);
const rounds = Number(values.rounds);
const maxExperts = Number(values['max-experts']);
// CPU seconds per algorithm, from the end of its first round to the end of its last (robust to a loaded machine).
const cpuAt = new Map<string, number[]>();
const cpuNow = () => {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1e6;
};
const run = async (algorithms: ('dflmoe' | 'fedavg' | 'local')[]) => {
  const c0 = cpuNow();
  const res = await simulate(
    {
      dataset: values.dataset!,
      peers,
      rounds,
      partition: values.partition!,
      algorithms,
      bodies: [values.body!],
      featureDim: Number(values['feature-dim']),
      minSize: Number(values['min-size']),
      maxExperts,
      learningRate: Number(values.lr),
    },
    { logger: silentLogger, onRound: (alg) => cpuAt.set(alg, [...(cpuAt.get(alg) ?? []), cpuNow()]) },
  );
  return { res, cpuSeconds: cpuNow() - c0 };
};
const main = await run(values.fedavg ? ['dflmoe', 'fedavg'] : ['dflmoe']);
// Local-only in a simulation of its own, so that its CPU seconds (the whole call: sites, rounds, pooled accuracy) are its own.
const local = values.local ? await run(['local']) : undefined;
const out = Object.fromEntries(
  [main, ...(local ? [local] : [])].flatMap(({ res, cpuSeconds }) =>
    Object.entries(res.algorithms).map(([name, a]) => [
      name,
      {
        secondsPerRound: a!.wallSeconds / rounds,
        cpuSecondsPerRound: rounds > 1 ? (cpuAt.get(name)!.at(-1)! - cpuAt.get(name)![0]) / (rounds - 1) : undefined,
        // CPU seconds of the whole simulate call (with FedAvg, dFLMoE's includes it).
        cpuSeconds,
        bytesPerSiteRound: a!.bytesSent / (peers * rounds),
        accuracy: a!.accuracy.mean,
        // Experts each site mixes at the end (own head included).
        expertsPerSite: name === 'dflmoe' ? a!.peers.reduce((s, p) => s + Object.keys(p.gateWeights ?? {}).length, 0) / peers : undefined,
        rounds: a!.rounds.length,
      },
    ]),
  ),
);
// This process's own high-water mark (getrusage's maxRSS would carry the parent's over fork and exec).
const hwm = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
console.log(JSON.stringify({ peers, rounds, maxExperts, peakRssMiB: hwm ? Number(hwm[1]) / 1024 : process.resourceUsage().maxRSS / 1024, ...out }));
