import pino, { type Logger } from 'pino';
import type { LogLevel } from '../config/schema.ts';

/**
 * pino JSON lines on stderr (stdout is for command output), written synchronously so nothing is
 * lost when the CLI exits. Keys and credentials never reach a log call; the redaction list is a
 * second line of defence.
 */
export function createLogger(level: LogLevel, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { name: 'lifeboat', ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['identity', 'identities', '*.identity', '*.identities', 'privateKey', '*.privateKey', 'token', '*.token', 'secretAccessKey', '*.secretAccessKey'], censor: '[redacted]' },
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
