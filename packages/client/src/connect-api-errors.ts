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
  constructor(status: number, problem: Problem) {
    super(status, problem);
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}
/** 401 from a route even after a fresh token, or the token endpoint refusing the client. */
export class AuthenticationError extends ConnectApiError {}
/** 429 once the retries are spent; `retryAfterSeconds` is what the server asked for last. */
export class RateLimitedError extends ConnectApiError {
  constructor(
    status: number,
    problem: Problem,
    readonly retryAfterSeconds: number | undefined,
  ) {
    super(status, problem);
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

function slugOf(type: string): string {
  return type.replace(/\/+$/, '').split('/').pop() ?? '';
}

export function errorFromProblem(status: number, problem: Problem, retryAfterSeconds?: number): ConnectApiError {
  const slug = slugOf(problem.type);
  if (slug === 'email-mismatch') return new EmailMismatchError(status, problem);
  if (slug === 'email-conflict') return new EmailConflictError(status, problem);
  if (status === 400 && (slug === 'validation' || Array.isArray(problem.errors))) return new ValidationError(status, problem);
  if (status === 401) return new AuthenticationError(status, problem);
  if (status === 404) return new NotFoundError(status, problem);
  if (status === 429) return new RateLimitedError(status, problem, retryAfterSeconds);
  return new ConnectApiError(status, problem);
}

/** A problem document from any answer: the body when it is one, else one built from the status. */
export function problemFrom(status: number, statusText: string, text: string): Problem {
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === 'object' && !Array.isArray(body)) {
      const b = body as Record<string, unknown>;
      // The token endpoint speaks RFC 6749 ({error, error_description}), not RFC 9457.
      if (typeof b.error === 'string' && b.type === undefined) {
        return { type: `urn:ietf:params:oauth:error:${b.error}`, title: b.error, status, detail: typeof b.error_description === 'string' ? b.error_description : b.error };
      }
      return { type: 'about:blank', status, ...b } as Problem;
    }
  } catch {
    /* not JSON: described below */
  }
  // A proxy's HTML page: its words, not its markup, and the status as the message.
  const words = text.replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, ' ').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
  const title = `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  return { type: 'about:blank', title, status, detail: words ? `${title}: ${words.slice(0, 200)}` : undefined };
}
