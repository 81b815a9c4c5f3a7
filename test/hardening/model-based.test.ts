/**
 * Model-based test of docs/contract.md POST /users: fast-check generates random command
 * sequences (creates, partial updates, no-ops, conflicting emails, another
 * organization, bad tokens, malformed bodies, and docs/api-lifecycle.md's deactivations and
 * reactivations, under the preview version or a dated one), runs each against the real API and
 * against an in-memory model of the spec's rules, and after every step compares
 * status, body and what GET /users/{id} reads back with what the model predicts.
 *
 * A failure prints fast-check's `seed` and `path`; rerun exactly that case with
 * FC_SEED=<seed> FC_PATH=<path> npx vitest run test/hardening/model-based.test.ts
 */
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROBLEM_TYPE_BASE, RecentUsers } from '@connect/shared';
import { getToken, http, postUser, registerTestClient, startTestApi, type HttpAnswer, type TestApi, type TestClient } from '../support/harness.ts';
import { decide, decideDeactivate, emailFormArb, expectView, ORGS, settingsArb, versionHeaders, writeEmail, type EmailForm, type Model, type Org, type SettingsInput } from './contract-model.ts';

interface Real {
  tag: string; // this sequence's prefix for ids and emails, so every sequence starts from an empty state
}

// ---------------------------------------------------------------- the system under test

let api: TestApi;
const clinics = {} as Record<Org, TestClient>;
const tokens = {} as Record<Org, string>;
const stats = { sequences: 0, commands: 0, byKind: {} as Record<string, number> };

const ID_POOL = 3;
const EMAIL_POOL = 3;
const idOf = (r: Real, i: number) => `${r.tag}-ehr-${i}`;
const emailOf = (r: Real, i: number) => `${r.tag}.doc${i}@clinic.example.com`;
const problemType = (slug: string) => PROBLEM_TYPE_BASE + slug;

function count(kind: string): void {
  stats.commands++;
  stats.byKind[kind] = (stats.byKind[kind] ?? 0) + 1;
}

function expectProblem(res: HttpAnswer, status: number, slug?: string): void {
  expect(res.status, res.text).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ type: expect.any(String), title: expect.any(String), status, detail: expect.any(String) });
  if (slug) expect(res.body.type).toBe(problemType(slug));
}

