import { randomUUID } from 'node:crypto';
import type { CommandStartedEvent } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxSlotOf, RecentUsers } from '@connect/shared';
import { databaseUrl, getToken, http, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

/**
 * docs/guarantees.md, "One-step writes": for a user it does not hold, the API picks its
 * first step by what such requests have been lately. Writing first, a plain update is one
 * findAndModify; whatever that filter leaves (a no-op, a create, a deactivated user, another
 * email, a locale clash, a document of an older release) falls back to the read and is decided
 * as ever. Inserting first, a create is one insert; what the unique indexes refuse (an update, a
 * no-op, a deactivated user, an email held by another user) falls back to the read likewise.
 * Each API here holds one user at most, so nearly every request is for a user it does not hold;
 * its commands are watched on its own connection (command monitoring in its URL).
 */

const NEXT = { 'x-nabla-api-version': 'x-nabla-next' };

interface Watched {
  api: TestApi;
  clinic: TestClient;
  token: string;
  seen: CommandStartedEvent[];
}

async function startWatched(label: string, recentUsers: RecentUsers): Promise<Watched> {
  const url = new URL(databaseUrl(label));
  url.searchParams.set('monitorCommands', 'true');
  const api = await startTestApi({ label, mongoUrl: url.toString(), recentUsers });
  const seen: CommandStartedEvent[] = [];
  api.deps.mongo.getClient().on('commandStarted', (e) => seen.push(e));
  const clinic = await registerTestClient(api.models);
  return { api, clinic, token: await getToken(api, clinic), seen };
}

/** The commands on provider_users that name user `id` (by external_provider_id, or by `_id` for the read path's write), in order. */
function stepsFor(w: Watched, id: string, userId: unknown, from: number, to: number): string[] {
  const names = (e: CommandStartedEvent): boolean => {
    const c = e.command;
    if (e.commandName === 'find') return c.find === 'provider_users' && c.filter?.external_provider_id === id;
    if (e.commandName === 'findAndModify') return c.findAndModify === 'provider_users' && c.query?.external_provider_id === id;
    if (e.commandName === 'insert') return c.insert === 'provider_users' && c.documents?.some((d: { external_provider_id?: string }) => d.external_provider_id === id);
    if (e.commandName === 'update') return c.update === 'provider_users' && c.updates?.some((u: { q: { _id?: unknown } }) => String(u.q._id) === String(userId));
    return false;
  };
  return w.seen.slice(from, to).filter(names).map((e) => e.commandName);
}

const stored = (w: Watched, id: string) => w.api.models.ProviderUser.findOne({ organization_id: w.clinic.organization._id, external_provider_id: id }).lean();

/** POST /users, and the commands it sent for that user. */
async function post(w: Watched, body: { external_provider_id: string } & Record<string, unknown>) {
  const before = await stored(w, body.external_provider_id);
  const from = w.seen.length;
  const res = await postUser(w.api, w.token, body, NEXT);
  const to = w.seen.length;
  const after = await stored(w, body.external_provider_id);
  return { res, steps: stepsFor(w, body.external_provider_id, (before ?? after)?._id, from, to), before, after };
}

const settings = { specialty: { kind: 'CARDIOLOGY' }, speech_locale: 'ENGLISH_US', secondary_speech_locale: 'FRENCH_FR' };

async function createUsers(w: Watched, label: string, n: number): Promise<{ id: string; email: string }[]> {
  const users = Array.from({ length: n }, () => {
    const id = `${label}-${randomUUID()}`;
    return { id, email: `${id}@example.com` };
  });
  for (const u of users) expect((await postUser(w.api, w.token, { provider_email: u.email, external_provider_id: u.id, settings }, NEXT)).status).toBe(201);
  return users;
}

describe('an API that learns its first step (the default)', () => {
  let w: Watched;
  beforeAll(async () => {
    w = await startWatched('one_step_learn', new RecentUsers(1));
  });
  afterAll(async () => w?.api.close());

  it('after a run of creates it inserts first; after about 30 plain updates of users it does not hold, each is one findAndModify, with the version and its event one higher and what was not sent kept', async () => {
    const users = await createUsers(w, 'learn', 45);
    const runs: { steps: string[]; status: number }[] = [];
    for (const u of users) {
      const { res, steps, after } = await post(w, { provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
      runs.push({ steps, status: res.status });
      expect(res.status, res.text).toBe(200);
      expect(res.headers.get('x-connect-outcome')).toBe('updated');
      expect(res.body).toMatchObject({ version: 2, settings: { specialty: { kind: 'CARDIOLOGY' }, speech_locale: 'GERMAN_DE', secondary_speech_locale: 'FRENCH_FR' } });
      expect(after).toMatchObject({ version: 2, last_event: { type: 'user.updated', version: 2 }, status: 'active' });
      expect(after!.last_event.id).not.toBe(after!.created_event.id);
    }
    // The 45 creates before them taught it to insert first: the first updates are a refused insert, the
    // read and the write, until creates fall under about 40 %; then it reads first.
    expect(runs[0]!.steps).toEqual(['insert', 'find', 'update']);
    const readFirst = runs.findIndex((r) => r.steps[0] === 'find');
    expect(readFirst).toBeGreaterThan(0);
    for (const r of runs.slice(0, readFirst)) expect(r.steps).toEqual(['insert', 'find', 'update']);
    for (const r of runs.slice(readFirst, 29)) expect(r.steps).toEqual(['find', 'update']);
    // The switch to writing first comes after 29 in a row (a moving average over about 32 passing 0.6).
    expect(runs.findIndex((r) => r.steps[0] === 'findAndModify')).toBe(29);
    for (const r of runs.slice(29)) expect(r.steps).toEqual(['findAndModify']);
  });

  it('after that, a run of no-ops takes it back to reading first: a no-op is one find again', async () => {
    const users = await createUsers(w, 'back', 40);
    const updates: string[][] = [];
    for (const u of users) updates.push((await post(w, { provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } })).steps);
    expect(updates.at(-1)).toEqual(['findAndModify']);
    const noops: string[][] = [];
    for (const u of users) {
      const { res, steps, after } = await post(w, { provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
      expect(res.headers.get('x-connect-outcome')).toBe('unchanged');
      expect(after!.version).toBe(2);
      noops.push(steps);
    }
    expect(noops[0]).toEqual(['findAndModify', 'find']);
    const back = noops.findIndex((s) => s.length === 1);
    expect(back).toBeGreaterThan(0);
    for (const s of noops.slice(0, back)) expect(s).toEqual(['findAndModify', 'find']);
    for (const s of noops.slice(back)) expect(s).toEqual(['find']);
  });
});

describe('an API that always writes first: what the one step leaves is decided by the read, as ever', () => {
  let w: Watched;
  beforeAll(async () => {
    w = await startWatched('one_step_write', new RecentUsers(1, 'write'));
  });
  afterAll(async () => w?.api.close());

  const one = async () => (await createUsers(w, 'w', 1))[0]!;
  /** POST /users for a user this API does not hold: it holds one, so it is made to hold another first. */
  const postFresh = async (body: { external_provider_id: string } & Record<string, unknown>) => {
    await createUsers(w, 'evict', 1);
    return post(w, body);
  };

  it('a deactivated user is reactivated (user.reactivated, active), after the one step matched nothing', async () => {
    const u = await one();
    const del = await http(`${w.api.baseUrl}/users/${encodeURIComponent(u.id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${w.token}`, ...NEXT } });
    expect(del.status).toBe(200);
    const { res, steps, after } = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(res.status, res.text).toBe(200);
    expect(steps).toEqual(['findAndModify', 'find', 'update']);
    expect(res.body).toMatchObject({ status: 'active', deactivated_at: null, version: 3 });
    expect(after).toMatchObject({ status: 'active', last_event: { type: 'user.reactivated', version: 3 }, status_event: { type: 'user.reactivated', version: 3 } });
  });

  it('another email is 409 email-mismatch, a kept secondary locale equal to the new primary is 400 naming it, no settings is unchanged: nothing written', async () => {
    const u = await one();
    const mismatch = await postFresh({ provider_email: `other-${u.email}`, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(mismatch.res.status).toBe(409);
    expect(mismatch.res.body.type).toMatch(/\/email-mismatch$/);
    const clash = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'FRENCH_FR' } });
    expect(clash.res.status).toBe(400);
    expect(JSON.stringify(clash.res.body)).toContain('settings.secondary_speech_locale');
    const none = await postFresh({ provider_email: u.email, external_provider_id: u.id });
    expect(none.res.status).toBe(200);
    expect(none.res.headers.get('x-connect-outcome')).toBe('unchanged');
    expect(none.steps).toEqual(['find']);
    for (const r of [mismatch, clash]) expect(r.steps).toEqual(['findAndModify', 'find']);
    expect(await stored(w, u.id)).toEqual(mismatch.before);
  });

  it('a user it does not know is created (201), after the one step matched nothing', async () => {
    const id = `new-${randomUUID()}`;
    const { res, steps } = await postFresh({ provider_email: `${id}@example.com`, external_provider_id: id, settings });
    expect(res.status).toBe(201);
    expect(steps).toEqual(['findAndModify', 'find', 'insert']);
  });

  it('clearing the specialty and the secondary locale, or changing only the other specialty name, is one step', async () => {
    const u = await one();
    const cleared = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { specialty: null, speech_locale: 'ENGLISH_US', secondary_speech_locale: null } });
    expect(cleared.steps).toEqual(['findAndModify']);
    expect(cleared.after!.settings).toEqual({ specialty: null, speech_locale: 'ENGLISH_US', secondary_speech_locale: null });
    const other = { kind: 'OTHER', other_specialty_name: 'Sleep medicine' };
    const named = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { specialty: other, speech_locale: 'ENGLISH_US' } });
    const renamed = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { specialty: { ...other, other_specialty_name: 'Sports medicine' }, speech_locale: 'ENGLISH_US' } });
    const same = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { specialty: { ...other, other_specialty_name: 'Sports medicine' }, speech_locale: 'ENGLISH_US' } });
    expect([named.steps, renamed.steps, same.steps]).toEqual([['findAndModify'], ['findAndModify'], ['findAndModify', 'find']]);
    expect(renamed.after).toMatchObject({ version: 4, settings: { specialty: { kind: 'OTHER', other_specialty_name: 'Sports medicine' }, secondary_speech_locale: null } });
    expect(same.res.headers.get('x-connect-outcome')).toBe('unchanged');
  });

  it('a status change an older release left as the last event only is kept as the status event, by the read path', async () => {
    const u = await one();
    const now = new Date();
    const reactivationId = randomUUID();
    await w.api.models.ProviderUser.collection.updateOne(
      { organization_id: w.clinic.organization._id, external_provider_id: u.id },
      { $set: { version: 3, updated_at: now, outbox_slot: outboxSlotOf(now), last_event: { id: reactivationId, type: 'user.reactivated', occurred_at: now, version: 3 } }, $unset: { status_event: '' } },
    );
    const { res, steps, after } = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(res.body.version).toBe(4);
    expect(steps).toEqual(['findAndModify', 'find', 'update']);
    expect(after!.status_event).toMatchObject({ id: reactivationId, type: 'user.reactivated', version: 3 });
  });

  it("a document whose last event's version is not its own is set right: the event carries the new version", async () => {
    const u = await one();
    await w.api.models.ProviderUser.collection.updateOne({ organization_id: w.clinic.organization._id, external_provider_id: u.id }, { $set: { version: 5 } });
    const { res, steps, after } = await postFresh({ provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(res.body.version).toBe(6);
    expect(steps).toEqual(['findAndModify', 'update']);
    expect(after).toMatchObject({ version: 6, last_event: { type: 'user.updated', version: 6 } });
  });
});

