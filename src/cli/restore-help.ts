/** The help texts of `lifeboat restore` and its commands: examples, and the same with curl. */

const CONNECT_HELP = `
Where and how: the config file's client section, or the environment:
  LIFEBOAT_CLIENT__URL=https://cp-1:8443   the daemon's API (default https://127.0.0.1:8443)
  LIFEBOAT_CLIENT__CA_FILE=ca.crt          the CA of the daemon's certificate
  LIFEBOAT_CLIENT__TOKEN_FILE=token.txt    a restorer token (lifeboat token create --role restorer), or
  LIFEBOAT_CLIENT__CERT_FILE=me.crt LIFEBOAT_CLIENT__KEY_FILE=me.key   a client certificate mapped to restorer`;

const CURL = 'curl --cacert ca.crt -H "Authorization: Bearer $(cat restorer-token.txt)" -H "Content-Type: application/json"';

export const RESTORE_HELP = `
The safe way to restore every control-plane node in place, from any machine that reaches the daemons:
  lifeboat restore apply --all --backup latest --mode in-place

Step by step, one node (the daemon at client.url):
  lifeboat restore plan --backup latest --mode in-place --dry-run --wait   # restore the snapshot into temp dirs, touch nothing live
  lifeboat restore plan --backup latest --mode in-place                    # prints the plan and its confirmation token
  lifeboat restore apply restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
  lifeboat restore rollback restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
${CONNECT_HELP}`;

export const PLAN_HELP = `${CONNECT_HELP}

Examples:
  lifeboat restore plan --backup latest --mode in-place
  lifeboat restore plan --before 2026-11-24T03:00:00Z --mode in-place --dry-run --wait
  lifeboat restore plan --backup 20261124T033000.123Z-r12345 --mode fresh-control-plane --member cp-new=https://10.0.0.9:2380

The same with curl (201, Location: /v1/restores/<id>):
  ${CURL} -X POST https://cp-1:8443/v1/restores -d '{"backup":"latest","mode":"in-place","dryRun":true}'
  ${CURL} https://cp-1:8443/v1/restores/<id>`;

export const LIST_HELP = `${CONNECT_HELP}

Examples:
  lifeboat restore list
  lifeboat restore list -o json        # with each plan's confirmation token
  ${CURL} https://cp-1:8443/v1/restores`;

export const SHOW_HELP = `${CONNECT_HELP}

Examples:
  lifeboat restore show restore-20261124T033000.123Z-1a2b3c
  lifeboat restore show restore-20261124T033000.123Z-1a2b3c -o yaml
  ${CURL} https://cp-1:8443/v1/restores/restore-20261124T033000.123Z-1a2b3c`;

export const APPLY_HELP = `${CONNECT_HELP}

Examples:
  lifeboat restore apply --all --backup latest --mode in-place
  lifeboat restore apply --all --backup 20261124T033000.123Z-r12345 --daemon cp-1=https://10.0.0.1:8443 --daemon cp-2=https://10.0.0.2:8443 --daemon cp-3=https://10.0.0.3:8443
  lifeboat restore apply restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
  lifeboat restore apply restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --through stop-etcd --wait

If --all fails (a daemon died, a wait timed out), run the same command again: it finds the
restore it started on every member (of the same backup, or to the same point in time) and
resumes each from the step that did not finish. Or roll every member back: lifeboat restore
rollback --all with the same --backup, --before, --to-revision, --to-time or --before-deletion-of.

The same with curl, one node (202, then poll the job; its phase is the running step):
  ${CURL} -X POST https://cp-1:8443/v1/restores/<id>/apply -d '{"confirmationToken":"<token>"}'
  ${CURL} -X POST https://cp-1:8443/v1/restores/<id>/apply -d '{"confirmationToken":"<token>","through":"stop-apiserver"}'
  ${CURL} https://cp-1:8443/v1/jobs/<job id>`;

export const ROLLBACK_HELP = `${CONNECT_HELP}

Examples:
  lifeboat restore rollback restore-20261124T033000.123Z-1a2b3c --token 0123abcd... --wait
  lifeboat restore rollback --all --backup 20261124T033000.123Z-r12345
  lifeboat restore rollback --all --to-time 2026-11-24T14:31:00Z      # the restore to that point

The same with curl:
  ${CURL} -X POST https://cp-1:8443/v1/restores/<id>/rollback -d '{"confirmationToken":"<token>"}'`;
