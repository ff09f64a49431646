import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';

/**
 * An HTTP proxy in front of an S3 endpoint (RGW) that answers chosen requests itself, to test
 * how a client handles failures. It listens on a free 127.0.0.1 port; the client's endpoint is
 * the proxy's, and the Host header is passed on unchanged so SigV4 signatures still match.
 *
 * `decide` sees each request with its S3 operation and how many times this same request (method,
 * path and query: for UploadPart, the same upload and part number) has arrived, and returns what
 * to do: nothing (forward it), an S3 error answer, a connection reset, or hold it unanswered.
 */
export type S3Operation =
  | 'CreateMultipartUpload'
  | 'UploadPart'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'ListMultipartUploads'
  | 'ListParts'
  | 'ListObjects'
  | 'PutObject'
  | 'GetObject'
  | 'HeadObject'
  | 'DeleteObject'
  | 'Other';

export interface ProxiedRequest {
  operation: S3Operation;
  method: string;
  path: string;
  query: URLSearchParams;
  /** Method, path and sorted query: what makes two arrivals the same request. */
  identity: string;
  /** 1 for the first arrival of this request, 2 for the second, and so on. */
  attempt: number;
  /** The attempt number the AWS SDK itself sends (`amz-sdk-request: attempt=N`), when it does. */
  clientAttempt: number | undefined;
}

export type Fault = { status: number; code: string; message?: string } | 'reset' | 'hold';

export interface SeenRequest extends ProxiedRequest {
  /** The HTTP status the proxy answered itself, `reset`, `hold`, or `forwarded`. */
  outcome: number | 'reset' | 'hold' | 'forwarded';
}

export interface FaultProxy {
  endpoint: string;
  /** Every request, in order of arrival. */
  readonly seen: SeenRequest[];
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

function operationOf(method: string, path: string, q: URLSearchParams): S3Operation {
  const isObject = path.split('/').filter(Boolean).length >= 2; // path style: /bucket/key
  if (method === 'POST' && q.has('uploads')) return 'CreateMultipartUpload';
  if (method === 'POST' && q.has('uploadId')) return 'CompleteMultipartUpload';
  if (method === 'PUT' && q.has('uploadId') && q.has('partNumber')) return 'UploadPart';
  if (method === 'DELETE' && q.has('uploadId')) return 'AbortMultipartUpload';
  if (method === 'GET' && q.has('uploads')) return 'ListMultipartUploads';
  if (method === 'GET' && q.has('uploadId')) return 'ListParts';
  if (method === 'GET' && !isObject) return 'ListObjects';
  if (method === 'PUT' && isObject) return 'PutObject';
  if (method === 'GET') return 'GetObject';
  if (method === 'HEAD' && isObject) return 'HeadObject';
  if (method === 'DELETE' && isObject) return 'DeleteObject';
  return 'Other';
}

function forwardHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !HOP_BY_HOP.has(name)));
}

export async function startFaultProxy(upstream: string, decide: (req: ProxiedRequest) => Fault | undefined): Promise<FaultProxy> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true });
  const arrivals = new Map<string, number>();
  const held = new Set<IncomingMessage>();
  const seen: SeenRequest[] = [];

  const answer = async (req: IncomingMessage, res: ServerResponse, fault: { status: number; code: string; message?: string }) => {
    // Read the body first, as a server that fails after receiving does; the connection stays usable.
    for await (const _ of req) {
      // discard
    }
    const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>${fault.message ?? `injected ${fault.code}`}</Message><RequestId>fault-proxy</RequestId></Error>`;
    res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
    res.end(req.method === 'HEAD' ? undefined : xml);
  };

  const forward = async (req: IncomingMessage, res: ServerResponse) => {
    const upstreamReq = request({
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: forwardHeaders(req.headers),
      agent,
    });
    const responded = new Promise<IncomingMessage>((resolve, reject) => {
      upstreamReq.once('response', resolve);
      upstreamReq.once('error', reject);
    });
    responded.catch(() => undefined); // handled below, whichever side fails first
    try {
      await pipeline(req, upstreamReq);
      const upstreamRes = await responded;
      res.writeHead(upstreamRes.statusCode ?? 502, forwardHeaders(upstreamRes.headers));
      await pipeline(upstreamRes, res);
    } catch {
      upstreamReq.destroy();
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    }
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const sorted = new URLSearchParams([...url.searchParams.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const identity = `${req.method} ${url.pathname}?${sorted.toString()}`;
    const attempt = (arrivals.get(identity) ?? 0) + 1;
    arrivals.set(identity, attempt);
    const sdkAttempt = /attempt=(\d+)/.exec(String(req.headers['amz-sdk-request'] ?? ''))?.[1];
    const proxied: ProxiedRequest = {
      operation: operationOf(req.method ?? 'GET', url.pathname, url.searchParams),
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      identity,
      attempt,
      clientAttempt: sdkAttempt === undefined ? undefined : Number(sdkAttempt),
    };
    const fault = decide(proxied);
    if (fault === undefined) {
      seen.push({ ...proxied, outcome: 'forwarded' });
      void forward(req, res);
    } else if (fault === 'reset') {
      seen.push({ ...proxied, outcome: 'reset' });
      req.socket.destroy();
    } else if (fault === 'hold') {
      seen.push({ ...proxied, outcome: 'hold' });
      held.add(req);
      req.once('close', () => held.delete(req));
    } else {
      seen.push({ ...proxied, outcome: fault.status });
      void answer(req, res, fault).catch(() => res.destroy());
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    seen,
    async close() {
      for (const req of held) req.socket.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
