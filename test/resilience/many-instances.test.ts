import mongoose from 'mongoose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createModels, registerClient, registerOrganization, SPEECH_LOCALES, type Models } from '@connect/shared';
import { apiOrigin, startEntryPoint, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, rsaKeyPair, signAssertion, uniquePrefix } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';

/*
 * Two API processes and two worker processes over one database and one Redis,
 * driven by three organizations' clients at once.
 *
 * A user's creates race across both instances, and its updates alternate
 * between them, so each instance's cached copy of the user is often stale;
 * that is safe because the database applies the version-conditional update
 * atomically (MongoDB, and our FerretDB build: docs/guarantees.md). The
 * database kind is printed in the output.
 */
console.log(`[many-instances] database: ${inject('mongoKind')}`);

const children: Child[] = [];
const receivers: Receiver[] = [];
let conn: mongoose.Connection;
let models: Models;
let publicBase: string;
const apiOrigins: string[] = [];
let requestsSent = 0;

beforeAll(async () => {
  for (let i = 0; i < 2; i++) receivers.push(await startReceiver());
  // Both instances are one deployment behind one public URL (the token issuer and audience), a fixed
  // name; each binds PORT=0 and logs the port it got.
  publicBase = 'https://connect.many.test';
  const env = {
    MONGO_URL: databaseUrl('many'),
    REDIS_URL: inject('redisUrl'),
    HOST: '127.0.0.1',
    PUBLIC_BASE_URL: publicBase,
    QUEUE_PREFIX: uniquePrefix('many'),
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0',
    DOWNSTREAM_TARGETS: JSON.stringify(receivers.map((r, i) => ({ name: `target-${i}`, url: r.url, secrets: [`secret-${i}`] }))),
    WORKER_SWEEP_INTERVAL_MS: '500',
    WORKER_RETRY_SCHEDULE: '200ms,400ms,800ms,1600ms,2s,2s,2s',
  };
  conn = await mongoose.createConnection(env.MONGO_URL).asPromise();
  models = createModels(conn);
  // The first API creates indexes and the signing key; the second starts once it is up.
  for (let i = 0; i < 2; i++) {
    const api = startEntryPoint('api', { ...env, PORT: '0', LOG_LEVEL: 'info' }); // info: for the "api ready" line with the port
    children.push(api);
    const origin = await apiOrigin(api, 90_000);
    apiOrigins.push(origin);
    await waitFor(async () => (await fetch(`${origin}/readyz`).catch(() => undefined))?.ok, 90_000, `API at ${origin}`);
  }
  for (let i = 0; i < 2; i++) children.push(startEntryPoint('worker', env));
}, 180_000);

afterAll(async () => {
  const errors = children.flatMap((c) => c.stdout.filter((l) => /"level":(50|60)/.test(l)));
  if (errors.length) console.log(`[many-instances] error logs:\n${errors.slice(0, 10).join('\n')}`);
  for (const c of children) c.proc.kill('SIGTERM');
  await Promise.all(children.map((c) => c.exited));
  for (const r of receivers) await r.close();
  await conn?.close();
});

async function tokenFor(clientId: string, key: import('node:crypto').KeyObject): Promise<string> {
  const tokenUrl = `${publicBase}/v1/connect/server/oauth/token`;
  const res = await fetch(`${apiOrigins[1]}/v1/connect/server/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await signAssertion(clientId, key, tokenUrl),
    }),
  });
  return ((await res.json()) as { access_token: string }).access_token;
}

async function post(origin: string, token: string, body: object): Promise<number> {
  requestsSent++;
  const res = await fetch(`${origin}/v1/connect/server/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23' },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
}

describe('Many instances: two APIs and two workers under concurrent load from several clients', () => {
  it('no duplicate users, no 5xx, and every target ends at each user\'s version, never going backwards', async () => {
    const clinics = [];
    for (let i = 0; i < 3; i++) {
      const org = await registerOrganization(models, { name: `Clinic ${i}` });
      const { privateKey, publicKeyPem } = rsaKeyPair();
      const client = await registerClient(models, { organizationId: org._id, publicKeyPem });
      clinics.push({ org, token: await tokenFor(client._id, privateKey) });
    }
    const statuses: number[] = [];
    const USERS = 15;
    const UPDATES = 4;
    await Promise.all(
      clinics.flatMap((clinic) =>
        Array.from({ length: USERS }, async (_, u) => {
          const id = `${clinic.org._id.slice(0, 8)}-${u}`;
          const email = `${id}@example.com`;
          // Three simultaneous identical creates, spread over both instances.
          const creates = await Promise.all([0, 1, 2].map((k) => post(apiOrigins[(u + k) % 2]!, clinic.token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } })));
          statuses.push(...creates);
          expect(creates.filter((s) => s === 201)).toHaveLength(1);
          for (let n = 1; n <= UPDATES; n++) {
            statuses.push(await post(apiOrigins[(u + n) % 2]!, clinic.token, { provider_email: email, external_provider_id: id, settings: { speech_locale: SPEECH_LOCALES[n]! } }));
          }
        }),
      ),
    );
    console.log(`[many-instances] ${requestsSent} POST /users sent to 2 API processes; statuses: ${JSON.stringify(countBy(statuses))}`);
    expect(statuses.every((s) => s === 200 || s === 201)).toBe(true);

    const users = await models.ProviderUser.find({}).lean();
    expect(users).toHaveLength(3 * USERS);
    for (const u of users) expect(u.version).toBe(1 + UPDATES);

    await waitFor(
      () =>
        receivers.every((r) =>
          users.every((u) => maxVersion(r, u.external_provider_id, u.organization_id) === u.version),
        ),
      90_000,
      'every target to reach every user\'s version',
    );
    let delivered = 0;
    for (const r of receivers) {
      for (const u of users) {
        const versions = r
          .accepted()
          .filter((c) => c.body.data.user.external_provider_id === u.external_provider_id && c.body.data.organization_id === u.organization_id)
          .map((c) => c.body.data.version as number);
        delivered += versions.length;
        expect(versions[0]).toBe(1);
        for (let i = 1; i < versions.length; i++) expect(versions[i]!).toBeGreaterThan(versions[i - 1]!);
      }
    }
    console.log(`[many-instances] ${delivered} callbacks accepted by 2 targets for ${users.length} users; lost: 0`);
  }, 240_000);
});

function maxVersion(r: Receiver, externalProviderId: string, organizationId: string): number {
  let max = 0;
  for (const c of r.accepted()) {
    if (c.body.data.user.external_provider_id === externalProviderId && c.body.data.organization_id === organizationId) max = Math.max(max, c.body.data.version);
  }
  return max;
}

function countBy(xs: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}
