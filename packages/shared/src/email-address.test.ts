import { describe, expect, it } from 'vitest';
import { emailAddressProblem, emailMatchKey, lookAlikeEmailProblem } from './email-address.ts';

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
    // An accent as a mark of its own (NFD), after the letter it goes with; scripts written with marks.
    'jose\u0301@example.com',
    'user@bu\u0308cher.example',
    'उपयोगकर्ता@उदाहरण.भारत',
    'ผู้ใช้@ตัวอย่าง.ไทย',
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
    ['a\u00ad@example.com', /invisible/],
    // A domain label that begins with a combining mark is no host name.
    ['a@\u0301example.com', /host name/],
    ['a@example.\u0301com', /host name/],
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

describe('emailMatchKey: what two spellings of one address share', () => {
  it('composed and decomposed accents, and case, give one key; other letters do not', () => {
    expect(emailMatchKey('Jose\u0301@Bu\u0308cher.Example')).toBe(emailMatchKey('JOSÉ@bücher.example'));
    expect(emailMatchKey('JOSÉ@bücher.example')).toBe('josé@bücher.example');
    // The Kelvin sign is a canonical twin of K; the long s and ß stay themselves.
    expect(emailMatchKey('\u212Aelvin@example.com')).toBe('kelvin@example.com');
    expect(emailMatchKey('stra\u00dfe@example.com')).not.toBe(emailMatchKey('strasse@example.com'));
    // A domain and its ASCII form stay two, as written (docs/contract.md).
    expect(emailMatchKey('a@bücher.example')).not.toBe(emailMatchKey('a@xn--bcher-kva.example'));
    expect(emailMatchKey('plain@example.com')).toBe('plain@example.com');
  });
});

describe('lookAlikeEmailProblem: what a new user\'s address may not hold besides (an earlier version stored such addresses)', () => {
  it.each([
    // What shows nothing: a look-alike of the address without it.
    ['a\ufe0f@example.com', /invisible/],
    ['a@exa\ufe0fmple.com', /invisible/],
    ['a@exa\u034fmple.com', /invisible/],
    ['\u3164a@example.com', /invisible/],
    ['\u2800a@example.com', /invisible/],
    ['\u0301@example.com', /combining mark/],
    // What a host name's mapping would turn into another domain.
    ['a@\uff45xample.com', /stands for another/],
    ['a@\u{1d41e}xample.com', /stands for another/],
    ['a@example\u3002com', /stands for another/],
    ['a@example\uff0ecom', /stands for another/],
    ['a@example.\uff11com', /stands for another/],
  ])('%s: a valid address, refused for a new user: %s', (address, reason) => {
    expect(emailAddressProblem(address)).toBeUndefined();
    expect(lookAlikeEmailProblem(address)).toMatch(reason);
    expect(lookAlikeEmailProblem(address)).toMatch(/^must be a valid email address: /);
  });

  it.each(['jane@example.com', 'jose\u0301@example.com', 'user@bu\u0308cher.example', 'उपयोगकर्ता@उदाहरण.भारत', 'ผู้ใช้@ตัวอย่าง.ไทย', 'user@пример.рф'])('%s: nothing against it', (address) => {
    expect(lookAlikeEmailProblem(address)).toBeUndefined();
  });
});

