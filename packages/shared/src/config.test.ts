import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ConfigError, envInteger, loadConfig, parseEnv, sharedEnvShape, weakSecrets } from './config.ts';

const base = { MONGO_URL: 'mongodb://127.0.0.1:27017/cp', REDIS_URL: 'redis://127.0.0.1:6379' };

function errorOf(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration from the environment (docs/operations.md)', () => {
  it('applies the documented defaults and derives the issuer and token URL', () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({
      port: 3000,
      host: '0.0.0.0',
      basePath: '/v1/connect/server',
      publicBaseUrl: 'http://localhost:3000',
      issuer: 'http://localhost:3000/v1/connect/server',
      tokenEndpointUrl: 'http://localhost:3000/v1/connect/server/oauth/token',
      accessTokenTtlSeconds: 3600,
      logLevel: 'info',
      downstreamTargets: [],
      emailUniqueness: 'index',
      shutdownGraceMs: 25_000,
      shutdownDelayMs: 0,
    });
    expect(Object.isFrozen(c)).toBe(true);
    expect(loadConfig({ ...base, EMAIL_UNIQUENESS: 'claims' }).emailUniqueness).toBe('claims');
  });

  it('parses DOWNSTREAM_TARGETS with defaults for scheme and timeout', () => {
    const c = loadConfig({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'https://d.example.com/cb', secrets: ['s1', 's2'] }]) });
    expect(c.downstreamTargets).toEqual([{ name: 'dictation', url: 'https://d.example.com/cb', secrets: ['s1', 's2'], scheme: 'nabla-connect', timeout_ms: 10_000 }]);
  });

  it.each([
    [{ MONGO_URL: '' }, 'MONGO_URL'],
    [{ MONGO_URL: 'postgres://x' }, 'MONGO_URL'],
    [{ REDIS_URL: '' }, 'REDIS_URL'],
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PUBLIC_BASE_URL: 'not a url' }, 'PUBLIC_BASE_URL'],
    [{ BASE_PATH: 'no-slash' }, 'BASE_PATH'],
    [{ ACCESS_TOKEN_TTL_SECONDS: '5' }, 'ACCESS_TOKEN_TTL_SECONDS'],
    [{ TOKEN_SIGNING_KEY: 'secret' }, 'TOKEN_SIGNING_KEY'],
    [{ TOKEN_SIGNING_KEY: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' }, 'TOKEN_SIGNING_KEY'],
    [{ TOKEN_SIGNING_KEY: generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, 'TOKEN_SIGNING_KEY'],
    [{ TOKEN_SIGNING_KEY: generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, 'TOKEN_SIGNING_KEY'],
    [{ TOKEN_SIGNING_KEY: generateKeyPairSync('x25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, 'TOKEN_SIGNING_KEY'],
    [{ PUBLIC_BASE_URL: 'https://api.example.com/prefix?x=1' }, 'PUBLIC_BASE_URL'],
    [{ PUBLIC_BASE_URL: 'https://api.example.com/#f' }, 'PUBLIC_BASE_URL'],
    [{ PUBLIC_BASE_URL: 'https://user:pw@api.example.com' }, 'PUBLIC_BASE_URL'],
    [{ MONGO_URL: 'mongodb://' }, 'MONGO_URL'],
    // Options the driver refuses only when it opens the connection (the CLI answered `internal`, with a stack).
    [{ MONGO_URL: 'mongodb://127.0.0.1:1/x?foo=bar' }, 'MONGO_URL'],
    [{ MONGO_URL: 'mongodb://127.0.0.1:1/x?tls=maybe' }, 'MONGO_URL'],
    [{ MONGO_URL: 'mongodb://127.0.0.1:1/x?replicaSet=rs0&readPreference=bogus' }, 'MONGO_URL'],
    [{ MONGO_URL: 'mongodb://127.0.0.1:99999/x' }, 'MONGO_URL'],
    [{ MONGO_URL: 'mongodb://127.0.0.1:1/x?authSource=' }, 'MONGO_URL'],
    // Taken, then refused by ioredis at connection time with "Invalid URL" (the CLI: `internal`, a stack trace).
    [{ REDIS_URL: 'redis://:RedisPw@' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://x@127.0.0.1:99999' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://:p#w@127.0.0.1:6379' }, 'REDIS_URL'],
    [{ REDIS_URL: 'redis://127.0.0.1:1/0?password=x' }, 'REDIS_URL'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ QUEUE_PREFIX: 'has space' }, 'QUEUE_PREFIX'],
    [{ DOWNSTREAM_TARGETS: '{not json' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"ftp://x","secrets":["s"]}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://x","secrets":[]}]' }, 'DOWNSTREAM_TARGETS'],
    // Credentials in a target's URL would not be sent (fetch drops them): refused, not quoted.
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://user:TargetPw1@x/cb","secrets":["s"]}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://x","secrets":["plain"],"scheme":"standard-webhooks"}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://x","secrets":["s"]},{"name":"a","url":"https://y","secrets":["s"]}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS_FILE: '/nonexistent/targets.json' }, 'DOWNSTREAM_TARGETS_FILE'],
    [{ ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN'],
    [{ EMAIL_UNIQUENESS: 'unique' }, 'EMAIL_UNIQUENESS'],
  ])('%j names %s', (overrides, variable) => {
    const err = errorOf({ ...base, ...overrides } as Record<string, string>);
    expect(err.variable).toBe(variable);
    expect(err.message.startsWith(`${variable}: `)).toBe(true);
    expect(err.message).not.toContain('\n');
    expect(err.message).not.toMatch(/RedisPw|TargetPw1/);
  });
});

describe('REDIS_URL as operators write them', () => {
  it('a password with an unencoded "@" (URL parsing takes the last one), IPv6 hosts, sentinel and cluster URLs are taken', () => {
    for (const REDIS_URL of ['redis://:p@ss@127.0.0.1:6379', 'redis://user:p@ss@host:6379/2', 'redis://[::1]:6379', 'redis://:p%23ss@[::1]:6379/2', 'redis+sentinel://:pw@h1:26379,h2:26379/mymaster/1', 'redis+cluster://:pw@n1:7000,n2:7001']) {
      expect(loadConfig({ ...base, REDIS_URL, QUEUE_PREFIX: '{connect}' }).redisUrl, REDIS_URL).toBe(REDIS_URL);
    }
  });

  it('a refused URL is quoted without any part of its password or query, whatever a "#" or "?" in the password does to the parse (a security audit read "redis://:PWC" out of redis://:PWC#410@host)', () => {
    for (const [url, shown] of [
      ['redis://:PWC#410@127.0.0.1:6379/12', 'redis://***@127.0.0.1:6379/12'],
      ['redis://:PWC?410@127.0.0.1:6379/12', 'redis://***@127.0.0.1:6379/12'],
      ['redis+sentinel://:PWC#410@h1:26379,h2:26379/m', 'redis+sentinel://***@h1:26379,h2:26379/m'],
      ['redis://:PWC#410', 'redis://***'],
      ['redis://127.0.0.1:1/12?password=PWF3', 'redis://127.0.0.1:1/12'],
    ]) {
      const message = errorOf({ ...base, REDIS_URL: url! }).message;
      expect(message, url).toContain(`got "${shown}"`);
      expect(message, url).not.toMatch(/PWC|PWF3|410/);
    }
  });
});

describe('MONGO_URL and TOKEN_SIGNING_KEY as operators write them', () => {
  it('takes a replica set seed list and mongodb+srv, and names the database "connect" when the URL names none', () => {
    expect(loadConfig({ ...base, MONGO_URL: 'mongodb://m1:27017,m2:27017,m3:27017/prod?replicaSet=rs0' }).mongoUrl).toBe('mongodb://m1:27017,m2:27017,m3:27017/prod?replicaSet=rs0');
    expect(loadConfig({ ...base, MONGO_URL: 'mongodb://m1,m2/?replicaSet=rs0' }).mongoUrl).toBe('mongodb://m1,m2/connect?replicaSet=rs0');
    expect(loadConfig({ ...base, MONGO_URL: 'mongodb://127.0.0.1:27017' }).mongoUrl).toBe('mongodb://127.0.0.1:27017/connect');
    expect(loadConfig({ ...base, MONGO_URL: 'mongodb+srv://u:p@cluster0.example.net/?retryWrites=true' }).mongoUrl).toBe('mongodb+srv://u:p@cluster0.example.net/connect?retryWrites=true');
  });

  it('takes RSA, EC P-256 and Ed25519 keys, and names the kind it refuses', () => {
    const pem = (kind: 'rsa' | 'ec' | 'ed25519', opts: object = {}) =>
      (generateKeyPairSync as (k: string, o: object) => { privateKey: KeyObject })(kind, opts).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    for (const key of [pem('rsa', { modulusLength: 2048 }), pem('ec', { namedCurve: 'prime256v1' }), pem('ed25519')]) {
      expect(loadConfig({ ...base, TOKEN_SIGNING_KEY: key }).tokenSigningKey).toBe(key.trim());
    }
    expect(errorOf({ ...base, TOKEN_SIGNING_KEY: pem('ec', { namedCurve: 'secp384r1' }) }).message).toBe('TOKEN_SIGNING_KEY: must be an RSA, EC P-256 or Ed25519 private key, got EC secp384r1');
  });
});

describe('TRUST_PROXY: whose X-Forwarded-For names the client', () => {
  it('is off by default, and takes true/false, a hop count, or proxy addresses and CIDR ranges', () => {
    expect(loadConfig(base).trustProxy).toBe(false);
    expect(loadConfig({ ...base, TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(loadConfig({ ...base, TRUST_PROXY: '2' }).trustProxy).toBe(2);
    expect(loadConfig({ ...base, TRUST_PROXY: '10.0.0.0/8, 127.0.0.1,::1' }).trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1', '::1']);
    expect(errorOf({ ...base, TRUST_PROXY: 'yes' }).message).toMatch(/^TRUST_PROXY: must be true, false, a hop count 1 to 10, or the proxies' addresses/);
    expect(errorOf({ ...base, TRUST_PROXY: 'lb.internal' }).message).toMatch(/^TRUST_PROXY: /);
  });
});

describe('every problem at once (docs/operations.md)', () => {
  it('lists each bad variable once, one line each, naming it', () => {
    const err = errorOf({ MONGO_URL: 'postgres://x', REDIS_URL: '', PORT: 'eighty', LOG_LEVEL: 'loud', ACCESS_TOKEN_TTL_SECONDS: '5', ADMIN_TOKEN: 'short' });
    expect(err.problems.map((p) => p.variable).sort()).toEqual(['ACCESS_TOKEN_TTL_SECONDS', 'ADMIN_TOKEN', 'LOG_LEVEL', 'MONGO_URL', 'PORT', 'REDIS_URL']);
    const lines = err.message.split('\n');
    expect(lines).toHaveLength(6);
    for (const line of lines) expect(line).toMatch(/^[A-Z_]+: \S/);
    expect(lines).toContain('REDIS_URL: is required');
    expect(lines).toContain('PORT: must be a whole number from 0 to 65535, got "eighty"');
  });

  it('API_SHUTDOWN_DELAY_MS is spent inside API_SHUTDOWN_GRACE_MS and must leave it the request deadline (10 s): refused past that, naming the most it may be', () => {
    expect(loadConfig({ ...base, API_SHUTDOWN_GRACE_MS: '40000', API_SHUTDOWN_DELAY_MS: '30000' })).toMatchObject({ shutdownGraceMs: 40_000, shutdownDelayMs: 30_000 });
    expect(loadConfig({ ...base, API_SHUTDOWN_DELAY_MS: '15000' }).shutdownDelayMs).toBe(15_000);
    expect(errorOf({ ...base, API_SHUTDOWN_DELAY_MS: '15001' }).problems).toEqual([
      { variable: 'API_SHUTDOWN_DELAY_MS', problem: expect.stringMatching(/^must leave API_SHUTDOWN_GRACE_MS \(25000\) at least the 10000 ms a request may take: at most 15000/) },
    ]);
    expect(errorOf({ ...base, API_SHUTDOWN_GRACE_MS: '5000', API_SHUTDOWN_DELAY_MS: '1000' }).problems.map((p) => p.variable)).toEqual(['API_SHUTDOWN_DELAY_MS']);
    // No delay: a short grace alone is the operator's choice.
    expect(loadConfig({ ...base, API_SHUTDOWN_GRACE_MS: '5000' }).shutdownGraceMs).toBe(5000);
    expect(errorOf({ ...base, API_SHUTDOWN_GRACE_MS: '10' }).problems.map((p) => p.variable)).toEqual(['API_SHUTDOWN_GRACE_MS']);
  });

  it('a bad REDIS_URL or PUBLIC_BASE_URL is named without its password or query (the line goes to logs and terminals)', () => {
    for (const REDIS_URL of ['redis+sentinel://:S3cretPW@h1:26379', 'redis://:S3cretPW@host:6379/x', 'redis://:S3cretPW@host:6379/m/x', 'redis://:S3cr/etPW@host:6379/x', 'redis+sentinel://:S3cretPW/x@h:26379', 'rediss://user:S3cretPW@host:6379/0?password=S3cretPW&db=x', 'redis://:S3cretPW%zz@host', 'redis://:S3c@retPW@host:6379/x', 'redis://:S3c@retPW@host:99999']) {
      const [problem] = errorOf({ ...base, REDIS_URL }).problems;
      expect(problem!.variable, REDIS_URL).toBe('REDIS_URL');
      expect(problem!.problem, REDIS_URL).not.toMatch(/S3cr|etPW/);
    }
    const [publicUrl] = errorOf({ ...base, PUBLIC_BASE_URL: 'https://api.example.com/x?key=S3cretPW' }).problems;
    expect(publicUrl!.problem).not.toContain('S3cretPW');
  });

  it('cross-variable checks are reported with the others', () => {
    const err = errorOf({ ...base, REDIS_URL: 'redis+cluster://a:7000', PORT: 'x', DOWNSTREAM_TARGETS: '[]', DOWNSTREAM_TARGETS_FILE: '/x.json' });
    expect(err.problems.map((p) => p.variable).sort()).toEqual(['DOWNSTREAM_TARGETS_FILE', 'PORT', 'QUEUE_PREFIX']);
  });

  it('parseEnv composes: a process adds its own variables to the shared ones and still gets every problem', () => {
    const schema = z.object({ ...sharedEnvShape, WORKER_CONCURRENCY: envInteger(1, 1000, 32) });
    expect(parseEnv(schema, base).WORKER_CONCURRENCY).toBe(32);
    expect(parseEnv(schema, { ...base, WORKER_CONCURRENCY: ' 8 ' }).WORKER_CONCURRENCY).toBe(8);
    try {
      parseEnv(schema, { ...base, MONGO_URL: '', WORKER_CONCURRENCY: '0' });
      throw new Error('expected a ConfigError');
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([
        { variable: 'MONGO_URL', problem: 'is required' },
        { variable: 'WORKER_CONCURRENCY', problem: 'must be a whole number from 1 to 1000, got 0' },
      ]);
    }
  });
});

describe('DOWNSTREAM_TARGETS: a standard-webhooks secret', () => {
  const load = (secret: string) => loadConfig({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'a', url: 'https://x.example.com', secrets: [secret], scheme: 'standard-webhooks' }]) });
  it('is "whsec_" + padded, canonical base64, as the official libraries load it (Go\'s refuses the rest): "whsec_abc", an unpadded secret, stray bits, base64url and no prefix are refused, naming the secret\'s place and not its value', () => {
    const good = `whsec_${Buffer.alloc(24, 7).toString('base64')}`;
    expect(load(good).downstreamTargets[0]!.secrets).toEqual([good]);
    expect(load('whsec_c2VjcmV0').downstreamTargets[0]!.secrets).toEqual(['whsec_c2VjcmV0']);
    const unpadded = `whsec_${Buffer.alloc(26, 9).toString('base64').replace(/=+$/, '')}`;
    for (const bad of ['whsec_abc', unpadded, 'whsec_c2VjcmV0YR==', 'whsec_c2Vj-mV0', Buffer.alloc(24, 7).toString('base64'), 'whsec_']) {
      const err = errorOf({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'a', url: 'https://x.example.com', secrets: [bad], scheme: 'standard-webhooks' }]) });
      expect(err.message, bad).toMatch(/^DOWNSTREAM_TARGETS: \[0\.secrets\.0\] standard-webhooks secrets are "whsec_" \+ padded standard base64/);
      if (bad.length > 8) expect(err.message).not.toContain(bad);
    }
  });
});

describe('DOWNSTREAM_TARGETS: weak secrets (the worker warns at start, docs/operations.md)', () => {
  it('names each secret under 16 bytes (nabla-connect) or decoding to under 24 (standard-webhooks) by target and place, never by value, and passes the rest', () => {
    const whsec = (bytes: number) => `whsec_${Buffer.alloc(bytes, 7).toString('base64')}`;
    const { downstreamTargets } = loadConfig({
      ...base,
      DOWNSTREAM_TARGETS: JSON.stringify([
        { name: 'a', url: 'https://a.example.com', secrets: ['0123456789abcdef', 'hunter2'] },
        { name: 'b', url: 'https://b.example.com', secrets: [whsec(24), whsec(18)], scheme: 'standard-webhooks' },
        // é is 2 bytes: 8 of them are 16 bytes.
        { name: 'c', url: 'https://c.example.com', secrets: ['é'.repeat(8)] },
      ]),
    });
    const weak = weakSecrets(downstreamTargets);
    // Blank is refused outright, naming its place.
    expect(errorOf({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'a', url: 'https://a.example.com', secrets: ['0123456789abcdef', '   '] }]) }).message).toBe('DOWNSTREAM_TARGETS: [0.secrets.1] must not be blank (spaces only)');
    expect(weak).toEqual(['target "a": secrets[1] is 7 bytes, under 16', 'target "b": secrets[1] is 18 bytes once decoded, under 24']);
    expect(weak.join()).not.toContain('hunter2');
    expect(weak.join()).not.toContain(whsec(18).slice(6));
  });
});

describe('DOWNSTREAM_TARGETS: a target url', () => {
  it('that is not an http or https URL says so (zod said only "Invalid URL"), without echoing the value', () => {
    for (const url of ['ftp://files.example.com/cb', 'not a url', 'https//missing-colon.example.com']) {
      const err = errorOf({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'a', url, secrets: ['s1'] }]) });
      expect(err.message, url).toBe('DOWNSTREAM_TARGETS: [0.url] must be an http or https URL');
    }
    for (const url of ['http://127.0.0.1:9/cb', 'https://d.example.com/cb']) {
      expect(loadConfig({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'a', url, secrets: ['s1'] }]) }).downstreamTargets[0]!.url).toBe(url);
    }
  });
});

