import type { KeyObject } from 'node:crypto';
import type { z } from 'zod';
import type { ListUsersResponse, ProviderUserNextView, UserStatus, providerUserSchema, providerUserWithSyncSchema, upsertProviderUserBodySchema } from './contract.ts';
import { AccessTokenSource, signClientAssertion, toPrivateKey } from './access-token-source.ts';
import { AuthenticationError, ConnectApiError, ConnectNetworkError, errorFromProblem, problemFrom } from './connect-api-errors.ts';
import { fetchTransport, undiciTransport, type HttpAnswer, type HttpRequest, type HttpTransport } from './http-transport.ts';
import { RETRYABLE_STATUSES, backoffMs, retryAfterMs, sleep } from './retry-policy.ts';

/** What POST /users takes (before the server trims and checks it): the server's own schema. */
export type UpsertUserInput = z.input<typeof upsertProviderUserBodySchema>;
/** A user as the API answers; `status` and `deactivated_at` appear under the preview version. */
export type ConnectUser = z.infer<typeof providerUserSchema> & Partial<Pick<ProviderUserNextView, 'status' | 'deactivated_at'>>;
export type ConnectUserWithSync = z.infer<typeof providerUserWithSyncSchema> & Partial<Pick<ProviderUserNextView, 'status' | 'deactivated_at'>>;
export type UpsertOutcome = 'created' | 'updated' | 'unchanged';
export interface UpsertResult {
  outcome: UpsertOutcome;
  user: ConnectUser;
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
 * than a ConnectApiError, when `baseUrl` is not an absolute http(s) URL, `clientId` is
 * empty, or `privateKey` is not a private key it can sign with (`InvalidPrivateKeyError`,
 * a TypeError whose message says what was given instead: a public key, a certificate, ...).
 */
export interface ConnectClientOptions {
  /** The API's base URL, an absolute http(s) URL without query or fragment, e.g. `https://connect.example.org/v1/connect/server`. */
  baseUrl: string;
  clientId: string;
  /** PEM (PKCS#8 or PKCS#1) or a private KeyObject; RS256 for RSA keys, ES256/EdDSA for P-256/Ed25519 keys. */
  privateKey: string | KeyObject;
  /** Sent as the assertion's `kid`, for clients registered with a JWKS URL. */
  keyId?: string;
  /**
   * The client assertion's `aud`: the token endpoint's URL as the server knows itself
   * (its PUBLIC_BASE_URL + base path + `/oauth/token`). By default `baseUrl + '/oauth/token'`;
   * set it when `baseUrl` reaches the server by another name (an internal host, a proxy).
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
   * Per-attempt timeout, 30 s by default: for each phase of the exchange (connect, headers, body)
   * on the default transport, for the whole exchange with a caller's `fetch`. A timeout is retried
   * like a network error.
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
  return `/users/${encodeURIComponent(externalProviderId)}`;
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
 * body) is a ConnectApiError naming what came back, so a call throws nothing else.
 */
function bodyOf<T>(answer: Pick<HttpAnswer, 'status' | 'text'>): T {
  try {
    return JSON.parse(answer.text) as T;
  } catch {
    const start = answer.text.slice(0, 80);
    throw new ConnectApiError(answer.status, { type: 'about:blank', status: answer.status, title: 'Answer is not JSON', detail: `HTTP ${answer.status} with a body that is not JSON${start ? `: ${JSON.stringify(start)}` : ' (empty)'}` });
  }
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
    this.audience = options.audience ?? this.tokenUrl;
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
    const answer = await this.call('POST', '/users', { body, apiVersion: this.apiVersion, signal: options.signal });
    const header = answer.header('x-connect-outcome')?.trim().toLowerCase();
    const outcome = (header && OUTCOMES.includes(header) ? header : answer.status === 201 ? 'created' : 'updated') as UpsertOutcome;
    return { outcome, user: bodyOf<ConnectUser>(answer) };
  }

  /** GET /users/{id}: the user and where each downstream target stands. NotFoundError when the organization has none. */
  async getUser(externalProviderId: string, options: CallOptions = {}): Promise<ConnectUserWithSync> {
    return bodyOf<ConnectUserWithSync>(await this.call('GET', userPath(externalProviderId, 'getUser'), { apiVersion: this.apiVersion, signal: options.signal }));
  }

  /** DELETE /users/{id} (preview): 200 with the deactivated user, again 200 and no event on a second call. */
  async deactivateUser(externalProviderId: string, options: CallOptions & { apiVersion?: string } = {}): Promise<ProviderUserNextView> {
    const apiVersion = options.apiVersion ?? this.apiVersion ?? PREVIEW_API_VERSION;
    return bodyOf<ProviderUserNextView>(await this.call('DELETE', userPath(externalProviderId, 'deactivateUser'), { apiVersion, signal: options.signal }));
  }

