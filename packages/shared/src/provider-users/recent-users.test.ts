import { describe, expect, it } from 'vitest';
import { RecentUsers, type FirstStep, type UncachedRequest } from './recent-users.ts';

/** Tells `recent` each request in turn; the first step it picks after each. */
const noted = (recent: RecentUsers, requests: UncachedRequest[]): FirstStep[] => requests.map((r) => (recent.noteUncached(r), recent.next));
const run = (n: number, r: UncachedRequest): UncachedRequest[] => Array<UncachedRequest>(n).fill(r);
const alternating = (n: number, a: UncachedRequest, b: UncachedRequest): UncachedRequest[] => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? a : b));

describe('RecentUsers: the first step for a user not held (docs/guarantees.md, "One-step writes")', () => {
  it('reads first at the start, and writes first from the 29th plain update in a row', () => {
    const recent = new RecentUsers();
    expect(recent.next).toBe('read');
    const after = noted(recent, run(40, 'plain-update'));
    expect(after.indexOf('write')).toBe(28);
    expect(after.slice(28).every((s) => s === 'write')).toBe(true);
  });

  it('inserts first from the 29th create in a row', () => {
    const recent = new RecentUsers();
    const after = noted(recent, run(40, 'create'));
    expect(after.indexOf('insert')).toBe(28);
    expect(after.slice(28).every((s) => s === 'insert')).toBe(true);
  });

  it('goes back to reading first after a run of other requests (no-ops), and does not flap on an even mix', () => {
    for (const kind of ['plain-update', 'create'] as const) {
      const recent = new RecentUsers();
      noted(recent, run(200, kind));
      const taken = recent.next;
      expect(taken).toBe(kind === 'create' ? 'insert' : 'write');
      const back = noted(recent, run(60, 'other'));
      expect(back.indexOf('read')).toBeGreaterThan(20);
      expect(back.at(-1)).toBe('read');
      // Half and half, from either side: the margin around one half holds the step it has.
      expect(new Set(noted(recent, alternating(400, kind, 'other')))).toEqual(new Set(['read']));
      noted(recent, run(100, kind));
      expect(new Set(noted(recent, alternating(400, kind, 'other')))).toEqual(new Set([taken]));
    }
  });

  it('goes from one step to the other through reading first when the stream turns from creates to updates', () => {
    const recent = new RecentUsers();
    noted(recent, run(100, 'create'));
    const turned = noted(recent, run(100, 'plain-update'));
    const leftInsert = turned.indexOf('read');
    expect(leftInsert).toBeGreaterThan(0);
    expect(turned.indexOf('write')).toBeGreaterThan(leftInsert);
    expect(turned.at(-1)).toBe('write');
  });

  it("firstStep 'write' and 'insert' keep that step, whatever they are told", () => {
    expect(new Set(noted(new RecentUsers(10, 'write'), run(100, 'other')))).toEqual(new Set(['write']));
    expect(new Set(noted(new RecentUsers(10, 'insert'), run(100, 'plain-update')))).toEqual(new Set(['insert']));
  });
});
