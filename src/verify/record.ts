import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { Logger } from 'pino';
import { ArchiveError, CancelledError, describeError, LifeboatError, StoreError } from '../errors/errors.ts';

/**
 * The record of the checks of one backup, kept beside it in the store
 * (`<cluster>/backups/<id>/verification.json`, see ../store/layout.ts) and rewritten by every
 * check: the outcome of that check, when the backup last passed one, and the newest result at
 * each level (`levels`). It holds no secret: ids, levels, times, and an error's stable code and
 * message.
 *
 * "Verified" (what retention protects as the newest verified backup) means: the newest check at
 * the deepest level ever run passed (a drill beats deep beats ciphertext), and no check of any
 * level failed after it. So a ciphertext pass never hides a failed drill, and a backup whose
 * last check failed is not verified, even if an earlier one passed.
 */
const Timestamp = Type.String({ pattern: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.source, description: 'RFC 3339, UTC' });

export const VerificationLevelSchema = Type.Union([
  /** The stored archive's size and sha256 against the manifest, without decrypting. */
  Type.Literal('ciphertext'),
  /** Decrypted, every kit file and the snapshot checked, `etcdutl snapshot status` run. */
  Type.Literal('deep'),
  /** Restored into a throwaway etcd and checked. */
  Type.Literal('drill'),
]);
export type VerificationLevel = Static<typeof VerificationLevelSchema>;

/** The levels from the shallowest to the deepest. */
export const VERIFICATION_LEVELS: readonly VerificationLevel[] = ['ciphertext', 'deep', 'drill'];

const ErrorSchema = Type.Object({ code: Type.String({ minLength: 1 }), message: Type.String() }, { additionalProperties: false });

/** The newest check of one level. */
const LevelResultSchema = Type.Object(
  {
    result: Type.Union([Type.Literal('passed'), Type.Literal('failed')]),
    at: Timestamp,
    error: Type.Optional(ErrorSchema),
  },
  { additionalProperties: false },
);
export type LevelResult = Static<typeof LevelResultSchema>;

export const VerificationRecordSchema = Type.Object(
  {
    backupId: Type.String({ minLength: 1 }),
    level: VerificationLevelSchema,
    result: Type.Union([Type.Literal('passed'), Type.Literal('failed')]),
    /** When the check finished. */
    at: Timestamp,
    durationSeconds: Type.Number({ minimum: 0 }),
    /** Why it failed: the error's stable code and its one-line message. Only when failed. */
    error: Type.Optional(ErrorSchema),
    /** The last check that passed, this one included; absent if none ever did. */
    lastPassedAt: Type.Optional(Timestamp),
    lastPassedLevel: Type.Optional(VerificationLevelSchema),
    /** The newest check of each level that was ever run, this one included (absent in records written before it was kept). */
    levels: Type.Optional(
      Type.Object(
        { ciphertext: Type.Optional(LevelResultSchema), deep: Type.Optional(LevelResultSchema), drill: Type.Optional(LevelResultSchema) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type VerificationRecord = Static<typeof VerificationRecordSchema>;

/** Parses a stored record; ArchiveError naming `key` and the field when it is not one. */
export function parseVerificationRecord(text: string, key: string): VerificationRecord {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ArchiveError(`verification record ${key} is not JSON: ${(err as Error).message}`, { hint: 'run `lifeboat verify` on the backup again to rewrite it' });
  }
  const first = Value.Errors(VerificationRecordSchema, doc).First();
  if (first) {
    throw new ArchiveError(`verification record ${key} is invalid at ${first.path || '/'}: ${first.message}`, {
      hint: 'run `lifeboat verify` on the backup again to rewrite it',
    });
  }
  return doc as VerificationRecord;
}

export function verificationRecordJson(record: VerificationRecord): string {
  return `${JSON.stringify(record, null, 2)}\n`;
}

/** A record of a check that passed. */
export function passedRecord(backupId: string, level: VerificationLevel, at: Date, durationSeconds: number): VerificationRecord {
  return { backupId, level, result: 'passed', at: at.toISOString(), durationSeconds: round3(durationSeconds) };
}

/** A record of a check that failed with `err` (its stable code when it is a LifeboatError). */
export function failedRecord(backupId: string, level: VerificationLevel, at: Date, durationSeconds: number, err: unknown): VerificationRecord {
  const code = err instanceof LifeboatError ? err.code : 'UNEXPECTED';
  const message = err instanceof Error ? err.message : String(err);
  return { backupId, level, result: 'failed', at: at.toISOString(), durationSeconds: round3(durationSeconds), error: { code, message } };
}

/** Where check results are kept (the catalogue). */
export interface VerificationLog {
  recordVerification(record: VerificationRecord): Promise<VerificationRecord>;
}

/**
 * Runs a check of backup `backupId` at `level` and records its result beside the backup: a
 * failure (not a cancellation, which proves nothing either way) is recorded best effort and
 * rethrown; a pass that cannot be recorded is a StoreError, since retention and the catalogue
 * would not know of it. Returns the check's report and the record stored.
 */
export async function checkAndRecord<T>(
  catalog: VerificationLog,
  backupId: string,
  level: VerificationLevel,
  check: () => Promise<T>,
  log: Logger,
): Promise<{ report: T; record: VerificationRecord }> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  let report: T;
  try {
    report = await check();
  } catch (err) {
    if (!(err instanceof CancelledError)) {
      await catalog.recordVerification(failedRecord(backupId, level, new Date(), seconds(), err)).catch((recordErr: unknown) =>
        log.error({ phase: 'verify', backupId, level, err: describeError(recordErr) }, 'could not record the failed check'),
      );
    }
    throw err;
  }
  try {
    return { report, record: await catalog.recordVerification(passedRecord(backupId, level, new Date(), seconds())) };
  } catch (err) {
    throw new StoreError(`backup ${backupId} passed its ${level} check, but the result could not be recorded: ${describeError(err)}`, {
      cause: err,
      hint: 'check the store, then run the check again',
    });
  }
}

/**
 * What retention calls verified: the newest check at the deepest level ever run passed, and no
 * check of any level failed after it. A record without `levels` (written before they were kept)
 * knows only its last check, which must have passed.
 */
export function isVerified(record: VerificationRecord | undefined): boolean {
  if (!record) return false;
  const levels = levelsOf(record);
  const deepest = [...VERIFICATION_LEVELS].reverse().map((l) => levels[l]).find((r) => r !== undefined);
  if (deepest?.result !== 'passed') return false;
  const passedAt = Date.parse(deepest.at);
  return VERIFICATION_LEVELS.every((l) => {
    const newest = levels[l];
    return newest?.result !== 'failed' || Date.parse(newest.at) < passedAt;
  });
}

/** The newest result of each level of `record`: its `levels`, or from an older record only its own check. */
export function levelsOf(record: VerificationRecord): Partial<Record<VerificationLevel, LevelResult>> {
  return record.levels ?? { [record.level]: levelResult(record) };
}

/** `previous`'s results per level (if any) with `record`'s check as the newest of its level. */
export function withLevel(previous: VerificationRecord | undefined, record: VerificationRecord): Partial<Record<VerificationLevel, LevelResult>> {
  return { ...(previous ? levelsOf(previous) : {}), [record.level]: levelResult(record) };
}

function levelResult(record: VerificationRecord): LevelResult {
  return { result: record.result, at: record.at, ...(record.error ? { error: record.error } : {}) };
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
