import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { stringify } from 'csv-stringify/sync';
import {
  loadSite,
  silentLogger,
  createLogger,
  type Evaluation,
  type Predictions,
  type TaskEvaluations,
  type TaskPredictions,
  type TrainedSite,
} from '@dflmoe/core';
import { pct, table } from '../format.js';
import { checkOutputPath } from '../output.js';

/** How a site reads tables: the same policy at training and prediction. */
export const DATA_POLICY = `
Tables (CSV with a header row):
  - Missing cells are empty, NA, NaN or ? (any case). A numeric column's missing
    cells are filled with the consortium's pooled mean of that column, and a 0/1
    column <col>_missing marks them whenever any site had a missing cell there;
    a column a site lacks reads as missing there ("drop" it at every site instead).
  - Cells are separated by commas, semicolons or tabs (found from the header).
    A number beyond +-3.4e38 is refused, naming its line and column.
  - A column is numeric when its cells are numbers, categorical when they are
    text (or when listed in "categorical"). In new rows, text in a column the
    site reads as numbers is refused, naming the line and column
    (--invalid-as-missing reads it as missing and marks the row). Categories are one-hot encoded over
    the union of every site's categories (sorted); a missing cell, or a category
    no site trained on, encodes as all zeros.
  - Features are standardized with statistics pooled from every site's counts,
    sums and sums of squares (no row leaves a site); "standardize": "local"
    uses the site's own training rows instead; a pretrained body
    ("model": {"pretrainedBody": ...}) brings its own, which then win.
Images: one sub-folder per class of PNG/JPEG files, resized to the agreed size,
grayscale or RGB, scaled to [0, 1]; prediction reads the images of a folder
(or of its sub-folders).`;

/** Name the experts (own head first) by member name. */
function expertNames(site: TrainedSite, p: Predictions): string[] {
  const seen = new Map<string, number>();
  return p.experts.map((id) => {
    const n = site.nameOf(id);
    const k = (seen.get(n) ?? 0) + 1;
    seen.set(n, k);
    return k > 1 ? `${n}#${k}` : n;
  });
}

/**
 * One task's columns: the prediction (`predicted`, or `predicted:<task>` for
 * a regression and for every task of a multi-task site), every class's
 * probability and every expert's gate weight; a multi-task site's are
 * named after the task (`prob:<task>:<class>`, `gate:<task>:<expert>`).
 */
function taskColumns(site: TrainedSite, p: Predictions, multi: boolean): { header: string[]; cells: (i: number) => string[] } {
  const c = p.classNames.length;
  const k = p.experts.length;
  const tag = multi ? `${p.task.name}:` : '';
  // A regression predicts one value per row (in the target's units), a classifier a class and its probabilities.
  const header = [
    p.values || multi ? `predicted:${p.task.name}` : 'predicted',
    ...(p.values ? [] : p.classNames.map((n) => `prob:${tag}${n}`)),
    ...expertNames(site, p).map((n) => `gate:${tag}${n}`),
  ];
  const cells = (i: number) => [
    ...(p.values ? [String(p.values[i])] : [p.classNames[p.predicted[i]], ...Array.from(p.probabilities.subarray(i * c, (i + 1) * c), String)]),
    ...Array.from(p.gateWeights.subarray(i * k, (i + 1) * k), String),
  ];
  return { header, cells };
}

/**
 * One row per input: where it came from, the predicted class, every class's
 * probability and every expert's gate weight (a multi-task site, `TaskPredictions`:
 * those of every task, named after it); with `invalid` (cells read as
 * missing, `--invalid-as-missing`), a column `read as missing` that marks their rows;
 * with `flags` (unseen categories, every feature missing), a last column `flags`.
 */
