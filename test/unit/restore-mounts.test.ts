import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMountPoint, mountPoints } from '../../src/restore/mounts.ts';

test('mount points come from mountinfo with its octal escapes undone; a bind mount on the same filesystem counts', async () => {
  const table = [
    '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '91 22 254:0 /srv/etcd-disk /var/lib/etcd rw,relatime shared:1 - ext4 /dev/vda rw',
    '92 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw',
  ].join('\n');
  assert.deepEqual([...mountPoints(table)], ['/', '/var/lib/etcd', '/mnt/with space']);
  assert.equal(await isMountPoint('/proc'), true, '/proc is a mount point of another filesystem');
  assert.equal(await isMountPoint(path.dirname(fileURLToPath(import.meta.url))), false);
  assert.equal(await isMountPoint('/no/such/dir'), false);
});
