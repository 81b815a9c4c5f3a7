import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createLogger, endLogs, maskEmail, maskEmailsIn, warnAtMostEvery } from './logger.ts';

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

