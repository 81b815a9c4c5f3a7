/**
 * Typed errors for what the API answers. Every {base} error is an RFC 9457 problem
 * (`type`, `title`, `status`, `detail`, `errors[]` for validation); the subclass is
 * picked from the problem type's last path segment, so the same code works against
 * this server and any server that names its problem types the same way, and falls
 * back to the status otherwise.
 */
export interface FieldError {
  path: string;
  message: string;
}

export interface Problem {
  type: string;
  title?: string;
  status: number;
  detail?: string;
  instance?: string;
  errors?: FieldError[];
  [member: string]: unknown;
}

export class ConnectApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
    /**
     * The wait the answer's `Retry-After` asked for (whole seconds, or an HTTP date counted from
     * now), when it had a usable one: a 503 while the server shuts down or a datastore is down, a
     * 429, a gateway's 502/504. Undefined otherwise.
     */
    readonly retryAfterSeconds?: number,
  ) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
    this.name = new.target.name;
  }
}

/** 409: a user with this external_provider_id exists with another provider_email. */
export class EmailMismatchError extends ConnectApiError {}
/** 409: another user of the organization already has this provider_email. */
export class EmailConflictError extends ConnectApiError {}
/** 400: the body broke a rule; `errors` names each field. */
export class ValidationError extends ConnectApiError {
  readonly errors: FieldError[];
  constructor(status: number, problem: Problem, retryAfterSeconds?: number) {
    super(status, problem, retryAfterSeconds);
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}
/** 401 from a route even after a fresh token, or the token endpoint refusing the client. */
export class AuthenticationError extends ConnectApiError {}
/** 429 once the retries are spent; `retryAfterSeconds` is what the server asked for last. */
export class RateLimitedError extends ConnectApiError {
  constructor(status: number, problem: Problem, retryAfterSeconds: number | undefined) {
    super(status, problem, retryAfterSeconds);
  }
}
/** 404: no such user in the token's organization, or a route the requested API version does not have. */
export class NotFoundError extends ConnectApiError {}

/** The server could not be reached (connection refused or reset, timeout) once the retries were spent. */
export class ConnectNetworkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConnectNetworkError';
  }
}

/** The last path segment of a problem type; '' for anything that is not a string. */
function slugOf(type: unknown): string {
  return typeof type === 'string' ? (type.replace(/\/+$/, '').split('/').pop() ?? '') : '';
}

/** The typed error for a problem; `retryAfterSeconds` (the answer's Retry-After) goes on whichever class it is. */
export function errorFromProblem(status: number, problem: Problem, retryAfterSeconds?: number): ConnectApiError {
  const slug = slugOf(problem.type);
  if (slug === 'email-mismatch') return new EmailMismatchError(status, problem, retryAfterSeconds);
  if (slug === 'email-conflict') return new EmailConflictError(status, problem, retryAfterSeconds);
  if (status === 400 && (slug === 'validation' || Array.isArray(problem.errors))) return new ValidationError(status, problem, retryAfterSeconds);
  if (status === 401) return new AuthenticationError(status, problem, retryAfterSeconds);
  if (status === 404) return new NotFoundError(status, problem, retryAfterSeconds);
  if (status === 429) return new RateLimitedError(status, problem, retryAfterSeconds);
  return new ConnectApiError(status, problem, retryAfterSeconds);
}

const REDACTED = '[redacted]';

/**
 * `text` with what looks like a credential masked, for any text an error quotes from an answer
 * (a proxy may echo the token request's form, a server its token): JWT-shaped strings (`eyJ`
 * then base64url, with one or two more dot-separated parts, whole or cut short), the values of
 * `access_token`, `refresh_token`, `id_token` and `client_assertion` (form `name=value` or JSON
 * `"name": "value"`), and what follows `Bearer `.
 */
