import { ConfigError, loadConfig, type Config, type ConfigProblem, type LoadConfigOptions } from '../config.ts';

/**
 * Runs each configuration loader and returns their results, or prints every
 * problem any of them found (one line per variable: `configuration error: NAME:
 * problem`) and exits 1 before anything listens (docs/operations.md). Loaders run even after
 * one failed, so a process with its own options (the worker's) still reports
 * all of its mistakes at once.
 */
export function loadOrExit<const L extends readonly (() => unknown)[]>(...loaders: L): { [K in keyof L]: ReturnType<L[K]> } {
  const results: unknown[] = [];
  const problems: ConfigProblem[] = [];
  for (const load of loaders) {
    try {
      results.push(load());
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems.filter((p) => !problems.some((q) => q.variable === p.variable)));
    }
  }
  if (problems.length > 0) {
    process.stderr.write(problems.map((p) => `configuration error: ${p.variable}: ${p.problem}\n`).join(''));
    process.exit(1);
  }
  return results as { [K in keyof L]: ReturnType<L[K]> };
}

/** The shared configuration from `process.env`, or every problem printed and exit 1. */
export function loadConfigOrExit(options?: LoadConfigOptions): Readonly<Config> {
  const [config] = loadOrExit(() => loadConfig(process.env, options));
  return config;
}
