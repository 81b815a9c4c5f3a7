/**
 * One round of the network-fault tests: while a fault is on, integrators keep
 * calling the API (creates, updates, reads); each answer is checked as it comes
 * (2xx, or a clean 503 problem+json with Retry-After, within a bound, never a
 * hang); once the fault is gone, what was refused is sent again, as a client
 * honouring Retry-After would, and every user's final version must reach every
 * target, in per-user order, with nothing accepted lost. Figures are printed for
 * the closing note.
 */
import { expect } from 'vitest';
import type { Models } from '@connect/shared';
import { http, signAssertion, type TestApi, type TestClient } from '../support/harness.ts';
import { eventually, sleep, type Receiver } from '../worker/callback-receiver.ts';
import type { FaultName, Proxy } from './toxiproxy.ts';

/** No answer may take longer than this: far above the API's own deadline, so only a hang trips it. */
export const ANSWER_BOUND_MS = 30_000;

export interface Answer {
  kind: 'create' | 'update' | 'read' | 'token';
  user: string;
  status: number;
  ms: number;
  retryAfter: string | null;
  contentType: string | null;
  problemType?: string;
  version?: number;
}

export interface TrackedUser {
  id: string;
  email: string;
  /** Updates sent so far (each one changes the user). */
  steps: number;
  /** Highest version the API answered 2xx for. */
  acceptedVersion: number;
  /** The last body the API accepted or refused, to send again after a refusal. */
  pending?: object;
}

export function newUsers(label: string, n: number): TrackedUser[] {
  const stamp = Date.now().toString(36);
  return Array.from({ length: n }, (_, i) => {
    const id = `${label}-${i}-${stamp}`;
    return { id, email: `${id}@example.com`, steps: 0, acceptedVersion: 0 };
  });
}

function bodyFor(u: TrackedUser): object {
  return u.acceptedVersion === 0 && u.steps === 0
    ? { provider_email: u.email, external_provider_id: u.id }
    : { provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: `step ${u.steps}` } } };
}

async function call(api: TestApi, token: string, kind: Answer['kind'], u: TrackedUser, body?: object): Promise<Answer> {
  const started = Date.now();
  const headers = { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' };
  let res;
  try {
    res =
      kind === 'read'
        ? await http(`${api.baseUrl}/users/${encodeURIComponent(u.id)}`, { headers, signal: AbortSignal.timeout(ANSWER_BOUND_MS) })
        : await http(`${api.baseUrl}/users`, {
            method: 'POST',
            headers: { ...headers, 'content-type': 'application/json' },
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(ANSWER_BOUND_MS),
          });
  } catch (err) {
    // A hang (our bound) or a connection the API dropped: both break the contract.
    return { kind, user: u.id, status: 0, ms: Date.now() - started, retryAfter: null, contentType: null, problemType: (err as Error).name };
  }
  return {
    kind,
    user: u.id,
    status: res.status,
    ms: Date.now() - started,
    retryAfter: res.headers.get('retry-after'),
    contentType: res.headers.get('content-type'),
    problemType: res.status >= 400 ? res.body?.type : undefined,
    version: res.status < 300 ? res.body?.version : undefined,
  };
}

/** A token request, as the sample client makes it. */
async function tokenCall(api: TestApi, c: TestClient): Promise<Answer> {
  const started = Date.now();
  const assertion = await signAssertion(c.client._id, c.privateKey, api.audience);
  try {
    const res = await http(api.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }),
      signal: AbortSignal.timeout(ANSWER_BOUND_MS),
    });
    return { kind: 'token', user: '-', status: res.status, ms: Date.now() - started, retryAfter: res.headers.get('retry-after'), contentType: res.headers.get('content-type'), problemType: res.body?.error };
  } catch (err) {
    return { kind: 'token', user: '-', status: 0, ms: Date.now() - started, retryAfter: null, contentType: null, problemType: (err as Error).name };
  }
}

