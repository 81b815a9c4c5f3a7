import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLAIM_SETTLE_MS,
  CLAIM_STALE_MS,
  collectionsOf,
  createModels,
  EmailClaims,
  emailClaimDocSchema,
  EmailConflictError,
  EmailMismatchError,
  ensureIndexes,
  KeyedLock,
  upsertProviderUser,
  type EmailClaimScope,
  type ProviderUserDoc,
} from '@connect/shared';
import mongoose from 'mongoose';
import { databaseUrl, getToken, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';

/**
 * EMAIL_UNIQUENESS=claims (docs/guarantees.md, "Email claims"): emails stay unique per
 * organization with no unique index on provider_users' email, the state a cluster sharded on
 * organization + external_provider_id needs. Every API here runs on a database whose email
 * index is plain (checked first), so only the claims can give the answers asserted. Shown on
 * FerretDB; a sharded MongoDB cluster cannot run on this machine.
 */
let api: TestApi;
let clinic: TestClient;
let token: string;
const mongoUrl = databaseUrl('email_claims');

const EMAIL_INDEX = { organization_id: 1, email_normalized: 1 };
const sameKey = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

beforeAll(async () => {
  api = await startTestApi({ label: 'email_claims', mongoUrl, env: { EMAIL_UNIQUENESS: 'claims' } });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});
afterAll(async () => api?.close());

const org = () => clinic.organization._id;
const claimsOf = (email: string) => collectionsOf(api.models).emailClaims.find({ organization_id: org(), email_normalized: email }).toArray();
/** The user another process's create of (id, email) would have stored, with the settings createAsAnotherProcess sends. */
async function twinOf(id: string, email: string): Promise<ProviderUserDoc> {
  const other = { models: api.models, lock: new KeyedLock(), publisher: { publishSoon: () => undefined } };
  // Made through the use case on a scratch organization, then moved: the stored shape is the product's own.
  const scratch = `scratch-${randomUUID()}`;
  const { user } = await upsertProviderUser(other, { organizationId: scratch, body: { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } } });
  await collectionsOf(api.models).providerUsers.deleteOne({ _id: user._id });
  return { ...user, organization_id: org(), _id: new mongoose.Types.ObjectId() };
}

/**
 * A create through the use case with a lock and no cache of its own, as another API process
 * would make it: one process's keyed lock would queue creates of one id one after another.
 */
async function createAsAnotherProcess(body: { provider_email: string; external_provider_id: string }): Promise<string> {
  const deps = { models: api.models, lock: new KeyedLock(), emailClaims: api.deps.emailClaims, publisher: { publishSoon: () => undefined } };
  try {
    return (await upsertProviderUser(deps, { organizationId: org(), body: { ...body, settings: { speech_locale: 'ENGLISH_US' } } })).outcome;
  } catch (err) {
    if (err instanceof EmailMismatchError) return 'email-mismatch';
    if (err instanceof EmailConflictError) return 'email-conflict';
    throw err;
  }
}
const usersWith = (email: string) => api.models.ProviderUser.countDocuments({ organization_id: org(), email_normalized: email });

