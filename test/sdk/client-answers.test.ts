/**
 * @connect/client against answers no well-behaved API gives: a fake API on a real HTTP port
 * (listen(0)) whose token endpoint and routes answer what each test scripts. Every call must end
 * in a ConnectApiError (or ConnectNetworkError), never a TypeError or an endless loop, and no
 * message may quote a token or an assertion.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AuthenticationError, ConnectApiError, ConnectClient, ValidationError } from '@connect/client';

interface Scripted {
  status: number;
  headers?: Record<string, string>;
  body: string;
}
interface Received {
  method: string;
  path: string;
  body: string;
}
/** The latest route that answers a request wins. */
type Route = (request: Received) => Scripted | undefined;

// A JWT-shaped access token (three base64url parts) and its signature, to look for in messages.
const TOKEN_SIGNATURE = 'c2lnbmF0dXJlLW9mLXRoZS1hY2Nlc3MtdG9rZW4';
const ACCESS_TOKEN = `eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjLTEiLCJvcmdfaWQiOiJvLTEifQ.${TOKEN_SIGNATURE}`;
const okToken: Scripted = { status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ access_token: ACCESS_TOKEN, token_type: 'Bearer', expires_in: 3600 }) };
const json = (status: number, body: unknown, headers: Record<string, string> = {}): Scripted => ({ status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
const user = (id: string) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: null, created_at: '2026-01-01T00:00:00.000Z', updated_at: '2026-01-01T00:00:00.000Z', version: 1, status: 'active', deactivated_at: null });

let server: Server;
let baseUrl: string;
let routes: Route[] = [];
const received: Received[] = [];

