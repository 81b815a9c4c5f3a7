/**
 * A downstream service for tests: a real node:http server on 127.0.0.1 that
 * records every callback (raw body bytes, headers, arrival time, what it answered)
 * and answers whatever the test's responder says.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedCallback {
  n: number;
  /** The request's path (targets on one receiver told apart). */
  path: string;
  at: number;
  headers: IncomingHttpHeaders;
  raw: string;
  body: any;
  /** Set once the answer was written; null while held or when the sender went away first. */
  answered: number | null;
  answeredAt: number | null;
}

/** The external_provider_id of the user a callback is about. */
export const userOf = (c: ReceivedCallback): string => c.body?.data?.user?.external_provider_id;

/**
 * The receiver's side of docs/contract.md (Events), written apart from the worker's signer and from
 * @connect/receiver: hex HMAC-SHA256 over timestamp + raw body; any listed signature, `sha256=` or not.
 */
export function nablaSignatureVerifies(c: ReceivedCallback, secret: string): boolean {
  const timestamp = String(c.headers['x-nabla-connect-timestamp']);
  const expected = createHmac('sha256', secret).update(timestamp + c.raw).digest();
  return String(c.headers['x-nabla-connect-signature'])
    .split(',')
    .map((s) => Buffer.from(s.replace(/^sha256=/, ''), 'hex'))
    .some((sig) => sig.length === expected.length && timingSafeEqual(sig, expected));
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Never answer (until the sender gives up or the receiver closes). */
  hold?: boolean;
  /** The response body, instead of `{"request_uuid"}`. */
  body?: string;
}

export type Responder = (req: ReceivedCallback) => Answer | Promise<Answer>;

export interface Receiver {
  url: string;
  received: ReceivedCallback[];
  /** Callbacks answered 2xx: what the downstream service has accepted. */
  accepted(): ReceivedCallback[];
  respond: Responder;
  close(): Promise<void>;
}

export async function startReceiver(respond: Responder = () => ({ status: 200 })): Promise<Receiver> {
  const received: ReceivedCallback[] = [];
  const held = new Set<() => void>();
  const receiver: Receiver = {
    url: '',
    received,
    accepted: () => received.filter((r) => r.answered !== null && r.answered >= 200 && r.answered < 300),
    respond,
    close: () =>
      new Promise<void>((resolve) => {
        for (const release of held) release();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    // A responder that throws drops the connection (the sender sees a network error) instead of an unhandled rejection.
    req.on('end', () => void handle().catch((err: Error) => res.destroy(err)));
    const handle = async () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: any;
      try {
        body = JSON.parse(raw);
      } catch {
        body = undefined;
      }
      const rec: ReceivedCallback = { n: received.length + 1, path: req.url ?? '', at: Date.now(), headers: req.headers, raw, body, answered: null, answeredAt: null };
      received.push(rec);
      const answer = await receiver.respond(rec);
      if (answer.hold) {
        await new Promise<void>((resolve) => {
          const release = () => resolve();
          held.add(release);
          res.on('close', release);
        });
        return;
      }
      if (answer.delayMs) await new Promise((r) => setTimeout(r, answer.delayMs));
      if (res.destroyed) return;
      res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
      res.end(answer.body ?? JSON.stringify({ request_uuid: body?.request_uuid }), () => {
        rec.answered = answer.status;
        rec.answeredAt = Date.now();
      });
    };
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/callbacks`;
  return receiver;
}

/**
 * Polls until `check` stops throwing (vitest `expect` inside) and does not return
 * `false` (a boolean predicate saying "not yet"), then returns its value; at the
 * deadline it rethrows the last error, or throws when the predicate stayed false.
 */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 100): Promise<Exclude<T, false>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let failure: unknown;
    try {
      const value = await check();
      if (value !== false) return value as Exclude<T, false>;
      failure = new Error(`still false after ${timeoutMs} ms`);
    } catch (err) {
      failure = err;
    }
    if (Date.now() > deadline) throw failure;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
