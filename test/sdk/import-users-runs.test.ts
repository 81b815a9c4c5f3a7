/**
 * `pnpm import-users` as a real process against the real API (FerretDB, Redis): interrupted
 * part-way (SIGTERM to pnpm; Ctrl-C to the process group, then SIGTERM), rows of the same
 * external_provider_id at high concurrency, and --concurrency spelled other than in digits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { storedUsers, writeNewUsersCsv } from '../support/import-files.ts';
import { listenOnFreePort, REPO_ROOT } from '@connect/local-services';

vi.setConfig({ testTimeout: 300_000 });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, any>;
}

/**
 * Runs `command` in its own process group; `onStderrLine` sees each stderr line as it comes,
 * with the child (to signal it). Resolves once every holder of stdout has closed it.
 */
function run(command: string[], onStderrLine?: (line: string, child: ChildProcess) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command[0]!, command.slice(1), { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) onStderrLine?.(line, child);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      let json: Record<string, any> = {};
      try {
        json = JSON.parse(stdout) as Record<string, any>;
      } catch {
        /* asserted by the caller */
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}
const importUsers = (args: string[], onStderrLine?: (line: string, child: ChildProcess) => void) => run(['pnpm', '-s', 'import-users', ...args], onStderrLine);

let dir: string;
let api: TestApi;
let clinic: TestClient;
let keyFile: string;
const credentials = () => ['--base-url', api.baseUrl, '--client-id', clinic.client._id, '--private-key-file', keyFile];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'import-users-runs-'));
  api = await startTestApi({ label: 'sdk_import_runs', env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0' } });
  clinic = await registerTestClient(api.models);
  keyFile = join(dir, 'client.pem');
  writeFileSync(keyFile, clinic.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 });
});

