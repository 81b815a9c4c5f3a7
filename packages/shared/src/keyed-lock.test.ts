import { describe, expect, it } from 'vitest';
import { KeyedLock } from './keyed-lock.ts';

describe('KeyedLock', () => {
  it('runs work for one key one at a time, in arrival order, and other keys in parallel', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const step = (key: string, n: number, ms: number) =>
      lock.run(key, async () => {
        log.push(`${key}${n}+`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`${key}${n}-`);
        return n;
      });
    const results = await Promise.all([step('a', 1, 30), step('a', 2, 1), step('b', 1, 5)]);
    expect(results).toEqual([1, 2, 1]);
    expect(log.indexOf('a1-')).toBeLessThan(log.indexOf('a2+'));
    expect(log.indexOf('b1+')).toBeLessThan(log.indexOf('a1-'));
    expect(lock.size).toBe(0);
  });
  it('a failure does not block the next holder', async () => {
    const lock = new KeyedLock();
    await expect(lock.run('k', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(lock.run('k', async () => 'ok')).resolves.toBe('ok');
  });
});