export function predictionRows(site: TrainedSite, ids: string[], p: Predictions | TaskPredictions, invalid?: string[], flags?: string[]): string[][] {
  const tasks = isOneTask(p) ? [p] : Object.values(p);
  const parts = tasks.map((t) => taskColumns(site, t, !isOneTask(p)));
  const rows = [['input', ...parts.flatMap((c) => c.header), ...(invalid ? ['read as missing'] : []), ...(flags ? ['flags'] : [])]];
  for (let i = 0; i < ids.length; i++) rows.push([ids[i], ...parts.flatMap((c) => c.cells(i)), ...(invalid ? [invalid[i]] : []), ...(flags ? [flags[i]] : [])]);
  return rows;
}

/** Whether `p` is one task's predictions (not every task's by name). */
function isOneTask(p: Predictions | TaskPredictions): p is Predictions {
  return typeof (p as Predictions).numSamples === 'number' && (p as Predictions).predicted instanceof Int32Array;
}

const INVALID_AS_MISSING = 'read a cell that is not a number in a numeric column as missing (its row is marked) instead of refusing the file';

/** Say on stderr which rows had cells read as missing, and which the model could not see all of (`flags`). */
function reportInvalid(ids: string[], invalid: string[] | undefined, flags?: string[]): void {
  const say = (what: string, marks: string[] | undefined) => {
    const rows = (marks ?? []).flatMap((v, i) => (v ? [`${ids[i]} (${v})`] : []));
    if (rows.length)
      process.stderr.write(`${what}: ${rows.length} row${rows.length > 1 ? 's' : ''}: ${rows.slice(0, 5).join(', ')}${rows.length > 5 ? ', ...' : ''}\n`);
  };
  say('read as missing, not numbers', invalid);
  say('flagged (a category no site trained on encodes as all zeros; missing cells take the pooled means)', flags);
}

function describe(site: TrainedSite): string {
  return `${site.description.name ?? site.description.peerId} (${site.algorithm}), checkpoint of round ${site.round}`;
}

export function predictCommand(): Command {
  return new Command('predict')
    .description(
      'Predict with a trained site: one row per input with the predicted class, the probability of every class and the gate weight of every expert ' +
        "(a regression: the value, in the target's units; a multi-task site: those of every task, in columns named after it, predicted:<task>).",
    )
    .requiredOption(
      '--site <dir>',
      "the site's out directory (holds site.json, preprocessing.json and checkpoints/), or the .zip a browser tab's site downloads",
    )
    .requiredOption('--input <path>', 'a CSV file with the columns the site trained on (the label column may be absent), or a folder of images')
    .option('--output <file>', 'write the rows to this CSV file (default: print them)')
    .option('--invalid-as-missing', INVALID_AS_MISSING)
    .addHelpText('after', DATA_POLICY)
    .action(async (o) => {
      const output = o.output ? checkOutputPath(o.output, '--output') : undefined;
      const site = await loadSite(o.site, { logger: createLogger('predict', 'warn') });
      try {
        const read = { invalidAsMissing: o.invalidAsMissing };
        const { inputs, predictions } = site.tasks.length > 1 ? await site.predictTasksFile(o.input, read) : await site.predictFile(o.input, read);
        reportInvalid(inputs.ids, inputs.invalid, inputs.flags);
        const csv = stringify(predictionRows(site, inputs.ids, predictions, inputs.invalid, inputs.flags));
        if (output) {
          writeFileSync(output, csv);
          const tasks = site.tasks.length > 1 ? ` for ${site.tasks.length} tasks (${site.tasks.map((t) => t.name).join(', ')})` : '';
          process.stderr.write(`wrote ${inputs.numSamples} predictions${tasks} to ${output} (${describe(site)})\n`);
        } else process.stdout.write(csv);
      } finally {
        site.dispose();
      }
    });
}

/** Accuracy, per-class recall and the confusion matrix as text (a regression site: RMSE, MAE and R^2). */
export function evaluationReport(e: Evaluation): string {
  if (e.confusion.length === 0 && e.metrics.rmse !== undefined) return `${regressionLine(e)} on ${e.samples} samples (in the target's units)\n`;
  return `accuracy ${pct(e.accuracy)} on ${e.samples} samples\n\n${classTables(e)}`;
}