async function bodyOf(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

beforeAll(async () => {
  server = createServer((req, res) => void (async () => {
    const request = { method: req.method ?? 'GET', path: req.url ?? '/', body: await bodyOf(req) };
    received.push(request);
    let answer: Scripted | undefined;
    for (const route of routes) if ((answer = route(request))) break;
    answer ??= request.path.endsWith('/oauth/token') ? okToken : json(404, { type: 'about:blank', title: 'Not Found', status: 404 });
    res.writeHead(answer.status, answer.headers ?? {});
    res.end(answer.body);
  })());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/connect/server`;
});
afterEach(() => {
  routes = [];
  received.length = 0;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const client = () => new ConnectClient({ baseUrl, clientId: 'c-1', privateKey, maxRetries: 0 });
const on = (method: string, path: RegExp, answer: Scripted | ((r: Received) => Scripted)) =>
  routes.unshift((r) => (r.method === method && path.test(r.path.split('?')[0]!) ? (typeof answer === 'function' ? answer(r) : answer) : undefined));
const failure = (promise: Promise<unknown>) => promise.then(
  (value) => ({ resolved: value }),
  (e: unknown) => e,
);

describe('malformed answers are ConnectApiErrors, never a TypeError or a loop', () => {
  it('a 500 problem whose type is null is a ConnectApiError of status 500 (it was "Cannot read properties of null")', async () => {
    on('GET', /\/users\/u-1$/, json(500, { type: null, title: 'Internal', detail: 'it broke' }));
    const error = await failure(client().getUser('u-1'));
    expect(error).toBeInstanceOf(ConnectApiError);
    expect((error as ConnectApiError).status).toBe(500);
    expect((error as ConnectApiError).problem).toMatchObject({ type: 'about:blank', status: 500, detail: 'it broke' });
  });

  it('the problem status always comes from HTTP; members of the wrong type are left out', async () => {
    on('GET', /\/users\/u-1$/, json(500, { type: 42, status: 'oops', title: ['x'], detail: { d: 1 }, instance: 7, trace_id: 't-1' }));
    const error = (await failure(client().getUser('u-1'))) as ConnectApiError;
    expect(error).toBeInstanceOf(ConnectApiError);
    expect(error.problem).toEqual({ type: 'about:blank', status: 500, trace_id: 't-1' });
    expect(error.message).toBe('HTTP 500');
  });

  it('a validation problem keeps only the errors[] entries with a string path and message', async () => {
    on('POST', /\/users$/, json(400, { type: 'https://x.example/problems/validation', status: 400, detail: 'bad', errors: [null, { path: 1, message: 'm' }, { path: 'provider_email', message: 'must be an email' }] }));
    const error = (await failure(client().upsertUser({ provider_email: 'x', external_provider_id: 'u-1' }))) as ValidationError;
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.errors).toEqual([{ path: 'provider_email', message: 'must be an email' }]);
  });

  it('a 200 null for upsertUser is an unexpected answer, not { outcome, user: null }', async () => {
    on('POST', /\/users$/, json(200, null, { 'x-connect-outcome': 'updated' }));
    const error = await failure(client().upsertUser({ provider_email: 'a@example.com', external_provider_id: 'u-1' }));
    expect(error).toBeInstanceOf(ConnectApiError);
    expect((error as ConnectApiError).message).toBe('upsertUser: unexpected answer, HTTP 200 with null where a user (an object with a string external_provider_id and a whole number version) was expected');
  });

  it('getUser and deactivateUser on a 200 that is not a user', async () => {
    on('GET', /\/users\/u-1$/, json(200, { external_provider_id: 'u-1' }));
    on('DELETE', /\/users\/u-1$/, json(200, []));
    const read = (await failure(client().getUser('u-1'))) as ConnectApiError;
    expect(read).toBeInstanceOf(ConnectApiError);
    expect(read.message).toMatch(/^getUser: unexpected answer, HTTP 200 with an object whose version is nothing where a user/);
    const gone = (await failure(client().deactivateUser('u-1'))) as ConnectApiError;
    expect(gone).toBeInstanceOf(ConnectApiError);
    expect(gone.message).toMatch(/^deactivateUser: unexpected answer, HTTP 200 with an array where a user/);
  });

  it('listUsers, listAllUsers and listUserPages on a 200 {} are an unexpected answer (it was a TypeError about Symbol.asyncIterator)', async () => {
    on('GET', /\/users$/, json(200, {}));
    const all = async () => {
      for await (const u of client().listAllUsers()) void u;
    };
    const users = async () => {
      for await (const u of client().listUsers()) void u;
    };
    expect(((await failure(users())) as Error).message).toMatch(/^listUsers: unexpected answer, HTTP 200 with an object whose data is nothing/);
    const error = (await failure(all())) as ConnectApiError;
    expect(error).toBeInstanceOf(ConnectApiError);
    expect(error.message).toBe('listUsers: unexpected answer, HTTP 200 with an object whose data is nothing where a page of users (an object with a data array of users and a next_cursor string or null) was expected');
    on('GET', /\/users$/, json(200, { data: [user('u-1'), { external_provider_id: 'u-2', version: '1' }], next_cursor: null }));
    const pages = async () => {
      for await (const page of client().listUserPages()) void page;
    };
    expect(((await failure(pages())) as Error).message).toMatch(/with data\[1\] being an object whose version is a string where/);
  });

  it('a server that answers a next_cursor again stops the listing with an error instead of paging forever', async () => {
    // Ten pages pointing back at cursor "c1", then the end: the old client read all ten.
    let served = 0;
    on('GET', /\/users$/, () => json(200, { data: [user(`u-${served}`)], next_cursor: ++served < 10 ? 'c1' : null }));
    const seen: string[] = [];
    const listing = async () => {
      for await (const user of client().listUsers()) seen.push(user.external_provider_id);
    };
    const error = (await failure(listing())) as ConnectApiError;
    expect(error).toBeInstanceOf(ConnectApiError);
    expect(error.message).toMatch(/^listUsers: unexpected answer, HTTP 200 with a next_cursor this listing had already followed, after 1 page\(s\)/);
    expect(seen).toEqual(['u-0', 'u-1']);
    expect(received.filter((r) => r.method === 'GET').map((r) => r.path.split('/v1/connect/server')[1])).toEqual(['/users', '/users?cursor=c1']);
  });

  it('a token endpoint answering 200 null or an object without access_token: an unexpected answer', async () => {
    on('POST', /\/oauth\/token$/, json(200, null));
    const error = (await failure(client().getUser('u-1'))) as ConnectApiError;
    expect(error).toBeInstanceOf(ConnectApiError);
    expect(error.message).toBe('POST /v1/connect/server/oauth/token: unexpected answer, HTTP 200 with null where a token (an object with a string access_token) was expected');
  });
});

describe('messages never quote a token or an assertion', () => {
  const leaks = (message: string) => [ACCESS_TOKEN, TOKEN_SIGNATURE, 'eyJ'].filter((secret) => message.includes(secret));

  it.each([
    ['form-encoded', 'application/x-www-form-urlencoded', `access_token=${ACCESS_TOKEN}&token_type=bearer&expires_in=3600`],
    ['JSON cut short by a proxy', 'application/json', `{"access_token":"${ACCESS_TOKEN.slice(0, 60)}`],
  ])('a token endpoint answering 200 with a body that is not JSON (%s): the body is not quoted', async (_name, type, body) => {
    on('POST', /\/oauth\/token$/, { status: 200, headers: { 'content-type': type }, body });
    const error = (await failure(client().getUser('u-1'))) as ConnectApiError;
    expect(error).toBeInstanceOf(ConnectApiError);
    expect(error.problem.title).toBe('Answer is not JSON');
    expect(error.message).toMatch(/^HTTP 200 with a body that is not JSON \(\d+ characters, not quoted: a token endpoint answer may hold credentials\)$/);
    expect(leaks(JSON.stringify(error.problem))).toEqual([]);
  });

  it('a proxy 400 page echoing the token request form: an AuthenticationError without the client assertion', async () => {
    on('POST', /\/oauth\/token$/, (r) => ({ status: 400, headers: { 'content-type': 'text/html' }, body: `<html><body><h1>400 Bad Request</h1><p>Request rejected: ${r.body}</p></body></html>` }));
    const error = (await failure(client().getUser('u-1'))) as AuthenticationError;
    expect(error).toBeInstanceOf(AuthenticationError);
    const assertion = new URLSearchParams(received.find((r) => r.path.endsWith('/oauth/token'))!.body).get('client_assertion')!;
    expect(assertion).toMatch(/^eyJ/);
    const signature = assertion.split('.')[2]!;
    for (const text of [error.message, JSON.stringify(error.problem)]) {
      expect(text).not.toContain(signature);
      expect(leaks(text)).toEqual([]);
    }
    expect(error.message).toMatch(/^HTTP 400 Bad Request/);
  });

  it('a route answer quoting a token (a gateway page, a problem detail, a 2xx that is not JSON) is quoted with the token masked', async () => {
    on('GET', /\/users\/u-1$/, { status: 502, headers: { 'content-type': 'text/html' }, body: `<html><body>upstream refused Authorization: Bearer ${ACCESS_TOKEN} (access_token=${ACCESS_TOKEN})</body></html>` });
    const page = (await failure(client().getUser('u-1'))) as ConnectApiError;
    expect(page.message).toBe('HTTP 502 Bad Gateway: upstream refused Authorization: Bearer [redacted] (access_token=[redacted])');

    on('GET', /\/users\/u-2$/, json(409, { type: 'about:blank', title: 'Conflict', detail: `token ${ACCESS_TOKEN} refused`, errors: [{ path: 'client_assertion', message: `client_assertion: "${ACCESS_TOKEN}"` }], echo: { refresh_token: ACCESS_TOKEN } }));
    const problem = (await failure(client().getUser('u-2'))) as ConnectApiError;
    expect(problem.message).toBe('token [redacted] refused');
    expect(leaks(JSON.stringify(problem.problem))).toEqual([]);

    on('GET', /\/users\/u-3$/, { status: 200, headers: { 'content-type': 'text/plain' }, body: `id_token=${ACCESS_TOKEN.slice(0, 30)}` });
    const notJson = (await failure(client().getUser('u-3'))) as ConnectApiError;
    expect(notJson.message).toBe('HTTP 200 with a body that is not JSON: "id_token=[redacted]"');
  });
});

describe('a clock far from the server refused by the token endpoint: the error says so', () => {
  const refusedWithDate = (offsetSeconds: number) =>
    on('POST', /\/oauth\/token$/, () => json(401, { error: 'invalid_client', error_description: 'client authentication failed' }, { date: new Date(Date.now() + offsetSeconds * 1000).toUTCString() }));

  it.each([
    [-45, "this machine's clock is 45 s ahead of the server's"],
    [90, "this machine's clock is 90 s behind the server's"],
  ])('server Date %i s from the local clock: %s', async (offset, says) => {
    refusedWithDate(offset);
    const error = (await failure(client().getUser('u-1'))) as AuthenticationError;
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error.message).toContain(`client authentication failed (${says} (by its Date header), and the server reads the assertion's iat and exp by its own clock: set this clock right (NTP) first; otherwise the server does not say which check failed: check the client id`);
  });

  it('a Date within a few seconds of the local clock: no word about the clock', async () => {
    refusedWithDate(3);
    const error = (await failure(client().getUser('u-1'))) as AuthenticationError;
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error.message).not.toContain('clock');
    expect(error.message).toContain('(the server does not say which check failed');
  });
});
