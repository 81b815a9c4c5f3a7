import type { FastifyPluginAsync } from 'fastify';
import { answerCallback, type CallbackReceiverOptions } from './reply-protocol.ts';
import { usableSecrets } from './verify-callback.ts';

export interface FastifyReceiverOptions extends CallbackReceiverOptions {
  /** The route, `/callbacks` by default (within the prefix the plugin is registered under). */
  path?: string;
  bodyLimit?: number;
}

/**
 * `app.register(connectReceiver, { secrets, onEvent, dedupe })`: a POST route that
 * verifies and answers callbacks. It is deliberately not wrapped in fastify-plugin:
 * its content-type parsers (every body kept as the raw Buffer the signature covers)
 * stay inside this plugin and leave the application's JSON parsing alone.
 */
export const connectReceiver: FastifyPluginAsync<FastifyReceiverOptions> = async (app, options) => {
  usableSecrets(options.secrets, options.scheme ?? 'nabla-connect', 'connectReceiver');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: options.bodyLimit ?? 1024 * 1024 }, (_request, body, done) => done(null, body));
  app.post(options.path ?? '/callbacks', async (request, reply) => {
    const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const answer = await answerCallback(options, { headers: request.headers, rawBody: raw });
    return reply.status(answer.status).type('application/json').send(answer.body);
  });
};
