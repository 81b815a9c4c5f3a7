/**
 * A real HTTP reverse proxy between an SDK and the API, for tests: it records every
 * request (so a test counts token requests on the wire), can switch upstream (from
 * one API instance to another), and can answer the next matching request itself
 * (a 429 with Retry-After, as a gateway in front of the API would) or drop its connection unanswered.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Seen {
  method: string;
  path: string;
  /** When the request arrived (recorded once answered, so `seen` is in answer order). */
  at: number;
  status: number;
}

export interface Injected {
  match: (method: string, path: string) => boolean;
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** No answer at all: the connection is destroyed once the request is read (a network error; recorded as status 0). */
  reset?: boolean;
}

export interface RecordingProxy {
  origin: string;
  upstream: string;
  seen: Seen[];
  inject(answer: Injected): void;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive', 'content-encoding']);

export async function startRecordingProxy(): Promise<RecordingProxy> {
  const injected: Injected[] = [];
  const proxy: RecordingProxy = {
    origin: '',
    upstream: '',
    seen: [],
    inject: (answer) => void injected.push(answer),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server: Server = createServer((req, res) => void (async () => {
    const arrivedAt = Date.now();
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const record = (status: number) => proxy.seen.push({ method, path: path.split('?')[0]!, at: arrivedAt, status });
    const i = injected.findIndex((a) => a.match(method, path));
    if (i >= 0) {
      const [answer] = injected.splice(i, 1);
      if (answer!.reset) {
        record(0);
        return void req.socket.destroy();
      }
      record(answer!.status);
      res.writeHead(answer!.status, { 'content-type': 'application/problem+json', ...answer!.headers });
      return void res.end(answer!.body ?? JSON.stringify({ type: 'about:blank', title: 'Injected', status: answer!.status }));
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && typeof v === 'string') headers[k] = v;
    try {
      const upstream = await fetch(proxy.upstream + path, { method, headers, body: chunks.length ? Buffer.concat(chunks) : undefined });
      const body = Buffer.from(await upstream.arrayBuffer());
      const out: Record<string, string> = {};
      upstream.headers.forEach((v, k) => {
        if (!HOP_BY_HOP.has(k)) out[k] = v;
      });
      record(upstream.status);
      res.writeHead(upstream.status, out);
      res.end(body);
    } catch {
      record(502);
      res.writeHead(502).end();
    }
  })());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
