/**
 * The HTTP limits, in a process of its own:
 * - POST /users: a bare Fastify route that parses the JSON body and answers a fixed JSON body;
 * - POST /oauth/token (when BENCH_MONGO_URL is set): a bare Fastify route doing what the
 *   token endpoint must do and nothing else, with the bare mongodb driver: read the
 *   assertion's issuer, one read of that client (oauth_clients, by _id), verify the RS256
 *   assertion with the client's key (the key object cached per client, as the API caches
 *   it), one insert of the jti into used_assertions (the single-use rule), sign an EdDSA
 *   access token. No rate limit, no schema, no logging, no problem+json.
 * Prints its port, then serves until killed or, when started with an IPC channel, until
 * the channel closes.
 */
import { createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import Fastify from 'fastify';
import { decodeJwt, jwtVerify, SignJWT } from 'jose';
import { MongoClient } from 'mongodb';
import { isMain } from './bench-child.ts';

const ANSWER = {
  provider_email: 'jane.doe@example.com',
  external_provider_id: 'ehr-42',
  settings: { specialty: { kind: 'CARDIOLOGY', other_specialty_name: null }, speech_locale: 'ENGLISH_US', secondary_speech_locale: null },
  created_at: '2026-01-01T00:00:00.000Z',
  updated_at: '2026-01-01T00:00:00.000Z',
  version: 1,
};

/** The API's own checks (apps/api/src/auth/client-assertion.ts): algorithms, skew, lifetime. */
const ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA'];
const SKEW_S = 30;

interface TokenBody {
  client_assertion?: string;
}

export async function serveBareFastify(mongoUrl?: string): Promise<{ port: number; close: () => Promise<void> }> {
  const app = Fastify({ logger: false });
  app.post('/users', async () => ANSWER);
  let mongo: MongoClient | undefined;
  // This route's own URL, known once listening: the assertions' audience and the tokens' issuer.
  let audience = '';
  if (mongoUrl) {
    // The pool size rides in the URL (the bench's one MONGO_POOL_SIZE).
    mongo = await new MongoClient(mongoUrl).connect();
    const db = mongo.db();
    const clients = db.collection<{ _id: string; public_key_pem: string | null; organization_id: string; enabled: boolean }>('oauth_clients');
    const used = db.collection<{ _id: string; expires_at: Date }>('used_assertions');
    const keys = new Map<string, KeyObject>();
    const { privateKey } = generateKeyPairSync('ed25519');
    app.post('/oauth/token', async (request, reply) => {
      const assertion = (request.body as TokenBody | null)?.client_assertion ?? '';
      let iss: string;
      try {
        iss = String(decodeJwt(assertion).iss);
      } catch {
        return reply.status(401).send({ error: 'invalid_client' });
      }
      const client = await clients.findOne({ _id: iss });
      if (!client?.enabled || !client.public_key_pem) return reply.status(401).send({ error: 'invalid_client' });
      let key = keys.get(iss);
      if (!key) keys.set(iss, (key = createPublicKey(client.public_key_pem)));
      let payload;
      try {
        ({ payload } = await jwtVerify(assertion, key, {
          algorithms: ALGORITHMS,
          issuer: iss,
          subject: iss,
          audience,
          clockTolerance: SKEW_S,
          requiredClaims: ['exp', 'iat', 'jti'],
        }));
      } catch {
        return reply.status(401).send({ error: 'invalid_client' });
      }
      try {
        await used.insertOne({ _id: `bare:${iss}:${String(payload.jti)}`, expires_at: new Date((payload.exp! + SKEW_S) * 1000) });
      } catch {
        return reply.status(401).send({ error: 'invalid_client' });
      }
      const now = Math.floor(Date.now() / 1000);
      const accessToken = await new SignJWT({ org_id: client.organization_id, client_id: iss })
        .setProtectedHeader({ alg: 'EdDSA', kid: 'bare', typ: 'at+jwt' })
        .setIssuer(audience)
        .setAudience(audience)
        .setSubject(iss)
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .setJti(randomUUID())
        .sign(privateKey);
      return { access_token: accessToken, token_type: 'Bearer', expires_in: 3600 };
    });
  }
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  audience = `http://127.0.0.1:${port}/oauth/token`;
  return {
    port,
    close: async () => {
      await app.close();
      await mongo?.close();
    },
  };
}

if (isMain(import.meta.url)) {
  const { port } = await serveBareFastify(process.env.BENCH_MONGO_URL);
  process.stdout.write(`${JSON.stringify({ port })}\n`);
  // Started with an IPC channel by the bench: go when the bench goes, even if it dies without stopping us.
  if (process.connected) process.once('disconnect', () => process.exit(0));
}