/** The stored state of one id in one organization, read back through the API, equals the model's. */
async function expectStored(m: Model, org: Org, id: string, next = false): Promise<void> {
  const res = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${tokens[org]}`, ...versionHeaders(next) } });
  const u = m.users[org].get(id);
  if (!u) {
    expectProblem(res, 404, 'not-found');
    return;
  }
  expect(res.status, res.text).toBe(200);
  expectView(res.body, id, u, next);
  expect(res.body.created_at).toBe(u.createdAt);
  expect(res.body.updated_at).toBe(u.updatedAt);
}


// ---------------------------------------------------------------- commands

const withoutUndefined = (v: unknown) => JSON.parse(JSON.stringify(v));

/** POST /users with an id and an email from small pools, so mismatches and conflicts happen often. */
class UpsertCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly org: Org,
    readonly idIndex: number,
    readonly emailIndex: number,
    readonly form: EmailForm,
    readonly settings: SettingsInput | undefined,
    readonly next: boolean,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    count(m.users[this.org].get(idOf(r, this.idIndex))?.status === 'deactivated' ? 'upsert-deactivated' : 'upsert');
    const id = idOf(r, this.idIndex);
    const sent = writeEmail(emailOf(r, this.emailIndex), this.form);
    await this.apply(m, r, id, sent, this.settings);
  }
  async apply(m: Model, _r: Real, id: string, sentEmail: string, settings: SettingsInput | undefined): Promise<void> {
    const expected = decide(m, this.org, id, sentEmail, settings);
    const body = withoutUndefined({ provider_email: sentEmail, external_provider_id: id, ...(settings === undefined ? {} : { settings }) });
    const res = await postUser(api, tokens[this.org], body, versionHeaders(this.next));
    // docs/api-lifecycle.md: every answer says what it did; a reactivation is an update, a refusal changed nothing.
    expect(res.headers.get('x-connect-outcome')).toBe(expected.status === 201 ? 'created' : expected.status === 200 && expected.changed ? 'updated' : 'unchanged');
    if (expected.status === 400 || expected.status === 409) {
      expectProblem(res, expected.status, expected.problem);
      if (expected.errorPath) expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(expected.errorPath);
    } else if (expected.status === 200 || expected.status === 201) {
      expect(res.status, res.text).toBe(expected.status);
      expectView(res.body, id, expected.user, this.next);
      const before = m.users[this.org].get(id);
      if (expected.status === 201) {
        expect(res.headers.get('location')).toBe(`${api.deps.config.issuer}/users/${id}`);
        expect(res.body.updated_at).toBe(res.body.created_at);
      } else if (!expected.changed) {
        // A request that changes nothing leaves updated_at alone.
        expect(res.body.updated_at).toBe(before!.updatedAt);
      } else {
        expect(Date.parse(res.body.updated_at)).toBeGreaterThanOrEqual(Date.parse(before!.updatedAt));
      }
      if (before) expect(res.body.created_at).toBe(before.createdAt);
      m.users[this.org].set(id, { ...expected.user, createdAt: res.body.created_at, updatedAt: res.body.updated_at });
    }
    await expectStored(m, this.org, id, this.next);
  }
  toString(): string {
    return `Upsert(${this.org}, id${this.idIndex}, email${this.emailIndex}/${this.form.upper}${this.form.pad ? '+pad' : ''}, ${JSON.stringify(this.settings)}${this.next ? ', next' : ''})`;
  }
}

/** Sends back exactly what is stored (email in another case, settings in full or left out): 200, nothing changes. */
class NoOpCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly org: Org,
    readonly idIndex: number,
    readonly form: EmailForm,
    readonly resendSettings: boolean,
  ) {}
  check = (m: Readonly<Model>) => m.users[this.org].size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = idOf(r, this.idIndex);
    const u = m.users[this.org].get(id);
    // The generated index missed (the check above only says the organization has someone), or the
    // user is deactivated, where sending it back reactivates it (UpsertCommand's case).
    if (!u || u.status === 'deactivated') return;
    count('no-op');
    const body: Record<string, unknown> = { provider_email: writeEmail(u.email, this.form), external_provider_id: id };
    if (this.resendSettings && u.settings) body.settings = u.settings;
    const res = await postUser(api, tokens[this.org], body);
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('x-connect-outcome')).toBe('unchanged');
    expectView(res.body, id, u, false);
    expect(res.body.updated_at).toBe(u.updatedAt);
    await expectStored(m, this.org, id);
  }
  toString(): string {
    return `NoOp(${this.org}, id${this.idIndex}, ${this.form.upper}${this.form.pad ? '+pad' : ''}, ${this.resendSettings ? 'settings' : 'no settings'})`;
  }
}

const BAD_TOKENS = ['missing', 'garbage', 'basic', 'tampered-signature', 'tampered-payload', 'other-key', 'expired', 'foreign-issuer', 'alg-none'] as const;
type BadToken = (typeof BAD_TOKENS)[number];
const otherKey = generateKeyPairSync('ed25519').privateKey;

async function badAuthorization(kind: BadToken, org: Org): Promise<string | undefined> {
  const good = tokens[org];
  const [h, p, s] = good.split('.') as [string, string, string];
  const key = api.deps.tokens.key;
  const claims = { org_id: clinics[org].organization._id, client_id: clinics[org].client._id };
  const now = Math.floor(Date.now() / 1000);
  const mint = (k = key.privateKey, iss = api.deps.config.issuer, exp = now + 600) =>
    new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' }).setIssuer(iss).setAudience(api.deps.config.issuer).setSubject(claims.client_id).setIssuedAt(now - 700).setExpirationTime(exp).sign(k);
  switch (kind) {
    case 'missing':
      return undefined;
    case 'garbage':
      return 'Bearer not-a-token';
    case 'basic':
      return `Basic ${Buffer.from('client:secret').toString('base64')}`;
    case 'tampered-signature':
      return `Bearer ${h}.${p}.${s.slice(0, -4)}${s.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    case 'tampered-payload': {
      const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
      payload.org_id = clinics[org === 'A' ? 'B' : 'A'].organization._id; // claim the other organization
      return `Bearer ${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
    }
    case 'other-key':
      return `Bearer ${await mint(otherKey)}`;
    case 'expired':
      return `Bearer ${await mint(key.privateKey, api.deps.config.issuer, now - 120)}`;
    case 'foreign-issuer':
      return `Bearer ${await mint(key.privateKey, 'https://evil.example.com/v1/connect/server')}`;
    case 'alg-none': {
      const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url');
      return `Bearer ${header}.${p}.`;
    }
  }
}

/** A valid upsert body with a credential that must not pass: 401 with WWW-Authenticate: Bearer, nothing stored. */
class BadTokenCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly org: Org,
    readonly kind: BadToken,
    readonly idIndex: number,
    readonly emailIndex: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    count('bad-token');
    const id = idOf(r, this.idIndex);
    const authorization = await badAuthorization(this.kind, this.org);
    const res = await http(`${api.baseUrl}/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23', ...(authorization ? { authorization } : {}) },
      body: JSON.stringify({ provider_email: emailOf(r, this.emailIndex), external_provider_id: id, settings: { speech_locale: 'THAI_TH' } }),
    });
    expectProblem(res, 401, 'unauthorized');
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    await expectStored(m, this.org, id);
  }
  toString(): string {
    return `BadToken(${this.org}, ${this.kind}, id${this.idIndex})`;
  }
}

