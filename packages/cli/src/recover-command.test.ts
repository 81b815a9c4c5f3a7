import { describe, expect, it } from 'vitest';
import { parseInstant, recoverCommand } from './recover-command.ts';
import { CliError } from './command.ts';

describe('deliveries recover --since/--until', () => {
  it('reads ISO 8601 date-times with Z, an offset or no zone (UTC), with or without seconds and fractions', () => {
    const now = new Date('2026-03-05T10:11:12.345Z');
    expect(parseInstant('since', now.toISOString())).toEqual(now);
    expect(parseInstant('since', '2026-03-05T10:11Z')).toEqual(new Date('2026-03-05T10:11:00Z'));
    expect(parseInstant('since', '2026-03-05T10:11:12')).toEqual(new Date('2026-03-05T10:11:12Z'));
    expect(parseInstant('since', '2026-03-05T11:11:12+01:00')).toEqual(new Date('2026-03-05T10:11:12Z'));
    expect(parseInstant('since', '2026-03-05T05:41:12-0430')).toEqual(new Date('2026-03-05T10:11:12Z'));
    expect(parseInstant('since', '2026-03-05T10:11:12.3456789Z')).toEqual(new Date('2026-03-05T10:11:12.345Z'));
    expect(parseInstant('since', '2024-02-29T00:00:00Z')).toEqual(new Date('2024-02-29T00:00:00Z'));
  });

  it('reads the other ISO 8601 and RFC 3339 forms: a date alone (its midnight UTC), t and z in lower case, a space for T, the basic format, an offset in hours', () => {
    expect(parseInstant('since', '2026-03-05')).toEqual(new Date('2026-03-05T00:00:00Z'));
    expect(parseInstant('since', '20260305')).toEqual(new Date('2026-03-05T00:00:00Z'));
    expect(parseInstant('since', '2026-03-05t10:11:12z')).toEqual(new Date('2026-03-05T10:11:12Z'));
    expect(parseInstant('since', '2026-03-05 10:11:12Z')).toEqual(new Date('2026-03-05T10:11:12Z'));
    expect(parseInstant('since', '20260305T101112Z')).toEqual(new Date('2026-03-05T10:11:12Z'));
    expect(parseInstant('since', '20260305T101112,5Z')).toEqual(new Date('2026-03-05T10:11:12.500Z'));
    expect(parseInstant('since', '2026-03-05T11:11:12+01')).toEqual(new Date('2026-03-05T10:11:12Z'));
  });

  it('refuses a date or time that does not exist instead of rolling it over', () => {
    for (const [value, why] of [
      ['2026-02-29T00:00:00Z', /no such date \(2026-02 has 28 days\)/],
      ['2026-02-30T00:00:00Z', /no such date/],
      ['2026-04-31T00:00:00Z', /no such date \(2026-04 has 30 days\)/],
      ['2026-00-10T00:00:00Z', /no month 00/],
      ['2026-03-01T24:00:00Z', /no such time of day/],
      ['2026-03-01T23:60:00Z', /no such time of day/],
      ['2026-03-01T23:00:60Z', /no such time of day/],
      ['2026-03-01T23:00:00+24:00', /no such UTC offset/],
      ['2026-02-30', /no such date/],
      ['2026-03-01T', /an ISO 8601 date, or date and time/],
      ['2026-03-01T9:00Z', /an ISO 8601 date, or date and time/],
      ['2026-03', /an ISO 8601 date, or date and time/],
      ['yesterday', /an ISO 8601 date, or date and time/],
    ] as const) {
      expect(() => parseInstant('since', value), value).toThrow(why);
    }
  });

  it('a --since in the future without --until is a usage error (the window ends now: it answered {"recovered": 0})', () => {
    const parse = (values: Record<string, string>) => () => recoverCommand.parse({ values: { target: 't', ...values }, positionals: [] });
    const later = new Date(Date.now() + 3_600_000).toISOString();
    expect(parse({ since: later })).toThrow(CliError);
    expect(parse({ since: later })).toThrow(/--since is in the future/);
    expect(parse({ since: later, until: new Date(Date.now() + 7_200_000).toISOString() })).not.toThrow();
    expect(parse({ since: new Date(Date.now() - 3_600_000).toISOString() })).not.toThrow();
  });
});
