/**
 * Durations in configuration are written with a unit: `500ms`, `30s`, `10m`,
 * `2h`, `5d` (one number, one unit, no spaces). One parser so every setting that
 * takes a duration (retry schedule, probe interval, disable-after, ...) accepts
 * exactly the same forms and reports a bad value the same way.
 */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/** Milliseconds of one duration such as `30s`; throws an Error saying what is accepted. */
export function parseDuration(raw: string): number {
  const m = DURATION.exec(raw.trim());
  if (!m) throw new Error(`"${raw}" is not a duration (a number and a unit: ms, s, m, h or d, e.g. 500ms, 30s, 10m, 2h, 5d)`);
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
  if (!Number.isFinite(ms) || ms <= 0) throw new Error(`"${raw}" must be longer than 0`);
  return ms;
}

/** A comma-separated list of durations (`5s,1m,5m`); at least one. */
export function parseDurationList(raw: string): number[] {
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw new Error(`"${raw}" must be durations separated by commas (e.g. 5s,1m,5m)`);
  return parts.map(parseDuration);
}

/** The shortest way back: 90000 → `90s`, 3600000 → `1h`. For logs and error messages. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
