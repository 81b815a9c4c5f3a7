import { describe, expect, it } from 'vitest';
import { maskEmail, maskEmailsIn } from './logger.ts';

describe('email masking', () => {
  it('keeps only first letters and the top-level domain', () => {
    expect(maskEmail('jane.doe@example.com')).toBe('j***@e***.com');
    expect(maskEmail('x@localhost')).toBe('x***@l***');
    expect(maskEmail('nonsense')).toBe('***');
  });
  it('masks every address inside text', () => {
    expect(maskEmailsIn('user a.b@c.org clashes with D@E.io')).toBe('user a***@c***.org clashes with D***@E***.io');
  });
});
