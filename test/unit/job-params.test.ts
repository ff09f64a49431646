import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BadRequestError } from '../../src/errors/errors.ts';
import { BackupJobParamsSchema, readJobParams } from '../../src/jobs/params.ts';

test('a verify or drill job reads its backup from typed parameters; a wrong one is refused naming the field', () => {
  assert.deepEqual(readJobParams('drill', BackupJobParamsSchema, { backupId: 'latest' }), { backupId: 'latest' });
  assert.deepEqual(readJobParams('verify', BackupJobParamsSchema, { backupId: 'x', deep: true }), { backupId: 'x', deep: true });
  const refused = (params: Record<string, unknown>, field: string) =>
    assert.throws(() => readJobParams('drill', BackupJobParamsSchema, params), (err: unknown) => err instanceof BadRequestError && err.field === field && /parameters of a drill job/.test(err.message), JSON.stringify(params));
  refused({}, '/params/backupId');
  refused({ backupId: 7 }, '/params/backupId');
  refused({ backupId: '' }, '/params/backupId');
  refused({ backupId: 'x', deep: 'yes' }, '/params/deep');
  refused({ backupId: 'x', extra: 1 }, '/params/extra');
});