afterAll(async () => {
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const newUsersCsv = (name: string, n: number) => writeNewUsersCsv(dir, name, n);
const storedOf = (ids: string[]) => storedUsers(api.models, clinic.organization._id, ids);

/** Once a progress line shows `rows` rows done, `signal` is called once. */
const afterRowsDone = (rows: number, signal: (child: ChildProcess) => void) => {
  let sent = false;
  return (line: string, child: ChildProcess) => {
    if (sent || !line.startsWith('{')) return;
    const event = JSON.parse(line) as { event?: string; done?: number };
    if (event.event === 'progress' && (event.done ?? 0) >= rows) {
      sent = true;
      signal(child);
    }
  };
};

describe('import-users: interrupted part-way', () => {
  /** What an interrupted run must leave: the usual document plus "interrupted", counts that add up, a complete report. */
  async function expectInterrupted(result: Run, ids: string[], report: string) {
    expect(result.json, result.stdout + result.stderr.slice(-2000)).toEqual({ total: expect.any(Number), created: expect.any(Number), updated: 0, unchanged: 0, failed: expect.any(Number), seconds: expect.any(Number), interrupted: true });
    const { total, created, failed } = result.json as { total: number; created: number; failed: number };
    expect(created).toBeGreaterThanOrEqual(20);
    // It stopped reading: not every row of the file was taken.
    expect(total).toBeLessThan(ids.length);
    // Every row taken was finished: answered (created), or failed and in the report.
    expect(created + failed).toBe(total);
    expect(await storedOf(ids)).toBe(created);
    const reported = readFileSync(report, 'utf8').split('\n').filter(Boolean);
    expect(reported).toHaveLength(failed);
    expect(result.stderr).toContain('"event":"interrupted"');
  }

  it('SIGTERM to pnpm: prints the counts so far with "interrupted": true (before, stdout was empty)', async () => {
    const { file, ids } = newUsersCsv('sigterm', 3000);
    const report = join(dir, 'sigterm.ndjson');
    const result = await importUsers(
      [...credentials(), '--file', file, '--concurrency', '4', '--report', report],
      afterRowsDone(20, (child) => child.kill('SIGTERM')),
    );
    await expectInterrupted(result, ids, report);
    // pnpm itself exits 128 + 15 at once, without waiting for its child; the importer prints
    // its document after that, on the stdout it inherited (read here up to its close).
    expect(result.code).not.toBe(0);
  });

  it('Ctrl-C (SIGINT to the process group), then SIGTERM as pnpm sends it: one stop, the document, exit 130 (before: empty stdout, exit 130 from the signal)', async () => {
    const { file, ids } = newUsersCsv('sigint', 3000);
    const report = join(dir, 'sigint.ndjson');
    // The importer's own binary, as pnpm runs it, so its exit code is seen (pnpm exits at once with its own).
    const result = await run(['node', 'apps/importer/bin/import-users.js', ...credentials(), '--file', file, '--concurrency', '4', '--report', report], afterRowsDone(20, (child) => {
      process.kill(-child.pid!, 'SIGINT');
      child.kill('SIGINT');
      child.kill('SIGTERM');
    }));
    await expectInterrupted(result, ids, report);
    expect(result.code).toBe(130);
    expect(result.stderr.match(/"event":"interrupted"/g)).toHaveLength(1);
  });
});

describe('import-users: rows with the same external_provider_id', () => {
  /**
   * A real HTTP proxy in front of a second API (same database) that holds each ENGLISH_US row until
   * the FRENCH_FR row of the same id has been answered, or 300 ms: the network reordering two
   * requests in flight together, made certain. Sent one after the other, the first is released by the timer.
   */
  let proxied: TestApi;
  let proxy: { origin: string; upstream: string; close: () => Promise<void> };
  const answered = new Map<string, () => void>();
  beforeAll(async () => {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const forward = () => {
          const out = httpRequest(`${proxy.upstream}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
            res.writeHead(answer.statusCode!, answer.headers);
            answer.pipe(res);
            answer.on('end', () => {
              const french = /"external_provider_id":"([^"]+)".*"FRENCH_FR"/.exec(body.toString());
              if (french) answered.get(french[1]!)?.();
            });
          });
          out.on('error', () => res.destroy());
          out.end(body);
        };
        const english = /"external_provider_id":"([^"]+)".*"ENGLISH_US"/.exec(body.toString());
        if (!english) return forward();
        const timer = setTimeout(release, 300);
        function release() {
          clearTimeout(timer);
          answered.delete(english![1]!);
          forward();
        }
        answered.set(english[1]!, release);
      });
    });
    const port = await listenOnFreePort(server);
    proxy = { origin: `http://127.0.0.1:${port}`, upstream: '', close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
    // Known by the proxy's address: the token audience.
    proxied = await startTestApi({ label: 'sdk_import_runs_proxied', mongoUrl: api.env.MONGO_URL, env: { PUBLIC_BASE_URL: proxy.origin, RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0' } });
    proxy.upstream = proxied.origin;
  });
  afterAll(async () => {
    await proxied?.close();
    await proxy?.close();
  });

  it('100 ids each on two rows (ENGLISH_US, then FRENCH_FR) at --concurrency 16: every user ends on the later row (before, the earlier row won when its answer came last)', async () => {
    const prefix = `pair-${randomUUID().slice(0, 8)}`;
    const ids = Array.from({ length: 100 }, (_, i) => `${prefix}-${i}`);
    const file = join(dir, 'pairs.csv');
    writeFileSync(file, `provider_email,external_provider_id,speech_locale\n${ids.map((id) => `${id}@example.com,${id},ENGLISH_US\n${id}@example.com,${id},FRENCH_FR`).join('\n')}\n`);
    const result = await importUsers(['--base-url', `${proxy.origin}/v1/connect/server`, '--client-id', clinic.client._id, '--private-key-file', keyFile, '--file', file, '--concurrency', '16']);
    expect(result.code, result.stdout + result.stderr.slice(-2000)).toBe(0);
    const stored = await api.models.ProviderUser.find({ organization_id: clinic.organization._id, external_provider_id: { $in: ids } }).lean();
    expect(stored).toHaveLength(100);
    expect(stored.filter((u) => u.settings?.speech_locale !== 'FRENCH_FR').map((u) => u.external_provider_id)).toEqual([]);
    expect(result.json).toEqual({ total: 200, created: 100, updated: 100, unchanged: 0, failed: 0, seconds: expect.any(Number) });
  });
});

describe('import-users: --concurrency in digits only', () => {
  it('1e1, 0x10 and " 8" are usage errors, as for --max-retries (before, Number() took them)', async () => {
    const { file } = newUsersCsv('concurrency', 3);
    for (const concurrency of ['1e1', '0x10', ' 8']) {
      const result = await importUsers(['--file', file, '--dry-run', '--concurrency', concurrency]);
      expect(result.code, concurrency).toBe(2);
      expect(result.json, concurrency).toEqual({ error: { kind: 'usage', message: '--concurrency must be an integer from 1 to 256' } });
    }
  });
});
