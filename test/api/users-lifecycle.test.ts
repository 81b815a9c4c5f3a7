import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { eventJobOf, type ProviderUserDoc } from '@connect/shared';
import { getToken, http, postUser, registerTestClient, startTestApi, type HttpAnswer, type TestApi, type TestClient } from '../support/harness.ts';
import { LIST_PAGES_AT_ONCE } from '@connect/api';

/**
 * The preview lifecycle (docs/api-lifecycle.md): deactivate, reactivate, list,
 * only under x-nabla-next; dated versions keep their routes and their shapes.
 */

const NEXT = { 'x-nabla-api-version': 'x-nabla-next' };
const DATED = { 'x-nabla-api-version': '2026-03-23' };

let api: TestApi;
let clinic: TestClient;
let token: string;

beforeAll(async () => {
  api = await startTestApi({ label: 'lifecycle' });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});
afterAll(async () => api?.close());

const stored = (id: string, org = clinic.organization._id) => api.models.ProviderUser.findOne({ organization_id: org, external_provider_id: id }).lean();
const as = (bearer: string, headers: Record<string, string>) => ({ authorization: `Bearer ${bearer}`, ...headers });
const del = (id: string, headers: Record<string, string> = NEXT, bearer = token) =>
  http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: as(bearer, headers) });
const get = (id: string, headers: Record<string, string>, bearer = token) => http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { headers: as(bearer, headers) });
const list = (query: Record<string, string>, bearer = token, headers: Record<string, string> = NEXT) =>
  http(`${api.baseUrl}/users?${new URLSearchParams(query)}`, { headers: as(bearer, headers) });

async function createUser(label: string, headers: Record<string, string> = NEXT, bearer = token) {
  const id = `${label}-${randomUUID()}`;
  const email = `${id}@example.com`;
  const res = await postUser(api, bearer, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US', secondary_speech_locale: 'FRENCH_FR' } }, headers);
  expect(res.status, res.text).toBe(201);
  return { id, email, created: res };
}

function expectEndpointNotInVersion(res: HttpAnswer, served: string) {
  expect(res.status, res.text).toBe(404);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.body.type).toMatch(/\/endpoint-not-in-version$/);
  expect(res.headers.get('x-nabla-api-version')).toBe(served);
}

