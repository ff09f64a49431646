import { ConfigError } from '../errors/errors.ts';

/**
 * What a candidate writes in its election key: its identity (the node name) and, since the API
 * forwards leader-only requests, where its API is: `cp-1 https://10.0.0.1:8443`. The URL comes
 * last, after a space, so that an older instance, which shows the value as the leader's name,
 * still names it readably during an upgrade; and a value without a URL (an older leader) is the
 * name alone.
 */
export interface LeaderAdvert {
  node: string;
  /** `https://host:port`, without a trailing slash; absent for a leader that does not say. */
  apiUrl?: string;
}

export function encodeAdvert(advert: LeaderAdvert): string {
  return advert.apiUrl === undefined ? advert.node : `${advert.node} ${advert.apiUrl}`;
}

/** The advert of an election value: the name alone, or the name and the URL after the last space. */
export function parseAdvert(value: string): LeaderAdvert | undefined {
  const text = value.trim();
  if (text === '') return undefined;
  const at = text.lastIndexOf(' ');
  if (at > 0) {
    const apiUrl = apiUrlOf(text.slice(at + 1));
    const node = text.slice(0, at).trim();
    if (apiUrl !== undefined && node !== '') return { node, apiUrl };
  }
  return { node: text };
}

/** `https://host:port` when `text` is an https URL with no path, query or credentials; else undefined. */
export function apiUrlOf(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  // A DNS name, an IPv4 address, or an IPv6 one in brackets; not `$(HOST_IP)` the kubelet did not expand.
  if (!/^([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$|^\[[0-9a-f:.]+\]$/.test(url.hostname)) return undefined;
  return url.origin;
}

/**
 * This instance's API URL for the others: api.advertiseURL when set, else the listen address and
 * the port bound (the node name when the listen address is a wildcard). An IPv6 address is put in
 * brackets, also when the DaemonSet wrote `https://$(HOST_IP):8443` with an IPv6 host IP.
 */
export function advertisedApiUrl(options: { advertiseURL?: string | undefined; listenHost: string; node: string; port: number }): string {
  const url = apiUrlOf(rawApiUrl(options));
  if (url === undefined) {
    throw new ConfigError(options.advertiseURL === undefined ? '/api/listen/host' : '/api/advertiseURL', `${rawApiUrl(options)} is not a usable https://host:port URL for the other instances`, {
      hint: 'set api.advertiseURL to https://<this node\'s address>:<port>',
    });
  }
  return url;
}

function rawApiUrl(options: Parameters<typeof advertisedApiUrl>[0]): string {
  if (options.advertiseURL !== undefined) {
    const authority = options.advertiseURL.replace(/^https:\/\//, '').replace(/\/$/, '');
    const colons = authority.split(':').length - 1;
    if (colons > 1 && !authority.startsWith('[')) {
      // `fd00::1:8443`: the port is the part after the last colon (the DaemonSet's value always has one).
      const at = authority.lastIndexOf(':');
      return `https://[${authority.slice(0, at)}]:${authority.slice(at + 1)}`;
    }
    return `https://${authority}`;
  }
  const wildcard = ['0.0.0.0', '::', '[::]', ''].includes(options.listenHost);
  const host = wildcard ? options.node : options.listenHost;
  const bracketed = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `https://${bracketed}:${options.port}`;
}