function regressionLine(e: Evaluation): string {
  return `rmse ${e.metrics.rmse.toPrecision(4)}, mae ${e.metrics.mae.toPrecision(4)}, r2 ${e.metrics.r2.toFixed(3)}`;
}

/** Per-class recall and the confusion matrix. */
function classTables(e: Evaluation): string {
  const recall = table([
    ['class', 'samples', 'recall'],
    ...e.classNames.map((c, k) => [c, String(e.confusion[k].reduce((a, b) => a + b, 0)), e.recall[k] === null ? '-' : pct(e.recall[k]!)]),
  ]);
  const confusion = table([['true \\ predicted', ...e.classNames], ...e.classNames.map((c, k) => [c, ...e.confusion[k].map(String)])]);
  return `${recall}\n\nconfusion matrix (rows: true class, columns: predicted)\n${confusion}\n`;
}

/**
 * A multi-task site's evaluation, task by task: each task's metrics over
 * the rows that carry its label (how many lacked it), a classification's
 * recall and confusion matrix; a task whose label column the file lacks is named.
 */
export function taskEvaluationReport(site: TrainedSite, evaluations: TaskEvaluations): string {
  return site.tasks
    .map((t) => {
      const e = evaluations[t.name];
      if (!e) return `task ${t.name} (${t.kind}): not evaluated, the file has no label column for it\n`;
      const rows = `on ${e.samples} row${e.samples === 1 ? '' : 's'}${e.skipped ? ` (${e.skipped} without its label skipped)` : ''}`;
      if (e.confusion.length === 0 && e.metrics.rmse !== undefined) return `task ${t.name} (regression): ${regressionLine(e)} ${rows}, in the target's units\n`;
      const m = e.metrics;
      return `task ${t.name} (classification): accuracy ${pct(m.accuracy)}, balanced accuracy ${pct(m.balancedAccuracy)}, macro F1 ${Number.isFinite(m.macroF1) ? m.macroF1.toFixed(3) : '-'} ${rows}\n\n${e.samples > 0 ? classTables(e) : ''}`;
    })
    .join('\n');
}

export function evaluateCommand(): Command {
  return new Command('evaluate')
    .description(
      'Evaluate a trained site on labelled data: accuracy, per-class recall and a confusion matrix (a regression: RMSE, MAE, R^2; ' +
        'a multi-task site: every task whose label column the file has, over the rows that carry its label).',
    )
    .requiredOption('--site <dir>', "the site's out directory, or the .zip a browser tab's site downloads")
    .requiredOption(
      '--input <path>',
      "a labelled CSV file (with the label column; a multi-task site: its tasks' label columns, where an empty cell skips the row for that task), or a folder with one sub-folder of images per class",
    )
    .option('--json', 'print the evaluation as JSON')
    .option('--invalid-as-missing', INVALID_AS_MISSING)
    .addHelpText('after', DATA_POLICY)
    .action(async (o) => {
      const site = await loadSite(o.site, { logger: o.json ? silentLogger : createLogger('evaluate', 'warn') });
      try {
        const read = { invalidAsMissing: o.invalidAsMissing };
        if (site.tasks.length > 1) {
          const { evaluations, inputs } = await site.evaluateTasksFile(o.input, read);
          reportInvalid(inputs.ids, inputs.invalid, inputs.flags);
          if (o.json) process.stdout.write(JSON.stringify({ tasks: evaluations }, null, 2) + '\n');
          else process.stdout.write(`${describe(site)}\n${taskEvaluationReport(site, evaluations)}`);
          return;
        }
        const { evaluation, inputs } = await site.evaluateFile(o.input, read);
        reportInvalid(inputs.ids, inputs.invalid, inputs.flags);
        if (o.json) process.stdout.write(JSON.stringify(evaluation, null, 2) + '\n');
        else process.stdout.write(`${describe(site)}\n${evaluationReport(evaluation)}`);
      } finally {
        site.dispose();
      }
    });
}
