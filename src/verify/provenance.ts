import type { TrustVerdict } from '../signing/trust.ts';
import type { Catalog, ChainStatus } from '../store/catalog.ts';

/** Who made a backup, as far as the store can show it: its manifest's signature and its place in the chain. */
export interface Provenance {
  signature: TrustVerdict;
  chain: ChainStatus;
}

/**
 * The provenance of committed backup `id`. An unsigned or wrongly signed manifest is refused
 * before this (SignatureError, from the catalogue); a swapped previous manifest is an
 * IntegrityError. A previous backup that is gone is reported, not refused: retention deletes.
 */
export async function provenanceOf(catalog: Pick<Catalog, 'trusted' | 'chainOf'>, id: string): Promise<Provenance> {
  const { verdict } = await catalog.trusted(id);
  return { signature: verdict, chain: await catalog.chainOf(id) };
}

/** One line for people: `signed by key 2372494a1619a9d1; follows 20261124T...`. */
export function describeProvenance(p: Provenance): string {
  const signature = p.signature.signed ? `signed by key ${p.signature.keyId}` : 'UNSIGNED (accepted because signing.allowUnsigned is set)';
  const chain =
    p.chain.state === 'linked'
      ? `follows ${p.chain.previous}`
      : p.chain.state === 'previous-gone'
        ? `the backup it follows, ${p.chain.previous}, is no longer in the store (pruned or deleted)`
        : 'first of its chain';
  return `${signature}; ${chain}`;
}
