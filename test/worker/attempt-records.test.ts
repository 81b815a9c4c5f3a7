import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { deliveryIdOf, type DeliveryAttemptDoc } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Answer, type Receiver } from './callback-receiver.ts';

vi.setConfig({ testTimeout: 60_000 });

/**
 * What a delivery's attempt history keeps (docs/contract.md, `deliveries show`): the time, the
 * duration, the status or the error class, a short message, and never user data or what the
 * receiver answered in its body. Each case's receiver says something it must not keep: a body
 * carrying a secret-looking token and the user's own email back.
 */

const MARKER = 'receiver-body-must-not-be-kept';
let receiver: Receiver;
let stack: DeliveryStack;

/** How the receiver answers each user, by the prefix of its external_provider_id. */
const answers: Record<string, (email: string) => Answer> = {
  ok: (email) => ({ status: 200, body: JSON.stringify({ note: MARKER, echo: email }) }),
  refused: (email) => ({ status: 500, body: JSON.stringify({ error: MARKER, token: 'sk_live_0123456789abcdef', echo: email }) }),
  silent: () => ({ status: 200, hold: true }),
};

beforeAll(async () => {
  receiver = await startReceiver((c) => {
    const id = userOf(c);
    const kind = id.split('-')[0]!;
    // "dropped": the connection is cut before any answer (the receiver's responder throws).
    if (kind === 'dropped') throw new Error('cut');
    return answers[kind]!(c.body.data.user.provider_email as string);
  });
  stack = await startDeliveryStack({
    label: 'attempt_records',
    targets: [target('records', receiver.url, { timeout_ms: 1000 })],
    // One attempt each within the test: the retry waits a minute.
    worker: { policy: { retryScheduleMs: [60_000, 60_000] } },
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

/** A new user whose first callback the receiver answers as `kind` says; its first recorded attempt. */
async function firstAttemptOf(kind: string): Promise<{ attempt: DeliveryAttemptDoc; email: string; id: string }> {
  const { api, token, worker } = stack;
  const id = `${kind}-${randomUUID()}`;
  const email = `${id}@example.com`;
  expect((await postUser(api, token, { provider_email: email, external_provider_id: id })).status).toBe(201);
  const user = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
  const deliveryId = deliveryIdOf(user.last_event!.id, 'records');
  const [attempt] = await eventually(async () => {
    const attempts = await worker.deps.store.attemptsOf(deliveryId);
    return attempts.length > 0 ? attempts : false;
  }, 20_000, 100);
  return { attempt: attempt!, email, id };
}

/** Nothing of the user's or of the receiver's answer in the stored attempt, and a short message. */
function expectNothingKept(attempt: DeliveryAttemptDoc, email: string, id: string) {
  const stored = JSON.stringify(attempt);
  for (const secret of [MARKER, 'sk_live_', email, id]) expect(stored, stored).not.toContain(secret);
  expect(typeof attempt.duration_ms).toBe('number');
  expect(attempt.at).toBeInstanceOf(Date);
  if (attempt.message !== null) expect(attempt.message.length, attempt.message).toBeLessThanOrEqual(200);
}

describe('a delivery attempt keeps the time, the duration, the status or error class and a short message, never user data or the body answered', () => {
  it('2xx with a body: status 200, no error class, no message; the body is not kept', async () => {
    const { attempt, email, id } = await firstAttemptOf('ok');
    expect(attempt).toMatchObject({ status_code: 200, error_class: null, message: null, outcome: 'delivered' });
    expectNothingKept(attempt, email, id);
  });

  it('500 with a body carrying a token and the email: class http, message "HTTP 500"; the body is not kept', async () => {
    const { attempt, email, id } = await firstAttemptOf('refused');
    expect(attempt).toMatchObject({ status_code: 500, error_class: 'http', message: 'HTTP 500', outcome: 'retry' });
    expectNothingKept(attempt, email, id);
  });

  it('no answer within the target\'s timeout: class timeout, no status, message naming the timeout', async () => {
    const { attempt, email, id } = await firstAttemptOf('silent');
    expect(attempt).toMatchObject({ status_code: null, error_class: 'timeout', message: 'timeout after 1000 ms', outcome: 'retry' });
    expectNothingKept(attempt, email, id);
  });

  it('the connection cut before an answer: class network, no status, a network message', async () => {
    const { attempt, email, id } = await firstAttemptOf('dropped');
    expect(attempt).toMatchObject({ status_code: null, error_class: 'network', outcome: 'retry' });
    expect(attempt.message).toMatch(/^network error/);
    expectNothingKept(attempt, email, id);
  });

  it('the worker\'s log lines carry none of the receiver\'s bodies either', () => {
    expect(stack.worker.logs.lines.filter((l) => l.includes(MARKER) || l.includes('sk_live_'))).toEqual([]);
  });
});
