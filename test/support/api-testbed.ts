import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServers, type Servers } from '../../src/api/server.ts';
import { ROLES, tokenLine } from '../../src/api/tokens.ts';
import { resolveConfig } from '../../src/config/load.ts';
import type { Role } from '../../src/config/schema.ts';
import { captureLog, fakeDeps, type Fakes, type LogCapture } from './api-fakes.ts';
import { makeApiPki, type ApiPki } from './api-pki.ts';

/** One token of each role, all in the testbed's tokens file. */
export const TOKENS: Record<Role, { token: string; name: string }> = {
  viewer: { token: 'viewer-secret-token-1', name: 'grafana' },
  operator: { token: 'operator-secret-token-2', name: 'ci' },
  restorer: { token: 'restorer-secret-token-3', name: 'dr-team' },
};

export const bearer = (role: Role) => ({ authorization: `Bearer ${TOKENS[role].token}` });

export interface StartedApi {
  /** Not listening: tests inject requests. */
  servers: Servers;
  fakes: Fakes;
  capture: LogCapture;
  /** The rate limit's clock (milliseconds); tests move it. */
  clock: { now: number };
}

/** A directory with a test PKI and the tokens file, for unit tests of the API over fakes. */
export interface ApiTestbed {
  dir: string;
  pki: ApiPki;
  tokensFile: string;
  /** Both servers over fresh fakes; `api` overrides settings of the api section. */
  start(api?: Record<string, unknown>): Promise<StartedApi>;
  /** Closes every server started, then removes the directory. */
  close(): Promise<void>;
}

export async function apiTestbed(prefix: string): Promise<ApiTestbed> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  const pki = await makeApiPki(path.join(dir, 'pki'));
  const tokensFile = path.join(dir, 'tokens');
  await writeFile(tokensFile, `# API tokens\n${ROLES.map((r) => tokenLine(TOKENS[r].token, r, TOKENS[r].name)).join('\n')}\n`);
  const opened: Servers[] = [];
  return {
    dir,
    pki,
    tokensFile,
    async start(api = {}) {
      const config = resolveConfig({
        api: { listen: { host: '127.0.0.1', port: 0 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile, ...api },
      });
      const capture = captureLog();
      const fakes = fakeDeps(config.api, capture.log);
      const clock = { now: Date.parse('2026-11-24T12:00:00Z') };
      const servers = await createServers(fakes.deps, { now: () => clock.now });
      opened.push(servers);
      return { servers, fakes, capture, clock };
    },
    async close() {
      await Promise.all(opened.map((s) => s.close()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
