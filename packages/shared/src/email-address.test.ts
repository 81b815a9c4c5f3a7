import { describe, expect, it } from 'vitest';
import { emailAddressProblem } from './email-address.ts';

describe('emailAddressProblem: every address a mail server takes passes, and a refusal says what is wrong', () => {
  it.each([
    'jane@example.com',
    "o'brien+tag@example.com",
    'a!#$%&*/=?^_`{|}~-b@example.com',
    'first.last@sub.example.co.uk',
    'ünï@example.com',
    'user@bücher.example',
    'user@пример.рф',
    'user@xn--bcher-kva.example',
    'USER@EXAMPLE.COM',
    // Lengths are SPEC's 320 characters in all, not RFC 5321's 64 and 255.
    `${'x'.repeat(300)}@example.com`,
    `a@${'b'.repeat(300)}.com`,
    `${'x'.repeat(64)}@${Array.from({ length: 4 }, () => 'c'.repeat(63)).join('.')}.com`,
  ])('%s passes', (address) => {
    expect(emailAddressProblem(address)).toBeUndefined();
  });

  it.each([
    ['no-at.example.com', /no "@"/],
    ['@example.com', /nothing comes before/],
    ['a@', /nothing comes after/],
    ['a@b@example.com', /more than one "@"/],
    ['a b@example.com', /space/],
    ['a\u200b@example.com', /invisible/],
    ['a\u007f@example.com', /control/],
    ['.a@example.com', /start or end with a dot/],
    ['a.@example.com', /start or end with a dot/],
    ['a..b@example.com', /two dots in a row/],
    ['"quoted"@example.com', /holds a character addresses may not/],
    ['a(b)@example.com', /holds a character addresses may not/],
    ['a@example-.com', /hyphens inside/],
    ['a@-example.com', /hyphens inside/],
    ['a@exa_mple.com', /letters and digits/],
    ['a@example..com', /joined by dots/],
    ['a@example.com.', /joined by dots/],
    ['a@ex%41mple.com', /host name/],
    ['a@example.com:25', /host name/],
    ['a@example.com/x', /host name/],
    ['a@localhost', /needs a dot/],
    ['a@10.0.0.1', /not an IP address/],
    ['a@0x7f.1', /not an IP address/],
    ['a@[10.0.0.1]', /host name/],
    ['a@[::1]', /host name/],
  ])('%s is refused: %s', (address, reason) => {
    expect(emailAddressProblem(address)).toMatch(reason);
    expect(emailAddressProblem(address)).toMatch(/^must be a valid email address: /);
  });
});