describe('DELETE {base}/users/{id} under x-nabla-next: deactivate', () => {
  it('200 with status "deactivated", deactivated_at, version + 1, and a user.deactivated event in the document', async () => {
    const { id, created } = await createUser('leaver');
    expect(created.body).toMatchObject({ status: 'active', deactivated_at: null, version: 1 });
    const res = await del(id);
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('x-nabla-api-version')).toBe('x-nabla-next');
    expect(res.body).toEqual({
      ...created.body,
      status: 'deactivated',
      deactivated_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      updated_at: res.body.deactivated_at,
      version: 2,
    });
    const doc = (await stored(id))!;
    expect(doc.status).toBe('deactivated');
    expect(doc.last_event).toMatchObject({ type: 'user.deactivated', version: 2 });
  });

  it('a second DELETE answers 200 with the same user and writes no event', async () => {
    const { id } = await createUser('twice');
    const first = await del(id);
    const eventAfterFirst = (await stored(id))!.last_event;
    const second = await del(id);
    expect(second.status).toBe(200);
    expect(second.body).toEqual(first.body);
    const doc = (await stored(id))!;
    expect(doc.version).toBe(2);
    expect(doc.last_event).toEqual(eventAfterFirst);
  });

  it('a DELETE sent with Content-Type: application/json and no body (as clients that set it on every request do) deactivates; one with a body is not refused for it either', async () => {
    const { id } = await createUser('typed');
    const bare = await del(id, { ...NEXT, 'content-type': 'application/json' });
    expect(bare.status, bare.text).toBe(200);
    expect(bare.body).toMatchObject({ status: 'deactivated' });
    const { id: other } = await createUser('typed-body');
    const withBody = await http(`${api.baseUrl}/users/${encodeURIComponent(other)}`, { method: 'DELETE', headers: as(token, { ...NEXT, 'content-type': 'application/json' }), body: '{}' });
    expect(withBody.status, withBody.text).toBe(200);
  });

  it('20 simultaneous DELETEs: all 200, one deactivation (version 2, one event), every answer the same user', async () => {
    const { id } = await createUser('stampede');
    const answers = await Promise.all(Array.from({ length: 20 }, () => del(id)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(new Set(answers.map((a) => JSON.stringify(a.body))).size).toBe(1);
    const doc = (await stored(id))!;
    expect([doc.version, doc.last_event.type, doc.last_event.version]).toEqual([2, 'user.deactivated', 2]);
  });

  it('an unknown id answers 404 problem; another organization\'s user is unknown too, and stays active', async () => {
    const unknown = await del(`nobody-${randomUUID()}`);
    expect(unknown.status).toBe(404);
    expect(unknown.body.type).toMatch(/\/not-found$/);

    const other = await registerTestClient(api.models, { name: 'Other clinic' });
    const otherToken = await getToken(api, other);
    const { id } = await createUser('foreign', NEXT, otherToken);
    expect((await del(id)).status).toBe(404);
    expect((await stored(id, other.organization._id))!.status).toBe('active');
  });
});

describe('POST /users on a deactivated user reactivates it (any version)', () => {
  it('under x-nabla-next: status "active", deactivated_at null, user.reactivated, settings merged as usual', async () => {
    const { id, email } = await createUser('returner');
    await del(id);
    const res = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE' } }, NEXT);
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('x-connect-outcome')).toBe('updated');
    expect(res.body).toMatchObject({
      status: 'active',
      deactivated_at: null,
      version: 3,
      // secondary_speech_locale was absent: kept, as in any merge.
      settings: { speech_locale: 'GERMAN_DE', secondary_speech_locale: 'FRENCH_FR', specialty: null },
    });
    expect((await stored(id))!.last_event).toMatchObject({ type: 'user.reactivated', version: 3 });
  });

  it('under 2026-03-23, even with nothing else changed: reactivated, and the body keeps its dated shape', async () => {
    const { id, email } = await createUser('quiet-returner');
    await del(id);
    const res = await postUser(api, token, { provider_email: email, external_provider_id: id }, DATED);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-connect-outcome')).toBe('updated');
    expect(res.body).not.toHaveProperty('status');
    expect(res.body).not.toHaveProperty('deactivated_at');
    expect(res.body.version).toBe(3);
    const doc = (await stored(id))!;
    expect(doc.status).toBe('active');
    expect(doc.last_event.type).toBe('user.reactivated');
    // Active again: the same request now changes nothing.
    const again = await postUser(api, token, { provider_email: email, external_provider_id: id }, DATED);
    expect(again.headers.get('x-connect-outcome')).toBe('unchanged');
    expect(again.body.version).toBe(3);
  });
});

