import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { parse } from 'yaml';
import { resolveConfig } from '../../src/config/load.ts';
import { addOutputOption, output, render } from '../../src/cli/output.ts';
import { buildProgram } from '../../src/cli/program.ts';
import { createStore } from '../../src/store/create-store.ts';
import { FAKE_KEY } from '../support/api-fakes.ts';
import { apiTestbed, TOKENS, type ApiTestbed, type StartedApi } from '../support/api-testbed.ts';
import { putBackup } from '../support/backups.ts';
import { runCli } from '../support/lifeboat.ts';
import { SIGNING_CONFIG } from '../support/signing.ts';

/** `-o table|json|yaml` on every command that prints data, the same data in json and yaml. */

let dir: string;
let config: string;
let identityFile: string;
let bed: ApiTestbed;
let api: StartedApi;
const backupIds: string[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-cli-output-'));
  bed = await apiTestbed('lifeboat-cli-output-api-');
  api = await bed.start();
  await api.servers.api.listen({ host: '127.0.0.1', port: 0 });
  const { port } = api.servers.api.server.address() as { port: number };
  identityFile = path.join(dir, 'key.txt');
  await writeFile(identityFile, `${FAKE_KEY.identity}\n`, { mode: 0o600 });
  const tokenFile = path.join(dir, 'token');
  await writeFile(tokenFile, `${TOKENS.restorer.token}\n`);
  const doc = {
    cluster: 'c1',
    node: 'cp-1',
    kit: { hostRoot: dir },
    store: { fs: { dir: path.join(dir, 'store') } },
    secondaryStore: { fs: { dir: path.join(dir, 'copy') } },
    encryption: { recipients: [FAKE_KEY.recipient] },
    signing: SIGNING_CONFIG,
    log: { level: 'silent' },
    client: { url: `https://127.0.0.1:${port}`, caFile: bed.pki.ca.cert, serverName: 'localhost', tokenFile },
  };
  await mkdir(doc.store.fs.dir, { recursive: true });
  const store = createStore(resolveConfig(doc).store);
  for (const at of ['2026-11-23T03:00:00Z', '2026-11-24T03:00:00Z']) backupIds.push((await putBackup(store, 'c1', new Date(at))).backupId);
  config = path.join(dir, 'config.yaml');
  await writeFile(config, JSON.stringify(doc));
});

after(async () => {
  await bed.close();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI in this process, its output captured; usage errors are exit code 2 as in main.ts. */
async function run(...argv: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const program = buildProgram({ writeOut: (s) => (stdout += s), writeErr: (s) => (stderr += s) });
  try {
    await program.parseAsync(['--config', config, ...argv], { from: 'user' });
    return { code: 0, stdout, stderr };
  } catch (err) {
    if (err instanceof CommanderError) return { code: err.exitCode === 0 ? 0 : 2, stdout, stderr };
    throw err;
  }
}

/** The members and their types, all the way down: what two runs of a command that makes something share. */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shape);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shape(v)]));
  return typeof value;
}

/**
 * `argv -o json` parses as JSON; `-o yaml` is the same object; `--json` is `-o json`; the default
 * is for people. A command that makes something (a job, a plan) makes another each run: `makes`
 * compares the runs' shapes (members and types) instead of their values.
 */
async function data(argv: string[], human: RegExp, options: { makes?: boolean } = {}): Promise<unknown> {
  const same = (actual: unknown, expected: unknown, message: string) =>
    options.makes ? assert.deepEqual(shape(actual), shape(expected), message) : assert.deepEqual(actual, expected, message);
  const json = await run(...argv, '-o', 'json');
  assert.equal(json.code, 0, `${argv.join(' ')}: ${json.stderr}`);
  const value = JSON.parse(json.stdout) as unknown;
  const yaml = await run(...argv, '-o', 'yaml');
  assert.equal(yaml.code, 0, yaml.stderr);
  same(parse(yaml.stdout), value, `${argv.join(' ')} -o yaml`);
  assert.throws(() => JSON.parse(yaml.stdout) as unknown, `${argv.join(' ')} -o yaml is YAML, not JSON`);
  const alias = await run(...argv, '--json');
  assert.equal(alias.code, 0, alias.stderr);
  same(JSON.parse(alias.stdout), value, `${argv.join(' ')} --json`);
  const table = await run(...argv);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, human, `${argv.join(' ')} for people`);
  assert.throws(() => JSON.parse(table.stdout) as unknown, `${argv.join(' ')} without -o is not JSON`);
  return value;
}

