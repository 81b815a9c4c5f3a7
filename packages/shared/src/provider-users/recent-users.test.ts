import { describe, expect, it } from 'vitest';
import { RecentUsers } from './recent-users.ts';

const noted = (recent: RecentUsers, plainUpdates: boolean[]) => plainUpdates.map((p) => (recent.noteUncached(p), recent.writeFirst));

describe('RecentUsers: the first step for a user not held (docs/guarantees.md, "One-step updates")', () => {
  it('reads first at the start, and writes first from the 29th plain update in a row', () => {
    const recent = new RecentUsers();
    expect(recent.writeFirst).toBe(false);
    const after = noted(recent, Array(40).fill(true));
    expect(after.indexOf(true)).toBe(28);
    expect(after.slice(28).every(Boolean)).toBe(true);
  });

  it('goes back to reading first after a run of other requests (no-ops, creates), and does not flap on an even mix', () => {
    const recent = new RecentUsers();
    noted(recent, Array(200).fill(true));
    const back = noted(recent, Array(60).fill(false));
    expect(back.indexOf(false)).toBeGreaterThan(20);
    expect(back.at(-1)).toBe(false);
    // Half and half, from either side: the margin around one half holds the step it has.
    expect(new Set(noted(recent, Array.from({ length: 400 }, (_, i) => i % 2 === 0)))).toEqual(new Set([false]));
    noted(recent, Array(100).fill(true));
    expect(new Set(noted(recent, Array.from({ length: 400 }, (_, i) => i % 2 === 0)))).toEqual(new Set([true]));
  });

  it("firstStep 'write' always writes first, whatever it is told", () => {
    const recent = new RecentUsers(10, 'write');
    expect(new Set(noted(recent, Array(100).fill(false)))).toEqual(new Set([true]));
  });
});
