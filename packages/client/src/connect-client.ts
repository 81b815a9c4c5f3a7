import type { KeyObject } from 'node:crypto';
import type { z } from 'zod';
import type { ListUsersResponse, ProviderUserNextView, UserStatus, providerUserSchema, providerUserWithSyncSchema, upsertProviderUserBodySchema } from './contract.ts';
import { AccessTokenSource, signClientAssertion, toPrivateKey } from './access-token-source.ts';
import { AuthenticationError, ConnectApiError, ConnectNetworkError, errorFromProblem, problemFrom, redactSecrets } from './connect-api-errors.ts';
import { fetchTransport, undiciTransport, type HttpAnswer, type HttpRequest, type HttpTransport } from './http-transport.ts';
import { RETRYABLE_STATUSES, backoffMs, httpDateMs, retryAfterMs, sleep } from './retry-policy.ts';

/** What POST /users takes (before the server trims and checks it): the server's own schema. */
export type UpsertUserInput = z.input<typeof upsertProviderUserBodySchema>;
/** A user as the API answers; `status` and `deactivated_at` appear under the preview version. */
export type ConnectUser = z.infer<typeof providerUserSchema> & Partial<Pick<ProviderUserNextView, 'status' | 'deactivated_at'>>;
export type ConnectUserWithSync = z.infer<typeof providerUserWithSyncSchema> & Partial<Pick<ProviderUserNextView, 'status' | 'deactivated_at'>>;
export type UpsertOutcome = 'created' | 'updated' | 'unchanged';
export interface UpsertResult {
  /**
   * What this call did. The server's `X-Connect-Outcome` describes the attempt it answered; when
   * `retried` is true and that attempt found nothing to change (`unchanged`) although the user was
   * written after the call began (its `updated_at`, on the server's clock), the write was an earlier
   * attempt's of this call, and the outcome says so: `created` (version 1) or `updated`.
   */
  outcome: UpsertOutcome;
  user: ConnectUser;
  /**
   * True when the answer is a retry's after an attempt whose result is unknown (the connection
   * failed or timed out after the request went out, or a gateway answered 502/504): that attempt may
   * have reached the server, and `outcome` then accounts for it as above.
   */
  retried: boolean;
}
/** One page of GET /users (preview): users with their `status`, and the cursor of the next page. */
export type UsersPage = ListUsersResponse;
/** What every call takes besides its own arguments. */
export interface CallOptions {
  /** Abandons the call, its retries and their waits: it rejects with the signal's reason (an AbortError by default). */
  signal?: AbortSignal;
}

export interface ListUsersOptions extends CallOptions {
  /** 1 to 200 users per page (the server's default when absent). */
  limit?: number;
  status?: UserStatus;
  /** Resume from a `next_cursor` an earlier page gave. */
  cursor?: string;
  apiVersion?: string;
}

/**
 * The constructor checks its options and throws a TypeError, a programming error rather
 * than a ConnectApiError, when `baseUrl` (or `audience`, when given) is not an absolute http(s)
 * URL, `clientId` is empty, or `privateKey` is not a private key it can sign with, or one the
 * server would refuse (`InvalidPrivateKeyError`, a TypeError whose message says what was given
 * instead: a public key, a certificate, a P-384 key, ...).
 */
