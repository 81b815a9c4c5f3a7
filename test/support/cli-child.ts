import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { REPO_ROOT } from '@connect/local-services';
import { nodeArgsOf } from './entry-points.ts';

const run = promisify(execFile);

export interface CliRun {
  code: number;
  /** The one JSON document the CLI printed on stdout. */
  json: any;
  stderr: string;
}

/** `pnpm cli ...args` as an operator runs it: its own process, over this environment (laid on the test's own). */
export async function runCli(env: Record<string, string | undefined>, args: string[]): Promise<CliRun> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...nodeArgsOf('cli'), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env } });
    return { code: 0, json: JSON.parse(stdout), stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, json: JSON.parse(e.stdout), stderr: e.stderr };
  }
}
