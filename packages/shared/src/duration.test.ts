import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration, parseDurationList } from './duration.ts';

describe('durations in configuration', () => {
  it('reads every unit', () => {
    expect([parseDuration('500ms'), parseDuration('30s'), parseDuration('10m'), parseDuration('2h'), parseDuration('5d'), parseDuration('1.5s')]).toEqual([
      500, 30_000, 600_000, 7_200_000, 432_000_000, 1500,
    ]);
  });
  it('refuses a bare number, an unknown unit, zero and spaces inside', () => {
    for (const bad of ['30', '5x', '0s', '1 s', '', '-1s', 's']) expect(() => parseDuration(bad), bad).toThrow();
  });
  it('reads a list and refuses an empty item', () => {
    expect(parseDurationList('5s, 1m,5m')).toEqual([5000, 60_000, 300_000]);
    expect(() => parseDurationList('5s,,1m')).toThrow();
    expect(() => parseDurationList('')).toThrow();
  });
  it('formats back', () => {
    expect([formatDuration(90_000), formatDuration(3_600_000), formatDuration(1500)]).toEqual(['90s', '1h', '1500ms']);
  });
});
