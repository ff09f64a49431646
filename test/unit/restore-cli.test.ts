import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorLines, runCli } from '../support/lifeboat.ts';

/** `lifeboat restore ...` as a user meets it before any daemon answers: help and usage errors. */

test('--help on restore and each of its commands teaches it: examples and the curl equivalents', async () => {
  const top = await runCli(['restore', '--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /lifeboat restore apply --all --backup latest --mode in-place/);
  for (const command of ['plan', 'list', 'show', 'apply', 'rollback']) {
    const help = await runCli(['restore', command, '--help']);
    assert.equal(help.code, 0, command);
    assert.match(help.stdout, new RegExp(`Usage: lifeboat restore ${command}`), command);
    assert.match(help.stdout, /Examples:/, command);
    assert.match(help.stdout, /curl --cacert ca\.crt -H "Authorization: Bearer/, command);
  }
  const apply = await runCli(['restore', 'apply', '--help']);
  assert.match(apply.stdout, /run the same command again/);
  // The safe order, however the help is wrapped.
  assert.match(apply.stdout.replace(/\s+/g, ' '), /stop the apiservers everywhere, stop etcd everywhere, restore every member, start etcd and wait for a healthy quorum, start the apiservers, report/);
});

test('usage errors exit 2 with one line that says what to give, before any daemon is asked', async () => {
  const cases: [string[], RegExp][] = [
    [['restore', 'apply'], /give its id .*or --all/],
    [['restore', 'apply', 'restore-20261124T033000.123Z-1a2b3c'], /--token/],
    [['restore', 'apply', '--all'], /give --backup ID \(or latest\), or --before TIME/],
    [['restore', 'apply', '--all', '--backup', 'latest', '--before', '2026-11-24T00:00:00Z'], /give one of --backup, --before, --to-revision, --to-time or --before-deletion-of/],
    [['restore', 'plan', '--mode', 'in-place', '--to-revision', '5', '--to-time', '2026-11-24T00:00:00Z'], /give one of --backup/],
    [['restore', 'apply', '--all', '--backup', 'latest', '--mode', 'fresh-control-plane'], /--all restores in place/],
    [['restore', 'apply', '--all', '--backup', 'latest', '--token', 'abc'], /--all takes no --token/],
    [['restore', 'apply', 'restore-20261124T033000.123Z-1a2b3c', '--all', '--backup', 'latest'], /not a restore id/],
    [['restore', 'apply', 'restore-20261124T033000.123Z-1a2b3c', '--token', 'abc', '--backup', 'latest'], /--backup goes with --all/],
    [['restore', 'apply', '--all', '--backup', 'latest', '--daemon', 'cp-1'], /--daemon cp-1: expected NAME=URL/],
    [['restore', 'apply', '--all', '--backup', 'latest', '--daemon', 'cp-1=http://10.0.0.1:8443'], /expected https:\/\/host:port/],
    [['restore', 'apply', 'x', '--token', 't', '--through', 'everything'], /argument 'everything' is invalid/],
    [['restore', 'plan', '--backup', 'latest'], /required option '--mode <mode>' not specified/],
    [['restore', 'plan', '--backup', 'latest', '--mode', 'in-place', '--wait'], /--wait follows a dry run/],
    [['restore', 'plan', '--backup', 'latest', '--mode', 'in-place', '--member', 'cp-1'], /--member cp-1: expected NAME=URL/],
    [['restore', 'rollback', 'x'], /--token/],
    [['restore', 'rollback', '--all'], /give --backup/],
    [['restore', 'apply', 'restore-20261124T033000.123Z-1a2b3c', '--token', 'abc', '--to-time', '2026-11-24T00:00:00Z'], /--to-time goes with --all/],
    [['restore', 'rollback', 'x', '--token', 't', '--before-deletion-of', '/registry/namespaces/shop'], /--before-deletion-of goes with --all/],
    [['restore', 'rollback', '--all', '--to-revision', '5', '--backup', 'latest'], /give one of --backup, --before, --to-revision/],
  ];
  for (const [argv, message] of cases) {
    const result = await runCli(argv, { LIFEBOAT_CLIENT__URL: 'https://127.0.0.1:1' });
    assert.equal(result.code, 2, `${argv.join(' ')}: ${result.stderr}`);
    const lines = errorLines(result.stderr).filter((l) => l.startsWith('error'));
    assert.equal(lines.length, 1, `${argv.join(' ')}: ${result.stderr}`);
    assert.match(lines[0]!, message, argv.join(' '));
  }
});
