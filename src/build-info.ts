import { readFileSync } from 'node:fs';

/** The running Lifeboat's name and version, from package.json (one level above src/ and dist/). */
export const BUILD_INFO: Readonly<{ name: 'lifeboat'; version: string }> = Object.freeze({
  name: 'lifeboat',
  version: (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version,
});
