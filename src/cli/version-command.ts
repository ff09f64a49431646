import type { Command } from 'commander';
import { ApiClient, clientOptions } from '../api/client.ts';
import { BUILD_INFO } from '../build-info.ts';
import { loadClientConfig } from '../config/load.ts';
import type { GlobalOptions } from './context.ts';

const HELP = `
Examples:
  lifeboat version
  lifeboat version --server          # and the daemon's, through the API (the client config or LIFEBOAT_CLIENT__*)
  lifeboat version --server --json`;

/** `lifeboat version`: this CLI's version and Node's; with --server, the daemon's too. */
export function registerVersionCommand(program: Command): void {
  program
    .command('version')
    .description("Print this CLI's version (and the Node.js it runs on); with --server, also the version of the daemon it talks to.")
    .option('--server', "also ask the daemon (GET /v1/status) for its version")
    .option('--json', 'print JSON')
    .addHelpText('after', HELP)
    .action(async (options: { server?: boolean; json?: boolean }, cmd: Command) => {
      const client = { version: BUILD_INFO.version, node: process.version };
      let server: { version: string; node: string; cluster: string } | undefined;
      if (options.server) {
        const status = await new ApiClient(clientOptions(loadClientConfig({ file: cmd.optsWithGlobals<GlobalOptions>().config }))).status();
        server = { version: status.version, node: status.node, cluster: status.cluster };
      }
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ client, ...(server ? { server } : {}) }, null, 2)}\n`);
        return;
      }
      process.stdout.write(`client: lifeboat ${client.version} (Node.js ${client.node})\n`);
      if (server) process.stdout.write(`server: lifeboat ${server.version} on ${server.node}, cluster ${server.cluster}\n`);
    });
}
