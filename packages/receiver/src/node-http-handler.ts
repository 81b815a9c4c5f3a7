import type { IncomingMessage, ServerResponse } from 'node:http';
import { answerCallback, type CallbackReceiverOptions } from './reply-protocol.ts';
import { wholePositive } from './dedupe-stores.ts';
import { usableSecrets, usableTolerance } from './verify-callback.ts';

export interface NodeHandlerOptions extends CallbackReceiverOptions {
  /** Largest body accepted; 1 MiB by default (a callback is a few hundred bytes). */
  bodyLimit?: number;
}

function send(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  // A 405 says what is allowed (RFC 9110, 15.5.6).
  res.writeHead(status, { 'content-type': 'application/json', ...(status === 405 ? { allow: 'POST' } : {}) });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too_large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        resolve('too_large');
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * A `(req, res)` handler for node:http, and for Express (`app.post('/callbacks',
 * handler)`). The signature covers the exact bytes, so the handler reads the raw
 * body itself; under Express mount it before `express.json()`, or behind
 * `express.raw({ type: '*\/*' })` (a Buffer in `req.body` is used as is).
 */
export function createCallbackHandler(options: NodeHandlerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  usableSecrets(options.secrets, options.scheme ?? 'nabla-connect', 'createCallbackHandler');
  usableTolerance(options.toleranceSeconds, 'createCallbackHandler');
  const limit = wholePositive(options.bodyLimit, 1024 * 1024, 'bodyLimit', 'createCallbackHandler');
  return (req, res) => {
    void (async () => {
      if (req.method !== 'POST') return send(res, 405, { error: 'method_not_allowed', message: 'callbacks are POSTed' });
      const preRead = (req as IncomingMessage & { body?: unknown }).body;
      let raw: Buffer | string | 'too_large';
      if (Buffer.isBuffer(preRead) || typeof preRead === 'string') raw = preRead;
      else if (preRead !== undefined && preRead !== null && typeof preRead === 'object' && Object.keys(preRead).length > 0) {
        // A JSON parser ran first: the exact bytes are gone and no signature can be checked.
        return send(res, 500, { error: 'raw_body_unavailable', message: 'mount the callback handler before any JSON body parser' });
      } else if (req.readableEnded) {
        // Something read the stream first and kept nothing here: waiting for its end would wait forever.
        return send(res, 500, { error: 'raw_body_unavailable', message: 'the request body was read before the callback handler; give it the request unread, or its bytes as a Buffer in req.body' });
      } else raw = await readBody(req, limit);
      if (raw === 'too_large') return send(res, 413, { error: 'body_too_large', message: `at most ${limit} bytes` });
      const reply = await answerCallback(options, { headers: req.headers, rawBody: raw });
      send(res, reply.status, reply.body);
    })().catch(() => {
      if (!res.headersSent) send(res, 500, { error: 'internal', message: 'the callback could not be handled' });
    });
  };
}
