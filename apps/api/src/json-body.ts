import type { FastifyInstance } from 'fastify';
import { ValidationError, type FieldError } from '@connect/shared';

interface PathNode {
  key: string;
  parent: PathNode | undefined;
}

function textOf(node: PathNode): string {
  const keys: string[] = [];
  for (let n: PathNode | undefined = node; n; n = n.parent) keys.push(n.key);
  return keys.reverse().join('.');
}

/**
 * Where a body holds `__proto__`, or `constructor` holding `prototype`: the
 * members Fastify's JSON parser refuses so that they can never reach an object's
 * prototype. The native parser keeps them as plain own members, so walking its
 * result is safe. Empty when the body is not JSON at all. Iterative: bodies may nest deeply.
 */
export function prototypeMembersIn(json: string, max = 10): FieldError[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return [];
  }
  const out: FieldError[] = [];
  // Paths as parent links, built into text only when reported: a deep body costs its size, not its depth squared.
  const stack: [unknown, PathNode | undefined][] = [[parsed, undefined]];
  while (stack.length > 0 && out.length < max) {
    const [value, path] = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    for (const [key, child] of Object.entries(value)) {
      const here = { key, parent: path };
      const isPrototype = key === '__proto__' || (key === 'constructor' && child !== null && typeof child === 'object' && Object.hasOwn(child, 'prototype'));
      if (isPrototype) out.push({ path: textOf(here), message: 'unknown member' });
      else stack.push([child, here]);
    }
  }
  return out;
}

/**
 * Fastify's JSON parser, with one change: a body refused for a `__proto__` or
 * `constructor.prototype` member is valid JSON with an unknown member, so it is
 * answered like any unknown member (400 naming it), not "not valid JSON".
 */
export function registerJsonBodyParser(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    void parse(request, body as string, (err, value) => {
      if (!err || (err as { code?: string }).code !== 'FST_ERR_CTP_INVALID_JSON_BODY') return done(err, value);
      // Fastify says "invalid JSON" for both; only valid JSON holding such members is re-read.
      const members = prototypeMembersIn(body as string);
      done(members.length > 0 ? new ValidationError(members) : err, undefined);
    });
  });
}