  /**
   * GET /users (preview), page by page: `for await (const page of client.listUsers({ limit: 100 }))`.
   * Pages are fetched lazily, one per iteration; stopping the loop stops fetching.
   */
  async *listUsers(options: ListUsersOptions = {}): AsyncGenerator<UsersPage, void, undefined> {
    const apiVersion = options.apiVersion ?? this.apiVersion ?? PREVIEW_API_VERSION;
    let cursor = options.cursor;
    do {
      const query = new URLSearchParams();
      if (options.limit !== undefined) query.set('limit', String(options.limit));
      if (cursor) query.set('cursor', cursor);
      if (options.status) query.set('status', options.status);
      const qs = query.toString();
      const page = bodyOf<UsersPage>(await this.call('GET', `/users${qs ? `?${qs}` : ''}`, { apiVersion, signal: options.signal }));
      yield page;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  /** Every user across the pages, one at a time. */
  async *listAllUsers(options: ListUsersOptions = {}): AsyncGenerator<ProviderUserNextView, void, undefined> {
    for await (const page of this.listUsers(options)) yield* page.data;
  }

  /** A {base} call with the bearer token: one refresh and retry on 401, retries on 429/5xx/network. */
  private async call(method: string, path: string, options: { body?: unknown; apiVersion?: string; signal?: AbortSignal | undefined }): Promise<HttpAnswer> {
    let refreshed = false;
    const { signal } = options;
    for (;;) {
      // The token request is shared with other calls: this call stops waiting for it, it does not cancel it.
      const token = await abortable(this.tokens.get(), signal);
      const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      if (options.apiVersion) headers['x-nabla-api-version'] = options.apiVersion;
      const answer = await this.send(`${this.baseUrl}${path}`, { method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body), signal });
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
      const error = this.errorOf(answer);
      // Whatever the token endpoint refuses (400 invalid_request, 401 invalid_client) is a credentials problem.
      if (error.status < 400 || error.status >= 500 || error.status === 429) throw error;
      const refused = new AuthenticationError(error.status, error.problem);
      // The server does not say which check failed (on purpose): list what to check, the audience
      // last and named, as it is the one the caller cannot see from its own settings.
      // No token endpoint there at all: the base URL is not the API's (its path left out, most often).
      if (error.status === 404 || error.status === 405) refused.message += ` (nothing answers at ${shownUrl(this.tokenUrl)}: baseUrl must be the API's base URL, path included, such as https://connect.example.com/v1/connect/server)`;
      if (error.status === 401) refused.message += ` (the server does not say which check failed: check the client id, that the private key is the one registered for it, and the assertion's audience, which was ${this.audience}: it must be the server's own PUBLIC_BASE_URL + base path + /oauth/token; set the audience option when baseUrl reaches the server by another name)`;
      throw refused;
    }
    const body = bodyOf<{ access_token?: unknown; expires_in?: unknown }>(answer);
    if (typeof body.access_token !== 'string') throw new ConnectApiError(answer.status, { type: 'about:blank', status: answer.status, title: 'Token answer without access_token' });
    return { accessToken: body.access_token, expiresInSeconds: typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 300 };
  }

  /**
   * One HTTP exchange with retries on 429/502/503/504 and network errors: waits what
   * `Retry-After` asks, else exponential backoff with jitter. Answers the last response
   * (ok or not); throws ConnectNetworkError when the server never answered, whatever the
   * transport threw (a TypeError from a caller's fetch included), so a transport failure
   * never escapes unclassified.
   */
  private async send(url: string, init: HttpRequest, rebuild?: () => Promise<string>): Promise<HttpAnswer> {
    for (let attempt = 0; ; attempt++) {
      init.signal?.throwIfAborted();
      let answer: HttpAnswer;
      try {
        answer = await this.transport(url, init);
      } catch (err) {
        init.signal?.throwIfAborted();
        if (attempt >= this.maxRetries) throw new ConnectNetworkError(`${init.method} ${pathOf(url)}: ${messageOf(err)}`, { cause: err });
        await sleep(backoffMs(attempt), init.signal);
        if (rebuild) init = { ...init, body: await rebuild() };
        continue;
      }
      if (!RETRYABLE_STATUSES.has(answer.status) || attempt >= this.maxRetries) return answer;
      const asked = retryAfterMs(answer.header('retry-after') ?? null);
      // Longer than the caller agreed to wait: the answer is final, its error says how long the server asked.
      if (asked !== undefined && asked > this.maxRetryWaitMs) return answer;
      await sleep(asked ?? backoffMs(attempt), init.signal);
      if (rebuild) init = { ...init, body: await rebuild() };
    }
  }

  private errorOf(answer: HttpAnswer): ConnectApiError {
    const problem = problemFrom(answer.status, answer.statusText, answer.text);
    const retryAfter = retryAfterMs(answer.header('retry-after') ?? null);
    return errorFromProblem(answer.status, problem, retryAfter === undefined ? undefined : Math.ceil(retryAfter / 1000));
  }
}