describe('X-Connect-Outcome on every POST /users answer, every version', () => {
  for (const headers of [DATED, NEXT]) {
    it(`created, updated, unchanged under ${headers['x-nabla-api-version']}`, async () => {
      const id = `outcome-${randomUUID()}`;
      const email = `${id}@example.com`;
      const created = await postUser(api, token, { provider_email: email, external_provider_id: id }, headers);
      expect([created.status, created.headers.get('x-connect-outcome')]).toEqual([201, 'created']);
      const updated = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'THAI_TH' } }, headers);
      expect([updated.status, updated.headers.get('x-connect-outcome')]).toEqual([200, 'updated']);
      const unchanged = await postUser(api, token, { provider_email: email, external_provider_id: id, settings: { speech_locale: 'THAI_TH' } }, headers);
      expect([unchanged.status, unchanged.headers.get('x-connect-outcome')]).toEqual([200, 'unchanged']);
      // The body is the user, as the public API has it: the outcome is only in the header.
      expect(unchanged.body).not.toHaveProperty('outcome');
    });
  }

  it('a refused POST /users (400, 401, 404 in a version without it, 409 either kind, 413, 415) says `unchanged`, and changed nothing', async () => {
    const id = `refused-${randomUUID()}`;
    const email = `${id}@example.com`;
    expect((await postUser(api, token, { provider_email: email, external_provider_id: id }, DATED)).status).toBe(201);
    const other = `refused-other-${randomUUID()}`;
    const raw = (body: string, headers: Record<string, string>) => http(`${api.baseUrl}/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, ...DATED, ...headers }, body });
    const answers = {
      400: await postUser(api, token, { provider_email: 'not an email', external_provider_id: id }, DATED),
      401: await postUser(api, 'not-a-token', { provider_email: email, external_provider_id: id }, DATED),
      404: await postUser(api, token, { provider_email: email, external_provider_id: id }, { 'x-nabla-api-version': '2026-02-13' }),
      '409 mismatch': await postUser(api, token, { provider_email: `x${email}`, external_provider_id: id }, DATED),
      '409 conflict': await postUser(api, token, { provider_email: email, external_provider_id: other }, DATED),
      413: await raw(JSON.stringify({ provider_email: email, external_provider_id: id, pad: 'x'.repeat(70 * 1024) }), { 'content-type': 'application/json' }),
      415: await raw('provider_email=x', { 'content-type': 'text/plain' }),
    };
    for (const [what, res] of Object.entries(answers)) {
      expect([res.status, res.headers.get('x-connect-outcome')], what).toEqual([Number(what.slice(0, 3)), 'unchanged']);
    }
    const stored = await api.models.ProviderUser.find({ external_provider_id: { $in: [id, other] } }).lean();
    expect(stored.map((u) => [u.external_provider_id, u.version])).toEqual([[id, 1]]);
  });
});

describe('under 2026-03-23 the preview routes do not exist and users carry no status', () => {
  it('DELETE and GET /users answer 404 endpoint-not-in-version (header, query, or the pinned default)', async () => {
    const { id } = await createUser('dated');
    expectEndpointNotInVersion(await del(id, DATED), '2026-03-23');
    expectEndpointNotInVersion(await list({}, token, DATED), '2026-03-23');
    expectEndpointNotInVersion(await list({ 'nabla-api-version': '2026-03-23' }, token, {}), '2026-03-23');
    // No version asked: the organization's pinned one (2026-03-23 by default).
    expectEndpointNotInVersion(await del(id, {}), '2026-03-23');
    expect((await stored(id))!.status).toBe('active');
  });

  it('under the older dated version, 2026-02-13, too: DELETE and GET /users answer 404 endpoint-not-in-version, and the user stays active', async () => {
    const { id } = await createUser('dated-older');
    const older = { 'x-nabla-api-version': '2026-02-13' };
    expectEndpointNotInVersion(await del(id, older), '2026-02-13');
    expectEndpointNotInVersion(await list({}, token, older), '2026-02-13');
    expectEndpointNotInVersion(await list({ 'nabla-api-version': '2026-02-13' }, token, {}), '2026-02-13');
    expect((await stored(id))!.status).toBe('active');
  });

  it('POST and GET bodies have no status nor deactivated_at, even for a deactivated user; x-nabla-next shows them', async () => {
    const { id, email, created } = await createUser('shape', DATED);
    expect(Object.keys(created.body).sort()).toEqual(['created_at', 'external_provider_id', 'provider_email', 'settings', 'updated_at', 'version']);
    await del(id);
    const dated = await get(id, DATED);
    expect(dated.status).toBe(200);
    expect(Object.keys(dated.body).sort()).toEqual(['created_at', 'external_provider_id', 'provider_email', 'settings', 'sync', 'updated_at', 'version']);
    const next = await get(id, NEXT);
    expect(next.body).toMatchObject({ status: 'deactivated', deactivated_at: expect.any(String), sync: [] });
    const emailConflict = await postUser(api, token, { provider_email: `other-${email}`, external_provider_id: id }, DATED);
    expect(emailConflict.status).toBe(409); // a deactivated user keeps its email and its rules
  });
});

describe('GET {base}/users under x-nabla-next: pages, order, status filter, tenancy', () => {
  let org: TestClient;
  let orgToken: string;
  let neighbour: TestClient;
  let neighbourToken: string;
  const ids: string[] = [];
  const deactivated: string[] = [];

  beforeAll(async () => {
    // A fresh organization of its own, so the counts are exact; and a neighbour with users of its own.
    org = await registerTestClient(api.models, { name: 'Big hospital' });
    orgToken = await getToken(api, org);
    neighbour = await registerTestClient(api.models, { name: 'Neighbour' });
    neighbourToken = await getToken(api, neighbour);
    for (let i = 0; i < 250; i++) ids.push(`p-${String(i).padStart(3, '0')}-${randomUUID().slice(0, 4)}`);
    for (let i = 0; i < ids.length; i += 25) {
      await Promise.all(
        ids.slice(i, i + 25).map(async (id) => {
          const res = await postUser(api, orgToken, { provider_email: `${id}@big.example.com`, external_provider_id: id }, NEXT);
          expect(res.status).toBe(201);
        }),
      );
    }
    for (let i = 0; i < 20; i++) await postUser(api, neighbourToken, { provider_email: `n${i}@neighbour.example.com`, external_provider_id: `n-${i}` }, NEXT);
    for (const id of ids.filter((_, i) => i % 50 === 7)) {
      expect((await del(id, NEXT, orgToken)).status).toBe(200);
      deactivated.push(id);
    }
  }, 120_000);

  async function walk(query: Record<string, string>, bearer = orgToken) {
    const pages: { data: { external_provider_id: string; status: string }[]; next_cursor: string | null }[] = [];
    let cursor: string | null = null;
    do {
      const res: HttpAnswer = await list({ ...query, ...(cursor ? { cursor } : {}) }, bearer);
      expect(res.status, res.text).toBe(200);
      expect(Object.keys(res.body)).toEqual(['data', 'next_cursor']);
      pages.push(res.body);
      cursor = res.body.next_cursor;
    } while (cursor !== null && pages.length < 10);
    return pages;
  }

  it('250 users with limit 100: pages of 100, 100, 50, each user once, in external_provider_id order, the last cursor null', async () => {
    const pages = await walk({ limit: '100' });
    expect(pages.map((p) => p.data.length)).toEqual([100, 100, 50]);
    expect(pages.at(-1)!.next_cursor).toBeNull();
    const seen = pages.flatMap((p) => p.data.map((u) => u.external_provider_id));
    expect(seen).toEqual([...ids].sort());
    // Every user carries status under x-nabla-next.
    expect(pages.flatMap((p) => p.data).filter((u) => u.status === 'deactivated').map((u) => u.external_provider_id).sort()).toEqual([...deactivated].sort());
    expect(pages[0]!.data[0]).toMatchObject({ provider_email: expect.stringMatching(/@big\.example\.com$/), status: 'active', deactivated_at: null, version: 1 });
  });

  it('paging while, beside each page\'s query, users are created before and after the cursor and others updated and deactivated: each user there throughout is listed once, none twice, in order', async () => {
    // An organization of its own, so the other tests' counts stay exact.
    const busy = await registerTestClient(api.models, { name: 'Busy hospital' });
    const busyToken = await getToken(api, busy);
    const key = (i: number) => `q-${String(i).padStart(3, '0')}`;
    const before = Array.from({ length: 60 }, (_, i) => key(2 * i)); // even numbers; the odd ones arrive during the walk
    for (const id of before) expect((await postUser(api, busyToken, { provider_email: `${id}@busy.example.com`, external_provider_id: id }, NEXT)).status).toBe(201);
    const seen: string[] = [];
    const added: string[] = [];
    let cursor: string | null = null;
    let page = 0;
    do {
      // The page is read while three users are created (one before the cursor, one after, one anywhere), one
      // is updated and one deactivated: a page's query runs beside writes, not between them.
      const writes = [key(2 * page + 1), key(119 - 2 * page), key(1 + 2 * ((page * 7) % 60))].map(async (id) => {
        const res = await postUser(api, busyToken, { provider_email: `${id}@busy.example.com`, external_provider_id: id }, NEXT);
        if (res.status === 201) added.push(id);
      });
      const target = before[(page * 11) % before.length]!;
      writes.push(postUser(api, busyToken, { provider_email: `${target}@busy.example.com`, external_provider_id: target, settings: { speech_locale: page % 2 ? 'FRENCH_FR' : 'GERMAN_DE' } }, NEXT).then(() => undefined));
      writes.push(del(before[(page * 13 + 5) % before.length]!, NEXT, busyToken).then(() => undefined));
      const listing = list({ limit: '7', ...(cursor ? { cursor } : {}) }, busyToken);
      await Promise.all([listing, ...writes]);
      const res: HttpAnswer = await listing;
      expect(res.status, res.text).toBe(200);
      seen.push(...res.body.data.map((u: { external_provider_id: string }) => u.external_provider_id));
      cursor = res.body.next_cursor;
      page++;
    } while (cursor !== null && page < 40);
    expect(cursor).toBeNull();
    expect(new Set(seen).size).toBe(seen.length); // none twice
    expect(seen).toEqual([...seen].sort()); // in order
    expect(seen.filter((id) => before.includes(id))).toEqual(before); // every user there throughout, once
    expect(seen.filter((id) => !before.includes(id)).every((id) => added.includes(id))).toBe(true);
    expect(added.length).toBeGreaterThan(10);
  });

  it('nothing leaks across organizations: the neighbour sees its 20 users only', async () => {
    const pages = await walk({ limit: '200' }, neighbourToken);
    const seen = pages.flatMap((p) => p.data.map((u) => u.external_provider_id));
    expect(seen).toHaveLength(20);
    expect(seen.every((id) => id.startsWith('n-'))).toBe(true);
  });

  it('a page that ends on the longest id the API takes (256 four-byte characters) gives a cursor the list takes back (it was over the 1,024 characters the cursor parameter allowed: 400, and paging stopped)', async () => {
    const longest = await registerTestClient(api.models, { name: 'Long ids' });
    const bearer = await getToken(api, longest);
    const wide = ['\u{1F601}'.repeat(256), '\u{1F602}'];
    for (const [i, id] of wide.entries()) expect((await postUser(api, bearer, { provider_email: `wide-${i}@example.com`, external_provider_id: id }, NEXT)).status).toBe(201);
    const pages = await walk({ limit: '1' }, bearer);
    expect(pages[0]!.next_cursor!.length).toBeGreaterThan(1024);
    expect(pages.flatMap((p) => p.data.map((u) => u.external_provider_id))).toEqual(wide);
  });

  it('a cursor issued to one organization is refused (400) with another organization\'s token', async () => {
    const first = await list({ limit: '10' }, orgToken);
    const res = await list({ limit: '10', cursor: first.body.next_cursor }, neighbourToken);
    expect(res.status).toBe(400);
    expect(res.body.type).toMatch(/\/invalid-cursor$/);
  });

  it('status=deactivated and status=active split the users', async () => {
    const off = await walk({ limit: '200', status: 'deactivated' });
    expect(off.flatMap((p) => p.data.map((u) => u.external_provider_id))).toEqual([...deactivated].sort());
    const on = await walk({ limit: '100', status: 'active' });
    const active = on.flatMap((p) => p.data);
    expect(active).toHaveLength(250 - deactivated.length);
    expect(active.every((u) => u.status === 'active')).toBe(true);
  });

  it('a tampered cursor is 400 problem naming the cursor; so is one reused with another status filter', async () => {
    const first = await list({ limit: '5' }, orgToken);
    const cursor: string = first.body.next_cursor;
    const [payload, mac] = cursor.split('.') as [string, string];
    const state = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const forged = Buffer.from(JSON.stringify({ ...state, after: 'p-200' })).toString('base64url');
    const flipped = mac.slice(0, -2) + (mac.at(-2) === 'A' ? 'B' : 'A') + mac.at(-1);
    // Base64url read leniently took these too: padding, "+/" for "-_", a stray character.
    const respelled = [`${cursor}==`, `${payload}.${mac.replaceAll('-', '+').replaceAll('_', '/')}`, `${payload}.${mac}!`].filter((c) => c !== cursor);
    for (const bad of [`${forged}.${mac}`, `${payload}.${flipped}`, `${payload}`, 'garbage', `${cursor}.x`, ...respelled]) {
      const res = await list({ limit: '5', cursor: bad }, orgToken);
      expect(res.status, bad).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({ type: expect.stringMatching(/\/invalid-cursor$/), errors: [{ path: 'querystring.cursor' }] });
    }
    const otherFilter = await list({ limit: '5', cursor, status: 'active' }, orgToken);
    expect(otherFilter.status).toBe(400);
    // The genuine cursor still works.
    expect((await list({ limit: '5', cursor }, orgToken)).status).toBe(200);
  });

  it('limit outside 1..200, not in digits or given twice, an unknown parameter, or a status outside the enum: 400 naming the parameter', async () => {
    for (const limit of ['0', '201', 'ten']) {
      const res = await list({ limit }, orgToken);
      expect(res.status, limit).toBe(400);
      expect(res.body.errors.map((e: { path: string }) => e.path)).toEqual(['querystring.limit']);
    }
    // Numbers only in digits: JavaScript's Number() read these as 100, 16, 3, 5 and 2.
    for (const limit of ['1e2', '0x10', '0b11', ' 5', '2.0', '+5', '', '999999999999999999999']) {
      const res = await list({ limit }, orgToken);
      expect(res.status, limit).toBe(400);
      expect(res.body.errors, limit).toEqual([{ path: 'querystring.limit', message: limit === '' ? 'must not be empty' : 'must be a whole number from 1 to 200, in digits' }]);
    }
    // Given twice, or a parameter the list does not know (it answered the unfiltered list): named.
    const twice = await http(`${api.baseUrl}/users?limit=1&limit=2&cursor=a&cursor=b`, { headers: as(orgToken, NEXT) });
    expect(twice.status).toBe(400);
    expect(twice.body.errors).toEqual([
      { path: 'querystring.limit', message: 'is given more than once' },
      { path: 'querystring.cursor', message: 'is given more than once' },
    ]);
    const unknown = await http(`${api.baseUrl}/users?${encodeURIComponent('status[]')}=deactivated`, { headers: as(orgToken, NEXT) });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors).toEqual([{ path: 'querystring.status[]', message: expect.stringMatching(/^unknown parameter; the list takes limit, cursor, status, nabla-api-version$/) }]);
    // At most 10 named, however many the URL holds.
    const many = await http(`${api.baseUrl}/users?${Array.from({ length: 500 }, (_, i) => `p${i}=1`).join('&')}`, { headers: as(orgToken, NEXT) });
    expect(many.status).toBe(400);
    expect(many.body.errors).toHaveLength(10);
    // The API version may still ride in the query.
    expect((await http(`${api.baseUrl}/users?limit=1&nabla-api-version=x-nabla-next`, { headers: as(orgToken, {}) })).status).toBe(200);
    const status = await list({ status: 'gone' }, orgToken);
    expect(status.status).toBe(400);
    expect(status.body.errors).toEqual([{ path: 'querystring.status', message: 'must be one of active, deactivated', allowed: ['active', 'deactivated'] }]);
  });
});

describe('GET {base}/users: the query of a page has a time limit in the database', () => {
  it('a page whose query outlasts its limit is stopped by the database and answered 503 with Retry-After; the same page answers 200 without it', async () => {
    // On FerretDB a page reads and sorts the whole organization, and a query left running past the
    // request's 503 holds a connection for nothing. A limit of 1 ms over an organization of 2,000
    // users: no query of FerretDB's ends in that (an idle machine read 30 users within it once; on
    // MongoDB a small page could, as it checks the limit only now and then). Copies of one user,
    // written straight to the collection, in an organization of their own.
    const big = await registerTestClient(api.models, { name: 'Time-limit hospital' });
    const bigToken = await getToken(api, big);
    const { id } = await createUser('time-limit', NEXT, bigToken);
    const { _id, ...model } = (await api.models.ProviderUser.collection.findOne({ organization_id: big.organization._id, external_provider_id: id }))!;
    const copies = Array.from({ length: 2000 }, (_, i) => {
      const copyId = `tl-${String(i).padStart(4, '0')}`;
      return { ...model, external_provider_id: copyId, provider_email: `${copyId}@example.com`, email_normalized: `${copyId}@example.com` };
    });
    await api.models.ProviderUser.collection.insertMany(copies);
    api.deps.faults.listMaxTimeMs = 1;
    try {
      const stopped = await list({ limit: '200' }, bigToken);
      expect(stopped.status, stopped.text.slice(0, 300)).toBe(503);
      expect(stopped.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(stopped.body).toMatchObject({ type: expect.stringMatching(/\/service-unavailable$/), status: 503, detail: expect.stringMatching(/did not complete in time/) });
      expect(stopped.headers.get('retry-after')).toBe('5');
    } finally {
      delete api.deps.faults.listMaxTimeMs;
    }
    const page = await list({ limit: '200' }, bigToken);
    expect(page.status, page.text).toBe(200);
    expect(page.body.data.length).toBe(200);
  });
});

describe('GET {base}/users: pages in flight per organization are bounded', () => {
  it(`a third page while ${LIST_PAGES_AT_ONCE} of the organization's are in flight is 429 with Retry-After: 1, at once; another organization's page goes through; once one is answered, pages go through again`, async () => {
    const other = await registerTestClient(api.models, { name: 'Other list hospital' });
    const otherToken = await getToken(api, other);
    let arrived = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    api.deps.faults.beforeListQuery = async () => {
      arrived++;
      await gate;
    };
    try {
      const held = Array.from({ length: LIST_PAGES_AT_ONCE }, () => list({ limit: '1' }));
      await vi.waitFor(() => expect(arrived).toBe(LIST_PAGES_AT_ONCE));
      const third = await list({ limit: '1' });
      expect(third.status, third.text).toBe(429);
      expect(third.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(third.headers.get('retry-after')).toBe('1');
      expect(third.body).toMatchObject({ type: expect.stringMatching(/\/rate-limited$/), detail: expect.stringMatching(/^At most \d list pages at once per organization/) });
      // Another tenant is not held back by this one's pages.
      const elsewhere = list({ limit: '1' }, otherToken);
      await vi.waitFor(() => expect(arrived).toBe(LIST_PAGES_AT_ONCE + 1));
      release();
      expect((await Promise.all([...held, elsewhere])).map((r) => r.status)).toEqual(Array(LIST_PAGES_AT_ONCE + 1).fill(200));
    } finally {
      release();
      delete api.deps.faults.beforeListQuery;
    }
    expect((await list({ limit: '1' })).status).toBe(200);
  });
});

describe('users stored before the lifecycle existed (no status member) read as active', () => {
  it('GET shows status active, the active filter lists them, DELETE deactivates them, and their event carries status', async () => {
    const { id } = await createUser('legacy');
    // As a document written by the previous release looks: no status, no deactivated_at, a creation event without status.
    await api.models.ProviderUser.collection.updateOne(
      { organization_id: clinic.organization._id, external_provider_id: id },
      { $unset: { status: '', deactivated_at: '', 'created_event.data.status': '', 'created_event.data.deactivated_at': '' } },
    );
    expect((await stored(id))!).not.toHaveProperty('status');
    expect((await get(id, NEXT)).body).toMatchObject({ status: 'active', deactivated_at: null });
    const pages = [];
    let cursor: string | null = null;
    do {
      const res: HttpAnswer = await list({ limit: '200', status: 'active', ...(cursor ? { cursor } : {}) });
      pages.push(...res.body.data);
      cursor = res.body.next_cursor;
    } while (cursor);
    expect(pages.map((u: { external_provider_id: string }) => u.external_provider_id)).toContain(id);
    expect(eventJobOf((await stored(id)) as ProviderUserDoc).created.data).toMatchObject({ status: 'active', deactivated_at: null });
    expect((await del(id)).body).toMatchObject({ status: 'deactivated', version: 2 });
  });
});

describe('OpenAPI covers the preview routes', () => {
  it('/openapi.json has GET {base}/users, DELETE {base}/users/{external_provider_id}, and the X-Connect-Outcome note', async () => {
    const res = await http(`${api.origin}/openapi.json`);
    expect(res.status).toBe(200);
    const base = api.deps.config.basePath;
    const paths = res.body.paths as Record<string, Record<string, { parameters?: { name: string; in: string }[]; description?: string }>>;
    expect(Object.keys(paths[`${base}/users`]!)).toEqual(expect.arrayContaining(['get', 'post']));
    expect(paths[`${base}/users/{external_provider_id}`]).toHaveProperty('delete');
    const listParams = paths[`${base}/users`]!.get!.parameters!.filter((p) => p.in === 'query').map((p) => p.name);
    expect(listParams).toEqual(expect.arrayContaining(['limit', 'cursor', 'status']));
    expect(paths[`${base}/users`]!.post!.description).toMatch(/X-Connect-Outcome/);
    expect(res.body.components.schemas).toHaveProperty('ProviderUserList');
  });
});
