import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { initBackend, pretrainBody, createLogger, OPTIMIZERS } from '@dflmoe/core';
import { loadDatasetAsync, subsampleRows } from '@dflmoe/data';
import { int, num } from '../format.js';
import { createProgress } from '../progress.js';

export function pretrainCommand(): Command {
  return new Command('pretrain')
    .description(
      'Pretrain a body on public labelled data and write it (model.json + weights.bin) for every site to start from ' +
        '("model": {"pretrainedBody": "<dir>"} in site configs, --pretrained-body in simulate).',
    )
    .requiredOption('--dataset <name>', 'the public data: fashion-mnist | digits | csv:<path> | images:<dir>')
    .requiredOption('--out <dir>', 'directory to write the body to')
    .option('--body <spec>', 'body, as the sites will use it: mlp[:h1xh2], cnn[:f1xf2]', 'mlp')
    .option('--feature-dim <n>', 'size of the feature vector (as the sites will use it)', int('--feature-dim'), 64)
    .option('--epochs <n>', 'passes over the public data', int('--epochs'), 3)
    .option('--batch-size <n>', 'batch size', int('--batch-size'), 32)
    .option('--lr <x>', 'learning rate', num('--lr', 0, 10), 1e-3)
    .addOption(new Option('--optimizer <kind>', 'optimiser').choices([...OPTIMIZERS]).default('adam'))
    .option('--seed <n>', 'seed for row order, held-out rows and initial weights', int('--seed'), 1)
    .option('--max-rows <n>', 'use at most this many public rows', int('--max-rows'))
    .option(
      '--exclude-subset <n>',
      'benchmarks: leave out the rows that "simulate --max-samples <n>" with the same --seed uses, so no site row is pretrained on',
      int('--exclude-subset'),
    )
    .option('--data-dir <dir>', 'fashion-mnist: directory of the idx files')
    .option('--label-column <name>', 'csv: the label column', 'label')
    .action(async (o) => {
      await initBackend({ logger: createLogger('pretrain', 'warn') });
      const ds = await loadDatasetAsync(o.dataset, { dataDir: o.dataDir, labelColumn: o.labelColumn, seed: o.seed });
      const exclude = o.excludeSubset !== undefined ? subsampleRows(ds.numSamples, o.excludeSubset, o.seed) : undefined;
      const bar = createProgress('pretrain', o.epochs, 'epoch');
      const out = resolve(o.out);
      try {
        const r = await pretrainBody(ds, out, {
          body: o.body,
          featureDim: o.featureDim,
          epochs: o.epochs,
          batchSize: o.batchSize,
          learningRate: o.lr,
          optimizer: o.optimizer,
          seed: o.seed,
          ...(exclude ? { exclude } : {}),
          ...(o.maxRows !== undefined ? { maxRows: o.maxRows } : {}),
          onEpoch: (e, loss, acc) => bar.update(e, `loss ${loss.toFixed(4)}, held-out accuracy ${(100 * acc).toFixed(2)}%`),
        });
        bar.stop();
        process.stdout.write(
          `body ${o.body} (${o.featureDim} features) pretrained on ${r.trainRows} rows of ${ds.name}; ` +
            `held-out accuracy ${(100 * r.accuracy).toFixed(2)}% on ${r.holdoutRows} rows\nwrote ${out}\n`,
        );
      } finally {
        bar.stop();
      }
    });
}
