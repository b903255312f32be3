/**
 * dFLMoE's settings: one schema each, with its default and what it does.
 * The CLI's flags, the simulator, the site config's `dflmoe` section, the
 * learner and `DflmoePeer` all take them from here.
 */
import { z } from 'zod';
import { PRECISIONS } from '../codec.js';
import { FST_KINDS } from '../model.js';
import { defineSettings, type SettingsOf } from '../settings.js';

/** dFLMoE's own settings (the `dflmoe` section of a site config), each with its default, range and help text. */
export const dflmoeSettings = defineSettings({
  section: 'dflmoe',
  usedBy: 'dflmoe',
  shape: {
    alpha: z.number().min(0).max(1).default(0.2).describe("weight of the own head's loss (the rest goes to the mixture's loss)"),
    gateHidden: z.number().int().min(1).default(32).describe('hidden units of the gate'),
    ownGateBias: z.number().min(-20).max(20).default(1).describe('initial gate logit of the own head: how much a new mixture trusts it before it has learnt'),
    expertLrScale: z
      .number()
      .min(0)
      .max(1000)
      .default(1)
      .describe("learning rate of the received experts' gate slots and transforms, as a multiple of the learning rate"),
    admission: z
      .number()
      .min(0)
      .max(10)
      .optional()
      .describe("refuse received heads scoring below this fraction of the own head's accuracy on local training rows (off when unset)"),
    fst: z
      .enum(FST_KINDS)
      .default('full')
      .describe("each received expert's feature-space transform: full (dim x dim), diag (scale and shift per feature) or none"),
    distill: z.number().min(0).max(100).default(0).describe('weight of distilling the mixture into the own head (0: off)'),
    headPrecision: z
      .enum(PRECISIONS)
      .default('float32')
      .describe('precision of published heads: float32, float16 (half the bytes) or int8 (a quarter, with a scale per tensor)'),
    maxExperts: z
      .number()
      .int()
      .min(0)
      .default(32)
      .describe('mix at most this many received experts, chosen each round from announcements, local scores and gate weights (0: every one)'),
    crossTask: z
      .boolean()
      .default(false)
      .describe(
        "multi-task consortia: each task also reads the heads of the other tasks (the members' and the site's own) through a learned map to its outputs",
      ),
    crossTaskWeight: z
      .number()
      .min(0)
      .max(1)
      .default(0.5)
      .describe("crossTask: the read-out's share of each task's output (the rest is the task's own mixture)"),
    shareBody: z.boolean().default(false).describe('also share bodies, combined peer to peer before each round (see the body settings); heads stay experts'),
    loraRank: z
      .number()
      .int()
      .min(0)
      .max(64)
      .default(0)
      .describe(
        "with a frozen body: each site also trains low-rank adapters of this rank on the body's dense layers and publishes them with its head (0: off)",
      ),
    loraScale: z
      .number()
      .gt(0)
      .max(1)
      .default(0.03)
      .describe("loraRank: an adapter's update is this times A B (LoRA's alpha / r); larger moves the body further from the frozen one"),
  },
  aliases: { maxExperts: { all: 0 } },
  // Shared bodies won with plain experts and two passes over the data per round (npm run bench:bodies).
  variants: (given) => (given.shareBody === true ? { fst: 'none', epochs: 2 } : {}),
  variantNotes: { fst: 'none with shareBody' },
  finish: (v, context) => {
    if (v.shareBody && context.freezeBody)
      return ['shareBody', 'shareBody needs a body that trains: a frozen body is the same at every site (drop freezeBody or shareBody)'];
    if (Number(v.loraRank) > 0 && !context.freezeBody)
      return ['loraRank', 'loraRank needs a frozen body (freezeBody): adapters are defined on a body that is the same at every site'];
    if (Number(v.loraRank) > 0 && v.admission !== undefined)
      return ['loraRank', 'loraRank does not combine with admission yet (admission scores heads without their adapters): drop one'];
    return undefined;
  },
});

/** dFLMoE's settings, resolved. */
export type DflmoeSettings = SettingsOf<typeof dflmoeSettings>;