/** Bodies docs/contract.md refuses, built around ids and emails of the pool so an accepted one would show in the state. */
const MALFORMED = [
  'not-json',
  'array',
  'unknown-member',
  'unknown-settings-member',
  'unknown-specialty-member',
  'bad-email',
  'long-email',
  'email-number',
  'blank-id',
  'long-id',
  'id-number',
  'other-without-name',
  'other-blank-name',
  'name-without-other',
  'unknown-kind',
  'unknown-locale',
  'no-speech-locale',
  'settings-null',
  '$-operator-email',
] as const;
type Malformed = (typeof MALFORMED)[number];

function malformedBody(kind: Malformed, id: string, email: string): { body: string; errorPath?: string } {
  const ok = { provider_email: email, external_provider_id: id };
  const s = { speech_locale: 'ENGLISH_US' };
  const j = (v: unknown, errorPath?: string) => ({ body: JSON.stringify(v), errorPath });
  switch (kind) {
    case 'not-json':
      return { body: `{"provider_email": "${email}", "external_provider_id": ` };
    case 'array':
      return j([ok]);
    case 'unknown-member':
      return j({ ...ok, role: 'admin' }, 'role');
    case 'unknown-settings-member':
      return j({ ...ok, settings: { ...s, dictation: true } }, 'settings.dictation');
    case 'unknown-specialty-member':
      return j({ ...ok, settings: { ...s, specialty: { kind: 'CARDIOLOGY', level: 3 } } }, 'settings.specialty.level');
    case 'bad-email':
      return j({ ...ok, provider_email: email.replace('@', ' at ') }, 'provider_email');
    case 'long-email':
      return j({ ...ok, provider_email: `${'a'.repeat(320)}${email}` }, 'provider_email');
    case 'email-number':
      return j({ ...ok, provider_email: 42 }, 'provider_email');
    case 'blank-id':
      return j({ ...ok, external_provider_id: '   ' }, 'external_provider_id');
    case 'long-id':
      return j({ ...ok, external_provider_id: id + 'x'.repeat(257) }, 'external_provider_id');
    case 'id-number':
      return j({ ...ok, external_provider_id: 7 }, 'external_provider_id');
    case 'other-without-name':
      return j({ ...ok, settings: { ...s, specialty: { kind: 'OTHER' } } }, 'settings.specialty.other_specialty_name');
    case 'other-blank-name':
      return j({ ...ok, settings: { ...s, specialty: { kind: 'OTHER', other_specialty_name: '  ' } } }, 'settings.specialty.other_specialty_name');
    case 'name-without-other':
      return j({ ...ok, settings: { ...s, specialty: { kind: 'CARDIOLOGY', other_specialty_name: 'Heart' } } }, 'settings.specialty.other_specialty_name');
    case 'unknown-kind':
      return j({ ...ok, settings: { ...s, specialty: { kind: 'ASTROLOGY' } } }, 'settings.specialty.kind');
    case 'unknown-locale':
      return j({ ...ok, settings: { speech_locale: 'KLINGON' } }, 'settings.speech_locale');
    case 'no-speech-locale':
      return j({ ...ok, settings: { secondary_speech_locale: 'FRENCH_FR' } }, 'settings.speech_locale');
    case 'settings-null':
      return j({ ...ok, settings: null }, 'settings');
    case '$-operator-email':
      return j({ ...ok, provider_email: { $ne: null } }, 'provider_email');
  }
}

class MalformedCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly org: Org,
    readonly kind: Malformed,
    readonly idIndex: number,
    readonly emailIndex: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    count('malformed');
    const id = idOf(r, this.idIndex);
    const { body, errorPath } = malformedBody(this.kind, id, emailOf(r, this.emailIndex));
    const res = await postUser(api, tokens[this.org], body);
    expectProblem(res, 400, this.kind === 'not-json' ? 'malformed-body' : 'validation');
    if (errorPath !== undefined) expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(errorPath);
    await expectStored(m, this.org, id);
  }
  toString(): string {
    return `Malformed(${this.org}, ${this.kind}, id${this.idIndex})`;
  }
}

