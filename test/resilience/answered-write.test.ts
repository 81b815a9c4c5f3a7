/**
 * A request answered 503 at the API's deadline whose handler is still running (a database that
 * froze, then thawed): the caller was told to retry, and may have made another write meanwhile.
 * A write of the answered request landing after that one would put back what it replaced (a
 * chaos run saw it 20 times in 6 minutes of FerretDB freezes). From the answer on, the handler
 * sends no write (WriteAbandonedError), and a write-first update it sent before the answer lands
 * only on a user last written before the request arrived (docs/guarantees.md, "No lost update").
 *
 * Real FerretDB (or MongoDB); the upsert and deactivation are called as the API's route calls
 * them, with the request's `answered` and `receivedAt`.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deactivateProviderUser, KeyedLock, RecentUsers, upsertProviderUser, WriteAbandonedError, type ProviderUserDoc } from '@connect/shared';
import { startTestApi, type TestApi } from '../support/harness.ts';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi({ label: 'answered_write' });
});
afterAll(async () => api?.close());

const publisher = { publishSoon: () => undefined };
const stored = (organizationId: string, id: string) => api.models.ProviderUser.findOne({ organization_id: organizationId, external_provider_id: id }).lean();

async function userWithLaterWrite() {
  const organizationId = `org-${randomUUID()}`;
  const body = { provider_email: `${randomUUID()}@example.com`, external_provider_id: `ans-${randomUUID()}`, settings: { speech_locale: 'ENGLISH_US' as const } };
  const created = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, body });
  const receivedAt = new Date();
  // Another write of the user, made (and answered) after the request below arrived: the caller's own, after its 503.
  await new Promise((r) => setTimeout(r, 20));
  const later = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, body: { ...body, settings: { speech_locale: 'FRENCH_FR' } } });
  expect(later.user.version).toBe(2);
  return { organizationId, body, created: created.user, receivedAt };
}

describe('a write whose request was answered at the deadline', () => {
  it('read path: its copy of the user is stale, its version-conditional write loses, and once answered it does not read again and write over the later write', async () => {
    const { organizationId, body, created, receivedAt } = await userWithLaterWrite();
    // The API process that made the first write still holds version 1 (its cache of recent users).
    const recent = new RecentUsers();
    recent.set(RecentUsers.keyOf(organizationId, body.external_provider_id), created);
    let checks = 0;
    // Not answered when it took its turn and sent its first write; answered by the time that write lost.
    const answered = () => checks++ >= 2;
    const stale = { ...body, settings: { speech_locale: 'THAI_TH' as const } };
    const outcome = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), recent, publisher }, { organizationId, body: stale, answered, receivedAt }).then(
      (r) => r.outcome,
      (err: unknown) => err,
    );
    expect(outcome).toBeInstanceOf(WriteAbandonedError);
    const user = (await stored(organizationId, body.external_provider_id))!;
    expect([user.version, user.settings?.speech_locale]).toEqual([2, 'FRENCH_FR']);
  });

  it('write-first update sent before the answer and applied after the later write: it does not match (the user was written after the request arrived), and the read path, answered by then, writes nothing', async () => {
    const { organizationId, body, receivedAt } = await userWithLaterWrite();
    let checks = 0;
    const answered = () => checks++ >= 1;
    const stale = { ...body, settings: { speech_locale: 'THAI_TH' as const } };
    const outcome = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), recent: new RecentUsers(100, 'write'), publisher }, { organizationId, body: stale, answered, receivedAt }).then(
      (r) => r.outcome,
      (err: unknown) => err,
    );
    expect(outcome).toBeInstanceOf(WriteAbandonedError);
    const user = (await stored(organizationId, body.external_provider_id))!;
    expect([user.version, user.settings?.speech_locale]).toEqual([2, 'FRENCH_FR']);
  });

  it('not answered: the same stale requests still apply on top of the later write, as the next version (a concurrent request is linearised after it)', async () => {
    const { organizationId, body, created, receivedAt } = await userWithLaterWrite();
    const recent = new RecentUsers();
    recent.set(RecentUsers.keyOf(organizationId, body.external_provider_id), created);
    const stale = { ...body, settings: { speech_locale: 'THAI_TH' as const } };
    const result = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), recent, publisher }, { organizationId, body: stale, answered: () => false, receivedAt });
    expect([result.outcome, result.user.version]).toEqual(['updated', 3]);
    const writeFirst = await upsertProviderUser({ models: api.models, lock: new KeyedLock(), recent: new RecentUsers(100, 'write'), publisher }, { organizationId, body: { ...body, settings: { speech_locale: 'GERMAN_DE' } }, answered: () => false, receivedAt });
    expect([writeFirst.outcome, writeFirst.user.version]).toEqual(['updated', 4]);
  });

  it('a request that takes its turn after its answer (held behind writes of the same user) sends nothing: no create, no deactivation', async () => {
    const organizationId = `org-${randomUUID()}`;
    const id = `ans-${randomUUID()}`;
    const create = upsertProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, body: { provider_email: `${id}@example.com`, external_provider_id: id }, answered: () => true });
    await expect(create).rejects.toBeInstanceOf(WriteAbandonedError);
    expect(await stored(organizationId, id)).toBeNull();
    await upsertProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, body: { provider_email: `${id}@example.com`, external_provider_id: id } });
    await expect(deactivateProviderUser({ models: api.models, lock: new KeyedLock(), publisher }, { organizationId, externalProviderId: id, answered: () => true })).rejects.toBeInstanceOf(WriteAbandonedError);
    const user = (await stored(organizationId, id)) as ProviderUserDoc;
    expect([user.version, user.status ?? 'active']).toEqual([1, 'active']);
  });
});
