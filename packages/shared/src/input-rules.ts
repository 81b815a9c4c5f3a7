/**
 * The checks an operator's input must pass before anything is opened, with none of the
 * datastore drivers: only node built-ins and modules that import nothing else. The CLI
 * imports this alone (`@connect/shared/input-rules`), so `--help` and a usage error answer
 * without loading mongoose, the MongoDB driver, BullMQ, ioredis, zod or pino (docs/operations.md,
 * The CLI). The rest of the package re-exports these under their usual names.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { API_VERSIONS, isApiVersion } from './api-versions.ts';
import type { FieldError } from './domain-errors.ts';

export { API_VERSIONS, DEFAULT_PINNED_API_VERSION } from './api-versions.ts';
export { DomainError } from './domain-errors.ts';

/** One bad or missing environment variable. */
export interface ConfigProblem {
  variable: string;
  problem: string;
}

export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];
  /** The first variable named (most errors name one). */
  readonly variable: string;
  constructor(variable: string | readonly ConfigProblem[], problem = '') {
    const problems = typeof variable === 'string' ? [{ variable, problem }] : variable;
    super(problems.map((p) => `${p.variable}: ${p.problem}`).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
    this.variable = problems[0]?.variable ?? '';
  }
}

/** `user:password@` out of every URL in a text (a connection string, an error naming one). */
export function withoutCredentials(text: string): string {
  // To the last "@" before the host: a password may hold an unencoded "@".
  return text.replace(/\/\/[^/\s]*@/g, '//***@');
}

/**
 * A value meant as one URL (a configuration variable, a connection string), quoted in an error:
 * - everything between the scheme and the last "@" goes, so a password holding an unescaped "/",
 *   "@", "?" or "#" goes too (`redis://:pa#ss@host` quoted `redis://:pa` before: the part of the
 *   password up to the "#");
 * - with no "@", an authority that is not `host[:port][,host[:port]…]` (a password cut off by an
 *   unescaped "#") goes;
 * - the query and fragment go: connection strings carry secrets there
 *   (`?password=`, `tlsCertificateKeyFilePassword=`, `authMechanismProperties=AWS_SESSION_TOKEN:`).
 */
export function urlWithoutSecrets(value: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)(.*)$/s.exec(value);
  const cut = (rest: string) => rest.replace(/[?#].*$/s, '');
  if (!m) return cut(value);
  const [, scheme, afterScheme] = m as unknown as [string, string, string];
  const at = afterScheme.lastIndexOf('@');
  if (at >= 0) return `${scheme}***@${cut(afterScheme.slice(at + 1))}`;
  const rest = cut(afterScheme);
  const authority = rest.split('/', 1)[0]!;
  const hostsAndPorts = authority.split(',').every((h) => /^(?:\[[^\]]*\]|[^:[\]]*)(?::\d*)?$/.test(h));
  return hostsAndPorts ? `${scheme}${rest}` : `${scheme}***${rest.slice(authority.length)}`;
}

// The full-width "＠" and the small "﹫" count as "@": an address typed with them reads as one.
const AT_SIGNS = ['@', '\uFF20', '\uFE6B'];

/** `jane.doe@example.com` → `j***@e***.com`: enough to tell users apart in a log, not to read. */
export function maskEmail(email: string): string {
  const at = Math.max(...AT_SIGNS.map((sign) => email.lastIndexOf(sign)));
  if (at < 1) return '***';
  const local = email.slice(0, at);
  const domain = email.slice(at + 1);
  const dot = domain.lastIndexOf('.');
  const host = dot > 0 ? domain.slice(0, dot) : domain;
  const tld = dot > 0 ? domain.slice(dot) : '';
  // First characters, not UTF-16 units: half of an emoji's surrogate pair would print as garbage.
  const first = (part: string) => (part ? String.fromCodePoint(part.codePointAt(0)!) : '');
  return `${first(local)}***@${first(host)}***${tld}`;
}

