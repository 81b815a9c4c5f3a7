import { describe, expect, it } from 'vitest';
import { BULK_PRIORITY, OrgPace } from './org-pace.ts';

describe('OrgPace: who publishes in bulk', () => {
  it('the first 50 events of an organization in 10 s are live, the next are bulk; another organization stays live', () => {
    let t = 1_000_000_000_000;
    const pace = new OrgPace(() => t);
    expect(pace.note('b')).toBe(0);
    const a = Array.from({ length: 60 }, () => pace.note('a'));
    expect(a.slice(0, 50).every((p) => p === 0)).toBe(true);
    expect(a.slice(50).every((p) => p === BULK_PRIORITY)).toBe(true);
    expect(pace.note('b')).toBe(0);
    // Half a window later, half the last window's count still weighs: 60 / 2 + 1 < 50, live again.
    t += 15_000;
    expect(pace.note('a')).toBe(0);
    // A window of silence and more: forgotten.
    t += 25_000;
    expect(Array.from({ length: 50 }, () => pace.note('a')).every((p) => p === 0)).toBe(true);
  });

  it('an organization alone (no other has published in the last 10 s) is never bulk: there is no one to be fair to', () => {
    let t = 1_000_000_000_000;
    const pace = new OrgPace(() => t);
    expect(pace.note('b')).toBe(0);
    t += 11_000;
    expect(Array.from({ length: 200 }, () => pace.note('a')).every((p) => p === 0)).toBe(true);
    // Another organization publishes: from then on the burst is bulk.
    expect(pace.note('b')).toBe(0);
    expect(pace.note('a')).toBe(BULK_PRIORITY);
  });

  it('a steady 6 events a second is bulk once the window holds over 50; 4 a second never is', () => {
    for (const [perSecond, bulk] of [
      [6, true],
      [4, false],
    ] as const) {
      let t = 1_000_000_000_000;
      const pace = new OrgPace(() => t);
      const priorities: number[] = [];
      for (let s = 0; s < 60; s++) {
        pace.note('another'); // another organization, once a second
        for (let i = 0; i < perSecond; i++, t += 1000 / perSecond) priorities.push(pace.note('org'));
      }
      expect(priorities.slice(-perSecond * 10).some((p) => p === BULK_PRIORITY), `${perSecond}/s`).toBe(bulk);
    }
  });
});