describe('an API that learns its first step: a run of creates', () => {
  let w: Watched;
  beforeAll(async () => {
    w = await startWatched('one_step_learn_creates', new RecentUsers(1));
  });
  afterAll(async () => w?.api.close());

  it('reads first at the start; after about 30 creates of users it does not hold, each is one insert: 201, Location, version 1 and its user.created', async () => {
    const runs: string[][] = [];
    for (let i = 0; i < 40; i++) {
      const id = `create-${randomUUID()}`;
      const { res, steps, after } = await post(w, { provider_email: `${id}@Example.com`, external_provider_id: id, settings });
      expect(res.status, res.text).toBe(201);
      expect(res.headers.get('x-connect-outcome')).toBe('created');
      expect(res.headers.get('location')).toBe(`${w.api.baseUrl}/users/${id}`);
      expect(res.body).toMatchObject({ provider_email: `${id}@Example.com`, external_provider_id: id, version: 1, status: 'active', settings });
      expect(after).toMatchObject({ version: 1, email_normalized: `${id}@example.com`, last_event: { type: 'user.created', version: 1 } });
      expect(after!.last_event.id).toBe(after!.created_event.id);
      runs.push(steps);
    }
    expect(runs[0]).toEqual(['find', 'insert']);
    expect(runs.findIndex((s) => s[0] === 'insert')).toBe(29);
    for (const s of runs.slice(29)) expect(s).toEqual(['insert']);
  });
});

