import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { FailureLimiter, allows, roleForSubject } from '../../src/api/auth.ts';
import { generateToken, hashToken, parseTokens, tokenLine } from '../../src/api/tokens.ts';
import { ConfigError, RateLimitedError } from '../../src/errors/errors.ts';

test('a tokens line is the sha256 of the token, the role and the name; parsing gives them back', () => {
  const token = generateToken();
  assert.match(token, /^lbt_[A-Za-z0-9_-]{43}$/);
  assert.notEqual(generateToken(), token);
  const line = tokenLine(token, 'operator', 'ci-bot@example');
  assert.equal(line, `sha256:${createHash('sha256').update(token).digest('hex')} operator ci-bot@example`);
  const [entry, ...rest] = parseTokens(`# header\n\n  ${line}  \n`, 'tokens');
  assert.equal(rest.length, 0);
  assert.equal(entry?.name, 'ci-bot@example');
  assert.equal(entry?.role, 'operator');
  assert.deepEqual(entry?.hash, hashToken(token));
});

test('a malformed tokens line is a ConfigError naming the file and the line', () => {
  const good = tokenLine('a', 'viewer', 'a');
  const cases: [string, RegExp][] = [
    [`${good}\nsha256:abc viewer x`, /f line 2: expected "sha256:<64 hex digits> <role> <name>"/],
    [`sha256:${'A'.repeat(64)} viewer x`, /f line 1: expected/],
    [`${good}\n\n# c\nsha256:${'0'.repeat(64)} admin x`, /f line 4: role "admin" is not one of viewer, operator, restorer/],
    [`sha256:${'0'.repeat(64)} viewer`, /f line 1: expected/],
    [`sha256:${'0'.repeat(64)} viewer two words`, /f line 1: expected/],
    [`sha256:${'0'.repeat(64)} viewer -dash-first`, /f line 1: name "-dash-first"/],
    [`${good}\n${tokenLine('a', 'operator', 'b')}`, /f line 2: the same token hash as line 1/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseTokens(text, 'f'), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.field, '/api/tokensFile');
      assert.match(err.message, message);
      return true;
    });
  }
});

test('roles are ordered viewer < operator < restorer', () => {
  assert.deepEqual(
    (['viewer', 'operator', 'restorer'] as const).map((r) => [allows(r, 'viewer'), allows(r, 'operator'), allows(r, 'restorer')]),
    [[true, false, false], [true, true, false], [true, true, true]],
  );
});

test('a certificate subject maps to the role of the first mapping whose cn and o both match', () => {
  const mappings = [
    { cn: 'alice', role: 'restorer' as const },
    { o: 'lifeboat-operators', role: 'operator' as const },
    { cn: 'bob', o: 'viewers', role: 'viewer' as const },
  ];
  assert.equal(roleForSubject({ CN: 'alice', O: 'lifeboat-operators' }, mappings), 'restorer');
  assert.equal(roleForSubject({ CN: 'ci', O: 'lifeboat-operators' }, mappings), 'operator');
  assert.equal(roleForSubject({ CN: 'ci', O: ['x', 'lifeboat-operators'] }, mappings), 'operator');
  assert.equal(roleForSubject({ CN: 'bob', O: 'viewers' }, mappings), 'viewer');
  assert.equal(roleForSubject({ CN: 'bob' }, mappings), undefined);
  assert.equal(roleForSubject({ O: 'viewers' }, mappings), undefined);
  assert.equal(roleForSubject({}, mappings), undefined);
  assert.equal(roleForSubject({ CN: 'anyone' }, [{ role: 'viewer' }]), 'viewer', 'a mapping without cn and o matches every certificate of the CA');
});

test('the failure limiter answers 429 for failures of an address beyond N in its window, then forgets it', () => {
  let now = 0;
  const limiter = new FailureLimiter(2, () => now, 3);
  limiter.fail('a');
  limiter.fail('a');
  assert.throws(() => limiter.fail('a'), (err: unknown) => err instanceof RateLimitedError && err.retryAfterSeconds === 60);
  limiter.fail('b');
  now = 59_001;
  assert.throws(() => limiter.fail('a'), (err: unknown) => err instanceof RateLimitedError && err.retryAfterSeconds === 1);
  // A new window: two more failures before the next 429.
  now = 60_000;
  limiter.fail('a');
  limiter.fail('a');
  assert.throws(() => limiter.fail('a'), (err: unknown) => err instanceof RateLimitedError && err.retryAfterSeconds === 60);
});

test('the failure limiter tracks a bounded number of addresses, dropping the oldest windows', () => {
  let now = 0;
  const limiter = new FailureLimiter(1, () => now, 3);
  for (const address of ['a', 'b', 'c', 'd', 'e']) {
    limiter.fail(address);
    now += 1;
  }
  assert.equal(limiter.tracked, 3);
  limiter.fail('a');
  assert.throws(() => limiter.fail('e'), RateLimitedError);
});
