/**
 * What an email address must be (docs/contract.md, "Email addresses"). No imports: the contract
 * the SDKs compile in reaches zod and nothing else (contract.test.ts), so the domain is read with
 * the global URL parser, as in a browser.
 */

// RFC 5322's atext: what a dot-atom local part may hold, besides the dots between its atoms.
const ATEXT = "\\-A-Za-z0-9!#$%&'*+/=?^_`{|}~";
// An internationalized address (RFC 6531) may hold any non-ASCII character in its local part.
const LOCAL_PART = new RegExp(`^[${ATEXT}\\u0080-\\u{10FFFF}]+(?:\\.[${ATEXT}\\u0080-\\u{10FFFF}]+)*$`, 'u');
// Spaces, controls, format characters (zero-width ones), surrogates and unassigned code points.
const INVISIBLE = /[\s\p{C}]/u;
// What Unicode says to show as nothing besides (variation selectors, the combining grapheme joiner,
// Hangul fillers) and the braille blank: look-alikes of an address that holds none of them.
const SHOWS_NOTHING = /[\p{Default_Ignorable_Code_Point}\u2800]/u;
// A combining mark with nothing of its own part to combine with: first in the local part or in a label.
const LEADING_MARK = /(?:^|[.@])\p{M}/u;
// Characters a host name's mapping (UTS 46, the URL parser's) turns into others: full-width and
// styled letters and digits (what NFKC changes), and the ideographic full stops taken as dots. The
// address would be stored as written but reach another domain: `a@ｅxample.com` is `a@example.com`.
const IDEOGRAPHIC_DOTS = /[\u3002\uFF0E\uFF61]/u;
// What a URL's host would take apart or decode (a port, a path, userinfo, percent-escapes, an IPv6 literal).
const NOT_IN_A_HOST_NAME = /[/?#@:[\]\\%]/;
// A domain label as DNS has it once in ASCII (an internationalized one as its `xn--` form): letters,
// digits, hyphens inside. Its length is not checked: the whole address's 320 characters are the limit.
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const ALL_DIGITS = /^[0-9]+$/;

/** The ASCII form of a host name (`bücher.example` → `xn--bcher-kva.example`), lower-cased; undefined when it is none. */
function asciiHostName(domain: string): string | undefined {
  if (NOT_IN_A_HOST_NAME.test(domain)) return undefined;
  try {
    return new URL(`http://${domain}`).hostname;
  } catch {
    return undefined;
  }
}

/**
 * The form two spellings of one address share, which matching compares (docs/contract.md, "Email
 * addresses"): Unicode's canonical composition (NFC: `é` as one character or as `e` and an accent,
 * as macOS and some keyboards send it, are one address, as RFC 6532 recommends) and lower case.
 */
export function emailMatchKey(address: string): string {
  return address.normalize('NFC').toLowerCase().normalize('NFC');
}

/**
 * Why a trimmed string is not an email address a mail server would take, in words for the
 * sender (after "provider_email "), or undefined when it is one: `local@domain`, the local part a
 * dot-atom of RFC 5322 (letters, digits and `!#$%&'*+/=?^_\`{|}~-`, dots between them) or holding
 * non-ASCII characters (RFC 6531); the domain a host name of two labels or more, internationalized
 * or not, each label letters, digits and inner hyphens in its ASCII form, the last not all digits.
 * Refused although RFC 5322 has them: quoted local parts and IP literals. Lengths are the
 * caller's (320 characters in all), not RFC 5321's 64 and 255.
 */
export function emailAddressProblem(address: string): string | undefined {
  const at = address.lastIndexOf('@');
  if (at < 0) return 'must be a valid email address: it has no "@"';
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (local === '') return 'must be a valid email address: nothing comes before the "@"';
  if (INVISIBLE.test(address)) return 'must be a valid email address: it holds a space, a control or an invisible character';
  if (local.includes('@')) return 'must be a valid email address: it has more than one "@"';
  if (!LOCAL_PART.test(local)) {
    if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return 'must be a valid email address: the part before the "@" may not start or end with a dot, or hold two dots in a row';
    return 'must be a valid email address: the part before the "@" holds a character addresses may not ("(),:;<>[]\\" and quotes)';
  }
  if (domain === '') return 'must be a valid email address: nothing comes after the "@"';
  const ascii = asciiHostName(domain);
  const labels = ascii?.split('.') ?? [];
  if (ascii === undefined || !labels.every((label) => LDH_LABEL.test(label))) {
    return 'must be a valid email address: the domain must be a host name, labels of letters and digits (hyphens inside) joined by dots';
  }
  if (labels.length < 2) return 'must be a valid email address: the domain needs a dot (example.com, not example)';
  if (ALL_DIGITS.test(labels.at(-1)!)) return 'must be a valid email address: the domain must be a host name, not an IP address';
  return undefined;
}

/**
 * Why a valid address (emailAddressProblem) may not be a new user's, in words for the sender, or
 * undefined: it would look like another address, or reach another domain than it reads as
 * (docs/contract.md, "Email addresses"). Only creates are refused for it: a user stored before
 * this rule with such an address can still be updated, reactivated and deactivated with it.
 */
export function lookAlikeEmailProblem(address: string): string | undefined {
  if (SHOWS_NOTHING.test(address)) return 'must be a valid email address: it holds a space, a control or an invisible character';
  if (LEADING_MARK.test(address)) return 'must be a valid email address: a combining mark (an accent alone) begins its part of the address';
  const domain = address.slice(address.lastIndexOf('@') + 1);
  if (IDEOGRAPHIC_DOTS.test(domain) || domain.normalize('NFKC') !== domain.normalize('NFC')) {
    return 'must be a valid email address: the domain holds a character that stands for another (a full-width or styled letter or digit, an ideographic full stop); write it with the plain one';
  }
  return undefined;
}
