import { X509Certificate } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { readField } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { ConfigError, DaemonUnreachableError } from '../errors/errors.ts';

/**
 * Forwarding to the leader. Every instance is behind one Service, so a request for leader-only
 * work often lands on a follower, which sends it on to the leader and answers with the leader's
 * answer. Only a bearer token can travel: the follower sends the caller's Authorization header
 * and the leader authenticates it again (the follower vouches for nobody). A client certificate
 * stays with its TLS connection, so such a request is answered 409 NOT_LEADER with the leader's
 * URL. A forwarded request carries FORWARDED_BY and is never forwarded again: an instance that
 * gets one and does not lead answers 409 itself.
 */
export const FORWARDED_BY = 'lifeboat-forwarded-by';
/** On every API response: the node whose instance answered (the leader's, for a forwarded request). */
export const NODE_HEADER = 'lifeboat-node';

/** The leader's answers worth relaying are small JSON (a job, an error); anything larger is refused. */
export const MAX_FORWARDED_RESPONSE_BYTES = 1024 * 1024;

/** Request headers sent on to the leader; the rest (cookies, hop-by-hop, proxies' own) stay here. */
const REQUEST_HEADERS = ['authorization', 'idempotency-key', 'accept', 'user-agent'] as const;
/** Response headers passed back to the client. */
const RESPONSE_HEADERS = ['content-type', 'location', 'retry-after', 'www-authenticate', 'allow', NODE_HEADER];

export type LeaderRoute =
  | { kind: 'local' }
  | { kind: 'forward'; leader: string; url: string }
  | { kind: 'refuse'; leader: string | undefined; url: string | undefined; reason: string; hint: string };

export interface RouteFacts {
  node: string;
  isLeader: boolean;
  leader: string | undefined;
  leaderUrl: string | undefined;
  /** How the caller authenticated. */
  via: 'token' | 'cert';
  /** The request came from another instance (it carries FORWARDED_BY). */
  forwarded: boolean;
  /** This instance can check the leader's certificate (api.tls.peerCaFile, or a chain in certFile). */
  canForward: boolean;
  method: string;
}

/** Where a request for the leader goes: served here, forwarded, or refused (and why, and what to do instead). */
export function routeToLeader(f: RouteFacts): LeaderRoute {
  if (f.isLeader) return { kind: 'local' };
  const { leader, leaderUrl: url } = f;
  const refuse = (reason: string, hint: string): LeaderRoute => ({ kind: 'refuse', leader, url, reason, hint });
  if (leader === undefined) return refuse('no leader is elected right now', 'retry in a few seconds');
  // Its own key is first but not confirmed (yet, or any more): nobody to forward to.
  if (leader === f.node) return refuse(`its leadership is not confirmed right now`, 'retry in a few seconds');
  const there = url === undefined ? leader : `${leader} at ${url}`;
  if (f.forwarded) return refuse(`${leader} is; a forwarded request is not forwarded again`, `send ${f.method} requests to ${there}`);
  if (f.via === 'cert') {
    return refuse(`${leader} is`, `a request authenticated by a client certificate alone cannot be forwarded (the certificate stays with its connection): send it to ${there}, or authenticate with a bearer token`);
  }
  if (url === undefined) return refuse(`${leader} is`, `send ${f.method} requests to ${leader} (it does not publish its API URL: an older version)`);
  if (!f.canForward) return refuse(`${leader} is`, `send ${f.method} requests to ${there}; or set api.tls.peerCaFile on ${f.node}, so that it can forward them`);
  return { kind: 'forward', leader, url };
}

/** What a follower trusts to check the leader's certificate; undefined when it cannot (then nothing is forwarded). */
export interface PeerTrust {
  ca: string[];
  /** The anchors may be intermediates (the chain of our own certFile): trust them without their root. */
  partialChain: boolean;
  /** Where they come from, for the log. */
  source: string;
}

