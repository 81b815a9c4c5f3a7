import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '@connect/local-services';

/**
 * The entry points tests start as processes of their own, and how node runs each.
 *
 * Started through tsx (`node --import tsx src/main.ts`), each process spent most of its start in
 * tsx's loader: an API or a worker took 3.6 s to load on a busy two-core machine, the CLI's
 * `--help` 0.6 s, and the suite starts hundreds of them. So the run's global setup bundles each
 * entry point once (test/global-setup.ts, `buildEntryPoints`): the same sources, our own packages
 * inlined, every npm package loaded by node from node_modules as it is. An API then loads in
 * 1.6 s, the CLI's `--help` in 0.2 s.
 *
 * What an operator types (`pnpm cli`, `pnpm start:api`, `pnpm stack`, `pnpm import-users`) is still
 * tested as typed, through tsx: by the README's test, root-scripts-sigterm, the CLI's and the
 * importer's `pnpm` cases and the local stack's (docs/operations.md, "Tests and CI").
 */
export const ENTRY_POINTS = {
  cli: 'packages/cli/src/main.ts',
  api: 'apps/api/src/main.ts',
  worker: 'apps/worker/src/main.ts',
  importer: 'apps/importer/src/main.ts',
} as const;

export type EntryPoint = keyof typeof ENTRY_POINTS;

/**
 * Where the bundles go (their chunks beside, in `chunks/`). Three folders below the repository, as the sources are: a module that
 * finds the repository from its own place (`new URL('../../../', import.meta.url)`) finds it from
 * a bundle or one of its chunks too.
 */
export const BUNDLE_DIR = join(REPO_ROOT, '.cache', 'test-build', 'bin');

/** node's arguments to run `name`: its bundle, or its source through tsx when no bundle was built (a file run outside vitest's global setup). */
export function nodeArgsOf(name: EntryPoint): string[] {
  const bundle = join(BUNDLE_DIR, `${name}.mjs`);
  return existsSync(bundle) ? [bundle] : ['--import', 'tsx', join(REPO_ROOT, ENTRY_POINTS[name])];
}
