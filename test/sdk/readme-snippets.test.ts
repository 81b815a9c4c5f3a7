/**
 * The TypeScript snippets of the SDK READMEs (what an EHR or target developer pastes first) compile
 * as they are, against the packages' sources, with strict settings: the receiver's Fastify example
 * called a `saveSettings` it never defined, so pasted as is it answered 500 to every callback.
 * Each file a snippet reads is said in the README's text, not only named in the code.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';

const run = promisify(execFile);
const READMES = ['packages/client/README.md', 'packages/receiver/README.md'];

function snippets(markdown: string): string[] {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}
/** The README without its code blocks. */
const prose = (markdown: string) => markdown.replace(/^```[\s\S]*?^```$/gm, '');

// Inside the repository (git-ignored .local/), so the packages resolve as a consumer's would.
mkdirSync(join(REPO_ROOT, '.local'), { recursive: true });
const work = mkdtempSync(join(REPO_ROOT, '.local', 'readme-snippets-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the SDK READMEs: their TypeScript snippets', () => {
  it('compile as pasted (strict TypeScript, every name defined)', async () => {
    const files: string[] = [];
    for (const readme of READMES) {
      const blocks = snippets(readFileSync(join(REPO_ROOT, readme), 'utf8'));
      expect(blocks.length, readme).toBeGreaterThan(0);
      blocks.forEach((code, i) => {
        const file = `${readme.split('/')[1]}-${i + 1}.ts`;
        // Each snippet is its own module, as pasted into a file of one's own.
        writeFileSync(join(work, file), `${code}\nexport {};\n`);
        files.push(file);
      });
    }
    writeFileSync(join(work, 'tsconfig.json'), JSON.stringify({ extends: '../../tsconfig.base.json', compilerOptions: { noUnusedLocals: false }, files }));
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const out = await run(process.execPath, [tsc, '-p', join(work, 'tsconfig.json')], { cwd: work }).then(
      () => '',
      (err: Error & { stdout?: string }) => err.stdout ?? err.message,
    );
    expect(out).toBe('');
  }, 120_000);

  it('each file a snippet reads is explained in the README text (what it is, where it comes from)', () => {
    for (const readme of READMES) {
      const markdown = readFileSync(join(REPO_ROOT, readme), 'utf8');
      const read = snippets(markdown).flatMap((code) => [...code.matchAll(/readFileSync\('([^']+)'/g)].map((m) => m[1]!));
      for (const file of new Set(read)) expect(prose(markdown), `${readme}: ${file}`).toContain(`\`${file}\``);
    }
  });
});
