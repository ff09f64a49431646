import type { Command } from 'commander';
import { loadConfig } from '../config/load.ts';
import type { GlobalOptions } from './context.ts';
import { Daemon } from '../daemon/daemon.ts';
import { createLogger } from '../log/logger.ts';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('Run the daemon: the HTTPS API, the metrics listener, leader election on etcd, and (on the leader) the backup, prune and drill schedules.')
    .addHelpText('after', `
Run one per control-plane node (the DaemonSet in deploy/). All instances serve the API and
/metrics; the one elected through etcd runs the schedules, and the others answer POSTs with
409 and the leader's name. Every job, scheduled or asked for, runs through one queue, one at a
time. SIGTERM lets the running job finish within daemon.shutdownGraceSeconds, then aborts it
(it cleans up after itself) and resigns leadership.

Settings (see README.md): daemon.schedules.{backup,prune,drill,timezone}, daemon.election,
daemon.stateDir, api.listen, api.tls, api.tokensFile, api.clientCertRoles, metrics.listen.

Examples:
  lifeboat serve --config /etc/lifeboat/config.yaml
  curl -s http://127.0.0.1:9464/metrics | grep lifeboat_backup_last_success
  curl --cacert ca.crt -H "Authorization: Bearer $TOKEN" -X POST https://cp-1:8443/v1/backups`)
    .action(async (_options: unknown, cmd: Command) => {
      const globals = cmd.optsWithGlobals<GlobalOptions>();
      const config = loadConfig({ file: globals.config });
      const log = createLogger(globals.logLevel ?? config.log.level, { cluster: config.cluster, node: config.node });
      const daemon = await Daemon.start({ config, log });
      await new Promise<void>((resolve) => {
        const onSignal = (signal: NodeJS.Signals) => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          void daemon.stop(`received ${signal}`).then(resolve, (err: unknown) => {
            log.error({ err: (err as Error).message }, 'unclean stop');
            resolve();
          });
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
    });
}