/**
 * 2xx, or a 503 with a whole-second Retry-After: problem+json of type
 * service-unavailable, or on the token endpoint RFC 6749's `temporarily_unavailable`.
 */
export function expectCleanAnswer(a: Answer): void {
  const what = `${a.kind} ${a.user}: ${a.status} after ${a.ms} ms (${a.problemType ?? ''})`;
  if (a.status === 200 || a.status === 201) return;
  expect(a.status, what).toBe(503);
  if (a.kind === 'token') {
    expect(a.contentType, what).toMatch(/^application\/json/);
    expect(a.problemType, what).toBe('temporarily_unavailable');
    expect(a.retryAfter, what).toMatch(/^[1-9]\d*$/);
    return;
  }
  expect(a.contentType, what).toMatch(/^application\/problem\+json/);
  expect(a.problemType, what).toMatch(/\/service-unavailable$/);
  expect(a.retryAfter, what).toMatch(/^[1-9]\d*$/);
}

export interface Traffic {
  answers: Answer[];
}

/**
 * Sends, all at once: a write for every user (a create the first time, then an
 * update), and a read of every user that exists. Records each answer and what was accepted.
 */
export async function sendRound(api: TestApi, token: string, users: TrackedUser[], traffic: Traffic): Promise<Answer[]> {
  const calls = users.flatMap((u) => {
    // Reads only of users the API already answered for: a read racing the create may rightly be a 404.
    const read = u.acceptedVersion > 0 ? [call(api, token, 'read', u)] : [];
    const write = (async () => {
      if (u.acceptedVersion > 0 || u.steps > 0) u.steps++;
      const body = bodyFor(u);
      const a = await call(api, token, u.acceptedVersion === 0 ? 'create' : 'update', u, body);
      if (a.status === 200 || a.status === 201) {
        u.acceptedVersion = Math.max(u.acceptedVersion, a.version!);
        u.pending = undefined;
      } else u.pending = body;
      return a;
    })();
    return [write, ...read];
  });
  const answers = await Promise.all(calls);
  traffic.answers.push(...answers);
  return answers;
}

/** After the fault: what was refused is sent again (honouring Retry-After) until the API takes it. */
export async function resendRefused(api: TestApi, token: string, users: TrackedUser[], traffic: Traffic, deadlineMs = 90_000): Promise<number> {
  const deadline = Date.now() + deadlineMs;
  let resent = 0;
  for (;;) {
    const refused = users.filter((u) => u.pending);
    if (refused.length === 0) return resent;
    if (Date.now() > deadline) throw new Error(`still refused after ${deadlineMs} ms: ${refused.map((u) => u.id).join(', ')}`);
    const answers = await Promise.all(
      refused.map(async (u) => {
        resent++;
        const a = await call(api, token, u.acceptedVersion === 0 ? 'create' : 'update', u, u.pending);
        if (a.status === 200 || a.status === 201) {
          u.acceptedVersion = Math.max(u.acceptedVersion, a.version!);
          u.pending = undefined;
        }
        return a;
      }),
    );
    traffic.answers.push(...answers);
    for (const a of answers) expectCleanAnswer(a);
    const wait = Math.max(0, ...answers.map((a) => Number(a.retryAfter ?? 0)));
    if (wait > 0) await sleep(wait * 1000);
  }
}

const versionsFor = (r: Receiver, id: string) =>
  r.accepted()
    .filter((c) => c.body?.data?.user?.external_provider_id === id)
    .map((c) => c.body.data.version as number);

export interface Delivery {
  /** Callbacks the targets accepted (2xx), duplicates included. */
  delivered: number;
  duplicates: number;
  /** `user vN at receiver-url` for each version a target accepted more than once. */
  duplicated: string[];
  lost: number;
  drainMs: number;
}

