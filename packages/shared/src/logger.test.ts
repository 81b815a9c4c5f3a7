import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createLogger, endLogs, loggableUrl, maskEmail, maskEmailsIn, scrubText, serializeError, warnAtMostEvery } from './logger.ts';

describe('email masking', () => {
  it('keeps only first letters and the top-level domain', () => {
    expect(maskEmail('jane.doe@example.com')).toBe('j***@e***.com');
    expect(maskEmail('x@localhost')).toBe('x***@l***');
    expect(maskEmail('nonsense')).toBe('***');
  });
  it('masks every address inside text', () => {
    expect(maskEmailsIn('user a.b@c.org clashes with D@E.io')).toBe('user a***@c***.org clashes with D***@E***.io');
    // Typed with a full-width or a small at sign, an address is still one.
    expect(maskEmailsIn('id jane.doe\uFF20example.com and x\uFE6By.org')).toBe('id j***@e***.com and x***@y***.org');
    expect(maskEmail('jane\uFF20example.com')).toBe('j***@e***.com');
  });
});

describe('scrubbing text and errors for the log', () => {
  it('takes credentials in URLs, query strings and emails out of free text', () => {
    expect(scrubText('GET "/users/a.b@c.org?access_token=SECRET&x=1" via redis://:pw@h:6379/0 (what?)')).toBe('GET "/users/a***@c***.org?…" via redis://***@h:6379/0 (what?)');
  });
  it('an email in a URL path is masked without swallowing the path before it', () => {
    expect(loggableUrl('/v1/connect/server/users/jane.doe@example.com?access_token=x')).toBe('/v1/connect/server/users/j***@e***.com');
  });
  it('a path is logged without a JWT in it, with an email encoded twice masked, and with an email across the 512-character cut masked whole', () => {
    const jwt = 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    expect(loggableUrl(`/v1/connect/server/users/${jwt}`)).toBe('/v1/connect/server/users/[jwt]');
    expect(scrubText(`bad token ${jwt} sent`)).toBe('bad token [jwt] sent');
    expect(loggableUrl('/users/jane.doe%2540example.com')).toBe('/users/j***@e***.com');
    expect(loggableUrl('/users/jane.doe%252540example.com')).toBe('/users/j***@e***.com');
    // A path that does not decode as a whole (an escape cut by the length cap, bytes that are not UTF-8): the rest still decodes.
    expect(loggableUrl(`/v1/connect/server/users/jane.doe%40example.com/${'a'.repeat(3023)}%20bbbb`)).toMatch(/^\/v1\/connect\/server\/users\/j\*\*\*@e\*\*\*\.com\/a+$/);
    expect(loggableUrl('/users/%ff/jane.doe%40example.com')).toBe('/users/%ff/j***@e***.com');
    expect(loggableUrl('/users/%ffjane.doe%40example.com')).not.toContain('jane.doe');
    // Before: the path was cut at 512 first, leaving "…jane.doe@example" unmasked.
    const long = loggableUrl(`/users/${'c'.repeat(490)}jane.doe@example.com`);
    expect(long.length).toBeLessThanOrEqual(512);
    expect(long).not.toContain('jane.doe');
    expect(long).not.toContain('@example');
  });
  it('an error keeps its type, code, and a scrubbed message and stack; no other property (a driver error quotes the duplicate key)', () => {
    const err = Object.assign(new Error('dup jane.doe@example.com'), { code: 11000, keyValue: { email: 'jane.doe@example.com' } });
    const out = serializeError(err) as Record<string, unknown>;
    expect(Object.keys(out).sort()).toEqual(['code', 'message', 'stack', 'type']);
    expect(out).toMatchObject({ type: 'Error', code: 11000, message: 'dup j***@e***.com' });
    expect(JSON.stringify(out)).not.toContain('jane.doe');
  });
  it('the message of an error logged without one (alone or as { err }) is scrubbed too', () => {
    const lines: string[] = [];
    const log = createLogger('info', 't', new Writable({ write: (chunk: Buffer, _enc, cb) => (lines.push(chunk.toString()), cb()) }));
    log.warn(new Error('alone jane.doe@example.com'));
    log.warn({ err: new Error('wrapped jane.doe@example.com?token=abc') });
    log.info('interpolated %s', 'jane.doe@example.com');
    log.info({ n: 1 }, 'sent to %s?token=%s as %j', 'https://h/x', 'T0KEN', { to: 'jane.doe@example.com' });
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual([
      'alone j***@e***.com',
      'wrapped j***@e***.com?…',
      'interpolated j***@e***.com',
      'sent to https://h/x?… as {"to":"j***@e***.com"}',
    ]);
    expect(JSON.parse(lines[3]!)).toMatchObject({ n: 1 });
  });
  it('an error keeps its cause and an AggregateError its errors, scrubbed alike', () => {
    const err = new Error('fetch failed', { cause: new AggregateError([new Error('connect ECONNREFUSED for jane.doe@example.com')], 'all refused') });
    const out = serializeError(err) as { cause: { type: string; errors: { message: string }[] } };
    expect(out.cause.type).toBe('AggregateError');
    expect(out.cause.errors[0]!.message).toBe('connect ECONNREFUSED for j***@e***.com');
  });
});

describe('warnAtMostEvery', () => {
  it('writes a repeating warning once per interval per key, counting the ones it left out', () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) });
    let clock = 0;
    const warn = warnAtMostEvery(createLogger('info', 'test', sink), 10_000, () => clock);
    for (let i = 0; i < 40; i++, clock += 250) warn('redis:worker:ECONNREFUSED', { connection: 'worker', err: 'ECONNREFUSED' }, 'redis connection error');
    warn('redis:queue:ECONNREFUSED', { connection: 'queue' }, 'redis connection error');
    // 40 warnings over 10 s on one key: the first, then the one 10 s later with the 39 in between counted.
    expect(lines.map((l) => [l.connection, l.repeated])).toEqual([
      ['worker', undefined],
      ['queue', undefined],
    ]);
    clock = 10_000;
    warn('redis:worker:ECONNREFUSED', { connection: 'worker', err: 'ECONNREFUSED' }, 'redis connection error');
    expect(lines.at(-1)).toMatchObject({ connection: 'worker', repeated: 39, msg: 'redis connection error' });
  });
});

describe('endLogs', () => {
  it('writes out every line given before it, and a line logged after it is dropped instead of throwing "SonicBoom destroyed"', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'end-logs-'));
    const file = join(dir, 'out.log');
    // What pino writes stdout with: sonic-boom, asynchronous.
    const log = createLogger('info', 'end-logs', pino.destination({ dest: file, sync: false }));
    for (let i = 0; i < 100; i++) log.info({ i }, 'before');
    const ending = endLogs(log);
    expect(() => log.warn('while ending')).not.toThrow();
    await ending;
    expect(() => log.warn('after')).not.toThrow();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { msg: string; i?: number });
    expect(lines.map((l) => l.i)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    rmSync(dir, { recursive: true, force: true });
  });
});