const keysOf = (value: unknown) => Object.keys(value as object).sort();

test('render: json and yaml of the same value parse to the same object', () => {
  const value = { id: '20261124T030000.000Z-r1', revision: '0012', yes: 'yes', at: '2026-11-24T03:00:00Z', n: 1.5, none: null, list: [{ a: true }], skipped: undefined };
  const json = JSON.parse(render('json', value)) as unknown;
  assert.deepEqual(parse(render('yaml', value)), json);
  assert.deepEqual(json, { id: '20261124T030000.000Z-r1', revision: '0012', yes: 'yes', at: '2026-11-24T03:00:00Z', n: 1.5, none: null, list: [{ a: true }] });
});

test('-o takes table, json or yaml; another value is an error naming the option and the formats; --json is -o json, an explicit -o wins', async () => {
  const printed: unknown[] = [];
  const parseWith = async (...argv: string[]) => {
    const cmd = addOutputOption(new Command('x').exitOverride().configureOutput({ writeOut: () => undefined, writeErr: () => undefined }), 'the data')
      .action((_o: unknown, c: Command) => output(c).data({ argv }, () => printed.push('table')));
    await cmd.parseAsync(argv, { from: 'user' });
    return cmd.opts<{ output: string }>().output;
  };
  assert.equal(await parseWith(), 'table');
  assert.equal(await parseWith('-o', 'yaml'), 'yaml');
  assert.equal(await parseWith('--output', 'json'), 'json');
  assert.equal(await parseWith('--json'), 'json');
  assert.equal(await parseWith('--json', '-o', 'yaml'), 'yaml');
  await assert.rejects(parseWith('-o', 'xml'), (err: unknown) =>
    err instanceof CommanderError && err.code === 'commander.invalidArgument' && /'-o, --output <format>' argument 'xml' is invalid\. Allowed choices are table, json, yaml/.test(err.message));
  const cli = await runCli(['version', '--output', 'csv']);
  assert.equal(cli.code, 2);
  assert.match(cli.stderr, /option '-o, --output <format>' argument 'csv' is invalid\. Allowed choices are table, json, yaml\./);
});

test('every command that prints data takes -o (documented in --help) and the hidden --json', () => {
  const leaves: Command[] = [];
  const walk = (cmd: Command) => (cmd.commands.length === 0 ? leaves.push(cmd) : cmd.commands.forEach(walk));
  walk(buildProgram());
  const path = (cmd: Command): string => (cmd.parent?.parent ? `${path(cmd.parent)} ${cmd.name()}` : cmd.name());
  // They print a key, a token, a shell script, or run as the daemon.
  const noData = new Set(['keygen', 'token create', 'completion', 'serve']);
  const withOutput = leaves.filter((c) => !noData.has(path(c)));
  assert.ok(withOutput.length >= 20, withOutput.map(path).join(', '));
  for (const cmd of withOutput) {
    const option = cmd.options.find((o) => o.long === '--output');
    assert.deepEqual([option?.short, option?.argChoices], ['-o', ['table', 'json', 'yaml']], path(cmd));
    assert.match(cmd.helpInformation(), /-o, --output <format>/, path(cmd));
    const json = cmd.options.find((o) => o.long === '--json');
    assert.ok(json?.hidden, `${path(cmd)} keeps --json, hidden`);
  }
});