/**
 * api.tls.peerCaFile (ConfigError when unreadable or without a certificate), else the CA
 * certificates after the leaf in api.tls.certFile, else undefined.
 */
export function peerTrust(tls: Config['api']['tls']): PeerTrust | undefined {
  if (tls.peerCaFile !== undefined) {
    const ca = pemCertificates(readField(tls.peerCaFile, '/api/tls/peerCaFile'));
    if (ca.length === 0) throw new ConfigError('/api/tls/peerCaFile', `${tls.peerCaFile} holds no PEM certificate`);
    return { ca, partialChain: false, source: tls.peerCaFile };
  }
  const chain = pemCertificates(readField(tls.certFile, '/api/tls/certFile')).slice(1).filter(isCa);
  return chain.length === 0 ? undefined : { ca: chain, partialChain: true, source: `the chain in ${tls.certFile}` };
}

/** The PEM certificate blocks of a bundle, in order. */
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function isCa(pem: string): boolean {
  try {
    return new X509Certificate(pem).ca;
  } catch {
    return false;
  }
}

export interface ForwardRequest {
  leader: string;
  /** https://host:port of the leader. */
  url: string;
  method: string;
  /** The path and query, as the client sent them. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The parsed JSON body, when there is one; sent as JSON. */
  body: unknown;
  /** This instance's node name, sent as FORWARDED_BY. */
  from: string;
  /** The client's address, sent as X-Forwarded-For. */
  clientIp: string;
  trust: PeerTrust;
  timeoutMs: number;
  maxResponseBytes?: number;
}

export interface ForwardedResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * Sends one request to the leader over HTTPS, checking its certificate against `trust`, and
 * reads its answer (at most maxResponseBytes, within timeoutMs). Any failure to get an answer is
 * DaemonUnreachableError (502) naming the leader; an answer, whatever its status, is returned.
 */
export function forwardToLeader(r: ForwardRequest): Promise<ForwardedResponse> {
  const limit = r.maxResponseBytes ?? MAX_FORWARDED_RESPONSE_BYTES;
  const headers: Record<string, string> = { [FORWARDED_BY]: r.from, 'x-forwarded-for': r.clientIp };
  for (const name of REQUEST_HEADERS) {
    const value = r.headers[name];
    if (typeof value === 'string') headers[name] = value;
  }
  const payload = r.body === undefined ? undefined : Buffer.from(JSON.stringify(r.body));
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const target = `${r.url}${r.path}`;
  const failed = (why: string, cause?: unknown) =>
    new DaemonUnreachableError(`could not forward ${r.method} ${r.path.split('?')[0] ?? ''} to the leader ${r.leader} at ${r.url}: ${why}`, {
      ...(cause === undefined ? {} : { cause }),
      hint: `retry (the leader may be changing), or send it to ${r.url} directly`,
    });
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const req = httpsRequest(target, {
      method: r.method,
      headers,
      ca: r.trust.ca,
      allowPartialTrustChain: r.trust.partialChain,
      minVersion: 'TLSv1.2',
      // One connection per forwarded request: nothing pooled under another trust.
      agent: false,
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          res.destroy();
          done(() => reject(failed(`its answer is larger than ${limit} bytes`)));
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (err) => done(() => reject(failed(err.message, err))));
      res.on('end', () => {
        const out: Record<string, string> = {};
        for (const name of RESPONSE_HEADERS) {
          const value = res.headers[name];
          if (typeof value === 'string') out[name] = value;
        }
        // An older leader does not name itself; it is the one asked.
        out[NODE_HEADER] ??= r.leader;
        done(() => resolve({ status: res.statusCode ?? 502, headers: out, body: Buffer.concat(chunks) }));
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      done(() => reject(failed(`no answer within ${r.timeoutMs / 1000} s (api.forwardTimeoutSeconds)`)));
    }, r.timeoutMs);
    req.on('error', (err) => done(() => reject(failed(err.message, err))));
    req.end(payload);
  });
}