/** Reads one id in one organization: 200 with the model's user, or 404 (also for the other organization's users). */
class GetCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly org: Org,
    readonly idIndex: number,
    readonly next: boolean,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    count('get');
    await expectStored(m, this.org, idOf(r, this.idIndex), this.next);
  }
  toString(): string {
    return `Get(${this.org}, id${this.idIndex}${this.next ? ', next' : ''})`;
  }
}

/**
 * DELETE /users/{id} (docs/api-lifecycle.md): under the preview version it deactivates (version + 1),
 * again it answers the same user unchanged, an unknown id (or the other organization's) is 404; under a
 * dated version the route does not exist (404 endpoint-not-in-version) and nothing changes.
 */
class DeactivateCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly org: Org,
    readonly idIndex: number,
    readonly next: boolean,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const id = idOf(r, this.idIndex);
    const before = m.users[this.org].get(id);
    count(!this.next ? 'deactivate-dated' : !before ? 'deactivate-unknown' : before.status === 'active' ? 'deactivate' : 'deactivate-again');
    const res = await http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${tokens[this.org]}`, ...versionHeaders(this.next) } });
    if (!this.next) expectProblem(res, 404, 'endpoint-not-in-version');
    else {
      const expected = decideDeactivate(m, this.org, id);
      if (expected.status === 404) expectProblem(res, 404, 'not-found');
      else {
        expect(res.status, res.text).toBe(200);
        expectView(res.body, id, expected.user, true);
        if (!expected.changed) expect(res.body.updated_at).toBe(before!.updatedAt);
        else {
          expect(Date.parse(res.body.updated_at)).toBeGreaterThanOrEqual(Date.parse(before!.updatedAt));
          expect(res.body.created_at).toBe(before!.createdAt);
          m.users[this.org].set(id, { ...expected.user, deactivatedAt: res.body.deactivated_at, updatedAt: res.body.updated_at });
        }
      }
    }
    await expectStored(m, this.org, id, this.next);
  }
  toString(): string {
    return `Deactivate(${this.org}, id${this.idIndex}${this.next ? ', next' : ', dated'})`;
  }
}

const orgArb = fc.constantFrom<Org>(...ORGS);
const idIndexArb = fc.nat({ max: ID_POOL - 1 });
const emailIndexArb = fc.nat({ max: EMAIL_POOL - 1 });
/** Under the preview version `x-nabla-next` (true) or the organization's dated one. */
const nextArb = fc.boolean();
const commandArbs = [
  // Upserts dominate, mostly in organization A so sequences build up state; B exercises isolation.
  fc.tuple(fc.constantFrom<Org>('A', 'A', 'A', 'B'), idIndexArb, emailIndexArb, emailFormArb, settingsArb, nextArb).map(([o, i, e, f, s, n]) => new UpsertCommand(o, i, e, f, s, n)),
  fc.tuple(fc.constantFrom<Org>('A', 'A', 'A', 'B'), idIndexArb, emailIndexArb, emailFormArb, settingsArb, nextArb).map(([o, i, e, f, s, n]) => new UpsertCommand(o, i, e, f, s, n)),
  fc.tuple(orgArb, idIndexArb, emailFormArb, fc.boolean()).map(([o, i, f, s]) => new NoOpCommand(o, i, f, s)),
  fc.tuple(orgArb, fc.constantFrom(...BAD_TOKENS), idIndexArb, emailIndexArb).map(([o, k, i, e]) => new BadTokenCommand(o, k, i, e)),
  fc.tuple(orgArb, fc.constantFrom(...MALFORMED), idIndexArb, emailIndexArb).map(([o, k, i, e]) => new MalformedCommand(o, k, i, e)),
  fc.tuple(orgArb, idIndexArb, nextArb).map(([o, i, n]) => new GetCommand(o, i, n)),
  // Mostly under the preview version, where the route exists.
  fc.tuple(fc.constantFrom<Org>('A', 'A', 'A', 'B'), idIndexArb, fc.constantFrom(true, true, true, false)).map(([o, i, n]) => new DeactivateCommand(o, i, n)),
];

// ---------------------------------------------------------------- the property

const NUM_RUNS = Number(process.env.FC_RUNS ?? 90);
// The first block's 90 sequences took 31 s on a two-core CI machine; the other three stop at half the
// budget (16 s, about 40 sequences and 800 commands each). FC_TIME_BUDGET_MS / FC_RUNS for a longer hunt.
const TIME_BUDGET_MS = Number(process.env.FC_TIME_BUDGET_MS ?? 32_000);

// Both ways of keeping emails unique (docs/guarantees.md, "Email claims"): the claims run starts on a
// new database, whose email index is then plain, so only the claims keep emails unique there.
// The third run writes first for every user it does not hold, the fourth inserts first, and each holds one
// user at most, so nearly every request takes the one-step update or create (docs/guarantees.md,
// "One-step writes") or its fallback to the read.
describe.each([
  { emailUniqueness: 'index', firstStep: 'learn', budgetMs: TIME_BUDGET_MS },
  { emailUniqueness: 'claims', firstStep: 'learn', budgetMs: Math.round(TIME_BUDGET_MS / 2) },
  { emailUniqueness: 'index', firstStep: 'write', budgetMs: Math.round(TIME_BUDGET_MS / 2) },
  { emailUniqueness: 'index', firstStep: 'insert', budgetMs: Math.round(TIME_BUDGET_MS / 2) },
] as const)('POST /users behaves as docs/contract.md\'s model over random command sequences (create, merge, no-op, 409s, isolation, 401, 400, deactivate, reactivate), EMAIL_UNIQUENESS=$emailUniqueness, first step $firstStep', ({ emailUniqueness, firstStep, budgetMs }) => {
  const timings: Record<string, number> = {};
  beforeAll(async () => {
    const t0 = Date.now();
    // Thousands of requests from one client and one IP: the rate limits (test/api/rate-limits.test.ts) are off here.
    api = await startTestApi({
      label: `model_${emailUniqueness}_${firstStep}`,
      env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0', RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: '0', EMAIL_UNIQUENESS: emailUniqueness },
      ...(firstStep === 'learn' ? {} : { recentUsers: new RecentUsers(1, firstStep) }),
    });
    for (const org of ORGS) {
      clinics[org] = await registerTestClient(api.models, { name: `Model clinic ${org}` });
      tokens[org] = await getToken(api, clinics[org]);
    }
    timings.setupMs = Date.now() - t0;
  });
  afterAll(async () => {
    const t0 = Date.now();
    // Every request of this block has been answered. Under load, app.close() was seen waiting ~70 s
    // here (about Fastify's 72 s keep-alive timeout) for connections it did not count as idle:
    // reported; dropped here so the suite's run time stays bounded.
    api?.server.closeAllConnections();
    await api?.close();
    timings.closeMs = Date.now() - t0;
    console.log(`[model-based ${emailUniqueness} ${firstStep}] ${stats.sequences} sequences, ${stats.commands} commands run: ${JSON.stringify(stats.byKind)}; ${JSON.stringify(timings)}`);
    stats.sequences = 0;
    stats.commands = 0;
    for (const k of Object.keys(stats.byKind)) delete stats.byKind[k];
  });

  it('status, body and stored state equal the model after every step', async () => {
    let sequence = 0;
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(fc.commands(commandArbs, { maxCommands: 40, size: 'max' }), async (cmds) => {
        stats.sequences++;
        const real: Real = { tag: `s${++sequence}x${Date.now().toString(36)}` };
        const model: Model = { users: { A: new Map(), B: new Map() } };
        await fc.asyncModelRun(() => ({ model, real }), cmds);
        // Whatever the API answered, the documents stored per organization are exactly the model's users.
        for (const org of ORGS) {
          const ids = Array.from({ length: ID_POOL }, (_, i) => idOf(real, i));
          const docs = await api.models.ProviderUser.find({ organization_id: clinics[org].organization._id, external_provider_id: { $in: ids } }).lean();
          expect(docs.map((d) => d.external_provider_id).sort()).toEqual([...model.users[org].keys()].sort());
          for (const d of docs) {
            const u = model.users[org].get(d.external_provider_id)!;
            expect({ email: d.email_normalized, version: d.version, eventVersion: d.last_event.version, status: d.status ?? 'active' }).toEqual({ email: u.email.toLowerCase(), version: u.version, eventVersion: u.version, status: u.status });
          }
        }
      }),
      {
        numRuns: NUM_RUNS,
        ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
        ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
        verbose: 1,
        // Bounded run time on a shared two-core machine: stop starting new sequences after the budget
        // (a sequence that fails before then still fails the test, with its seed and path).
        plugins: [fc.interruptAfterTimeLimit(budgetMs)],
      },
    );
    timings.propertyMs = Date.now() - started;
    expect(stats.commands).toBeGreaterThan(budgetMs === TIME_BUDGET_MS ? 300 : 150);
  }, budgetMs + 60_000);
});