describe('EMAIL_UNIQUENESS=claims', () => {
  it('a new database gets a plain email index on provider_users and a unique one on email_claims', async () => {
    const users = await collectionsOf(api.models).providerUsers.listIndexes().toArray();
    const email = users.find((i) => sameKey(i.key, EMAIL_INDEX));
    expect(email, 'an email index for lookups').toBeDefined();
    expect(email!.unique ?? false).toBe(false);
    const claims = await collectionsOf(api.models).emailClaims.listIndexes().toArray();
    expect(claims.find((i) => sameKey(i.key, EMAIL_INDEX))?.unique).toBe(true);
  });

  it('20 simultaneous creates sharing an email (two spellings) with different ids: one 201, 19 × 409 email-conflict, one user, one claim naming it', async () => {
    const email = `shared-${randomUUID()}@example.com`;
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) => postUser(api, token, { provider_email: i % 2 ? email : email.toUpperCase(), external_provider_id: `${email}-${i}` })),
    );
    const created = answers.filter((a) => a.status === 201);
    expect(created).toHaveLength(1);
    const conflicts = answers.filter((a) => a.status === 409);
    expect(conflicts).toHaveLength(19);
    for (const c of conflicts) expect(c.body.type).toMatch(/\/email-conflict$/);
    expect(await usersWith(email)).toBe(1);
    const claims = await claimsOf(email);
    expect(claims.map((c) => c.external_provider_id)).toEqual([created[0]!.body.external_provider_id]);
    expect(emailClaimDocSchema.strict().safeParse(claims[0]).error?.issues, 'the stored claim matches its schema').toBeUndefined();
  });

  it('20 simultaneous identical creates, as from 20 API processes: one created, 19 unchanged, one user, one claim', async () => {
    const id = randomUUID();
    const email = `${id}@example.com`;
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => createAsAnotherProcess({ provider_email: email, external_provider_id: id })));
    expect(outcomes.filter((o) => o === 'created')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'unchanged')).toHaveLength(19);
    expect(await usersWith(email)).toBe(1);
    expect((await claimsOf(email)).map((c) => c.external_provider_id)).toEqual([id]);
  });

  it('simultaneous creates of one id with 10 different emails, as from 10 API processes: one created, 9 email-mismatch; the losers release their claims, so their emails stay free', async () => {
    const id = randomUUID();
    const emails = Array.from({ length: 10 }, (_, i) => `${id}-${i}@example.com`);
    const outcomes = await Promise.all(emails.map((provider_email) => createAsAnotherProcess({ provider_email, external_provider_id: id })));
    expect(outcomes.filter((o) => o === 'created')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'email-mismatch')).toHaveLength(9);
    const winner = (await api.models.ProviderUser.findOne({ organization_id: org(), external_provider_id: id }).lean())!;
    const claims = await collectionsOf(api.models).emailClaims.find({ organization_id: org(), external_provider_id: id }).toArray();
    expect(claims.map((c) => c.email_normalized)).toEqual([winner.email_normalized]);
    const loser = emails.find((e) => e !== winner.email_normalized)!;
    expect((await postUser(api, token, { provider_email: loser, external_provider_id: `${id}-other` })).status).toBe(201);
  });

  it('a claim left by a create that died: refused while younger than the stale age (a create in progress), taken over once older', async () => {
    const email = `orphan-${randomUUID()}@example.com`;
    const claims = collectionsOf(api.models).emailClaims;
    const orphan = { _id: new mongoose.Types.ObjectId(), organization_id: org(), email_normalized: email, external_provider_id: 'died-mid-create', claimed_at: new Date() };
    await claims.insertOne(orphan);
    const young = await postUser(api, token, { provider_email: email, external_provider_id: 'second' });
    expect(young.status).toBe(409);
    expect(young.body.type).toMatch(/\/email-conflict$/);
    expect(await usersWith(email)).toBe(0);

    await claims.updateOne({ _id: orphan._id }, { $set: { claimed_at: new Date(Date.now() - CLAIM_STALE_MS - 1_000) } });
    expect((await postUser(api, token, { provider_email: email, external_provider_id: 'second' })).status).toBe(201);
    expect((await claimsOf(email)).map((c) => c.external_provider_id)).toEqual(['second']);
    expect((await postUser(api, token, { provider_email: email, external_provider_id: 'died-mid-create' })).status).toBe(409);
  });

  it('10 simultaneous creates of an email whose claim a dead create left, as from 10 API processes: one created, 9 email-conflict', async () => {
    const email = `orphan-race-${randomUUID()}@example.com`;
    const old = new Date(Date.now() - CLAIM_STALE_MS - 1_000);
    await collectionsOf(api.models).emailClaims.insertOne({ _id: new mongoose.Types.ObjectId(), organization_id: org(), email_normalized: email, external_provider_id: 'died', claimed_at: old });
    const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => createAsAnotherProcess({ provider_email: email, external_provider_id: `racer-${i}` })));
    expect(outcomes.filter((o) => o === 'created')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'email-conflict')).toHaveLength(9);
    expect(await usersWith(email)).toBe(1);
    expect(await claimsOf(email)).toHaveLength(1);
  });

  it('a retry of a dead create with its own id goes through at once and dates the old claim anew (so no other create takes it over meanwhile)', async () => {
    const email = `retry-${randomUUID()}@example.com`;
    const claims = collectionsOf(api.models).emailClaims;
    await claims.insertOne({ _id: new mongoose.Types.ObjectId(), organization_id: org(), email_normalized: email, external_provider_id: 'retried', claimed_at: new Date(Date.now() - 2 * CLAIM_STALE_MS) });
    const before = Date.now();
    expect((await postUser(api, token, { provider_email: email, external_provider_id: 'retried' })).status).toBe(201);
    const [claim] = await claimsOf(email);
    expect(claim!.external_provider_id).toBe('retried');
    expect(claim!.claimed_at.getTime()).toBeGreaterThanOrEqual(before);
  });

  it('an old claim whose user exists stays with that user: another create of the email answers 409', async () => {
    const id = randomUUID();
    const email = `${id}@example.com`;
    expect((await postUser(api, token, { provider_email: email, external_provider_id: id })).status).toBe(201);
    await collectionsOf(api.models).emailClaims.updateOne({ organization_id: org(), email_normalized: email }, { $set: { claimed_at: new Date(Date.now() - 86_400_000) } });
    const other = await postUser(api, token, { provider_email: email, external_provider_id: `${id}-other` });
    expect(other.status).toBe(409);
    expect(other.body.type).toMatch(/\/email-conflict$/);
    expect((await claimsOf(email)).map((c) => c.external_provider_id)).toEqual([id]);
  });

  /**
   * A create whose insert reaches the database more than CLAIM_STALE_MS after its claim (held up
   * there): after its claim, the claim is aged and a rival create takes it over; with
   * `changedMeanwhile`, another request changes the new user before the create can undo it.
   */
  async function heldUpCreate(email: string, changedMeanwhile: boolean) {
    const users = collectionsOf(api.models).providerUsers;
    const claims = collectionsOf(api.models).emailClaims;
    const rival = new EmailClaims(claims, users);
    const errors: string[] = [];
    class HeldUpClaims extends EmailClaims {
      override async claim(scope: EmailClaimScope, now: Date) {
        const outcome = await super.claim(scope, now);
        await claims.updateOne({ organization_id: scope.organizationId, email_normalized: scope.emailNormalized }, { $set: { claimed_at: new Date(now.getTime() - CLAIM_STALE_MS - 1_000) } });
        // The rival deletes the aged claim ('retry'), then claims anew.
        expect(await rival.claim({ ...scope, externalProviderId: 'rival' }, new Date())).toBe('retry');
        expect(await rival.claim({ ...scope, externalProviderId: 'rival' }, new Date())).toBe('claimed');
        return outcome;
      }
      override async stillHeld(scope: EmailClaimScope) {
        if (changedMeanwhile) await users.updateOne({ organization_id: scope.organizationId, external_provider_id: scope.externalProviderId }, { $set: { version: 2 } });
        return super.stillHeld(scope);
      }
    }
    const published: ProviderUserDoc[] = [];
    // The process's logger (given to EmailClaims) and the request's (given with the command): the request's wins.
    const processErrors: string[] = [];
    const processLog = { error: (_obj: object, msg: string) => void processErrors.push(msg) };
    const requestLog = { error: (_obj: object, msg: string) => void errors.push(msg), warn: () => undefined };
    const deps = { models: api.models, lock: new KeyedLock(), emailClaims: new HeldUpClaims(claims, users, processLog), publisher: { publishSoon: (u: ProviderUserDoc) => published.push(u) } };
    const command = { organizationId: org(), body: { provider_email: email, external_provider_id: 'held-up', settings: { speech_locale: 'ENGLISH_US' as const } }, log: requestLog };
    const outcome = await upsertProviderUser(deps, command).then(
      (r) => r.outcome,
      (err: unknown) => err,
    );
    return { outcome, published, errors, processErrors };
  }

  it('a create whose insert was held up past the stale age, whose claim another create took over, undoes its insert and answers 409', async () => {
    const email = `held-up-${randomUUID()}@example.com`;
    const { outcome, published, errors } = await heldUpCreate(email, false);
    expect(outcome).toBeInstanceOf(EmailConflictError);
    expect(await usersWith(email)).toBe(0);
    expect(published).toEqual([]);
    expect(errors).toEqual([]);
    // The rival's create goes on from its claim: its user is the one that holds the email.
    expect((await postUser(api, token, { provider_email: email, external_provider_id: 'rival' })).status).toBe(201);
    expect(await usersWith(email)).toBe(1);
  });

  it('the same, when another request changed that user before the undo: the user stays, the create answers created, and an error on the request\'s logger says two users share the email', async () => {
    const email = `held-up-changed-${randomUUID()}@example.com`;
    const { outcome, published, errors, processErrors } = await heldUpCreate(email, true);
    expect(outcome).toBe('created');
    expect(published).toHaveLength(1);
    expect(await usersWith(email)).toBe(1);
    expect(errors, 'on the request\'s logger').toEqual([expect.stringMatching(/^two users now share an email/)]);
    expect(processErrors).toEqual([]);
  });

  it('a create held up in its own process for half the stale age between its claim and its insert decides again, and keeps the claim a create of the same id made meanwhile', async () => {
    const id = `paused-${randomUUID()}`;
    const email = `${id}@example.com`;
    const users = collectionsOf(api.models).providerUsers;
    const claims = collectionsOf(api.models).emailClaims;
    let calls = 0;
    // The clock reads 0, except right after the first claim: half the stale age and a bit later.
    const clock = () => (calls === 1 && readsAfterClaim++ === 0 ? CLAIM_STALE_MS / 2 + 1 : 0);
    let readsAfterClaim = 0;
    class PausedClaims extends EmailClaims {
      override async claim(scope: EmailClaimScope, now: Date) {
        const outcome = await super.claim(scope, now);
        // Meanwhile another process's create of the same id and email inserted its user.
        if (++calls === 1) await users.insertOne({ ...(await twinOf(id, email)) });
        return outcome;
      }
    }
    const deps = { models: api.models, lock: new KeyedLock(), emailClaims: new PausedClaims(claims, users, undefined, clock), publisher: { publishSoon: () => undefined } };
    const result = await upsertProviderUser(deps, { organizationId: org(), body: { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } } });
    expect(result.outcome).toBe('unchanged');
    expect(calls).toBe(1);
    expect(await usersWith(email)).toBe(1);
    expect((await claimsOf(email)).map((c) => c.external_provider_id)).toEqual([id]);
  });

  describe('a claim of another id with no user yet: its create is in progress, waited for up to CLAIM_SETTLE_MS', () => {
    /** A young claim of `holder` on a new email, and a create of that email by another id started against it. */
    async function createAgainstYoungClaim() {
      const email = `settle-${randomUUID()}@example.com`;
      const holder = `holder-${randomUUID()}`;
      await collectionsOf(api.models).emailClaims.insertOne({ _id: new mongoose.Types.ObjectId(), organization_id: org(), email_normalized: email, external_provider_id: holder, claimed_at: new Date() });
      const started = Date.now();
      const answer = postUser(api, token, { provider_email: email, external_provider_id: `${holder}-other` }).then((a) => ({ ...a, afterMs: Date.now() - started }));
      return { email, holder, answer };
    }
    const insertUser = (id: string, email: string) =>
      api.models.ProviderUser.collection.insertOne({
        _id: new mongoose.Types.ObjectId(),
        organization_id: org(),
        external_provider_id: id,
        provider_email: email,
        email_normalized: email,
      });
    const settle = () => new Promise((r) => setTimeout(r, 300));

    it('its id ends up holding another email (it lost a race on its id): the email is free, 201', async () => {
      const { holder, answer } = await createAgainstYoungClaim();
      await settle();
      await insertUser(holder, `${holder}@elsewhere.example.com`);
      expect((await answer).status).toBe(201);
    });

    it('its create gives the claim up: 201', async () => {
      const { email, answer } = await createAgainstYoungClaim();
      await settle();
      await collectionsOf(api.models).emailClaims.deleteOne({ organization_id: org(), email_normalized: email });
      expect((await answer).status).toBe(201);
    });

    it('its create inserts its user with this email: 409 email-conflict', async () => {
      const { email, holder, answer } = await createAgainstYoungClaim();
      await settle();
      await insertUser(holder, email);
      const a = await answer;
      expect(a.status).toBe(409);
      expect(a.body.type).toMatch(/\/email-conflict$/);
    });

    it('nothing happens: 409 email-conflict once the wait is over', async () => {
      const { answer } = await createAgainstYoungClaim();
      const a = await answer;
      expect(a.status).toBe(409);
      expect(a.body.type).toMatch(/\/email-conflict$/);
      console.log(`[email claims] a create against a young claim with no user answered 409 after ${a.afterMs} ms (CLAIM_SETTLE_MS ${CLAIM_SETTLE_MS})`);
    });
  });
});

