/**
 * The HTTP limit: a bare Fastify route that parses the JSON body and answers a
 * fixed JSON body, in a process of its own. Prints its port, then serves until
 * killed or, when started with an IPC channel, until the channel closes.
 */
import Fastify from 'fastify';
import { isMain } from './bench-child.ts';

const ANSWER = {
  provider_email: 'jane.doe@example.com',
  external_provider_id: 'ehr-42',
  settings: { specialty: { kind: 'CARDIOLOGY', other_specialty_name: null }, speech_locale: 'ENGLISH_US', secondary_speech_locale: null },
  created_at: '2026-01-01T00:00:00.000Z',
  updated_at: '2026-01-01T00:00:00.000Z',
  version: 1,
};

export async function serveBareFastify(): Promise<number> {
  const app = Fastify({ logger: false });
  app.post('/users', async () => ANSWER);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return (app.server.address() as { port: number }).port;
}

if (isMain(import.meta.url)) {
  const port = await serveBareFastify();
  process.stdout.write(`${JSON.stringify({ port })}\n`);
  // Started with an IPC channel by the bench: go when the bench goes, even if it dies without stopping us.
  if (process.connected) process.once('disconnect', () => process.exit(0));
}
