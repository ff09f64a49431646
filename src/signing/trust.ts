import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { ConfigError, SignatureError } from '../errors/errors.ts';
import { keyId, readPrivateKey, readPublicKey } from './keys.ts';

/**
 * Manifests are signed with Ed25519. The signature is the 64 raw bytes over the manifest object's
 * exact bytes, stored beside it (layout: `manifest.json.sig`), so stock OpenSSL checks it:
 *
 *   openssl pkeyutl -verify -pubin -inkey signing.pub -rawin -in manifest.json -sigfile manifest.json.sig
 *
 * The backup writer holds the private key; every reader (verify, drill, restore, replicate,
 * retention) checks the signature against the configured public keys before it acts on a
 * manifest. Someone who can write to the bucket but holds no signing key cannot make a backup
 * that is accepted.
 */
export const SIGNATURE_BYTES = 64;

export interface ManifestSigner {
  readonly keyId: string;
  sign(bytes: Buffer): Buffer;
}

export function ed25519Signer(privateKey: KeyObject): ManifestSigner {
  return { keyId: keyId(createPublicKey(privateKey)), sign: (bytes) => sign(null, bytes, privateKey) };
}

/** How a manifest that was accepted is signed. */
export type TrustVerdict = { signed: true; keyId: string } | { signed: false };

/** The config section this reads (config `signing`). */
export interface SigningSettings {
  readonly keyFile?: string | undefined;
  readonly publicKeyFiles: readonly string[];
  readonly allowUnsigned: boolean;
}

/** Decides whether a manifest's bytes and signature are to be trusted. */
export class ManifestTrust {
  readonly #keys: readonly { id: string; key: KeyObject }[];
  readonly #allowUnsigned: boolean;

  constructor(publicKeys: readonly KeyObject[], options: { allowUnsigned: boolean }) {
    this.#keys = publicKeys.map((key) => ({ id: keyId(key), key }));
    this.#allowUnsigned = options.allowUnsigned;
  }

  /** The ids of the trusted keys. */
  get keyIds(): string[] {
    return this.#keys.map((k) => k.id);
  }

  get allowsUnsigned(): boolean {
    return this.#allowUnsigned;
  }

  /** Accepts `bytes` (the manifest object `what`) with `signature`, or throws SignatureError. */
  check(what: string, bytes: Buffer, signature: Buffer | undefined): TrustVerdict {
    if (signature === undefined) {
      if (this.#allowUnsigned) return { signed: false };
      throw new SignatureError(`${what} is not signed; unsigned backups are refused`, {
        hint: 'anyone who can write to the bucket can make an unsigned backup; set signing.allowUnsigned only for backups made before signing was set up',
      });
    }
    if (this.#keys.length === 0) {
      throw new SignatureError(`${what} is signed, but no public key to check it with is configured (signing.publicKeyFiles, signing.keyFile)`, {
        hint: 'give the signing.pub of the backup writer in signing.publicKeyFiles',
      });
    }
    if (signature.length === SIGNATURE_BYTES) {
      for (const { id, key } of this.#keys) if (verify(null, bytes, key, signature)) return { signed: true, keyId: id };
    }
    throw new SignatureError(`${what} has a signature that none of the trusted keys (${this.keyIds.join(', ')}) made: the manifest was changed or forged, or signed by another key`, {
      hint: 'do not restore it; if the signing key was rotated, list the old public key in signing.publicKeyFiles too',
    });
  }
}

/** What the config gives: the trust of every reader, and the signer when this host writes backups. */
export interface Signing {
  trust: ManifestTrust;
  signer: ManifestSigner | undefined;
}

/** Reads the keys config `signing` names; a ConfigError names the field of a key that is wrong. */
export function loadSigning(settings: SigningSettings): Signing {
  const privateKey = settings.keyFile === undefined ? undefined : readPrivateKey(settings.keyFile, '/signing/keyFile');
  const publicKeys = settings.publicKeyFiles.map((file, i) => readPublicKey(file, `/signing/publicKeyFiles/${i}`));
  // The writer trusts its own key.
  if (privateKey) publicKeys.push(createPublicKey(privateKey));
  return { trust: new ManifestTrust(publicKeys, { allowUnsigned: settings.allowUnsigned }), signer: privateKey && ed25519Signer(privateKey) };
}

/**
 * The signer a backup needs: the configured one, or none when unsigned backups are allowed.
 * Without either, the backup would be one no reader accepts: a ConfigError, before any work.
 */
export function backupSigner(signing: Signing): ManifestSigner | undefined {
  if (signing.signer || signing.trust.allowsUnsigned) return signing.signer;
  throw new ConfigError('/signing/keyFile', 'backups are signed, and no signing key is configured', {
    hint: 'make one with `lifeboat keygen --signing --output /etc/lifeboat/signing.key`, then set signing.keyFile to it',
  });
}