export interface ConnectClientOptions {
  /** The API's base URL, an absolute http(s) URL without query or fragment, e.g. `https://connect.example.org/v1/connect/server`. */
  baseUrl: string;
  clientId: string;
  /**
   * PEM (PKCS#8 or PKCS#1) or a private KeyObject: RSA of 2048 bits or more (RS256; PS256 for an
   * RSA-PSS key), P-256 (ES256) or Ed25519 (EdDSA), what the server verifies. Any other key
   * (P-384, P-521, RSA under 2048 bits, ...) is refused with an `InvalidPrivateKeyError`.
   */
  privateKey: string | KeyObject;
  /** Sent as the assertion's `kid`, for clients registered with a JWKS URL. */
  keyId?: string;
  /**
   * The client assertion's `aud`: the token endpoint's URL as the server knows itself
   * (its PUBLIC_BASE_URL + base path + `/oauth/token`). By default `baseUrl + '/oauth/token'`;
   * set it when `baseUrl` reaches the server by another name (an internal host, a proxy).
   * An absolute http(s) URL without credentials, query or fragment (a TypeError otherwise).
   */
  audience?: string;
  /**
   * Sent as `X-Nabla-Api-Version` on every call. Absent: upsertUser and getUser send
   * none (the organization's pinned version applies) and the preview routes
   * (listUsers, deactivateUser) send `x-nabla-next`, the only version that has them.
   */
  apiVersion?: string;
  /** A fetch implementation (tests, proxies, instrumentation). By default the client talks HTTP through undici's `request` on a keep-alive agent of its own. */
  fetch?: typeof globalThis.fetch;
  /** Retries after a 429/502/503/504 or a network error; 3 by default. */
  maxRetries?: number;
  /**
   * The longest `Retry-After` the client waits out before a retry, 60 s by default. An
   * answer asking for longer ends the call at once with its error (`RateLimitedError`
   * carries `retryAfterSeconds`), so the caller decides whether to wait.
   */
  maxRetryWaitMs?: number;
  /**
   * Per-attempt timeout, 30 s by default: the whole exchange (connecting, waiting for the answer,
   * reading its body), on the default transport and with a caller's `fetch` alike. A timeout is
   * retried like a network error.
   */
  timeoutMs?: number;
}

export const PREVIEW_API_VERSION = 'x-nabla-next';
const OUTCOMES: readonly string[] = ['created', 'updated', 'unchanged'];

const isOk = (answer: HttpAnswer) => answer.status >= 200 && answer.status < 300;

/** `promise`, or the signal's reason as soon as it aborts (the promise itself runs on). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A numeric option: absent → the default; otherwise a whole number from `min` up, or a TypeError naming it. */
function wholeNumberOption(name: string, given: number | undefined, fallback: number, min = 0): number {
  if (given === undefined) return fallback;
  if (typeof given !== 'number' || !Number.isInteger(given) || given < min) throw new TypeError(`${name} must be a whole number, ${min} or more; got ${String(given)}`);
  return given;
}

/**
 * `/users/{id}`. An id of "." or ".." cannot travel in a URL path: URL parsing (fetch, undici)
 * removes such dot segments, encoded or not, and the request would reach another route. Said
 * plainly instead of a misleading 404 or 400.
 */
function userPath(externalProviderId: string, method: string): string {
  if (externalProviderId === '.' || externalProviderId === '..') {
    throw new TypeError(`${method}: an external_provider_id of "${externalProviderId}" cannot be sent in a URL path (URL parsing removes "." and ".." segments); use listUsers to read it`);
  }
  return `/users/${encodePathSegment(externalProviderId)}`;
}

/**
 * encodeURIComponent, except that a lone surrogate (which it throws URIError on) is sent as its
 * three bytes (WTF-8), which the server answers with a 400: a call fails as a ConnectApiError,
 * as the same id in upsertUser's body does, not with a URIError.
 */
function encodePathSegment(text: string): string {
  return text.replace(/\p{Cs}|[^\p{Cs}]+/gu, (part) => {
    if (!/^\p{Cs}$/u.test(part)) return encodeURIComponent(part);
    const code = part.charCodeAt(0);
    return [0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)].map((b) => `%${b.toString(16).toUpperCase()}`).join('');
  });
}

