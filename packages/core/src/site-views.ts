/**
 * The simulator's sites as they hold the data (issue #28, modalities): each
 * site its view of the dataset (images, or the same samples as a table), its
 * body, and the standardization agreed among the sites that hold the data in
 * the same form. Without `siteModalities` every site holds the dataset as it
 * is and every site takes part in one agreement (as before modalities).
 */
import { MODALITIES, modalityView, type Dataset, type Modality, type PeerSplit, type Standardizer } from '@dflmoe/data';
import { agreedStandardizer, federatedAgreement } from '@dflmoe/data/internal';
import { parseBodySpec } from './model.js';

/** The body a site of a modality gets when the simulation names none: a CNN for images, an MLP for tables. */
export const MODALITY_BODIES: Readonly<Record<Modality, string>> = { image: 'cnn', table: 'mlp' };

/** A site's view of the data and the standardizer its group agreed on (undefined: its own, `standardize: local`). */
export interface SiteView {
  ds: Dataset;
  st: Standardizer | undefined;
  /** The site's modality, where the simulation gives sites modalities. */
  modality?: Modality;
}

/** Check a simulation's `siteModalities` (one line naming what is wrong). */
export function checkModalities(modalities: readonly string[] | undefined): void {
  if (modalities === undefined) return;
  if (modalities.length === 0) throw new Error('siteModalities must name at least one modality');
  for (const m of modalities)
    if (!(MODALITIES as readonly string[]).includes(m)) throw new Error(`unknown modality "${m}"; choose from ${MODALITIES.join(', ')}`);
}

/** Site `i`'s modality (cycled), or undefined without `modalities`. */
export const siteModality = (modalities: readonly Modality[] | undefined, i: number): Modality | undefined => modalities?.[i % modalities.length];

/**
 * Each site's body: `bodies` cycled over the sites, or, where sites have
 * modalities and no bodies were given, their modality's (`MODALITY_BODIES`).
 * A CNN body for a table site is refused.
 */
export function siteBodies(peers: number, bodies: readonly string[], given: boolean, modalities?: readonly Modality[]): string[] {
  return Array.from({ length: peers }, (_, i) => {
    const m = siteModality(modalities, i);
    const body = m && !given ? MODALITY_BODIES[m] : bodies[i % bodies.length];
    if (m === 'table' && parseBodySpec(body).kind === 'cnn')
      throw new Error(`site ${i} holds the data as a table, but its body "${body}" is a cnn, which takes images: give table sites an mlp body`);
    return body;
  });
}

/**
 * The sites' views of `ds`: with modalities, each site's in its form, and
 * (with federated standardization) one agreement per form over the training
 * rows of the sites that hold it; else `ds` with `st` at every site.
 */
export function siteViews(
  ds: Dataset,
  splits: PeerSplit[],
  modalities: readonly Modality[] | undefined,
  federated: boolean,
  st: Standardizer | undefined,
): SiteView[] {
  if (!modalities) return splits.map(() => ({ ds, st }));
  const forms = new Map<Modality, Dataset>();
  const stOf = new Map<Modality, Standardizer | undefined>();
  for (const m of new Set(splits.map((_, i) => siteModality(modalities, i)!))) {
    const view = modalityView(ds, m);
    forms.set(m, view);
    const group = splits.filter((_, i) => siteModality(modalities, i) === m);
    stOf.set(m, federated ? agreedStandardizer(federatedAgreement(view, group)) : undefined);
  }
  return splits.map((_, i) => {
    const m = siteModality(modalities, i)!;
    return { ds: forms.get(m)!, st: stOf.get(m), modality: m };
  });
}
