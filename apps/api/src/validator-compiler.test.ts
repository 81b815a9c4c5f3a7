import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { fieldErrorsOf } from '@connect/shared';
import { prototypeMembersIn } from '@connect/shared';
import { malformedStringsIn } from './validator-compiler.ts';

const errorsOf = (schema: z.ZodType, value: unknown) => {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) throw new Error('expected a refusal');
  return fieldErrorsOf(result.error.issues, ['querystring']);
};

describe('fieldErrorsOf: bounds a schema gave no words of its own', () => {
  const schema = z.object({ s: z.string().min(3).max(5).optional(), e: z.string().min(1).optional(), n: z.number().min(1).max(10).optional(), p: z.number().gt(0).lt(9).optional() });

  it('strings: "must not be empty", "at least N characters", "at most N characters"', () => {
    expect(errorsOf(schema, { e: '' })).toEqual([{ path: 'querystring.e', message: 'must not be empty' }]);
    expect(errorsOf(schema, { s: 'ab' })).toEqual([{ path: 'querystring.s', message: 'at least 3 characters' }]);
    expect(errorsOf(schema, { s: 'abcdef' })).toEqual([{ path: 'querystring.s', message: 'at most 5 characters' }]);
  });

  it('numbers: "must be at least / at most N", strict bounds "more than / less than N"', () => {
    expect(errorsOf(schema, { n: 0 })).toEqual([{ path: 'querystring.n', message: 'must be at least 1' }]);
    expect(errorsOf(schema, { n: 11 })).toEqual([{ path: 'querystring.n', message: 'must be at most 10' }]);
    expect(errorsOf(schema, { p: 0 })).toEqual([{ path: 'querystring.p', message: 'must be more than 0' }]);
    expect(errorsOf(schema, { p: 9 })).toEqual([{ path: 'querystring.p', message: 'must be less than 9' }]);
  });

  it("a schema's own words are kept", () => {
    expect(errorsOf(z.object({ s: z.string().max(2, 'too long for a code') }), { s: 'abc' })).toEqual([{ path: 'querystring.s', message: 'too long for a code' }]);
  });
});

describe('prototypeMembersIn', () => {
  it('names "__proto__" and "constructor" holding "prototype" by path, at any depth and in arrays', () => {
    expect(prototypeMembersIn('{"a":1,"__proto__":{"x":1}}')).toEqual([{ path: '__proto__', message: 'unknown member' }]);
    expect(prototypeMembersIn('{"a":{"b":[{"constructor":{"prototype":{}}}]}}')).toEqual([{ path: 'a.b.0.constructor', message: 'unknown member' }]);
  });

  it('finds nothing in ordinary JSON, a plain "constructor" member, or text that is not JSON', () => {
    expect(prototypeMembersIn('{"constructor":"x","a":{"prototype":1}}')).toEqual([]);
    expect(prototypeMembersIn('{"__proto__":')).toEqual([]);
  });
});

describe('malformedStringsIn', () => {
  it('names a lone surrogate or NUL by its path; ten strings 16,000 levels deep get ten paths of at most 200 characters (they were 32,000 each)', () => {
    expect(malformedStringsIn({ a: [{ b: 'x\ud800' }], c: 'ok', 'k\u0000': 1 }).map((e) => e.path).sort()).toEqual(['a.0.b', 'k\u0000']);
    const deep = JSON.parse('['.repeat(16_000) + Array.from({ length: 10 }, () => '"\\ud800"').join(',') + ']'.repeat(16_000)) as unknown;
    const found = malformedStringsIn(deep, ['body']);
    expect(found).toHaveLength(10);
    for (const e of found) {
      expect(e.path).toHaveLength(200);
      expect(e.path.startsWith('body.0.0.0.')).toBe(true);
    }
  });
});