export function redactSecrets(text: string): string {
  return text
    .replace(/\b(access_token|refresh_token|id_token|client_assertion)(["']?\s*[=:]\s*["']?)[^&\s"'<>,;(){}[\]]+/gi, `$1$2${REDACTED}`)
    .replace(/\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}/g, REDACTED)
    .replace(/\b(Bearer\s+)[A-Za-z0-9._~+/=-]+/gi, `$1${REDACTED}`);
}

/** A JSON value with every string in it redacted (a problem's extension members are logged with it). */
function redactDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactSecrets(value);
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v, depth + 1)]));
}

const STANDARD_MEMBERS = new Set(['type', 'title', 'status', 'detail', 'instance', 'errors']);

/** A string member as a problem may carry it, redacted; undefined when it is not a string. */
const textOf = (value: unknown): string | undefined => (typeof value === 'string' ? redactSecrets(value) : undefined);

/**
 * A problem from a JSON object body, taking only well-typed members: `type`, `title`, `detail`
 * and `instance` when they are strings, `errors` entries that have a string `path` and
 * `message`, and `status` always from HTTP (a body cannot make a 500 read as something else).
 * Other members (extensions) are kept, their strings redacted.
 */
function problemOfBody(status: number, b: Record<string, unknown>): Problem {
  const problem: Problem = { type: textOf(b.type) ?? 'about:blank', status };
  for (const [k, v] of Object.entries(b)) if (!STANDARD_MEMBERS.has(k)) problem[k] = redactDeep(v);
  const title = textOf(b.title);
  if (title !== undefined) problem.title = title;
  const detail = textOf(b.detail);
  if (detail !== undefined) problem.detail = detail;
  const instance = textOf(b.instance);
  if (instance !== undefined) problem.instance = instance;
  if (Array.isArray(b.errors)) {
    problem.errors = b.errors
      .filter((e): e is { path: string; message: string } => !!e && typeof e === 'object' && typeof (e as FieldError).path === 'string' && typeof (e as FieldError).message === 'string')
      .map((e) => ({ path: redactSecrets(e.path), message: redactSecrets(e.message) }));
  }
  return problem;
}

export interface ProblemFromOptions {
  /**
   * Whether the message may quote a body that is not a problem (a proxy's page): false for the
   * token endpoint, whose answers and echoed requests carry tokens and assertions.
   */
  quoteBody?: boolean;
}

/**
 * Something written `local@domain` in a quoted body (`@` taken whole-width too): replaced, not
 * shown. Matched in the first 2,000 characters only (the message shows 200): a long run without
 * an at sign costs the scan quadratic time.
 */
const ADDRESS_IN_TEXT = /[^\s"<>()[\]{},;:/\\@\uFF20]+[@\uFF20][\p{L}\p{M}\p{N}.-]*[\p{L}\p{N}]/gu;

/** A problem document from any answer: the body when it is one, else one built from the status. */
export function problemFrom(status: number, statusText: string, text: string, { quoteBody = true }: ProblemFromOptions = {}): Problem {
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === 'object' && !Array.isArray(body)) {
      const b = body as Record<string, unknown>;
      // The token endpoint speaks RFC 6749 ({error, error_description}), not RFC 9457.
      if (typeof b.error === 'string' && b.type === undefined) {
        const error = redactSecrets(b.error);
        return { type: `urn:ietf:params:oauth:error:${error}`, title: error, status, detail: textOf(b.error_description) ?? error };
      }
      return problemOfBody(status, b);
    }
  } catch {
    /* not JSON: described below */
  }
  const title = `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  if (!quoteBody) return { type: 'about:blank', title, status, detail: text ? `${title} (the body, ${text.length} characters that are not a problem document, is not quoted: it may hold credentials)` : undefined };
  // A proxy's HTML page: its words, not its markup, and the status as the message. A page that
  // echoes the request would put a person's email into the caller's logs: addresses are left out.
  const words = redactSecrets(text.replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, ' ').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim())
    .slice(0, 2000)
    .replace(ADDRESS_IN_TEXT, '[email]');
  return { type: 'about:blank', title, status, detail: words ? `${title}: ${words.slice(0, 200)}` : undefined };
}
