/**
 * zod issues in the words the API answers with (`errors: [{path, message}]`), shared by the
 * API's validator and the bulk importer, so a row the importer refuses reads as the API would
 * refuse it. Imports zod's types and the enums only: part of `@connect/shared/contract`.
 */
import type { z } from 'zod';
import type { FieldError } from './domain-errors.ts';
import { SPECIALTY_KINDS, SPEECH_LOCALES } from './enums.ts';

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
    const expected = `expected ${ARTICLE[issue.expected] ?? `a ${issue.expected}`}`;
    // Answers show `settings: null` until settings are first sent; a client that sends the user back as it got it is told what to do.
    if (issue.input === null) return { path, message: path === 'settings' ? `${expected}, not null: leave settings out to keep the current ones` : `${expected}, not null` };
    return { path, message: expected };
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
