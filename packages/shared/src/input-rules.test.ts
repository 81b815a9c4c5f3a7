import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signingKeyProblem } from './config.ts';
import { parseArgs } from 'node:util';
import { clientPublicKeyProblem, MIN_RSA_BITS, maskEmailsIn, parseArgsProblem, urlWithoutSecrets } from './input-rules.ts';

const publicPem = (k: { publicKey: { export(o: { type: 'spki'; format: 'pem' }): string | Buffer } }) => k.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const privatePem = (k: { privateKey: { export(o: { type: 'pkcs8'; format: 'pem' }): string | Buffer } }) => k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

describe('keys the token endpoint could never use are refused when they are given, not at every token request', () => {
  it('a client public key: RSA and RSA-PSS under 2048 bits and EC off P-256 are refused, saying why; 2048-bit RSA, RSA-PSS, P-256 and Ed25519 pass', () => {
    expect(clientPublicKeyProblem(publicPem(generateKeyPairSync('rsa', { modulusLength: 1024 })))).toBe(`is an RSA key of 1024 bits; assertions need one of at least ${MIN_RSA_BITS} bits (RS256, PS256)`);
    expect(clientPublicKeyProblem(publicPem(generateKeyPairSync('rsa-pss', { modulusLength: 1024 })))).toMatch(/RSA key of 1024 bits/);
    expect(clientPublicKeyProblem(publicPem(generateKeyPairSync('ec', { namedCurve: 'secp384r1' })))).toBe('is an EC key on secp384r1; assertions are verified with ES256, which needs the curve P-256 (prime256v1)');
    expect(clientPublicKeyProblem(publicPem(generateKeyPairSync('ec', { namedCurve: 'secp256k1' })))).toMatch(/EC key on secp256k1/);
    for (const ok of [generateKeyPairSync('rsa', { modulusLength: 2048 }), generateKeyPairSync('rsa-pss', { modulusLength: 2048 }), generateKeyPairSync('ec', { namedCurve: 'P-256' }), generateKeyPairSync('ed25519')]) {
      expect(clientPublicKeyProblem(publicPem(ok))).toBeUndefined();
    }
  });

  it('TOKEN_SIGNING_KEY: an RSA key under 2048 bits is refused (RS256 cannot sign with it); 2048 bits passes', () => {
    expect(signingKeyProblem(privatePem(generateKeyPairSync('rsa', { modulusLength: 1024 })))).toBe(`must be an RSA key of at least ${MIN_RSA_BITS} bits (RS256), got 1024`);
    expect(signingKeyProblem(privatePem(generateKeyPairSync('rsa', { modulusLength: 2048 })))).toBeUndefined();
  });
});

describe('maskEmailsIn', () => {
  it('an address with a non-ASCII top-level domain is masked in free text too', () => {
    expect(maskEmailsIn('sent to user@пример.рф today')).toBe('sent to u***@п***.рф today');
  });
  it('every address the API takes is masked whole: a quote, "=", "&" or "/" in the local part, a digit or a combining mark in the top-level domain, a one-letter one, a local part over 64 characters (a security audit found each shown, in whole or in part)', () => {
    expect(maskEmailsIn("/v1/connect/server/users/recv.apos'@example.com")).toBe('/v1/connect/server/users/r***@e***.com');
    expect(maskEmailsIn('"received":"iss.apos\'@example.com"')).toBe('"received":"i***@e***.com"');
    expect(maskEmailsIn('/nope/jane.doe=m@example.com and /nope/jane&j@example.com')).toBe('/nope/j***@e***.com and /nope/j***@e***.com');
    expect(maskEmailsIn('users quinn/x=y@example.a1, gita.devi@example.भारत, jane.doe@hospital.x.')).toBe('users quinn/x***@e***.a1, g***@e***.भारत, j***@h***.x.');
    expect(maskEmailsIn(`id ${'k'.repeat(300)}@example.com!`)).toBe('id k***@e***.com!');
  });
  it('leaves alone what is not an address: a mask already made, a scoped package, a lone at sign', () => {
    for (const text of ['redis://***@h:6379/0', 'j***@e***.com', '@connect/shared', 'x @ y', 'trailing@']) expect(maskEmailsIn(text)).toBe(text);
  });
  it('reads each character at most twice: a long run before many at signs ends (a quadratic scan would not, within the timeout)', () => {
    const run = 'a'.repeat(200_000) + '@'.repeat(100_000);
    expect(maskEmailsIn(run + 'a@'.repeat(100_000))).toBe(run + 'a***@a***@'.repeat(50_000));
  });
});

describe('urlWithoutSecrets: a connection string as an error may quote it', () => {
  it('drops the credentials to the last at sign, an authority that is no host list, and the query (where drivers take passwords and tokens too)', () => {
    expect(urlWithoutSecrets('redis://:p?w#d@127.0.0.1:6379/12')).toBe('redis://***@127.0.0.1:6379/12');
    expect(urlWithoutSecrets('redis://:secret#rest')).toBe('redis://***');
    expect(urlWithoutSecrets('mongodb://127.0.0.1:1/connect?tls=true&tlsCertificateKeyFilePassword=KEYPW')).toBe('mongodb://127.0.0.1:1/connect');
    expect(urlWithoutSecrets('mongodb://u:p@m1:27017,m2:27017/db?authMechanismProperties=AWS_SESSION_TOKEN:SESS')).toBe('mongodb://***@m1:27017,m2:27017/db');
  });
  it('keeps what locates the server: hosts, ports, IPv6, a host list, the path', () => {
    for (const url of ['redis://[::1]:6379/0', 'redis+sentinel://h1:26379,h2:26379/mymaster', 'mongodb://127.0.0.1:27017/connect', 'https://h.example/x']) expect(urlWithoutSecrets(url)).toBe(url);
  });
});

describe('parseArgsProblem: what parseArgs threw, in words naming the options taken', () => {
  const options = { name: { type: 'string', short: 'n' }, json: { type: 'boolean' } } as const;
  const problem = (args: string[], allowPositionals = true) => {
    try {
      parseArgs({ args, options, strict: true, allowPositionals });
    } catch (err) {
      return parseArgsProblem(err, '"org create"', options);
    }
    return 'parsed';
  };
  it('an unknown option, a missing value, a value to a flag, a value starting with a dash, a stray argument', () => {
    expect(problem(['--nme', 'X'])).toBe('unknown option --nme for "org create"; its options: --name, --json');
    expect(problem(['-x'])).toBe('unknown option -x for "org create"; its options: --name, --json');
    expect(problem(['--name'])).toBe('--name needs a value');
    expect(problem(['-n'])).toBe('--name needs a value');
    expect(problem(['--json=yes'])).toBe('--json takes no value');
    expect(problem(['--name', '-x'])).toBe('--name needs a value; one that starts with "-" is given as --name=-VALUE');
    expect(problem(['extra'], false)).toBe('unexpected argument "extra" for "org create"; its options: --name, --json');
    expect(parseArgsProblem(Object.assign(new Error('x'), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION', message: "Unknown option '--a'" }), 'import', {})).toBe('unknown option --a for import; it takes no options');
    expect(parseArgsProblem(new Error('other'), 'x', options)).toBeUndefined();
  });
});
