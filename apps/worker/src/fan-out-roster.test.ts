import { describe, expect, it } from 'vitest';
import { workersKnowingMore, type RosterMember } from './fan-out-roster.ts';

const member = (id: string, ...targets: string[]): RosterMember => ({ id, host: 'h', pid: 1, targets });

describe('workersKnowingMore: who stands back while DOWNSTREAM_TARGETS differ', () => {
  it('names the live workers that know a target this one does not, with those targets; the same list, a smaller one or none at all name nobody', () => {
    expect(workersKnowingMore(['a', 'b'], [member('1', 'a', 'b'), member('2', 'a'), member('3')])).toEqual([]);
    expect(workersKnowingMore(['a'], [member('1', 'a', 't'), member('2', 'a')])).toEqual([{ ...member('1', 'a', 't'), missing: ['t'] }]);
    // Not nested: each knows one the other does not, so each stands back.
    expect(workersKnowingMore(['a'], [member('1', 't')]).map((m) => m.missing)).toEqual([['t']]);
    expect(workersKnowingMore(['t'], [member('1', 'a')]).map((m) => m.missing)).toEqual([['a']]);
    // A worker without targets stands back behind any worker that has some.
    expect(workersKnowingMore([], [member('1', 'a')]).map((m) => m.missing)).toEqual([['a']]);
  });
});
