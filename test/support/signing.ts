import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateSigningKey } from '../../src/signing/keys.ts';
import { loadSigning } from '../../src/signing/trust.ts';

/**
 * One Ed25519 signing key per test process, as `lifeboat keygen --signing` writes it: the private
 * key (0600) and its public key beside it. Configs made by the test support sign with it.
 */
const dir = mkdtempSync(path.join(tmpdir(), 'lifeboat-signing-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const pair = generateSigningKey();
export const SIGNING_KEY_FILE = path.join(dir, 'signing.key');
export const SIGNING_PUBLIC_KEY_FILE = `${SIGNING_KEY_FILE}.pub`;
writeFileSync(SIGNING_KEY_FILE, pair.privatePem, { mode: 0o600 });
writeFileSync(SIGNING_PUBLIC_KEY_FILE, pair.publicPem, { mode: 0o644 });

/** The config `signing` section of a backup writer. */
export const SIGNING_CONFIG = { keyFile: SIGNING_KEY_FILE };
export const TEST_SIGNING = loadSigning({ keyFile: SIGNING_KEY_FILE, publicKeyFiles: [], allowUnsigned: false });
export const TEST_TRUST = TEST_SIGNING.trust;
export const TEST_SIGNER = TEST_SIGNING.signer!;
