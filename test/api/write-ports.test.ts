import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deactivateProviderUser,
  EmailMismatchError,
  KeyedLock,
  NotFoundError,
  upsertProviderUser,
  type ProviderUserDoc,
  type ProviderUserMetrics,
  type UserEventPublisher,
} from '@connect/shared';
import { startTestApi, type TestApi } from '../support/harness.ts';

/**
 * The write use cases perform their own side effects through injected ports, so
 * any caller (a route, a bulk path, the CLI) gets the event published and the
 * outcome counted without doing anything itself. Called here directly, with no
 * HTTP route, over the real database.
 */

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi({ label: 'ports' });
});
afterAll(async () => api?.close());

function recordingPorts() {
  const published: ProviderUserDoc[] = [];
  const counted: string[] = [];
  const publisher: UserEventPublisher = { publishSoon: (user) => published.push(user) };
  const metrics: ProviderUserMetrics = { upsert: (o) => counted.push(`upsert:${o}`), deactivate: (o) => counted.push(`deactivate:${o}`) };
  return { published, counted, deps: { models: api.models, lock: new KeyedLock(), publisher, metrics } };
}

describe('write use cases publish and count through their ports', () => {
  it('upsert: a change is published once with its event, a no-op and a conflict are not; every outcome counted', async () => {
    const { published, counted, deps } = recordingPorts();
    const org = `org-${randomUUID()}`;
    const body = { provider_email: 'ports@example.com', external_provider_id: 'p-1' };
    await upsertProviderUser(deps, { organizationId: org, body });
    await upsertProviderUser(deps, { organizationId: org, body: { ...body, settings: { speech_locale: 'THAI_TH' } } });
    await upsertProviderUser(deps, { organizationId: org, body: { ...body, settings: { speech_locale: 'THAI_TH' } } });
    await expect(upsertProviderUser(deps, { organizationId: org, body: { ...body, provider_email: 'other@example.com' } })).rejects.toBeInstanceOf(EmailMismatchError);
    expect(published.map((u) => [u.last_event.type, u.version])).toEqual([
      ['user.created', 1],
      ['user.updated', 2],
    ]);
    expect(counted).toEqual(['upsert:created', 'upsert:updated', 'upsert:unchanged', 'upsert:conflict']);
  });

  it('deactivate, deactivate again, reactivate: two events published, four outcomes counted', async () => {
    const { published, counted, deps } = recordingPorts();
    const org = `org-${randomUUID()}`;
    const body = { provider_email: 'leaver@example.com', external_provider_id: 'p-2' };
    await upsertProviderUser(deps, { organizationId: org, body });
    await deactivateProviderUser(deps, { organizationId: org, externalProviderId: 'p-2' });
    const again = await deactivateProviderUser(deps, { organizationId: org, externalProviderId: 'p-2' });
    expect(again.outcome).toBe('unchanged');
    await expect(deactivateProviderUser(deps, { organizationId: org, externalProviderId: 'nobody' })).rejects.toBeInstanceOf(NotFoundError);
    const back = await upsertProviderUser(deps, { organizationId: org, body });
    expect([back.outcome, back.reactivated]).toEqual(['updated', true]);
    expect(published.map((u) => [u.last_event.type, u.version, u.status])).toEqual([
      ['user.created', 1, 'active'],
      ['user.deactivated', 2, 'deactivated'],
      ['user.reactivated', 3, 'active'],
    ]);
    expect(counted).toEqual(['upsert:created', 'deactivate:deactivated', 'deactivate:unchanged', 'deactivate:not_found', 'upsert:reactivated']);
  });

  it("the API's own publisher is the relay (events reach the queue) and its counter is the metric", async () => {
    const org = `org-${randomUUID()}`;
    const { deps } = api;
    const result = await upsertProviderUser(
      { models: deps.models, lock: deps.lock, publisher: deps.publisher, metrics: deps.metrics.writes },
      { organizationId: org, body: { provider_email: 'relay@example.com', external_provider_id: 'p-3' } },
    );
    await deps.relay.drain();
    expect(await deps.relay.publishedAmong([result.user.last_event.id])).toEqual(new Set([result.user.last_event.id]));
    expect((await deps.metrics.upserts.get()).values.find((v) => v.labels.outcome === 'created')?.value).toBeGreaterThanOrEqual(1);
  });
});
