import { ConfigError, loadConfig, type Config, type LoadConfigOptions } from '../config.ts';

/**
 * Parses the configuration at start; a bad or missing value prints one line
 * naming the variable and exits 1 before anything listens (docs/operations.md).
 */
export function loadConfigOrExit(options?: LoadConfigOptions): Readonly<Config> {
  try {
    return loadConfig(process.env, options);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}
