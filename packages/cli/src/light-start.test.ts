import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { importGraph } from '../../../test/support/import-graph.ts';

const here = dirname(fileURLToPath(import.meta.url));

describe('pnpm cli starts light', () => {
  it('main.ts and every command module reach no datastore driver, queue, zod or logger by static import: --help and usage errors never load them', () => {
    const { files, packages } = importGraph(join(here, 'main.ts'));
    // The command modules are in the graph (their help text and parse run before anything opens).
    expect([...files].map((f) => f.slice(here.length + 1)).sort()).toEqual(
      ['client-commands.ts', 'command.ts', 'commands.ts', 'datastore-probe.ts', 'deliveries-command.ts', 'main.ts', 'org-commands.ts', 'recover-command.ts', 'resync-command.ts', 'stack-env.ts', 'targets-command.ts', 'user-commands.ts'],
    );
    expect([...packages].filter((p) => !p.startsWith('node:')).sort()).toEqual(['@connect/shared/input-rules']);
  });

  it('@connect/shared/input-rules itself imports node built-ins and nothing else', () => {
    const { packages } = importGraph(join(here, '..', '..', 'shared', 'src', 'input-rules.ts'));
    expect([...packages].filter((p) => !p.startsWith('node:'))).toEqual([]);
  });
});
