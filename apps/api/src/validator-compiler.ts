import type { FastifySchemaCompiler } from 'fastify';
import { fieldErrorsOf, ValidationError, type FieldError } from '@connect/shared';
import type { z } from 'zod';

/**
 * Strings that are not well-formed UTF-16 (a lone surrogate such as "\ud800",
 * which JSON allows as an escape) cannot be stored as they were sent: BSON writes
 * them as U+FFFD, so the stored value differs from the answered one, an identical
 * retry looks like a change, and `encodeURIComponent` (the Location header) throws.
 * They are refused like any other invalid field. Iterative: bodies may nest deeply.
 */
/*
 * A NUL character is refused for the same reason: MongoDB stores it, but FerretDB's
 * PostgreSQL (jsonb) cannot, so the write fails with a 5xx; no email, id or name holds one.
 */
const UNSTORABLE_TEXT = /\p{Cs}|\u0000/u;
const MALFORMED_TEXT = 'must be valid Unicode text (no lone surrogates, no NUL)';

/** Whether a string can be stored (and matched) as it was sent: the rule above, for input checked outside a route schema. */
export function isStorableText(value: string): boolean {
  return !UNSTORABLE_TEXT.test(value);
}

interface PathNode {
  key: string;
  parent: PathNode | undefined;
}
/** A field's path as a reply quotes it: at most 200 characters (a body 16,000 levels deep had 32,000-character paths), lone surrogates as U+FFFD. */
const pathOf = (node: PathNode | undefined, prefix: string[]): string => {
  const keys: string[] = [];
  for (let n = node; n; n = n.parent) keys.push(n.key);
  return [...prefix, ...keys.reverse()].join('.').slice(0, 200).replace(/\p{Cs}/gu, '\uFFFD');
};

export function malformedStringsIn(data: unknown, prefix: string[] = []): FieldError[] {
  const out: FieldError[] = [];
  const stack: [unknown, PathNode | undefined][] = [[data, undefined]];
  while (stack.length > 0 && out.length < 10) {
    const [value, path] = stack.pop()!;
    if (typeof value === 'string') {
      if (UNSTORABLE_TEXT.test(value)) out.push({ path: pathOf(path, prefix), message: MALFORMED_TEXT });
    } else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) {
        const node = { key, parent: path };
        if (UNSTORABLE_TEXT.test(key)) out.push({ path: pathOf(node, prefix), message: MALFORMED_TEXT });
        else stack.push([child, node]);
      }
    }
  }
  return out;
}

/**
 * Route schemas are zod schemas (the same ones the OpenAPI document is generated
 * from); a failed parse becomes a ValidationError for the problem+json handler.
 */
export const zodValidatorCompiler: FastifySchemaCompiler<z.ZodType> =
  ({ schema, httpPart }) =>
  (data) => {
    const isBody = httpPart === 'body' || httpPart === undefined;
    const prefix = isBody ? [] : [httpPart];
    const malformed = malformedStringsIn(data, prefix);
    if (malformed.length > 0) return { error: new ValidationError(malformed) };
    const result = schema.safeParse(data, { reportInput: true });
    if (result.success) return { value: result.data };
    return { error: new ValidationError(fieldErrorsOf(result.error.issues, prefix, isBody)) };
  };
