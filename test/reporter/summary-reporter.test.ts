import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';

const run = promisify(execFile);

/**
 * The closing `tests: ...` line is what CI reads, so it is tested as CI sees it:
 * a child vitest, with only this reporter, over scratch files in a temp dir.
 * `globals: true` lets the scratch files run without resolving `vitest` from
 * the temp dir; the config is a plain object for the same reason.
 */
describe('summary reporter: the line CI reads counts every kind of failure', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'summary-reporter-'));
    await writeFile(
      join(dir, 'vitest.config.mjs'),
      `export default { test: { globals: true, include: ['*.test.mjs'], reporters: [${JSON.stringify(join(REPO_ROOT, 'test', 'summary-reporter.ts'))}], pool: 'forks', maxWorkers: 1 } };\n`,
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function runScratch(files: Record<string, string>): Promise<{ line: string; code: number }> {
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
    const vitest = join(REPO_ROOT, 'node_modules', 'vitest', 'vitest.mjs');
    const result = await run(process.execPath, [vitest, 'run', '--root', dir, '--config', join(dir, 'vitest.config.mjs'), ...Object.keys(files)], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, CI: '1' },
    }).then(
      (r) => ({ stdout: r.stdout, code: 0 }),
      (err: { stdout: string; code: number }) => ({ stdout: err.stdout, code: err.code }),
    );
    const line = result.stdout.split('\n').filter((l) => l.startsWith('tests: ')).at(-1);
    if (!line) throw new Error(`no summary line in:\n${result.stdout}`);
    return { line, code: result.code };
  }

  it('a file whose beforeAll throws counts as failed (its tests never ran)', async () => {
    const r = await runScratch({
      'before-all-throws.test.mjs': `beforeAll(() => { throw new Error('setup broke'); });\ntest('a', () => {});\ntest('b', () => {});\n`,
    });
    expect(r.line).toBe('tests: 0 passed, 1 failed, 2 skipped');
    expect(r.code).not.toBe(0);
  });

  it('a file whose afterAll assertion fails counts as failed even though its tests passed', async () => {
    const r = await runScratch({
      'after-all-fails.test.mjs': `afterAll(() => { expect(1).toBe(2); });\ntest('a', () => {});\n`,
    });
    expect(r.line).toBe('tests: 1 passed, 1 failed, 0 skipped');
    expect(r.code).not.toBe(0);
  });

  it('a file that does not load counts as failed', async () => {
    const r = await runScratch({ 'does-not-load.test.mjs': `throw new Error('import-time failure');\n` });
    expect(r.line).toBe('tests: 0 passed, 1 failed, 0 skipped');
  });

  it('failing tests count once each, and a clean file adds no failure', async () => {
    const r = await runScratch({
      'mixed.test.mjs': `test('ok', () => {});\ntest('bad 1', () => { expect(1).toBe(2); });\ntest('bad 2', () => { expect(1).toBe(2); });\ntest.skip('later', () => {});\n`,
      'clean.test.mjs': `test('ok', () => {});\n`,
    });
    expect(r.line).toBe('tests: 2 passed, 2 failed, 1 skipped');
  });
});