// An address is found from each at sign: its local part is the run before it up to white space, a
// quote, a bracket, ",", ";", ":", "/", "\\" or another at sign (so an address in a URL path is masked
// without the path before it, and a local part holding "'", "=", "&" or "?" is masked whole), its
// domain the run of letters, marks, digits, ".", "-" and "_" after it. No length bound and no
// top-level-domain rule: a 300-character local part, `x@example.a1` and `x@example.भारत` are all
// addresses the API takes. Each character is read at most twice (a local part stops at an at sign),
// so the scan is linear whatever the text. A local part of stars after at most one character is a
// mask already (`***@host`, `j***@e***.com`): masking again leaves it as it is.
const LOCAL_STOP = /[\s"<>()[\]{},;:/\\@\uFF20\uFE6B]/u;
const DOMAIN_CHAR = /[\p{L}\p{M}\p{N}._-]/u;
const AT_SIGN_RUN = /[@\uFF20\uFE6B]/gu;

/** Masks every email address inside free text (error messages can quote input). */
export function maskEmailsIn(text: string): string {
  let out = '';
  let copied = 0;
  for (const match of text.matchAll(AT_SIGN_RUN)) {
    const at = match.index;
    if (at < copied) continue;
    let start = at;
    while (start > copied && !LOCAL_STOP.test(text[start - 1]!)) start--;
    let end = at + 1;
    while (end < text.length && DOMAIN_CHAR.test(text[end]!)) end++;
    // A sentence's full stop or a dash after the address is not part of its domain.
    while (end > at + 1 && /[.-]/.test(text[end - 1]!)) end--;
    const local = text.slice(start, at);
    if (local === '' || end === at + 1 || /^[^*]?\*{3,}$/u.test(local)) continue;
    out += text.slice(copied, start) + maskEmail(text.slice(start, end));
    copied = end;
  }
  return copied === 0 ? text : out + text.slice(copied);
}

/** What a target name may be (DOWNSTREAM_TARGETS, and the CLI's target arguments). */
export const TARGET_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
export const TARGET_NAME_RULE = 'letters, digits, "_", "-" or ".", at most 64';

export interface RegisterOrganizationCommand {
  name: string;
  apiVersion?: string;
}

/** What is wrong with a registration, checked before anything is stored (and by the CLI before it reads its settings). */
export function organizationProblems(cmd: RegisterOrganizationCommand): FieldError[] {
  const problems: FieldError[] = [];
  const name = cmd.name.trim();
  if (!name || name.length > 200) problems.push({ path: 'name', message: 'must be 1 to 200 characters' });
  // A name is shown in lists and logs: a tab, a newline or an escape in it would garble them.
  else if (/\p{Cc}/u.test(name)) problems.push({ path: 'name', message: 'must not contain control characters (tabs, newlines, escapes)' });
  if (cmd.apiVersion !== undefined && !isApiVersion(cmd.apiVersion)) {
    problems.push({ path: 'api_version', message: `must be one of ${API_VERSIONS.join(', ')}, got "${cmd.apiVersion}"` });
  }
  return problems;
}

/** The shortest RSA key RS256 and PS256 accept (jose refuses shorter ones, and so does RFC 7518). */
export const MIN_RSA_BITS = 2048;

/** PEM labels of a public key: SPKI (`openssl pkey -pubout`) and PKCS#1 RSA. */
const PUBLIC_KEY_LABELS = new Set(['PUBLIC KEY', 'RSA PUBLIC KEY']);

/**
 * Why `pem` cannot be a client's public key, or undefined when it can. A private
 * key is refused even though its public half could be derived from it: storing
 * it would put the EHR's signing secret in our database.
 */
export function clientPublicKeyProblem(pem: string): string | undefined {
  const labels = [...pem.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]!);
  if (labels.some((l) => l.includes('PRIVATE KEY'))) {
    return 'is a private key; give the public key instead (the EHR keeps its private key to itself), e.g. `openssl pkey -in private.pem -pubout`';
  }
  if (labels.length === 0) return 'is not a PEM public key; expected text starting with -----BEGIN PUBLIC KEY-----';
  if (labels.length > 1) return `holds ${labels.length} PEM blocks; expected exactly one public key (-----BEGIN PUBLIC KEY-----)`;
  if (!PUBLIC_KEY_LABELS.has(labels[0]!)) return `is a PEM ${labels[0]}, not a public key; expected -----BEGIN PUBLIC KEY-----`;
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    return 'is not a valid PEM public key (its content could not be read as one)';
  }
  const type = key.asymmetricKeyType;
  if (!['rsa', 'rsa-pss', 'ec', 'ed25519'].includes(type ?? '')) return `must be an RSA, EC or Ed25519 public key, got ${type ?? 'an unknown type'}`;
  // Keys the token endpoint could never verify an assertion with (its algorithms: RS256, PS256,
  // ES256, EdDSA) are refused here, not registered to fail every token request.
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if ((type === 'rsa' || type === 'rsa-pss') && bits < MIN_RSA_BITS) return `is an RSA key of ${bits} bits; assertions need one of at least ${MIN_RSA_BITS} bits (RS256, PS256)`;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (type === 'ec' && curve !== 'prime256v1') return `is an EC key on ${curve ?? 'an unknown curve'}; assertions are verified with ES256, which needs the curve P-256 (prime256v1)`;
  return undefined;
}

/** Hosts a JWKS may be fetched from over plain http: this machine (tests, local development). */
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Why `jwksUrl` cannot be a client's JWKS URL, or undefined when it can: https
 * (http only on a loopback host), and no user:password@ (a credential would be
 * stored and shown by every client listing).
 */
export function jwksUrlProblem(jwksUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    return 'must be an https URL';
  }
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname)) return 'must be an https URL (plain http only for localhost, 127.0.0.1 or [::1])';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an https URL';
  if (url.username || url.password) return 'must not carry credentials (user:password@)';
  return undefined;
}

/**
 * What node:util's parseArgs threw, in plain words built from the command's own option list
 * (`unknown option --nme for "org create"; its options: --name, --api-version`); undefined for
 * any other error. Its own text named none of them and left a quote open: `Unknown option
 * '--nme'. To specify a positional argument starting with a '-', place it at the end of the
 * command after '--', as in '-- "--nme"`. `command` is how the command is named to the operator.
 */
export function parseArgsProblem(err: unknown, command: string, options: Readonly<Record<string, unknown>>): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS')) return undefined;
  const message = (err as Error).message ?? '';
  const names = Object.keys(options).map((name) => `--${name}`);
  const taken = names.length > 0 ? `its options: ${names.join(', ')}` : 'it takes no options';
  const unknown = /^Unknown option '([^']*)'/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown !== undefined) return `unknown option ${unknown} for ${command}; ${taken}`;
  // "Option '-n, --name <value>' argument missing", "Option '--json' does not take an argument",
  // "Option '--name' argument is ambiguous. ..." (its value starts with a dash).
  const option = /--([A-Za-z0-9][\w-]*)/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option !== undefined) {
    if (message.includes('argument missing')) return `--${option} needs a value`;
    if (message.includes('does not take an argument')) return `--${option} takes no value`;
    if (message.includes('ambiguous')) return `--${option} needs a value; one that starts with "-" is given as --${option}=-VALUE`;
  }
  const positional = /^Unexpected argument '([^']*)'/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' && positional !== undefined) return `unexpected argument "${positional}" for ${command}; ${taken}`;
  return message.replace(/\s*\n\s*/g, ' ');
}
