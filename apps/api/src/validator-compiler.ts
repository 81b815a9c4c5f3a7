import type { FastifySchemaCompiler } from 'fastify';
import { SPECIALTY_KINDS, SPEECH_LOCALES, ValidationError, type FieldError } from '@connect/shared';
import type { z } from 'zod';

const ARTICLE: Record<string, string> = { object: 'an object', array: 'an array', integer: 'an integer', int: 'an integer' };

/** Enumerations whose names a message can use instead of listing 35 values in prose. */
const NAMED_ENUMS: [readonly string[], string][] = [
  [SPEECH_LOCALES, 'must be one of the supported locales'],
  [SPECIALTY_KINDS, 'must be one of the supported specialties'],
];

function sameValues(a: readonly unknown[], b: readonly string[]): boolean {
  return a.length === b.length && b.every((v) => a.includes(v));
}

/**
 * One zod issue in words a person can act on: what is missing, what type was
 * expected, which set a value must come from (the set listed once, in `allowed`).
 * Needs issues parsed with `reportInput`, to tell a missing member from a wrong one.
 */
function fieldErrorOf(issue: z.core.$ZodIssue, path: string, atRoot: boolean): FieldError {
  const missing = issue.input === undefined;
  if (issue.code === 'invalid_type') {
    if (atRoot) return { path, message: 'the body must be a JSON object' };
    if (missing) return { path, message: 'is required' };
    return { path, message: `expected ${ARTICLE[issue.expected] ?? `a ${issue.expected}`}` };
  }
  if (issue.code === 'invalid_value') {
    if (missing) return { path, message: 'is required' };
    const values = issue.values.map(String);
    const named = NAMED_ENUMS.find(([all]) => sameValues(values, all));
    if (named) return { path, message: named[1], allowed: values };
    return { path, message: `must be one of ${values.join(', ')}`, allowed: values };
  }
  // A bound the schema gave no words of its own: zod's default ("Too small: expected string to have >=1 characters") in ours.
  if ((issue.code === 'too_small' || issue.code === 'too_big') && /^Too (small|big):/.test(issue.message)) {
    const small = issue.code === 'too_small';
    const bound = Number(small ? issue.minimum : issue.maximum);
    const strict = issue.inclusive === false;
    if (issue.origin === 'string') {
      if (small && bound <= 1 && !strict) return { path, message: 'must not be empty' };
      return { path, message: `${small ? 'at least' : 'at most'} ${strict ? bound + (small ? 1 : -1) : bound} characters` };
    }
    if (issue.origin === 'number' || issue.origin === 'int' || issue.origin === 'bigint') {
      return { path, message: `must be ${small ? (strict ? 'more than' : 'at least') : strict ? 'less than' : 'at most'} ${bound}` };
    }
  }
  return { path, message: issue.message };
}

/**
 * zod issues → the problem's `errors: [{path, message}]`, one per field (the first: `[]` for a
 * string is "expected a string", not that and "must not be empty"), unknown members named.
 */
export function fieldErrorsOf(issues: readonly z.core.$ZodIssue[], prefix: string[] = [], isBody = false): FieldError[] {
  const out: FieldError[] = [];
  const seen = new Set<string>();
  const add = (e: FieldError) => {
    if (seen.has(e.path)) return;
    seen.add(e.path);
    out.push(e);
  };
  for (const issue of issues) {
    const path = [...prefix, ...issue.path.map(String)];
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) add({ path: [...path, key].join('.'), message: 'unknown member' });
    } else {
      add(fieldErrorOf(issue, path.join('.'), isBody && issue.path.length === 0));
    }
  }
  return out;
}

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

interface PathNode {
  key: string;
  parent: PathNode | undefined;
}
const pathOf = (node: PathNode | undefined, prefix: string[]): string => {
  const keys: string[] = [];
  for (let n = node; n; n = n.parent) keys.unshift(n.key.replace(/\p{Cs}/gu, '\uFFFD'));
  return [...prefix, ...keys].join('.');
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