/**
 * Waits until every target holds every user's stored version, then checks:
 * the stored version is at least every version the API accepted (nothing
 * accepted lost in the database); each target saw each user's versions in
 * ascending order; and the final version arrived (nothing lost downstream).
 */
export async function expectEverythingDelivered(models: Models, users: TrackedUser[], receivers: Receiver[], timeoutMs = 120_000): Promise<Delivery> {
  const started = Date.now();
  const docs = await models.ProviderUser.find({ external_provider_id: { $in: users.map((u) => u.id) } }).lean();
  const stored = new Map(docs.map((d) => [d.external_provider_id, d.version]));
  for (const u of users) expect(stored.get(u.id) ?? 0, `stored version of ${u.id}`).toBeGreaterThanOrEqual(u.acceptedVersion);
  await eventually(
    () => {
      for (const r of receivers) for (const u of users) expect(Math.max(0, ...versionsFor(r, u.id)), `${u.id} at ${r.url}`).toBe(stored.get(u.id));
    },
    timeoutMs,
    250,
  );
  const drainMs = Date.now() - started;
  let delivered = 0;
  let duplicates = 0;
  const duplicated: string[] = [];
  for (const r of receivers) {
    for (const u of users) {
      const got = versionsFor(r, u.id);
      delivered += got.length;
      duplicates += got.length - new Set(got).size;
      for (const v of new Set(got)) if (got.filter((x) => x === v).length > 1) duplicated.push(`${u.id} v${v} at ${r.url}`);
      // Per (user, target) order: never an older version after a newer one.
      expect(got, `order of ${u.id} at ${r.url}`).toEqual([...got].sort((x, y) => x - y));
    }
  }
  const lost = users.filter((u) => receivers.some((r) => Math.max(0, ...versionsFor(r, u.id)) < u.acceptedVersion)).length;
  return { delivered, duplicates, duplicated, lost, drainMs };
}

/** The figures every worker link prints once its fault is gone; `healed` is when it went. */
export function afterHealFigures(delivery: Delivery, deadLetters: number, healed: number): Record<string, unknown> {
  return {
    events_delivered: delivery.delivered,
    duplicates: delivery.duplicates,
    ...(delivery.duplicated.length ? { duplicated: delivery.duplicated } : {}),
    dead_letters: deadLetters,
    lost: delivery.lost,
    drain_after_heal_ms: Date.now() - healed,
  };
}

export function byStatus(answers: Answer[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) out[a.status] = (out[a.status] ?? 0) + 1;
  return out;
}

/** One line per fault, for the test output and the closing note. */
export function printFigures(link: string, fault: string, figures: Record<string, unknown>): void {
  console.log(`[faults] ${link} ${fault}: ${JSON.stringify(figures)}`);
}

/**
 * Creates these users with no fault on. A 503 here is the shared machine's
 * database being busy, not the fault under test: sent again until taken.
 */
export async function createBeforeFault(api: TestApi, token: string, users: TrackedUser[]): Promise<void> {
  const traffic: Traffic = { answers: [] };
  await sendRound(api, token, users, traffic);
  await resendRefused(api, token, users, traffic);
  for (const u of users) expect(u.acceptedVersion, u.id).toBe(1);
}

export interface FaultRound {
  /** The answers the API gave while the fault was on. */
  during: Answer[];
  users: TrackedUser[];
  delivery: Delivery;
  figures: Record<string, unknown>;
}

/**
 * The whole round for one fault on one link in front of the API: 4 users made
 * before it; during it a write for each of 8 users (4 creates, 4 updates), a
 * read of each existing one and a token request, all at once; the fault removed; refused writes
 * sent again; then every user's final version checked at every target. Checks
 * every answer given during the fault and prints the figures.
 */
