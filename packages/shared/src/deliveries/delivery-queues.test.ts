import { describe, expect, it } from 'vitest';
import { parseDeliveryJob, parseUserEventJob } from './delivery-queues.ts';

const event = (version: number, data: unknown) => ({ id: `evt-${version}`, type: version === 1 ? 'user.created' : 'user.updated', occurred_at: '2026-12-04T00:00:00.000Z', organization_id: 'org-1', version, data });
const user = { external_provider_id: 'ext-1', provider_email: 'a@example.com', status: 'active', deactivated_at: null, a_member_from_a_later_version: { kept: true } };
const job = (over: Record<string, unknown> = {}) => ({ user_id: '0123456789abcdef01234567', target: 'dictation', event: event(2, user), created: event(1, user), ...over });

describe('delivery and events job payloads, as the worker reads them', () => {
  it('a well-formed job parses, the user data carried through untouched (members it does not know included)', () => {
    const parsed = parseDeliveryJob(job({ force: true }));
    expect(parsed).toEqual(job({ force: true }));
    expect(parsed.event.data).toEqual(user);
    expect(parseUserEventJob({ user_id: '0123456789abcdef01234567', event: event(2, user), created: event(1, user) }).event.data.external_provider_id).toBe('ext-1');
  });

  it('fails loudly, naming what is wrong, on a job whose user has no external_provider_id, a bad user id or an unknown event type', () => {
    expect(() => parseDeliveryJob(job({ event: event(2, { provider_email: 'a@example.com' }) }))).toThrow(/external_provider_id/);
    expect(() => parseDeliveryJob(job({ event: event(2, ['not', 'an', 'object']) }))).toThrow(/external_provider_id/);
    expect(() => parseDeliveryJob(job({ user_id: 'not-an-object-id' }))).toThrow(/user_id/);
    expect(() => parseUserEventJob({ user_id: '0123456789abcdef01234567', event: { ...event(2, user), type: 'user.renamed' }, created: event(1, user) })).toThrow(/type/);
  });
});