describe('switching an existing database from EMAIL_UNIQUENESS=index to claims', () => {
  it('users stored without claims keep their emails: a create of one answers 409 and the claim is handed to its user', async () => {
    const url = databaseUrl('email_upgrade');
    const before = await startTestApi({ label: 'email_upgrade', mongoUrl: url });
    const client = await registerTestClient(before.models);
    const email = `legacy-${randomUUID()}@example.com`;
    expect((await postUser(before, await getToken(before, client), { provider_email: email, external_provider_id: 'legacy' })).status).toBe(201);
    expect((await collectionsOf(before.models).providerUsers.listIndexes().toArray()).find((i) => sameKey(i.key, EMAIL_INDEX))?.unique).toBe(true);
    await before.close();

    // The operator's step before sharding: drop the unique email index; the API in claims mode makes a plain one.
    const conn = await mongoose.createConnection(url).asPromise();
    await conn.collection('provider_users').dropIndex('organization_id_1_email_normalized_1');
    await conn.close();
    const after = await startTestApi({ label: 'email_upgrade', mongoUrl: url, env: { EMAIL_UNIQUENESS: 'claims' } });
    try {
      const t = await getToken(after, client);
      const indexes = await collectionsOf(after.models).providerUsers.listIndexes().toArray();
      expect(indexes.find((i) => sameKey(i.key, EMAIL_INDEX))?.unique ?? false).toBe(false);
      const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => postUser(after, t, { provider_email: email, external_provider_id: `newcomer-${i}` })));
      expect(answers.map((a) => a.status)).toEqual([409, 409, 409, 409, 409]);
      expect(await after.models.ProviderUser.countDocuments({ email_normalized: email })).toBe(1);
      const claims = await collectionsOf(after.models).emailClaims.find({ email_normalized: email }).toArray();
      expect(claims.map((c) => c.external_provider_id)).toEqual(['legacy']);
      expect((await postUser(after, t, { provider_email: email, external_provider_id: 'legacy', settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    } finally {
      await after.close();
    }
  });

  it('back to index with a plain email index left: start-up stops, saying what to do', async () => {
    const conn = await mongoose.createConnection(mongoUrl).asPromise();
    try {
      await expect(ensureIndexes(createModels(conn), undefined, 'index')).rejects.toThrow(/non-unique email index .*EMAIL_UNIQUENESS=claims/);
    } finally {
      await conn.close();
    }
  });
});
