import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Decrypter, Encrypter } from 'age-encryption';
import {
  createDecryptStream,
  createEncryptStream,
  generateIdentity,
  identityFileText,
  parseIdentityFile,
  parseRecipient,
  recipientOf,
} from '../../src/crypto/age.ts';
import { DecryptError, KeyError, NoMatchingIdentityError } from '../../src/errors/errors.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'lifeboat-crypto-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536, 1_000_003];
const alice = await generateIdentity();
const bob = await generateIdentity();
const aliceFile = path.join(dir, 'alice.txt');
writeFileSync(aliceFile, identityFileText(alice.identity, alice.recipient, new Date()), { mode: 0o600 });

async function run(stream: NodeJS.ReadWriteStream, input: Buffer, chunk = 10_007): Promise<Buffer> {
  const parts: Buffer[] = [];
  async function* source() {
    for (let i = 0; i < input.length; i += chunk) yield input.subarray(i, i + chunk);
  }
  await pipeline(Readable.from(source()), stream, new Writable({ write: (c: Buffer, _e, cb) => (parts.push(c), cb()) }));
  return Buffer.concat(parts);
}

test('our encryption is read by age-encryption and by the age CLI, for every size and both recipients', async () => {
  for (const size of SIZES) {
    const plain = randomBytes(size);
    const sealed = await run(createEncryptStream([alice.recipient, bob.recipient]), plain);
    for (const who of [alice, bob]) {
      const d = new Decrypter();
      d.addIdentity(who.identity);
      assert.deepEqual(Buffer.from(await d.decrypt(sealed)), plain, `age-encryption, size ${size}`);
    }
    const cli = execFileSync('age', ['-d', '-i', aliceFile], { input: sealed, maxBuffer: 1 << 26 });
    assert.deepEqual(cli, plain, `age CLI, size ${size}`);
  }
});

test('we read what age-encryption and the age CLI write, for every size', async () => {
  for (const size of SIZES) {
    const plain = randomBytes(size);
    const e = new Encrypter();
    e.addRecipient(alice.recipient);
    const byLib = Buffer.from(await e.encrypt(plain));
    assert.deepEqual(await run(createDecryptStream([alice.identity]), byLib, 777), plain, `age-encryption, size ${size}`);
    const byCli = execFileSync('age', ['-r', bob.recipient, '-r', alice.recipient], { input: plain, maxBuffer: 1 << 26 });
    assert.deepEqual(await run(createDecryptStream([bob.identity]), byCli), plain, `age CLI, size ${size}`);
  }
});

test('a wrong identity is NoMatchingIdentityError; an extra wrong identity is harmless', async () => {
  const sealed = await run(createEncryptStream([alice.recipient]), randomBytes(1000));
  await assert.rejects(run(createDecryptStream([bob.identity]), sealed), NoMatchingIdentityError);
  assert.equal((await run(createDecryptStream([bob.identity, alice.identity]), sealed)).length, 1000);
});

test('tampering, truncation and trailing data are DecryptErrors that say what happened', async () => {
  const plain = randomBytes(3 * 65536 + 100);
  const sealed = await run(createEncryptStream([alice.recipient]), plain);
  const headerEnd = sealed.indexOf('\n---') + 1;
  const payloadStart = sealed.indexOf(0x0a, headerEnd) + 1 + 16;

  const flipped = Buffer.from(sealed);
  flipped[payloadStart + 70_000] = (flipped[payloadStart + 70_000] ?? 0) ^ 1;
  await assert.rejects(run(createDecryptStream([alice.identity]), flipped), (e: unknown) => e instanceof DecryptError && /chunk 1 .* failed authentication: the archive is corrupted/.test(e.message));

  const badMac = Buffer.from(sealed);
  badMac[headerEnd + 6] = badMac[headerEnd + 6] === 0x41 ? 0x42 : 0x41;
  await assert.rejects(run(createDecryptStream([alice.identity]), badMac), (e: unknown) => e instanceof DecryptError && /header/.test(e.message));

  const cleanCut = sealed.subarray(0, payloadStart + 3 * (65536 + 16));
  await assert.rejects(run(createDecryptStream([alice.identity]), cleanCut), (e: unknown) => e instanceof DecryptError && /truncated: it ends after chunk 2 without the final chunk/.test(e.message));
  const midCut = sealed.subarray(0, sealed.length - 50);
  await assert.rejects(run(createDecryptStream([alice.identity]), midCut), (e: unknown) => e instanceof DecryptError && /truncated/.test(e.message));
  await assert.rejects(run(createDecryptStream([alice.identity]), sealed.subarray(0, 40)), /truncated inside its age header/);
  await assert.rejects(run(createDecryptStream([alice.identity]), Buffer.concat([sealed, Buffer.from('junk')])), /trailing data|failed authentication/);
  await assert.rejects(run(createDecryptStream([alice.identity]), Buffer.from('PK\x03\x04 not age at all')), /not an age file/);
});

test('keys: recipients and identity files parse, and errors name the place but never the secret', async () => {
  assert.equal(parseRecipient(` ${alice.recipient} `, 'f'), alice.recipient);
  assert.equal(await recipientOf(alice.identity), alice.recipient);
  assert.throws(() => parseRecipient('age1qqqq', '/encryption/recipients/0'), (e: unknown) => e instanceof KeyError && e.message.startsWith('/encryption/recipients/0:'));
  assert.throws(() => parseRecipient(alice.recipient.slice(0, -1) + (alice.recipient.endsWith('q') ? 'p' : 'q'), 'f'), /checksum/);
  assert.throws(() => parseRecipient('ssh-ed25519 AAAA', 'f'), KeyError);
  const keygen = execFileSync('age-keygen', [], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  const [identity] = parseIdentityFile(keygen, 'keygen.txt');
  assert.match(identity ?? '', /^AGE-SECRET-KEY-1/);
  assert.deepEqual(parseIdentityFile(identityFileText(alice.identity, alice.recipient, new Date()), 'x'), [alice.identity]);
  const broken = `# a comment\n\n${alice.identity.slice(0, -2)}XX\n`;
  assert.throws(() => parseIdentityFile(broken, 'key.txt'), (e: unknown) => e instanceof KeyError && /key\.txt line 3/.test(e.message) && !e.message.includes(alice.identity.slice(20, 40)));
  assert.throws(() => parseIdentityFile('hello\n', 'key.txt'), /line 1 is not an age X25519 identity/);
  assert.throws(() => createEncryptStream([]), KeyError);
});

test('a 64 MiB stream passes with backpressure and bounded buffering', async () => {
  const total = 64 << 20;
  let produced = 0;
  let maxBuffered = 0;
  const enc = createEncryptStream([alice.recipient]);
  const dec = createDecryptStream([alice.identity]);
  async function* source() {
    const block = randomBytes(1 << 20);
    while (produced < total) {
      produced += block.length;
      maxBuffered = Math.max(maxBuffered, enc.writableLength + enc.readableLength + dec.writableLength + dec.readableLength);
      yield block;
    }
  }
  let received = 0;
  await pipeline(Readable.from(source()), enc, dec, new Writable({ write: (c: Buffer, _e, cb) => ((received += c.length), setImmediate(cb)) }));
  assert.equal(received, total);
  assert.ok(maxBuffered < 8 << 20, `buffered at most ${maxBuffered} bytes`);
});