export async function apiUnderFault(o: {
  api: TestApi;
  client: TestClient;
  token: string;
  link: Proxy;
  fault: FaultName;
  receivers: Receiver[];
  label: string;
  /**
   * Runs after the answers came back and before the fault is removed. Work the API does
   * after answering (publishing an event right after the write) may otherwise reach the
   * link only once it has healed; a scenario about that work waits for it here.
   */
  beforeHeal?: () => Promise<void>;
}): Promise<FaultRound> {
  const users = newUsers(`${o.label.replace(/[^a-z]+/gi, '-')}-${o.fault}`, 8);
  const traffic: Traffic = { answers: [] };
  await createBeforeFault(o.api, o.token, users.slice(0, 4));

  await o.link.inject(o.fault);
  const [during, token] = await Promise.all([sendRound(o.api, o.token, users, traffic), tokenCall(o.api, o.client)]);
  during.push(token);
  await o.beforeHeal?.();
  await o.link.heal();
  for (const x of during) expectCleanAnswer(x);
  const resent = await resendRefused(o.api, o.token, users, traffic);
  const delivery = await expectEverythingDelivered(o.api.models, users, o.receivers);

  const figures = {
    requests_during_fault: during.length,
    answers_during_fault: byStatus(during),
    max_answer_ms: Math.max(...during.map((x) => x.ms)),
    resent_after: resent,
    accepted_changes: users.reduce((n, u) => n + u.acceptedVersion, 0),
    events_delivered: delivery.delivered,
    duplicates: delivery.duplicates,
    ...(delivery.duplicated.length ? { duplicated: delivery.duplicated } : {}),
    lost: delivery.lost,
    drain_ms: delivery.drainMs,
  };
  printFigures(o.label, o.fault, figures);
  expect(figures.max_answer_ms).toBeLessThan(ANSWER_BOUND_MS);
  expect(delivery.lost).toBe(0);
  return { during, users, delivery, figures };
}

/**
 * The round for one fault on a link between the worker and one of its datastores (the API
 * reaches it directly): 4 users made and delivered before it; during it a write for each of 8
 * users and a read of each existing one, all answered by the API; the fault held `holdMs`, so the
 * worker's operations, heartbeats and blocking reads meet it; the fault removed; then every user's
 * final version checked at every target, with no dead letter. Prints the figures.
 */
export async function workerUnderFault(o: { api: TestApi; token: string; link: Proxy; fault: FaultName; receivers: Receiver[]; label: string; holdMs: number }): Promise<void> {
  const users = newUsers(`${o.label.replace(/[^a-z]+/gi, '-')}-${o.fault}`, 8);
  // Half the users exist and are delivered before the fault: the worker's connections are open and in use when it comes.
  await createBeforeFault(o.api, o.token, users.slice(0, 4));
  await expectEverythingDelivered(o.api.models, users.slice(0, 4), o.receivers);

  const received = () => o.receivers.reduce((n, r) => n + r.received.length, 0);
  const reachedBefore = received();
  await o.link.inject(o.fault);
  const traffic: Traffic = { answers: [] };
  const during = await sendRound(o.api, o.token, users, traffic);
  for (const x of during) expectCleanAnswer(x);
  // The API does not go through the fault; a 503 here could only be the shared machine's database being busy.
  const resent = await resendRefused(o.api, o.token, users, traffic);
  await sleep(o.holdMs);
  const reachedDuringFault = received() - reachedBefore;
  await o.link.heal();
  const healed = Date.now();

  const delivery = await expectEverythingDelivered(o.api.models, users, o.receivers);
  const rows = await o.api.models.Delivery.find({ external_provider_id: { $in: users.map((u) => u.id) } }).lean();
  const deadLetters = rows.filter((r) => r.status === 'failed').length;
  printFigures(o.label, o.fault, {
    api_answers: byStatus(during),
    resent_after: resent,
    callbacks_during_fault: reachedDuringFault,
    accepted_changes: users.reduce((n, u) => n + u.acceptedVersion, 0),
    ...afterHealFigures(delivery, deadLetters, healed),
  });
  expect(deadLetters).toBe(0);
  expect(delivery.lost).toBe(0);
}
