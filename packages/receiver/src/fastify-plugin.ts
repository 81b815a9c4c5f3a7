import type { FastifyError, FastifyPluginAsync } from 'fastify';
import { answerCallback, type CallbackReceiverOptions } from './reply-protocol.ts';
import { wholePositive } from './dedupe-stores.ts';
import { usableSecrets, usableTolerance } from './verify-callback.ts';

export interface FastifyReceiverOptions extends CallbackReceiverOptions {
  /** The route, `/callbacks` by default (within the prefix the plugin is registered under). */
  path?: string;
  bodyLimit?: number;
}

const plugin: FastifyPluginAsync<FastifyReceiverOptions> = async (app, options) => {
  usableSecrets(options.secrets, options.scheme ?? 'nabla-connect', 'connectReceiver');
  usableTolerance(options.toleranceSeconds, 'connectReceiver');
  app.removeAllContentTypeParsers();
  const limit = wholePositive(options.bodyLimit, 1024 * 1024, 'bodyLimit', 'connectReceiver');
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: limit }, (_request, body, done) => done(null, body));
  // The same answers as the node:http handler, in the protocol's {error, message} shape: a body
  // over the limit, another method, and a failure of ours (a dedupe store down) without its text.
  app.setErrorHandler((error: FastifyError, _request, reply) => {
    if (error.statusCode === 413) return reply.status(413).type('application/json').send({ error: 'body_too_large', message: `at most ${limit} bytes` });
    return reply.status(500).type('application/json').send({ error: 'internal', message: 'the callback could not be handled' });
  });
  const path = options.path ?? '/callbacks';
  app.post(path, async (request, reply) => {
    const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const answer = await answerCallback(options, { headers: request.headers, rawBody: raw });
    return reply.status(answer.status).type('application/json').send(answer.body);
  });
  app.route({
    method: ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: path,
    handler: async (_request, reply) => reply.status(405).header('allow', 'POST').type('application/json').send({ error: 'method_not_allowed', message: 'callbacks are POSTed' }),
  });
};

/**
 * `app.register(connectReceiver, { secrets, onEvent, dedupe })`: a POST route that
 * verifies and answers callbacks. It is deliberately not wrapped in fastify-plugin:
 * its content-type parsers (every body kept as the raw Buffer the signature covers)
 * stay inside this plugin and leave the application's JSON parsing alone.
 *
 * Typed without naming Fastify's types: `fastify` is an optional peer, and a declaration
 * that imports it would fail a strict TypeScript build of a service that uses only the
 * node:http handler. `app.register` still checks the options against FastifyReceiverOptions
 * (a Fastify instance is assignable to `unknown`).
 */
export const connectReceiver = plugin as ConnectReceiverPlugin;
type ConnectReceiverPlugin = (instance: unknown, options: FastifyReceiverOptions) => Promise<void>;
