import type { Command } from 'commander';
import { ApiClient, clientOptions } from '../api/client.ts';
import { BUILD_INFO } from '../build-info.ts';
import { loadClientConfig } from '../config/load.ts';
import type { GlobalOptions } from './context.ts';
import { addOutputOption, output } from './output.ts';

const HELP = `
Examples:
  lifeboat version
  lifeboat version --server          # and the daemon's, through the API (the client config or LIFEBOAT_CLIENT__*)
  lifeboat version --server -o json`;

/** `lifeboat version`: this CLI's version and Node's; with --server, the daemon's too. */
export function registerVersionCommand(program: Command): void {
  const command = program
    .command('version')
    .description("Print this CLI's version (and the Node.js it runs on); with --server, also the version of the daemon it talks to.")
    .option('--server', "also ask the daemon (GET /v1/status) for its version");
  addOutputOption(command, '{client: {version, node}, server?: {version, node, cluster}}')
    .addHelpText('after', HELP)
    .action(async (options: { server?: boolean }, cmd: Command) => {
      const out = output(cmd);
      const client = { version: BUILD_INFO.version, node: process.version };
      let server: { version: string; node: string; cluster: string } | undefined;
      if (options.server) {
        const status = await new ApiClient(clientOptions(loadClientConfig({ file: cmd.optsWithGlobals<GlobalOptions>().config }))).status();
        server = { version: status.version, node: status.node, cluster: status.cluster };
      }
      out.data({ client, ...(server ? { server } : {}) }, () => {
        out.line(`client: lifeboat ${client.version} (Node.js ${client.node})`);
        if (server) out.line(`server: lifeboat ${server.version} on ${server.node}, cluster ${server.cluster}`);
      });
    });
}
