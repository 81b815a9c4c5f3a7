import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  collectionOf,
  collectionsOf,
  deliveryAttemptDocSchema,
  deliveryDocSchema,
  disableClient,
  enableClient,
  oauthClientDocSchema,
  organizationDocSchema,
  providerUserDocSchema,
  signingKeyDocSchema,
  syncStateDocSchema,
  usedAssertionDocSchema,
} from '@connect/shared';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser, registerTestClient, type TestApi, type TestClient } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';

// Real processes, FerretDB and a delivery: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * The document types are `z.infer` of one zod schema per collection: this
 * proves those schemas describe what the API and the worker really store (no
 * field missing, none extra, every type right), so the types cannot drift from
 * the data without a failing test.
 */

let stack: DeliveryStack;
let api: TestApi;
let receiver: Receiver;
let token: string;
let registered: TestClient;

beforeAll(async () => {
  receiver = await startReceiver();
  stack = await startDeliveryStack({
    label: 'stored_docs',
    targets: [{ name: 'dictation', url: receiver.url, secrets: ['s-' + randomBytes(8).toString('hex')], timeout_ms: 5000 }],
  });
  ({ api, clinic: registered, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('stored documents match their zod schemas', () => {
  it('a user created then updated, and its deliveries, sync state and attempts, parse strictly', async () => {
    const id = `docs-${Date.now()}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    await eventually(() => expect(receiver.accepted().filter((c) => c.body?.data?.user?.external_provider_id === id).map((c) => c.body?.data?.user?.version)).toContain(2), 30_000);

    const user = await collectionOf(api.models.ProviderUser).findOne({ external_provider_id: id });
    expect(providerUserDocSchema.strict().safeParse(user).error?.issues).toBeUndefined();
    const deliveries = await collectionOf(api.models.Delivery).find({ external_provider_id: id }).toArray();
    expect(deliveries.length).toBeGreaterThanOrEqual(1);
    for (const d of deliveries) expect(deliveryDocSchema.strict().safeParse(d).error?.issues).toBeUndefined();
    const syncs = await collectionOf(api.models.SyncState).find({ user_id: user!._id }).toArray();
    expect(syncs).toHaveLength(1);
    expect(syncStateDocSchema.strict().safeParse(syncs[0]).error?.issues).toBeUndefined();
    const attempts = await collectionOf(api.models.DeliveryAttempt).find({ delivery_id: { $in: deliveries.map((d) => d._id) } }).toArray();
    expect(attempts.length).toBeGreaterThanOrEqual(1);
    for (const a of attempts) expect(deliveryAttemptDocSchema.strict().safeParse(a).error?.issues).toBeUndefined();
  });

  it('the organization, its client (enabled, disabled, enabled again), the stored signing key and a used assertion parse strictly', async () => {
    const { organizations, oauthClients, signingKeys, usedAssertions } = collectionsOf(api.models);
    const org = await organizations.findOne({ _id: registered.organization._id });
    expect(org).not.toBeNull();
    expect(organizationDocSchema.strict().safeParse(org).error?.issues).toBeUndefined();

    // A client of its own, so disabling it leaves the token of the other test alone.
    const other = await registerTestClient(api.models, { name: 'Stored docs, disabled' });
    expect(oauthClientDocSchema.strict().safeParse(await oauthClients.findOne({ _id: other.client._id })).error?.issues).toBeUndefined();
    const disabled = await disableClient(api.models, other.client._id);
    expect(disabled.disabled_at).toBeInstanceOf(Date);
    expect(oauthClientDocSchema.strict().safeParse(await oauthClients.findOne({ _id: other.client._id })).error?.issues).toBeUndefined();
    await enableClient(api.models, other.client._id);
    const enabled = await oauthClients.findOne({ _id: other.client._id });
    expect(enabled).toMatchObject({ enabled: true, disabled_at: null });
    expect(oauthClientDocSchema.strict().safeParse(enabled).error?.issues).toBeUndefined();

    // No TOKEN_SIGNING_KEY in this API's environment: it generated and stored its key.
    const key = await signingKeys.findOne({ _id: 'access-token' });
    expect(key).not.toBeNull();
    expect(signingKeyDocSchema.strict().safeParse(key).error?.issues).toBeUndefined();

    // The token of beforeAll spent one assertion of the registered client.
    const used = await usedAssertions.find({ _id: { $regex: `^${registered.client._id}:` } }).toArray();
    expect(used.length).toBeGreaterThanOrEqual(1);
    for (const u of used) expect(usedAssertionDocSchema.strict().safeParse(u).error?.issues).toBeUndefined();
  });
});
