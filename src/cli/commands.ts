import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { KitRole, StoredManifest } from '../archive/manifest.ts';
import { backupCycle, cycleSettings } from '../backup/cycle.ts';
import { generateIdentity, identityFileText } from '../crypto/age.ts';
import { ConfigError, DestinationNotEmptyError } from '../errors/errors.ts';
import { extractBackup } from '../restore/extract.ts';
import { generateSigningKey } from '../signing/keys.ts';
import { backupSigner } from '../signing/trust.ts';
import { describeProvenance, provenanceOf } from '../verify/provenance.ts';
import { checkAndRecord, type VerificationRecord } from '../verify/record.ts';
import { verifyBackup } from '../verify/verify.ts';
import { createContext, loadIdentities, requireIdentities, snapshotSource, type Context, type GlobalOptions } from './context.ts';
import { addOutputOption, formatBytes, output, type Output } from './output.ts';

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

export function registerBackupCommands(program: Command): void {
  addOutputOption(
    program
      .command('backup')
      .description('Take a backup now: snapshot etcd, pack it with the recovery kit, compress, encrypt for the configured age recipients, store it, then commit it by writing its manifest.'),
    'the committed manifest',
  )
    .addHelpText('after', `
The backup is streamed end to end: no temp file holds the snapshot, and memory does not grow with
the database. It exists (shows in 'lifeboat list') only once its manifest is written, after the
stored archive was checked. First, what earlier failed backups left behind is removed (see
'lifeboat cleanup'). After the commit, the backup is copied to secondaryStore if one is
configured, and retention runs if retention.afterBackup is true (see 'lifeboat prune'); if
either fails, the backup stays committed and the failure is printed. Progress is logged as JSON
lines on stderr.

Examples:
  lifeboat backup --config /etc/lifeboat/config.yaml
  lifeboat backup -o json      # the committed manifest`)
    .action(async (_options: unknown, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(globals(cmd));
      const { config } = ctx;
      if (config.encryption.recipients.length === 0) {
        throw new ConfigError('/encryption/recipients', 'no age recipient is configured, so the backup could not be encrypted', {
          hint: 'run `lifeboat keygen --output key.txt` and put the printed age1... recipient in encryption.recipients',
        });
      }
      const signer = backupSigner(ctx.signing);
      await removeLeftovers(ctx);
      const etcd = snapshotSource(ctx);
      try {
        const result = await backupCycle(
          { store: ctx.store, etcd, encrypt: ctx.encrypt, log: ctx.log, now: () => new Date(), signer, previous: () => ctx.catalog.newestLink(), catalog: ctx.catalog, secondary: ctx.secondary },
          cycleSettings(config),
        );
        const { manifest } = result;
        out.data(manifest, () => {
          out.line(`backup ${manifest.backupId} committed: revision ${manifest.etcd.revision}, ${formatBytes(manifest.etcd.dbSize)} database, ${formatBytes(manifest.archive.size)} stored at ${ctx.store.description}/${manifest.archive.key}`);
          if (result.replica) out.line(`second copy: ${result.replica.status} at ${ctx.secondary?.description ?? ''}`);
          if (result.retention) out.line(`retention: kept ${result.retention.kept.length}, deleted ${result.retention.deleted.length}${result.retention.locked.length > 0 ? `, ${result.retention.locked.length} still locked` : ''}`);
        });
        for (const w of result.warnings) process.stderr.write(`lifeboat: warning: ${w.step} failed after the commit (${w.code}): ${w.message}\n`);
      } finally {
        await etcd.close();
      }
    });

  addOutputOption(
    program
      .command('list')
      .description('List the committed backups of this cluster, newest first, with the last check of each (VERIFIED: its level and time, FAILED when it failed, - if never checked) and whether its recovery kit is complete (KIT: complete, or the parts it lacks; a backup that lacks the cluster-configuration cannot be restored into a fresh control plane).'),
    'the stored manifests, each with its last check as "verification" (null if never checked) and the kit roles it lacks as "kitMissing"',
  )
    .addHelpText('after', '\nExamples:\n  lifeboat list --config /etc/lifeboat/config.yaml\n  lifeboat list -o json | jq -r \'.[0].backupId\'')
    .action(async (_options: unknown, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(globals(cmd));
      const { store } = ctx.config;
      // An empty list must mean "no backups", never "looked in the wrong place".
      if (store.kind === 'fs' && !existsSync(store.dir)) {
        throw new ConfigError('/store/fs/dir', `${store.dir} does not exist, so there is no store there to list`, {
          hint: 'check store.fs.dir (and --config); a first backup creates the directory',
        });
      }
      const entries = await ctx.catalog.entries();
      const data = entries.map((e) => ({ ...e.manifest, verification: e.verification ?? null, kitMissing: e.kitMissing, ...(e.futureDated ? { futureDated: true } : {}) }));
      out.data(data, () => {
        if (entries.length === 0) return out.line(`no backups of cluster ${ctx.config.cluster} in ${ctx.store.description}`);
        const rows = entries.map(({ manifest: b, verification, futureDated, kitMissing }) => [b.backupId, futureDated ? `${b.createdAt} (FUTURE: not trusted)` : b.createdAt, b.etcd.revision, formatBytes(b.etcd.dbSize), formatBytes(b.archive.size), formatVerified(verification), formatKit(kitMissing), b.node, b.etcd.memberName]);
        out.table(['ID', 'CREATED', 'REVISION', 'DB', 'STORED', 'VERIFIED', 'KIT', 'NODE', 'MEMBER'], rows);
      });
    });

  addOutputOption(
    program
      .command('show')
      .argument('<id>', 'a backup id, or "latest"')
      .description('Print a backup\'s stored manifest: etcd facts, members, every kit file with its sha256, and the archive\'s size and sha256. JSON unless -o says otherwise (the manifest is the data), -o table for a summary.'),
    'the stored manifest',
    'json',
  )
    .addHelpText('after', '\nExamples:\n  lifeboat show latest\n  lifeboat show latest -o table\n  lifeboat show 20261124T033000.123Z-r12345 -o yaml')
    .action(async (id: string, _options: unknown, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(globals(cmd));
      const manifest = await ctx.catalog.resolve(id);
      out.data(manifest, () => printManifest(out, manifest));
    });

  const verify = program
    .command('verify')
    .argument('<id>', 'a backup id, or "latest"')
    .description('Check a backup. Without an identity: the stored archive\'s size and sha256 against the manifest. With one: decrypt it and check every kit file, the snapshot\'s sha256 trailer, and run `etcdutl snapshot status`. The result, passed or failed, is recorded beside the backup (see `lifeboat list`); retention always keeps the newest backup whose last check passed.')
    .option('-i, --identity <file>', 'age identity file (default: encryption.identityFile); enables the deep check');
  addOutputOption(verify, 'the report, with the recorded check as "verification"')
    .addHelpText('after', '\nExamples:\n  lifeboat verify latest\n  lifeboat verify 20261124T033000.123Z-r12345 --identity /root/lifeboat-key.txt\n  lifeboat verify latest -o json')
    .action(async (id: string, options: { identity?: string }, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(globals(cmd));
      const identities = await loadIdentities(ctx, options.identity);
      const stored = await ctx.catalog.resolve(id);
      const { report, record } = await checkAndRecord(ctx.catalog, stored.backupId, identities ? 'deep' : 'ciphertext', async () => {
        const provenance = await provenanceOf(ctx.catalog, stored.backupId);
        const checked = await verifyBackup(
          { store: ctx.store, decrypt: ctx.decrypt, exec: ctx.exec, log: ctx.log },
          stored,
          { etcdutl: ctx.config.tools.etcdutl, ...(identities ? { identities } : {}) },
        );
        return { ...checked, provenance };
      }, ctx.log);
      out.data({ ...report, verification: record }, () => {
        if (report.level === 'ciphertext') {
          out.line(`backup ${report.backupId}: OK (archive size and sha256 match the manifest; pass --identity for the deep check)`);
        } else {
          const s = report.snapshot!;
          out.line(`backup ${report.backupId}: OK (decrypted; ${report.kitFiles} kit files and the snapshot match; trailer good; etcdutl: revision ${s.status.revision}, ${s.status.totalKey} keys)`);
        }
        out.line(`  ${describeProvenance(report.provenance)}`);
      });
    });

  const extract = program
    .command('extract')
    .argument('<id>', 'a backup id, or "latest"')
    .requiredOption('--to <dir>', 'a new or empty directory to unpack into')
    .option('-i, --identity <file>', 'age identity file (default: encryption.identityFile)')
    .description('Decrypt and unpack a backup into a directory (manifest.json, kit/..., etcd/snapshot.db), checking every hash on the way. Refuses unsafe paths, links and a non-empty directory.');
  addOutputOption(extract, 'the backup id, the directory and what was unpacked')
    .addHelpText('after', '\nExample:\n  lifeboat extract latest --to /root/restore --identity /root/lifeboat-key.txt\n  etcdutl snapshot restore /root/restore/etcd/snapshot.db --data-dir /var/lib/etcd-restored ...')
    .action(async (id: string, options: { to: string; identity?: string }, cmd: Command) => {
      const out = output(cmd);
      const ctx = createContext(globals(cmd));
      const identities = requireIdentities(await loadIdentities(ctx, options.identity), 'extract');
      const stored = await ctx.catalog.resolve(id);
      const report = await extractBackup({ store: ctx.store, decrypt: ctx.decrypt, log: ctx.log }, stored, identities, options.to);
      out.data({ backupId: stored.backupId, to: options.to, ...report }, () =>
        out.line(`backup ${stored.backupId} extracted to ${options.to}: manifest.json, ${report.kitFiles} kit files, etcd/snapshot.db (${formatBytes(report.snapshot.size)}, trailer good)`));
    });

  addOutputOption(
    program
      .command('cleanup')
      .description('Remove what failed backups left behind: archives without a manifest and incomplete writes older than backup.orphanMinAgeSeconds.'),
    'the archives removed ("orphans") and the number of incomplete writes',
  )
    .addHelpText('after', '\nExample:\n  lifeboat cleanup --config /etc/lifeboat/config.yaml')
    .action(async (_options: unknown, cmd: Command) => {
      const out = output(cmd);
      const result = await removeLeftovers(createContext(globals(cmd)));
      out.data(result, () => out.line(`removed ${result.orphans.length} uncommitted archives and ${result.incomplete} incomplete writes`));
    });

  program
    .command('keygen')
    .description('Create a key file with mode 0600. Without --signing: an age identity (private key); its recipient (public key) is printed, for encryption.recipients; keep the identity off the cluster. With --signing: an Ed25519 signing key (PEM) for signing.keyFile, and its public key beside it (<output>.pub, PEM) for signing.publicKeyFiles on hosts that only verify or restore.')
    .requiredOption('-o, --output <file>', 'where to write the private key; must not exist')
    .option('--signing', 'make the Ed25519 key that signs backup manifests instead of an age identity')
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  lifeboat keygen --output /root/lifeboat-key.txt',
        '  # prints age1...; the stock tool reads the same file: age -d -i /root/lifeboat-key.txt ...',
        '  lifeboat keygen --signing --output /root/lifeboat-signing.key',
        '  # writes /root/lifeboat-signing.key and /root/lifeboat-signing.key.pub; stock OpenSSL checks a manifest with the .pub:',
        '  # openssl pkeyutl -verify -pubin -inkey /root/lifeboat-signing.key.pub -rawin -in manifest.json -sigfile manifest.json.sig',
      ].join('\n'),
    )
    .action(async (options: { output: string; signing?: boolean }) => {
      if (options.signing) {
        const pair = generateSigningKey();
        await writeKey(options.output, pair.privatePem, 0o600);
        await writeKey(`${options.output}.pub`, pair.publicPem, 0o644);
        process.stderr.write(`lifeboat: wrote the signing key to ${options.output} (mode 0600) and its public key to ${options.output}.pub; key id ${pair.keyId}:\n`);
        process.stdout.write(`${pair.publicPem.trimEnd()}\n`);
        return;
      }
      const { identity, recipient } = await generateIdentity();
      await writeKey(options.output, identityFileText(identity, recipient, new Date()), 0o600);
      process.stderr.write(`lifeboat: wrote identity to ${options.output} (mode 0600); its recipient is:\n`);
      process.stdout.write(`${recipient}\n`);
    });
}

