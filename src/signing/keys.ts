import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors/errors.ts';

/**
 * Ed25519 signing keys for manifests, as PEM files that stock OpenSSL reads: the private key in
 * PKCS#8 (`-----BEGIN PRIVATE KEY-----`), the public key in SubjectPublicKeyInfo
 * (`-----BEGIN PUBLIC KEY-----`). Made by `lifeboat keygen --signing`, or by
 * `openssl genpkey -algorithm ed25519`.
 */
export interface SigningKeyPair {
  privatePem: string;
  publicPem: string;
  keyId: string;
}

export function generateSigningKey(): SigningKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    keyId: keyId(publicKey),
  };
}

/** A short, stable name of a public key: the first 16 hex digits of the sha256 of its DER form. */
export function keyId(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ format: 'der', type: 'spki' })).digest('hex').slice(0, 16);
}

/** The Ed25519 private key in `file`; a ConfigError naming `field` if it cannot be read or is not one. */
export function readPrivateKey(file: string, field: string): KeyObject {
  return readEd25519(file, field, 'private', createPrivateKey, 'make one with `lifeboat keygen --signing`');
}

/** The Ed25519 public key in `file` (a private key file gives its public half). */
export function readPublicKey(file: string, field: string): KeyObject {
  return readEd25519(file, field, 'public', createPublicKey, 'give the .pub file that `lifeboat keygen --signing` wrote');
}

function readEd25519(file: string, field: string, kind: 'private' | 'public', parse: (pem: string) => KeyObject, hint: string): KeyObject {
  const pem = readKeyFile(file, field);
  let key: KeyObject;
  try {
    key = parse(pem);
  } catch (err) {
    throw new ConfigError(field, `${file} is not a PEM ${kind} key: ${(err as Error).message}`, { hint });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(field, `${file} is a ${key.asymmetricKeyType ?? 'unknown'} key; manifests are signed with Ed25519`, { hint });
  return key;
}

function readKeyFile(file: string, field: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(field, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: 'check the path and that the Secret holding it is mounted' });
  }
}