describe('an API that always inserts first: what the unique indexes refuse is decided by the read, as ever', () => {
  let w: Watched;
  beforeAll(async () => {
    w = await startWatched('one_step_insert', new RecentUsers(1, 'insert'));
  });
  afterAll(async () => w?.api.close());

  /** A user created through the API, then another, so that this API (holding one user) does not hold the first. */
  const existing = async () => {
    const [u] = await createUsers(w, 'i', 2);
    return u!;
  };

  it('an update is the refused insert, the read and the version-conditional write: 200 updated, version 2, nothing else stored', async () => {
    const u = await existing();
    const { res, steps, before, after } = await post(w, { provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('x-connect-outcome')).toBe('updated');
    expect(steps).toEqual(['insert', 'find', 'update']);
    expect(after).toMatchObject({ _id: before!._id, version: 2, created_at: before!.created_at, last_event: { type: 'user.updated', version: 2 } });
    expect(await w.api.models.ProviderUser.countDocuments({ organization_id: w.clinic.organization._id, external_provider_id: u.id })).toBe(1);
  });

  it('a no-op is the refused insert and the read: 200 unchanged, nothing written', async () => {
    const u = await existing();
    const { res, steps, before, after } = await post(w, { provider_email: u.email, external_provider_id: u.id, settings });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-connect-outcome')).toBe('unchanged');
    expect(steps).toEqual(['insert', 'find']);
    expect(after).toEqual(before);
  });

  it('a deactivated user is reactivated (user.reactivated), after the refused insert', async () => {
    const u = await existing();
    const del = await http(`${w.api.baseUrl}/users/${encodeURIComponent(u.id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${w.token}`, ...NEXT } });
    expect(del.status).toBe(200);
    await createUsers(w, 'evict', 1);
    const { res, steps, after } = await post(w, { provider_email: u.email, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(res.status, res.text).toBe(200);
    expect(steps).toEqual(['insert', 'find', 'update']);
    expect(after).toMatchObject({ status: 'active', version: 3, last_event: { type: 'user.reactivated', version: 3 } });
  });

  it('another user holding the email is 409 email-conflict, this id with another email 409 email-mismatch: nothing stored or changed', async () => {
    const u = await existing();
    const id = `conflict-${randomUUID()}`;
    const conflict = await post(w, { provider_email: u.email.toUpperCase(), external_provider_id: id, settings });
    expect(conflict.res.status).toBe(409);
    expect(conflict.res.body.type).toMatch(/\/email-conflict$/);
    expect(conflict.steps[0]).toBe('insert');
    expect(conflict.after).toBeNull();
    const mismatch = await post(w, { provider_email: `other-${u.email}`, external_provider_id: u.id, settings: { speech_locale: 'GERMAN_DE' } });
    expect(mismatch.res.status).toBe(409);
    expect(mismatch.res.body.type).toMatch(/\/email-mismatch$/);
    expect(mismatch.steps).toEqual(['insert', 'find']);
    expect(mismatch.after).toEqual(mismatch.before);
  });

  it('simultaneous creates of one id give one user at version 1: one 201, the rest 200 unchanged', async () => {
    const id = `race-${randomUUID()}`;
    const answers = await Promise.all(Array.from({ length: 8 }, () => postUser(w.api, w.token, { provider_email: `${id}@example.com`, external_provider_id: id, settings }, NEXT)));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201]);
    expect(new Set(answers.filter((a) => a.status === 200).map((a) => a.headers.get('x-connect-outcome')))).toEqual(new Set(['unchanged']));
    const users = await w.api.models.ProviderUser.find({ organization_id: w.clinic.organization._id, external_provider_id: id }).lean();
    expect(users.map((u) => u.version)).toEqual([1]);
  });
});