test('store commands: list, show, verify, prune, cleanup, replicate and changes log print the same data as json and yaml', async () => {
  const listed = await data(['list'], /^ID\s+CREATED/) as { backupId: string; verification: unknown; kitMissing: unknown }[];
  assert.deepEqual(listed.map((b) => b.backupId), [...backupIds].reverse());
  assert.ok(listed.every((b) => 'verification' in b && Array.isArray(b.kitMissing)));

  // show prints the manifest itself unless told otherwise.
  const shown = JSON.parse((await run('show', 'latest')).stdout) as { backupId: string; archive: unknown };
  assert.equal(shown.backupId, backupIds[1]);
  assert.deepEqual(JSON.parse((await run('show', 'latest', '-o', 'json')).stdout), shown);
  assert.deepEqual(parse((await run('show', 'latest', '-o', 'yaml')).stdout), shown);
  assert.match((await run('show', 'latest', '-o', 'table')).stdout, new RegExp(`^backup\\s+${backupIds[1]} of cluster c1`));

  const verified = await data(['verify', backupIds[0]!], /OK \(archive size and sha256 match/, { makes: true }) as { backupId: string; level: string; verification: { result: string } };
  assert.deepEqual([verified.backupId, verified.level, verified.verification.result], [backupIds[0], 'ciphertext', 'passed']);

  const pruned = await data(['prune', '--dry-run'], /^dry run: would delete/) as { dryRun: boolean; kept: { id: string }[] };
  for (const member of ['deleted', 'dryRun', 'failed', 'kept', 'locked']) assert.ok(member in pruned, member);
  assert.equal(pruned.dryRun, true);
  assert.deepEqual(pruned.kept.map((k) => k.id).sort(), [...backupIds].sort());

  assert.deepEqual(await data(['cleanup'], /^removed 0 uncommitted archives/), { orphans: [], incomplete: 0 });

  type Copied = { source: string; target: string; copied: { id: string }[]; present: string[]; failed: unknown[] };
  const first = parse((await run('replicate', '-o', 'yaml')).stdout) as Copied;
  assert.deepEqual(first.copied.map((c) => c.id).sort(), [...backupIds].sort());
  const again = await data(['replicate'], /0 copied .*, 2 already there, 0 failed/) as Copied;
  assert.deepEqual(keysOf(again), ['copied', 'failed', 'present', 'source', 'target']);
  assert.deepEqual(again.present.sort(), [...backupIds].sort());

  assert.deepEqual(await data(['changes', 'log', '--identity', identityFile], /0 event\(s\) from 0 of 0 segment\(s\)/), { events: [], gaps: [] });
});

test('daemon commands: status, version --server, trigger, jobs print the same data as json and yaml', async () => {
  const status = await data(['status'], /^daemon\s+node-a/) as { node: string; leader: { self: boolean }; newestBackup: { manifest: { backupId: string } } };
  assert.equal(status.node, 'node-a');
  assert.equal(status.leader.self, true);
  assert.equal(status.newestBackup.manifest.backupId, api.fakes.backups.entries[0]!.manifest.backupId);

  const version = await data(['version', '--server'], /^client: lifeboat/) as { client: { version: string }; server: { version: string; cluster: string } };
  assert.deepEqual(version.server, { version: '9.9.9-test', node: 'node-a', cluster: 'test' });

  const submitted = await data(['trigger', 'backup'], /backup job job-/, { makes: true }) as { job: { id: string; kind: string }; created: boolean };
  assert.equal(submitted.job.kind, 'backup');
  const verify = await data(['trigger', 'verify', 'latest'], /verify job job-/, { makes: true }) as { job: { kind: string; params: { backupId: string } } };
  assert.equal(verify.job.kind, 'verify');

  const jobs = await data(['jobs'], /^ID\s+KIND\s+STATE/) as { id: string }[];
  assert.ok(jobs.some((j) => j.id === submitted.job.id));
  const one = await data(['jobs', submitted.job.id], /^job\s+job-/) as { id: string; state: string };
  assert.deepEqual([one.id, one.state], [submitted.job.id, 'queued']);
});

test('restore commands: plan, list, show and apply print the same data as json and yaml', async () => {
  const planned = await data(['restore', 'plan', '--backup', 'latest', '--mode', 'in-place'], /^restore\s+restore-/, { makes: true }) as { plan: { id: string; confirmationToken: string } };
  const { id, confirmationToken } = planned.plan;
  const listed = await data(['restore', 'list'], /^ID\s+STATE\s+MODE/) as { plan: { id: string }; state: string }[];
  assert.ok(listed.some((r) => r.plan.id === id && r.state === 'planned'));
  const shown = await data(['restore', 'show', id], /^state\s+planned/m) as { plan: { id: string }; journal: unknown; state: string };
  assert.deepEqual(keysOf(shown), ['journal', 'plan', 'state']);
  const applied = await data(['restore', 'apply', id, '--token', confirmationToken], /restore job job-/, { makes: true }) as { job: { kind: string }; created: boolean };
  assert.equal(applied.job.kind, 'restore');
});
