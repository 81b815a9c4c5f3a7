import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { REPO_ROOT } from '@connect/local-services';
import { BUNDLE_DIR, ENTRY_POINTS } from './entry-points.ts';

/**
 * Every npm package stays out of the bundle, imported by node from the very file node would load
 * for it (its absolute path, as resolved from the module that imports it: pnpm gives each of our
 * packages its own node_modules). Our own packages (@connect/*) and relative imports are bundled.
 */
const npmPackagesAsTheyAre: Plugin = {
  name: 'npm-packages-as-they-are',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.path.startsWith('@connect/') || args.path.startsWith('node:') || args.pluginData === 'resolving') return undefined;
      const found = await b.resolve(args.path, { resolveDir: args.resolveDir, kind: args.kind, pluginData: 'resolving' });
      if (found.errors.length > 0) return { errors: found.errors };
      return { path: found.path, external: true };
    });
  },
};

/**
 * Bundles the entry points tests start as processes (test/support/entry-points.ts says why), once
 * per run, from the sources as they are now. A failed build fails the run: no test runs an old bundle.
 */
export async function buildEntryPoints(): Promise<number> {
  const started = performance.now();
  rmSync(join(BUNDLE_DIR, '..'), { recursive: true, force: true });
  await build({
    absWorkingDir: REPO_ROOT,
    entryPoints: Object.entries(ENTRY_POINTS).map(([name, source]) => ({ in: source, out: name })),
    outdir: BUNDLE_DIR,
    outExtension: { '.js': '.mjs' },
    // Dynamic imports stay lazy (the CLI loads a command's modules only when it runs).
    splitting: true,
    chunkNames: join('..', 'chunks', '[name]-[hash]'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // node's own conditions only: esbuild would add "module", and pick files node never loads.
    conditions: [],
    logLevel: 'error',
    plugins: [npmPackagesAsTheyAre],
  });
  return Math.round(performance.now() - started);
}
