import { DomainError, type FieldError } from '@connect/shared';

/**
 * Errors only the HTTP layer raises: authentication, rate limits, API versions,
 * media types, methods, list cursors. Domain errors (validation, email clashes,
 * not found) stay with the use cases in @connect/shared.
 */

export class UnauthorizedError extends DomainError {
  /**
   * @param tokenSent whether the request carried a bearer token: RFC 6750 §3.1 says
   * to name `invalid_token` only then; a request with no credentials gets a bare challenge.
   */
  constructor(
    readonly tokenSent: boolean,
    detail = 'A valid bearer access token is required.',
  ) {
    super('unauthorized', 'Unauthorized', 401, detail);
  }

  get challenge(): string {
    return this.tokenSent ? 'Bearer error="invalid_token"' : 'Bearer';
  }
}

export class RateLimitedError extends DomainError {
  constructor(
    readonly retryAfterSeconds: number,
    detail = `Rate limit reached; retry after ${retryAfterSeconds} s.`,
  ) {
    super('rate-limited', 'Too many requests', 429, detail);
  }
}

export class UnsupportedApiVersionError extends DomainError {
  constructor(detail: string) {
    super('unsupported-api-version', 'Unsupported API version', 400, detail);
  }
}

export class EndpointNotInVersionError extends DomainError {
  constructor(readonly requiredVersion: string, served: string) {
    super(
      'endpoint-not-in-version',
      'Endpoint not available in this API version',
      404,
      requiredVersion === 'x-nabla-next'
        ? `This endpoint is a preview, available only under API version x-nabla-next; the request was served under ${served}.`
        : `This endpoint is available from API version ${requiredVersion}; the request was served under ${served}.`,
    );
  }
}

export class UnsupportedMediaTypeError extends DomainError {
  constructor(detail = 'Send the body as application/json.') {
    super('unsupported-media-type', 'Unsupported media type', 415, detail);
  }
}

export class MethodNotAllowedError extends DomainError {
  constructor(readonly allowed: readonly string[]) {
    super('method-not-allowed', 'Method not allowed', 405, `This path answers ${allowed.join(', ')} only.`);
  }
}

export class InvalidCursorError extends DomainError {
  constructor() {
    const errors: FieldError[] = [{ path: 'querystring.cursor', message: 'is not a cursor this API issued for this list; start again without one' }];
    super('invalid-cursor', 'Invalid cursor', 400, 'The cursor was altered, or belongs to another list.', errors);
  }
}

/**
 * A transfer coding other than chunked: the body would be read as if uncoded. RFC 9112 §6.1
 * suggests 501; bad input is never a 5xx here (docs/contract.md), so it is 400.
 */
export class UnsupportedTransferCodingError extends DomainError {
  constructor(codings: string) {
    super('unsupported-transfer-coding', 'Unsupported transfer coding', 400, `Transfer-Encoding ${codings.slice(0, 60)} is not supported; send the body with Content-Length, or with Transfer-Encoding: chunked alone.`);
  }
}

/** A header that must come once, given more than once: Node keeps the first, a proxy may act on the last. */
export class RepeatedHeaderError extends DomainError {
  constructor(name: string) {
    super('repeated-header', 'Repeated header', 400, `The ${name} header is given more than once; send it once.`);
  }
}

/** An HTTP/1.1 request without Host (RFC 9112 §3.2: 400). */
export class MissingHostError extends DomainError {
  constructor() {
    super('missing-host', 'Missing Host header', 400, 'An HTTP/1.1 request must carry a Host header; send one.');
  }
}
