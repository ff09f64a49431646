import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/errors/errors.ts';
import { advertisedApiUrl, apiUrlOf, encodeAdvert, parseAdvert } from '../../src/leader/advert.ts';
import { PausableElection } from '../../src/daemon/pausable-election.ts';

test('the election value: name and API URL, and the plain name an older version wrote', () => {
  const value = encodeAdvert({ node: 'cp-1', apiUrl: 'https://10.0.0.1:8443' });
  assert.equal(value, 'cp-1 https://10.0.0.1:8443', 'an older instance shows it as the leader, readably');
  assert.deepEqual(parseAdvert(value), { node: 'cp-1', apiUrl: 'https://10.0.0.1:8443' });
  assert.deepEqual(parseAdvert('cp-1'), { node: 'cp-1' }, 'an older leader: its name, no URL');
  assert.equal(encodeAdvert({ node: 'cp-1' }), 'cp-1');
  assert.deepEqual(parseAdvert('cp-1 https://[fd00::1]:8443'), { node: 'cp-1', apiUrl: 'https://[fd00::1]:8443' });
  assert.equal(parseAdvert('  '), undefined);
  // What is not an https origin after the last space is part of the name, never a URL to call.
  for (const odd of ['cp 1', 'cp-1 http://10.0.0.1:8443', 'cp-1 https://10.0.0.1:8443/v1', 'cp-1 https://u:p@10.0.0.1:8443', 'cp-1 https://$(HOST_IP):8443']) {
    assert.deepEqual(parseAdvert(odd), { node: odd }, odd);
  }
  assert.equal(apiUrlOf('https://cp-1:8443/'), 'https://cp-1:8443');
  assert.equal(apiUrlOf('https://cp-1:443'), 'https://cp-1', 'the default port is implied');
});

test("this instance's API URL: api.advertiseURL, else the listen address and the bound port, else the node name", () => {
  const base = { listenHost: '0.0.0.0', node: 'cp-1', port: 8443 };
  assert.equal(advertisedApiUrl({ ...base, advertiseURL: 'https://10.0.0.1:8443/' }), 'https://10.0.0.1:8443');
  assert.equal(advertisedApiUrl({ ...base, advertiseURL: 'https://fd00::1:8443' }), 'https://[fd00::1]:8443', 'status.hostIP of an IPv6 node');
  assert.equal(advertisedApiUrl({ ...base, advertiseURL: 'https://[fd00::1]:8443' }), 'https://[fd00::1]:8443');
  assert.equal(advertisedApiUrl(base), 'https://cp-1:8443');
  assert.equal(advertisedApiUrl({ ...base, listenHost: '::' }), 'https://cp-1:8443');
  assert.equal(advertisedApiUrl({ ...base, listenHost: '127.0.0.1', port: 40123 }), 'https://127.0.0.1:40123');
  assert.equal(advertisedApiUrl({ ...base, listenHost: 'fd00::2' }), 'https://[fd00::2]:8443');
  assert.throws(() => advertisedApiUrl({ ...base, advertiseURL: 'https://$(HOST_IP):8443' }), (err: unknown) => err instanceof ConfigError && err.field === '/api/advertiseURL');
});

test("the pausable election passes on the leader's API URL, and none while paused", async () => {
  let url: string | undefined = 'https://10.0.0.2:8443';
  const election = new PausableElection(() => ({ start: () => undefined, stop: async () => undefined, isLeader: () => false, leader: () => 'cp-2', leaderApiUrl: () => url }));
  assert.equal(election.leaderApiUrl(), undefined, 'not started');
  election.start();
  assert.equal(election.leaderApiUrl(), 'https://10.0.0.2:8443');
  url = undefined;
  assert.equal(election.leaderApiUrl(), undefined);
  await election.pause();
  url = 'https://10.0.0.2:8443';
  assert.equal(election.leaderApiUrl(), undefined, 'paused');
});
