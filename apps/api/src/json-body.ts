import type { FastifyInstance } from 'fastify';
import { DomainError, prototypeMembersIn, repeatedMembersIn, ValidationError } from '@connect/shared';
import { UnsupportedMediaTypeError } from './http-errors.ts';

/** The `charset` parameter of a Content-Type, lower-cased and unquoted; undefined when there is none. */
export function charsetOf(contentType: string | undefined): string | undefined {
  for (const param of (contentType ?? '').split(';').slice(1)) {
    const [name, ...rest] = param.split('=');
    if (name?.trim().toLowerCase() === 'charset') return rest.join('=').trim().replace(/^"(.*)"$/, '$1').toLowerCase();
  }
  return undefined;
}

/** Refuses bytes that are not UTF-8 instead of replacing them (which made two ids one); a leading BOM is dropped. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Fastify's JSON parser, with three changes:
 * - the body is decoded as strict UTF-8 (RFC 8259: JSON is UTF-8): bytes that are not UTF-8 are
 *   400 `malformed-body`, and a body declared in another charset is 415, where a lenient
 *   decode would have stored U+FFFD in their place and matched different ids as one;
 * - a body refused for a `__proto__` or `constructor.prototype` member is valid JSON with an
 *   unknown member, so it is answered like any unknown member (400 naming it), not "not valid JSON";
 * - a member given twice in one object is 400 naming it (repeatedMembersIn).
 */
export function registerJsonBodyParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, raw, done) => {
    const charset = charsetOf(request.headers['content-type']);
    if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
      const declared = charset === '' ? 'The Content-Type has an empty charset' : `The body is declared as ${charset.slice(0, 40)}`;
      return done(new UnsupportedMediaTypeError(`${declared}; send JSON as UTF-8 (charset=utf-8 or none).`), undefined);
    }
    // A DELETE takes no body; a client that sets Content-Type on every request sends an empty one.
    if ((raw as Buffer).length === 0 && request.method === 'DELETE') return done(null, undefined);
    // No route takes it (an OPTIONS, a PUT): the answer is the 404 or 405 of the method and path,
    // whatever the body holds.
    if (request.is404) return done(null, undefined);
    let body: string;
    try {
      body = utf8.decode(raw as Buffer);
    } catch {
      return done(new DomainError('malformed-body', 'Malformed body', 400, 'The body is not valid UTF-8; JSON is sent as UTF-8.'), undefined);
    }
    // The decoder took the BOM off, if any; Fastify's parser would take off one more.
    if (body.charCodeAt(0) === 0xfeff) return done(new DomainError('malformed-body', 'Malformed body', 400, 'The body is not valid JSON.'), undefined);
    void parse(request, body, (err, value) => {
      if (!err) {
        const repeated = repeatedMembersIn(body);
        if (repeated.length === 0) return done(null, value);
        const names = repeated.map((r) => r.path.slice(0, 60)).join(', ');
        return done(new ValidationError(repeated, `${names} ${repeated.length > 1 ? 'are' : 'is'} given more than once.`), undefined);
      }
      if ((err as { code?: string }).code !== 'FST_ERR_CTP_INVALID_JSON_BODY') return done(err, value);
      // Fastify says "invalid JSON" for both; only valid JSON holding such members is re-read.
      const members = prototypeMembersIn(body);
      done(members.length > 0 ? new ValidationError(members) : err, undefined);
    });
  });
}
