import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { importGraph } from '../../../test/support/import-graph.ts';

describe('@connect/shared/contract', () => {
  it('reaches zod and nothing else: the SDKs never load mongoose, BullMQ or pino through it', () => {
    const { packages } = importGraph(join(dirname(fileURLToPath(import.meta.url)), 'contract.ts'));
    expect([...packages]).toEqual(['zod']);
  });
});