/** Writes a new key file; never overwrites one. */
async function writeKey(file: string, text: string, mode: number): Promise<void> {
  try {
    await writeFile(file, text, { mode, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new DestinationNotEmptyError(`${file} already exists; refusing to overwrite a key`, { hint: 'choose another --output' });
    }
    throw new ConfigError('--output', `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** What failed backups left behind, older than backup.orphanMinAgeSeconds. */
async function removeLeftovers(ctx: Context) {
  const olderThan = new Date(Date.now() - ctx.config.backup.orphanMinAgeSeconds * 1000);
  const result = await ctx.catalog.cleanup(olderThan);
  ctx.log.info({ phase: 'cleanup', orphans: result.orphans, incomplete: result.incomplete }, 'removed what failed backups left behind');
  return result;
}

/** `show -o table`: the manifest's facts for a person, one per line, and every kit file. */
function printManifest(out: Output, m: StoredManifest): void {
  out.line(`backup     ${m.backupId} of cluster ${m.cluster}, made ${m.createdAt} on ${m.node} (lifeboat ${m.tool.version}), committed ${m.completedAt}`);
  out.line(`etcd       ${m.etcd.version}, member ${m.etcd.memberName} (${m.etcd.endpoint}), revision ${m.etcd.revision}, ${formatBytes(m.etcd.dbSize)} database${m.etcd.keyCount === undefined ? '' : `, ${m.etcd.keyCount} keys`}`);
  out.line(`members    ${m.etcd.members.map((x) => `${x.name}=${x.peerURLs.join(',')}`).join(' ')}`);
  out.line(`archive    ${m.archive.key}: ${formatBytes(m.archive.size)}, sha256 ${m.archive.sha256}, ${m.archive.compression.algorithm}, age for ${m.archive.encryption.recipients.length} recipient(s)`);
  out.line(`previous   ${m.previous ? m.previous.backupId : '-'}`);
  out.table(['KIT FILE', 'ROLE', 'SIZE', 'SHA256'], m.kit.files.map((f) => [f.path, f.role, formatBytes(f.size), f.sha256]));
  for (const missing of m.kit.missing) out.line(`missing    ${missing.path} (${missing.role}): ${missing.reason}`);
}

/** The VERIFIED column: `deep 2026-11-24T03:00Z`, `FAILED deep 2026-11-24T03:00Z`, or `-`. */
export function formatVerified(record: VerificationRecord | undefined): string {
  if (!record) return '-';
  const when = `${record.at.slice(0, 16)}Z`;
  return `${record.result === 'failed' ? 'FAILED ' : ''}${record.level} ${when}`;
}

/** The KIT column: `complete`, or `lacks cluster-configuration` (the roles, comma-separated). */
export function formatKit(missing: readonly KitRole[]): string {
  return missing.length === 0 ? 'complete' : `lacks ${missing.join(',')}`;
}

