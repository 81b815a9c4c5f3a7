import type { FastifySchemaCompiler } from 'fastify';
import { ValidationError, type FieldError } from '@connect/shared';
import type { z } from 'zod';

/** zod issues → SPEC's `errors: [{path, message}]`, one per field, unknown members named. */
export function fieldErrorsOf(issues: readonly z.core.$ZodIssue[], prefix: string[] = []): FieldError[] {
  const out: FieldError[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...issue.path.map(String)];
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: [...path, key].join('.'), message: 'unknown member' });
    } else if (issue.code === 'invalid_type' && issue.input === undefined) {
      out.push({ path: path.join('.'), message: 'is required' });
    } else {
      out.push({ path: path.join('.'), message: issue.message });
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
    const result = schema.safeParse(data);
    if (result.success) return { value: result.data };
    const prefix = httpPart === 'body' || httpPart === undefined ? [] : [httpPart];
    return { error: new ValidationError(fieldErrorsOf(result.error.issues, prefix)) };
  };