describe('DOWNSTREAM_TARGETS_FILE (docs/operations.md: targets from a file, e.g. a mounted secret)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'targets-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const targets = [
    { name: 'dictation', url: 'https://d.example.com/cb', secrets: ['s1'] },
    { name: 'billing', url: 'https://b.example.com/hook', secrets: ['whsec_c2VjcmV0'], scheme: 'standard-webhooks', timeout_ms: 2000 },
  ];

  it('reads the targets from the file, with the same defaults as DOWNSTREAM_TARGETS', () => {
    const file = join(dir, 'targets.json');
    writeFileSync(file, JSON.stringify(targets));
    expect(loadConfig({ ...base, DOWNSTREAM_TARGETS_FILE: file }).downstreamTargets).toEqual([
      { ...targets[0], scheme: 'nabla-connect', timeout_ms: 10_000 },
      targets[1],
    ]);
  });

  it('a bad file names DOWNSTREAM_TARGETS_FILE (not DOWNSTREAM_TARGETS), and never prints the secrets', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify([{ ...targets[0], url: 'ftp://x' }]));
    const err = errorOf({ ...base, DOWNSTREAM_TARGETS_FILE: file });
    expect(err.variable).toBe('DOWNSTREAM_TARGETS_FILE');
    expect(err.message).toMatch(/^DOWNSTREAM_TARGETS_FILE: \[0\.url\]/);
    expect(err.message).not.toContain('s1');
    writeFileSync(file, '{not json');
    expect(errorOf({ ...base, DOWNSTREAM_TARGETS_FILE: file }).message).toMatch(/^DOWNSTREAM_TARGETS_FILE: must be a JSON array/);
  });

  it('both DOWNSTREAM_TARGETS and DOWNSTREAM_TARGETS_FILE set: refused', () => {
    const file = join(dir, 'targets.json');
    writeFileSync(file, JSON.stringify(targets));
    expect(errorOf({ ...base, DOWNSTREAM_TARGETS: '[]', DOWNSTREAM_TARGETS_FILE: file }).message).toBe('DOWNSTREAM_TARGETS_FILE: set either DOWNSTREAM_TARGETS or DOWNSTREAM_TARGETS_FILE, not both');
  });
});

describe('MONGO_URL credentials', () => {
  it('keeps a URL that names its database exactly as written (percent-encoded credentials included)', () => {
    const url = 'mongodb://app%40svc:p%2Fss%3Aw0rd@m1:27017,m2:27017/prod?replicaSet=rs0&authSource=admin';
    expect(loadConfig({ ...base, MONGO_URL: url }).mongoUrl).toBe(url);
    expect(loadConfig({ ...base, MONGO_URL: 'mongodb://app%40svc:p%2Fss@m1/?authSource=admin' }).mongoUrl).toBe('mongodb://app%40svc:p%2Fss@m1/connect?authSource=admin');
  });
});
