/**
 * Domain errors carry a stable RFC 9457 problem `type` slug and an HTTP status;
 * the API's single error handler turns them into problem+json. Routes never build
 * error bodies themselves. Errors that only HTTP can raise (authentication, rate
 * limits, versions, media types) live in the API (apps/api/src/http-errors.ts).
 */
export const PROBLEM_TYPE_BASE = 'https://connect-provisioning.dev/problems/';

export interface FieldError {
  path: string;
  message: string;
  /** For an unknown enum value: the values accepted (listed here only, never repeated in `detail`). */
  allowed?: readonly string[];
}

export class DomainError extends Error {
  constructor(
    readonly slug: string,
    readonly title: string,
    readonly status: number,
    detail: string,
    readonly errors?: FieldError[],
  ) {
    super(detail);
    this.name = new.target.name;
  }

  get type(): string {
    return PROBLEM_TYPE_BASE + this.slug;
  }
}

/** How many field errors the `detail` sentence names; `errors` lists them all. */
const DETAIL_ERRORS = 10;

/**
 * The `detail` of a validation problem: its first errors in one sentence. Not all of them: a
 * body of thousands of unknown members would otherwise be answered with each named twice.
 */
function validationDetail(errors: FieldError[]): string {
  const named = errors.slice(0, DETAIL_ERRORS).map((e) => (e.path ? `${e.path}: ${e.message}` : e.message));
  const more = errors.length - named.length;
  return `Invalid request: ${named.join('; ')}${more > 0 ? `; and ${more} more (see errors)` : ''}`;
}

export class ValidationError extends DomainError {
  constructor(errors: FieldError[], detail?: string) {
    super(
      'validation',
      'Invalid request',
      400,
      detail ?? validationDetail(errors),
      errors,
    );
  }
}

export class EmailMismatchError extends DomainError {
  constructor() {
    super(
      'email-mismatch',
      'Email does not match',
      409,
      'A user with this external_provider_id exists with another provider_email.',
    );
  }
}

export class EmailConflictError extends DomainError {
  constructor() {
    super(
      'email-conflict',
      'Email already in use',
      409,
      'Another user of this organization already has this provider_email.',
    );
  }
}

export class NotFoundError extends DomainError {
  constructor(detail: string) {
    super('not-found', 'Not found', 404, detail);
  }
}

/**
 * A target name that is not in DOWNSTREAM_TARGETS, in the same words from every command
 * that names one (targets pause, resume and resync; deliveries list and recover).
 */
export class UnknownTargetError extends NotFoundError {
  constructor(name: string) {
    super(`No target named ${name} is configured (DOWNSTREAM_TARGETS).`);
  }
}

export class ConcurrentUpdateError extends DomainError {
  constructor() {
    super('concurrent-update', 'Concurrent update', 409, 'The user kept changing while this request was applied; retry it.');
  }
}