/** A URL as an error message may quote it: no user name or password, no query or fragment (either may hold a secret). */
function shownUrl(raw: string): string {
  return JSON.stringify(raw.replace(/\/\/[^/?#\s]*@/, '//***@').replace(/[?#].*$/s, ''));
}

/** `baseUrl` without its trailing slashes; a TypeError naming the option unless it is an absolute http(s) URL. */
export function checkBaseUrl(baseUrl: unknown): string {
  const example = 'e.g. https://connect.example.org/v1/connect/server';
  if (typeof baseUrl !== 'string' || baseUrl.trim() === '') throw new TypeError(`baseUrl is required: the API's absolute http(s) URL, ${example}`);
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new TypeError(`baseUrl must be an absolute http(s) URL, ${example}; got ${shownUrl(baseUrl)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`baseUrl must be an absolute http(s) URL, ${example}; got ${shownUrl(baseUrl)} (scheme ${url.protocol})`);
  if (url.username || url.password) throw new TypeError(`baseUrl must not carry a user name or password (fetch refuses such URLs; the client authenticates with its key); got ${shownUrl(baseUrl)}`);
  if (url.search || url.hash || baseUrl.includes('?') || baseUrl.includes('#')) throw new TypeError(`baseUrl must not have a query or a fragment (the client appends paths to it); got ${shownUrl(baseUrl)} without them`);
  return baseUrl.trim().replace(/\/+$/, '');
}

/**
 * `audience` as given (the server compares it exactly); a TypeError naming the option unless it is
 * an absolute http(s) URL without credentials, query or fragment, as the server's own token URL is.
 */
export function checkAudience(audience: unknown): string {
  const what = "the token endpoint's URL as the server knows itself (its PUBLIC_BASE_URL + base path + /oauth/token), e.g. https://connect.example.org/v1/connect/server/oauth/token";
  const shown = typeof audience === 'string' ? shownUrl(audience) : String(audience);
  let url: URL | undefined;
  try {
    url = typeof audience === 'string' ? new URL(audience) : undefined;
  } catch {
    /* said below */
  }
  if (typeof audience !== 'string' || !url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw new TypeError(`audience must be an absolute http(s) URL, ${what}; got ${shown}`);
  if (url.username || url.password) throw new TypeError(`audience must not carry a user name or password (the server's URL for itself has none, and the assertion would carry them); got ${shown}`);
  if (url.search || url.hash || audience.includes('?') || audience.includes('#')) throw new TypeError(`audience must not have a query or a fragment, ${what}; got ${shown} without them`);
  return audience;
}

/** What a transport failure says, with the cause's code when the message alone is vague ("fetch failed"). */
function messageOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause : undefined;
  return cause && cause.message && !err.message.includes(cause.message) ? `${err.message} (${cause.message})` : err.message;
}

/** The path of a request URL for an error message; never throws (an error being reported must not become another). */
function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url;
  }
}

/**
 * A successful answer's JSON body. A 2xx that is not JSON (a proxy's page, a truncated
 * body) is a ConnectApiError naming what came back, so a call throws nothing else. The start
 * of the body is quoted, credentials masked, unless `quote` is false (the token endpoint:
 * its body, JSON or not, holds the access token).
 */
function bodyOf(answer: Pick<HttpAnswer, 'status' | 'text'>, quote = true): unknown {
  try {
    return JSON.parse(answer.text) as unknown;
  } catch {
    const start = answer.text.slice(0, 80);
    const shown = !start ? ' (empty)' : quote ? `: ${JSON.stringify(redactSecrets(start))}` : ` (${answer.text.length} characters, not quoted: a token endpoint answer may hold credentials)`;
    throw new ConnectApiError(answer.status, { type: 'about:blank', status: answer.status, title: 'Answer is not JSON', detail: `HTTP ${answer.status} with a body that is not JSON${shown}` });
  }
}

/** What a JSON value is, in words, without quoting it (it may hold a secret). */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return typeof value === 'undefined' ? 'nothing' : `a ${typeof value}`;
}

/** A 2xx whose JSON is not what the route answers: a ConnectApiError saying what was expected and what came instead. */
function unexpectedAnswer(answer: Pick<HttpAnswer, 'status'>, what: string, expected: string, got: string): ConnectApiError {
  return new ConnectApiError(answer.status, { type: 'about:blank', status: answer.status, title: 'Unexpected answer', detail: `${what}: unexpected answer, HTTP ${answer.status} with ${got} where ${expected} was expected` });
}

const USER_EXPECTED = 'a user (an object with a string external_provider_id and a whole number version)';

/** Why `value` is not a user as the API answers one, or undefined when it is. */
function notAUser(value: unknown): string | undefined {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return kindOf(value);
  const u = value as Record<string, unknown>;
  if (typeof u.external_provider_id !== 'string') return `an object whose external_provider_id is ${kindOf(u.external_provider_id)}`;
  if (typeof u.version !== 'number' || !Number.isInteger(u.version)) return `an object whose version is ${kindOf(u.version)}`;
  return undefined;
}

function userOf<T>(answer: HttpAnswer, what: string): T {
  const body = bodyOf(answer);
  const wrong = notAUser(body);
  if (wrong) throw unexpectedAnswer(answer, what, USER_EXPECTED, wrong);
  return body as T;
}

/** What the attempts of one call left unknown. */
interface AttemptTrace {
  /** An attempt was retried without knowing whether the server had acted on it. */
  unknownResult: boolean;
}

/**
 * Whether `user` was written (its `updated_at`) after the call began at `startedAt` (local clock),
 * read on the server's clock: the local one, unless the answer's Date header is over 2 s from it.
 */
function writtenSince(user: ConnectUser, answer: HttpAnswer, startedAt: number, now = Date.now()): boolean {
  const updatedAt = typeof user.updated_at === 'string' ? Date.parse(user.updated_at) : NaN;
  if (Number.isNaN(updatedAt)) return false;
  const date = answer.header('date');
  const serverNow = date ? httpDateMs(date.trim()) : undefined;
  const offset = serverNow !== undefined && Math.abs(serverNow + 500 - now) > 2000 ? serverNow + 500 - now : 0;
  return updatedAt >= startedAt + offset;
}

/** A clock difference worth naming: the Date header counts whole seconds, and a few seconds are within any server's tolerance. */
const CLOCK_SKEW_NOTICE_SECONDS = 10;

/** "this machine's clock is N s ahead of the server's ..." when the answer's Date header is over 10 s from the local clock; else undefined. */
function clockSkewNotice(answer: HttpAnswer, now = Date.now()): string | undefined {
  const date = answer.header('date');
  const serverNow = date ? httpDateMs(date.trim()) : undefined;
  if (serverNow === undefined) return undefined;
  // The header is truncated to the second: the server's time was in [serverNow, serverNow + 1 s).
  const skew = Math.round((now - (serverNow + 500)) / 1000);
  if (Math.abs(skew) <= CLOCK_SKEW_NOTICE_SECONDS) return undefined;
  return `this machine's clock is ${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} the server's (by its Date header), and the server reads the assertion's iat and exp by its own clock: set this clock right (NTP) first`;
}

const PAGE_EXPECTED = 'a page of users (an object with a data array of users and a next_cursor string or null)';

function pageOf(answer: HttpAnswer): UsersPage {
  const body = bodyOf(answer);
  const what = 'listUsers';
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw unexpectedAnswer(answer, what, PAGE_EXPECTED, kindOf(body));
  const page = body as Record<string, unknown>;
  if (!Array.isArray(page.data)) throw unexpectedAnswer(answer, what, PAGE_EXPECTED, `an object whose data is ${kindOf(page.data)}`);
  const next = page.next_cursor;
  if (next !== undefined && next !== null && typeof next !== 'string') throw unexpectedAnswer(answer, what, PAGE_EXPECTED, `an object whose next_cursor is ${kindOf(next)}`);
  for (const [i, user] of page.data.entries()) {
    const wrong = notAUser(user);
    if (wrong) throw unexpectedAnswer(answer, what, PAGE_EXPECTED, `data[${i}] being ${wrong}`);
  }
  return body as UsersPage;
}

export class ConnectClient {
  readonly baseUrl: string;
  readonly tokenUrl: string;
  /** The assertion's `aud`. */
  readonly audience: string;
  private readonly clientId: string;
  private readonly key: KeyObject;
  private readonly keyId: string | undefined;
  private readonly apiVersion: string | undefined;
  private readonly transport: HttpTransport;
  private readonly maxRetries: number;
  private readonly maxRetryWaitMs: number;
  private readonly tokens: AccessTokenSource;

  constructor(options: ConnectClientOptions) {
    this.baseUrl = checkBaseUrl(options.baseUrl);
    if (!options.clientId) throw new TypeError('clientId is required');
    this.tokenUrl = `${this.baseUrl}/oauth/token`;
    this.audience = options.audience === undefined ? this.tokenUrl : checkAudience(options.audience);
    this.clientId = options.clientId;
    this.key = toPrivateKey(options.privateKey);
    this.keyId = options.keyId;
    this.apiVersion = options.apiVersion;
    // NaN would retry without end (attempt >= NaN is never true); a negative number is a mistake too.
    this.maxRetries = wholeNumberOption('maxRetries', options.maxRetries, 3);
    this.maxRetryWaitMs = wholeNumberOption('maxRetryWaitMs', options.maxRetryWaitMs, 60_000);
    const timeoutMs = wholeNumberOption('timeoutMs', options.timeoutMs, 30_000, 1);
    this.transport = options.fetch ? fetchTransport(options.fetch, timeoutMs) : undiciTransport(timeoutMs);
    this.tokens = new AccessTokenSource(() => this.requestToken());
  }

  /**
   * POST /users: create or update. `outcome` comes from the `X-Connect-Outcome`
   * header; a server that does not send it is read as 201 = created, 200 = updated.
   */
  async upsertUser(body: UpsertUserInput, options: CallOptions = {}): Promise<UpsertResult> {
    const startedAt = Date.now();
    const trace: AttemptTrace = { unknownResult: false };
    const answer = await this.call('POST', '/users', { body, apiVersion: this.apiVersion, signal: options.signal, trace });
    const header = answer.header('x-connect-outcome')?.trim().toLowerCase();
    let outcome = (header && OUTCOMES.includes(header) ? header : answer.status === 201 ? 'created' : 'updated') as UpsertOutcome;
    const user = userOf<ConnectUser>(answer, 'upsertUser');
    // The answering attempt found the user as an earlier attempt of this same call had left it.
    if (trace.unknownResult && outcome === 'unchanged' && writtenSince(user, answer, startedAt)) outcome = user.version === 1 ? 'created' : 'updated';
    return { outcome, user, retried: trace.unknownResult };
  }

  /** GET /users/{id}: the user and where each downstream target stands. NotFoundError when the organization has none. */
  async getUser(externalProviderId: string, options: CallOptions = {}): Promise<ConnectUserWithSync> {
    return userOf<ConnectUserWithSync>(await this.call('GET', userPath(externalProviderId, 'getUser'), { apiVersion: this.apiVersion, signal: options.signal }), 'getUser');
  }

  /** DELETE /users/{id} (preview): 200 with the deactivated user, again 200 and no event on a second call. */
  async deactivateUser(externalProviderId: string, options: CallOptions & { apiVersion?: string } = {}): Promise<ProviderUserNextView> {
    const apiVersion = options.apiVersion ?? this.apiVersion ?? PREVIEW_API_VERSION;
    return userOf<ProviderUserNextView>(await this.call('DELETE', userPath(externalProviderId, 'deactivateUser'), { apiVersion, signal: options.signal }), 'deactivateUser');
  }

  /**
   * GET /users (preview), every user of the organization one at a time, across the pages:
   * `for await (const user of client.listUsers({ status: 'active' }))`. Pages (of `limit` users)
   * are fetched lazily, when the loop reaches them; stopping the loop stops fetching.
   */
  async *listUsers(options: ListUsersOptions = {}): AsyncGenerator<ProviderUserNextView, void, undefined> {
    for await (const page of this.listUserPages(options)) yield* page.data;
  }

  /** The same listing page by page (`{ data, next_cursor }`): `for await (const page of client.listUserPages({ limit: 100 }))`. */
  async *listUserPages(options: ListUsersOptions = {}): AsyncGenerator<UsersPage, void, undefined> {
    const apiVersion = options.apiVersion ?? this.apiVersion ?? PREVIEW_API_VERSION;
    let cursor = options.cursor;
    // Every cursor this listing has followed: a server giving one again would be paged forever.
    const followed = new Set<string>(cursor ? [cursor] : []);
    do {
      const query = new URLSearchParams();
      if (options.limit !== undefined) query.set('limit', String(options.limit));
      if (cursor) query.set('cursor', cursor);
      if (options.status) query.set('status', options.status);
      const qs = query.toString();
      const answer = await this.call('GET', `/users${qs ? `?${qs}` : ''}`, { apiVersion, signal: options.signal });
      const page = pageOf(answer);
      yield page;
      cursor = page.next_cursor ?? undefined;
      if (cursor && followed.has(cursor)) {
        throw unexpectedAnswer(answer, 'listUsers', 'a next_cursor not given before (or null on the last page)', `a next_cursor this listing had already followed, after ${followed.size} page(s): stopped rather than page forever`);
      }
      if (cursor) followed.add(cursor);
    } while (cursor);
  }

  /** The same as listUsers (its name in earlier releases, when listUsers gave pages). */
  listAllUsers(options: ListUsersOptions = {}): AsyncGenerator<ProviderUserNextView, void, undefined> {
    return this.listUsers(options);
  }

  /** A {base} call with the bearer token: one refresh and retry on 401, retries on 429/5xx/network. */
  private async call(method: string, path: string, options: { body?: unknown; apiVersion?: string; signal?: AbortSignal | undefined; trace?: AttemptTrace }): Promise<HttpAnswer> {
    let refreshed = false;
    const { signal } = options;
    for (;;) {
      // The token request is shared with other calls: this call stops waiting for it, it does not cancel it.
      const token = await abortable(this.tokens.get(), signal);
      const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      if (options.apiVersion) headers['x-nabla-api-version'] = options.apiVersion;
      const answer = await this.send(`${this.baseUrl}${path}`, { method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body), signal }, undefined, options.trace);
      if (isOk(answer)) return answer;
      // Only once: a second 401 with a brand-new token is the server's final word.
      if (answer.status === 401 && !refreshed) {
        refreshed = true;
        this.tokens.invalidate(token);
        continue;
      }
      throw this.errorOf(answer);
    }
  }

  private async requestToken(): Promise<{ accessToken: string; expiresInSeconds: number }> {
    const assertion = await signClientAssertion({ clientId: this.clientId, tokenUrl: this.audience, key: this.key, keyId: this.keyId });
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
      client_id: this.clientId,
    });
    // A retry must not resend the same assertion: the server may have recorded its jti
    // before failing, and then refuses it as a replay. So every retry signs a fresh one.
    const answer = await this.send(this.tokenUrl, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body: form.toString() }, async () => {
      const fresh = await signClientAssertion({ clientId: this.clientId, tokenUrl: this.audience, key: this.key, keyId: this.keyId });
      form.set('client_assertion', fresh);
      return form.toString();
    });
    if (!isOk(answer)) {
      const error = this.errorOf(answer, false);
      // Whatever the token endpoint refuses (400 invalid_request, 401 invalid_client) is a credentials problem.
      if (error.status < 400 || error.status >= 500 || error.status === 429) throw error;
      const refused = new AuthenticationError(error.status, error.problem, error.retryAfterSeconds);
      // This server says what to fix where that cannot help an attacker (an audience, a clock, a
      // replayed jti), and only "Client authentication failed." otherwise, as other servers may
      // always: then list what to check, the audience last and named, as it is the one the caller
      // cannot see from its own settings.
      // No token endpoint there at all: the base URL is not the API's (its path left out, most often).
      if (error.status === 404 || error.status === 405) refused.message += ` (nothing answers at ${shownUrl(this.tokenUrl)}: baseUrl must be the API's base URL, path included, such as https://connect.example.com/v1/connect/server)`;
      // An assertion dated by a clock far from the server's is refused too (iat in the future, exp
      // past): the server's Date header says so when nothing else does.
      const clock = clockSkewNotice(answer);
      if (clock && error.status !== 401) refused.message += ` (${clock})`;
      const audienceHint = `the assertion's audience, which was ${this.audience}: it must be the server's own PUBLIC_BASE_URL + base path + /oauth/token; set the audience option when baseUrl reaches the server by another name`;
      const said = error.problem.detail;
      if (error.status === 401 && (said === undefined || /^client authentication failed\.?$/i.test(said.trim()) || said === error.problem.title)) {
        refused.message += ` (${clock ? `${clock}; otherwise ` : ''}the server does not say which check failed: check the client id, that the private key is the one registered for it, and ${audienceHint})`;
      } else if (error.status === 401 && /\baud\b/.test(said ?? '')) {
        refused.message += ` (${audienceHint})`;
      } else if (error.status === 401 && clock) {
        refused.message += ` (${clock})`;
      }
      throw refused;
    }
    // Never quoted: whatever the token endpoint answers may hold the token.
    const body = bodyOf(answer, false);
    const token = body && typeof body === 'object' && !Array.isArray(body) ? (body as { access_token?: unknown; expires_in?: unknown }) : undefined;
    if (typeof token?.access_token !== 'string' || token.access_token === '') {
      const got = token ? `an object whose access_token is ${token.access_token === '' ? 'empty' : kindOf(token.access_token)}` : kindOf(body);
      throw new ConnectApiError(answer.status, { type: 'about:blank', status: answer.status, title: 'Token answer without access_token', detail: `POST ${pathOf(this.tokenUrl)}: unexpected answer, HTTP ${answer.status} with ${got} where a token (an object with a string access_token) was expected` });
    }
    return { accessToken: token.access_token, expiresInSeconds: typeof token.expires_in === 'number' && token.expires_in > 0 ? token.expires_in : 300 };
  }

  /**
   * One HTTP exchange with retries on 429/502/503/504 and network errors: waits what
   * `Retry-After` asks, else exponential backoff with jitter. Answers the last response
   * (ok or not); throws ConnectNetworkError when the server never answered, whatever the
   * transport threw (a TypeError from a caller's fetch included), so a transport failure
   * never escapes unclassified.
   */
  private async send(url: string, init: HttpRequest, rebuild?: () => Promise<string>, trace?: AttemptTrace): Promise<HttpAnswer> {
    for (let attempt = 0; ; attempt++) {
      init.signal?.throwIfAborted();
      let answer: HttpAnswer;
      try {
        answer = await this.transport(url, init);
      } catch (err) {
        init.signal?.throwIfAborted();
        if (attempt >= this.maxRetries) throw new ConnectNetworkError(`${init.method} ${pathOf(url)}: ${messageOf(err)}`, { cause: err });
        // Sent or not, nobody can tell: the server may have acted on it.
        if (trace) trace.unknownResult = true;
        await sleep(backoffMs(attempt), init.signal);
        if (rebuild) init = { ...init, body: await rebuild() };
        continue;
      }
      if (!RETRYABLE_STATUSES.has(answer.status) || attempt >= this.maxRetries) return answer;
      // A gateway that gave up waiting (502, 504) may have passed the request on: the API may have acted on it.
      if (trace && (answer.status === 502 || answer.status === 504)) trace.unknownResult = true;
      const asked = retryAfterMs(answer.header('retry-after') ?? null);
      // Longer than the caller agreed to wait: the answer is final, its error says how long the server asked.
      if (asked !== undefined && asked > this.maxRetryWaitMs) return answer;
      await sleep(asked ?? backoffMs(attempt), init.signal);
      if (rebuild) init = { ...init, body: await rebuild() };
    }
  }

  /** The typed error for a refused answer; `quoteBody` false for the token endpoint (a body that is not a problem is not quoted). */
  private errorOf(answer: HttpAnswer, quoteBody = true): ConnectApiError {
    const problem = problemFrom(answer.status, answer.statusText, answer.text, { quoteBody });
    const retryAfter = retryAfterMs(answer.header('retry-after') ?? null);
    return errorFromProblem(answer.status, problem, retryAfter === undefined ? undefined : Math.ceil(retryAfter / 1000));
  }
}
