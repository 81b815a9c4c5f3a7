/**
 * `pnpm import-users` as a real process against the real API (FerretDB, Redis):
 * a 10,000-row CSV with 20 bad rows, run twice; a 1,000,000-row NDJSON dry run
 * whose peak RSS is measured. Throughput figures are printed, never asserted.
 * What stops an import early (the API unreachable) also runs in-process, through a
 * real proxy that drops connections, with a client that does not retry.
 */
import { spawn } from 'node:child_process';
import { createPublicKey, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ConnectClient } from '@connect/client';
import { ImportAbortedError, importUsers as importInProcess, unreachableLimit } from '@connect/importer';
import { registerTestClient, rsaKeyPair, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { storedUsers, writeNewUsersCsv } from '../support/import-files.ts';
import { freePort, listenOnFreePort, REPO_ROOT } from '@connect/local-services';
import { nodeArgsOf } from '../support/entry-points.ts';

vi.setConfig({ testTimeout: 600_000 });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, any>;
  stderrLines: Record<string, any>[];
}

/** The node flags the importer's binary gives it (a small heap). */
const IMPORTER_NODE_FLAGS = JSON.parse(readFileSync(join(REPO_ROOT, 'apps/importer/bin/node-flags.json'), 'utf8')) as string[];

/**
 * The importer's entry point, started by node itself with the node flags its binary (what
 * `pnpm import-users` runs) gives it, from its bundle (test/support/entry-points.ts): pnpm's
 * own start-up and tsx's loader cost about as much again per run. `{ via: 'pnpm -s' }` and
 * `{ via: 'pnpm' }` run `pnpm -s import-users …` and `pnpm import-users …`, as the README and SPEC write it.
 */
function importUsers(args: string[], { via = 'binary' }: { via?: 'binary' | 'pnpm' | 'pnpm -s' } = {}): Promise<Run> {
  const [command, argv] =
    via === 'binary' ? [process.execPath, [...IMPORTER_NODE_FLAGS, ...nodeArgsOf('importer'), ...args]] : ['pnpm', [...(via === 'pnpm -s' ? ['-s'] : []), 'import-users', ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      let json: Record<string, any> = {};
      try {
        json = JSON.parse(stdout);
      } catch {
        /* asserted by the caller */
      }
      const stderrLines = stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, any>);
      resolve({ code, stdout, stderr, json, stderrLines });
    });
  });
}

let dir: string;
let api: TestApi;
let clinic: TestClient;
let keyFile: string;
const csvFile = () => join(dir, 'users.csv');
const credentials = () => ['--base-url', api.baseUrl, '--client-id', clinic.client._id, '--private-key-file', keyFile];

/** The 20 bad rows: line number → what is wrong. Line 1 is the header. */
const BAD: Record<number, string> = {};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'import-users-'));
  // The API's per-client limit would make this test about waiting: the import honours 429s (client tests show that).
  api = await startTestApi({ label: 'sdk_import', env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0' } });
  clinic = await registerTestClient(api.models);
  keyFile = join(dir, 'client.pem');
  writeFileSync(keyFile, clinic.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 });

  const kinds = [
    (i: number) => `not-an-email-${i},bad-${i},CARDIOLOGY,,ENGLISH_US,`,
    (i: number) => `bad-${i}@example.com,bad-${i},NOT_A_SPECIALTY,,ENGLISH_US,`,
    (i: number) => `bad-${i}@example.com,bad-${i},OTHER,,ENGLISH_US,`,
    (i: number) => `bad-${i}@example.com,bad-${i},,,ENGLISH_US,ENGLISH_US`,
    (i: number) => `bad-${i}@example.com,bad-${i},,,KLINGON,`,
    (i: number) => `bad-${i}@example.com,bad-${i},CARDIOLOGY,,,`,
    (i: number) => `bad-${i}@example.com,bad-${i},CARDIOLOGY`,
    (i: number) => `bad-${i}@example.com,   ,,,ENGLISH_US,`,
  ];
  const rows = ['provider_email,external_provider_id,specialty,other_specialty_name,speech_locale,secondary_speech_locale'];
  const badEvery = 500;
  for (let i = 0; i < 10_000; i++) {
    const line = rows.length + 1;
    if (i % badEvery === 7) {
      BAD[line] = `kind ${(i / badEvery) % kinds.length | 0}`;
      rows.push(kinds[Math.floor(i / badEvery) % kinds.length]!(i));
      continue;
    }
    const other = i % 10 === 0;
    rows.push(`Provider.${i}@Hospital.example.org,emp-${i},${other ? 'OTHER' : 'PEDIATRICS'},${other ? '"Sports medicine, adults"' : ''},ENGLISH_US,${i % 3 === 0 ? 'SPANISH_ES' : ''}`);
  }
  writeFileSync(csvFile(), `${rows.join('\n')}\n`);
  expect(Object.keys(BAD)).toHaveLength(20);
});

afterAll(async () => {
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const usersInOrg = () => api.models.ProviderUser.countDocuments({ organization_id: clinic.organization._id });

describe('import-users: a 10,000-row CSV with 20 bad rows', () => {
  it('creates 9,980 users, reports the 20 bad rows with their line numbers, sends none of them; a second run creates nothing', async () => {
    const report = join(dir, 'failed.ndjson');
    writeFileSync(report, 'an earlier run\n', { mode: 0o644 }); // a report from before: overwritten and narrowed
    const first = await importUsers([...credentials(), '--file', csvFile(), '--concurrency', '8', '--report', report], { via: 'pnpm -s' });
    expect(first.code, first.stdout + first.stderr.slice(-2000)).toBe(0);
    expect(first.json).toEqual({ total: 10_000, created: 9_980, updated: 0, unchanged: 0, failed: 20, seconds: expect.any(Number) });
    const failed = readFileSync(report, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { line: number; error: { kind: string; message: string }; row: unknown });
    expect(failed.map((f) => f.line).sort((a, b) => a - b)).toEqual(Object.keys(BAD).map(Number));
    expect(failed.every((f) => f.error.kind === 'validation' && f.error.message.length > 0)).toBe(true);
    // The report holds rows as read, emails included: only its owner may read it.
    expect(statSync(report).mode & 0o777).toBe(0o600);
    // Nothing partial: exactly the good rows are stored, none of the bad ones.
    expect(await usersInOrg()).toBe(9_980);
    expect(await api.models.ProviderUser.countDocuments({ organization_id: clinic.organization._id, external_provider_id: /^bad-/ })).toBe(0);
    const sample = await api.models.ProviderUser.findOne({ organization_id: clinic.organization._id, external_provider_id: 'emp-30' }).lean();
    expect(sample?.settings).toMatchObject({ specialty: { kind: 'OTHER', other_specialty_name: 'Sports medicine, adults' }, speech_locale: 'ENGLISH_US', secondary_speech_locale: 'SPANISH_ES' });
    // Progress went to stderr as JSON lines (not a terminal), ending with the peak memory.
    expect(first.stderrLines.at(-1)).toMatchObject({ event: 'done', max_rss_mb: expect.any(Number) });
    console.log(`[figure] import-users 10,000 rows, concurrency 8: ${first.json.seconds} s, ${Math.round(10_000 / first.json.seconds)} rows/s, peak RSS ${first.stderrLines.at(-1)!.max_rss_mb} MB`);

    const second = await importUsers([...credentials(), '--file', csvFile(), '--concurrency', '32']);
    expect(second.code, second.stdout + second.stderr.slice(-2000)).toBe(0);
    expect(second.json).toEqual({ total: 10_000, created: 0, updated: 0, unchanged: 9_980, failed: 20, seconds: expect.any(Number) });
    expect(await usersInOrg()).toBe(9_980);
    console.log(`[figure] import-users 10,000 rows again (all unchanged), concurrency 32: ${second.json.seconds} s, ${Math.round(10_000 / second.json.seconds)} rows/s`);
  });
});

describe('import-users: the same file again with changed settings on some rows', () => {
  it('counts those rows updated and the rest unchanged, creates nothing, and stores the changes', async () => {
    const prefix = `changed-${randomUUID().slice(0, 8)}`;
    const ids = Array.from({ length: 30 }, (_, i) => `${prefix}-${i}`);
    // Two kinds of change: a new speech_locale, and a secondary_speech_locale added.
    const newLocale = new Set(ids.filter((_, i) => i % 6 === 1));
    const addedSecondary = new Set(ids.filter((_, i) => i % 6 === 4));
    const file = join(dir, 'changed.csv');
    const write = (changed: boolean) =>
      writeFileSync(
        file,
        `provider_email,external_provider_id,speech_locale,secondary_speech_locale\n${ids
          .map((id) => `${id}@example.com,${id},${changed && newLocale.has(id) ? 'FRENCH_FR' : 'ENGLISH_US'},${changed && addedSecondary.has(id) ? 'SPANISH_ES' : ''}`)
          .join('\n')}\n`,
      );

    write(false);
    const first = await importUsers([...credentials(), '--file', file]);
    expect(first.code, first.stdout + first.stderr.slice(-2000)).toBe(0);
    expect(first.json).toEqual({ total: 30, created: 30, updated: 0, unchanged: 0, failed: 0, seconds: expect.any(Number) });

    write(true);
    const changedCount = newLocale.size + addedSecondary.size;
    expect(changedCount).toBe(10);
    const second = await importUsers([...credentials(), '--file', file]);
    expect(second.code, second.stdout + second.stderr.slice(-2000)).toBe(0);
    expect(second.json).toEqual({ total: 30, created: 0, updated: changedCount, unchanged: 30 - changedCount, failed: 0, seconds: expect.any(Number) });

    const stored = await api.models.ProviderUser.find({ organization_id: clinic.organization._id, external_provider_id: { $in: ids } }).lean();
    expect(stored).toHaveLength(30);
    for (const u of stored) {
      const id = u.external_provider_id;
      expect(u.settings, id).toMatchObject({ speech_locale: newLocale.has(id) ? 'FRENCH_FR' : 'ENGLISH_US' });
      expect(u.settings?.secondary_speech_locale ?? null, id).toBe(addedSecondary.has(id) ? 'SPANISH_ES' : null);
      expect(u.version, id).toBe(newLocale.has(id) || addedSecondary.has(id) ? 2 : 1);
    }
  });
});

describe('import-users: memory stays flat (streamed)', () => {
  it('a 1,000,000-row NDJSON dry run peaks under 150 MB RSS and validates every row', async () => {
    const file = join(dir, 'million.ndjson');
    const out = createWriteStream(file);
    for (let i = 0; i < 1_000_000; i++) {
      const line = `${JSON.stringify({ provider_email: `p${i}@hospital.example.org`, external_provider_id: `m-${i}`, settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'CARDIOLOGY' } } })}\n`;
      if (!out.write(line)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
    const run = await importUsers(['--file', file, '--dry-run']);
    expect(run.code, run.stdout + run.stderr.slice(-2000)).toBe(0);
    expect(run.json).toEqual({ total: 1_000_000, created: 0, updated: 0, unchanged: 0, failed: 0, seconds: expect.any(Number) });
    const done = run.stderrLines.at(-1)!;
    console.log(`[figure] import-users --dry-run over 1,000,000 NDJSON rows: peak RSS ${done.max_rss_mb} MB, ${run.json.seconds} s`);
    expect(done.max_rss_mb).toBeLessThan(150);
  });
});

const hasScript = existsSync('/usr/bin/script');
if (!hasScript) console.log('[skip reason] /usr/bin/script (util-linux) is missing: the terminal progress bar test needs a pseudo-terminal');

describe('import-users: progress on a terminal', () => {
  it.skipIf(!hasScript)('draws a progress bar with rate and ETA on stderr when it is a TTY, and still prints one JSON document', async () => {
    const rows = ['provider_email,external_provider_id,specialty,other_specialty_name,speech_locale,secondary_speech_locale'];
    for (let i = 0; i < 20_000; i++) rows.push(`p${i}@h.example.org,t-${i},,,ENGLISH_US,`);
    const file = join(dir, 'tty.csv');
    writeFileSync(file, `${rows.join('\n')}\n`);
    // `script` gives the child a pseudo-terminal, as an operator's shell would.
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn('/usr/bin/script', ['-qec', `pnpm -s import-users --file ${file} --dry-run`, '/dev/null'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('close', () => resolve(out));
    });
    expect(output).toMatch(/\d+ rows \| \d+ rows\/s \| ETA \d+s/);
    expect(output).toContain('{"total":20000,"created":0,"updated":0,"unchanged":0,"failed":0,');
  });
});

describe('import-users: errors are one JSON document with a non-zero exit', () => {
  it('an NDJSON file (POST /users bodies and flat CSV keys) through the API: a dry run with credentials stores nothing; the run creates each user as written', async () => {
    const prefix = `nd-${randomUUID().slice(0, 8)}`;
    const file = join(dir, `${prefix}.ndjson`);
    const rows = [
      { provider_email: `${prefix}-1@example.com`, external_provider_id: `${prefix}-1`, settings: { specialty: { kind: 'CARDIOLOGY' }, speech_locale: 'FRENCH_FR' } },
      { provider_email: `${prefix}-2@example.com`, external_provider_id: `${prefix}-2` },
      { provider_email: `${prefix}-3@example.com`, external_provider_id: `${prefix}-3`, specialty: 'PEDIATRICS', speech_locale: 'ENGLISH_US', secondary_speech_locale: 'SPANISH_ES' },
    ];
    writeFileSync(file, `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
    const ours = { organization_id: clinic.organization._id, external_provider_id: new RegExp(`^${prefix}-`) };

    const dry = await importUsers([...credentials(), '--file', file, '--dry-run']);
    expect(dry.code, dry.stdout + dry.stderr.slice(-2000)).toBe(0);
    expect(dry.json).toMatchObject({ total: 3, failed: 0 });
    expect(await api.models.ProviderUser.countDocuments(ours)).toBe(0);

    const run = await importUsers([...credentials(), '--file', file]);
    expect(run.code, run.stdout + run.stderr.slice(-2000)).toBe(0);
    expect(run.json).toEqual({ total: 3, created: 3, updated: 0, unchanged: 0, failed: 0, seconds: expect.any(Number) });
    const stored = new Map((await api.models.ProviderUser.find(ours).lean()).map((u) => [u.external_provider_id, u]));
    expect(stored.get(`${prefix}-1`)?.settings).toMatchObject({ specialty: { kind: 'CARDIOLOGY' }, speech_locale: 'FRENCH_FR' });
    expect(stored.get(`${prefix}-2`)?.provider_email).toBe(`${prefix}-2@example.com`);
    expect(stored.get(`${prefix}-3`)?.settings).toMatchObject({ specialty: { kind: 'PEDIATRICS' }, speech_locale: 'ENGLISH_US', secondary_speech_locale: 'SPANISH_ES' });
  });

  it('pnpm import-users without -s prints one JSON document on stdout too: a dry run\'s counts, a usage error', async () => {
    const file = join(dir, 'two-rows.csv');
    writeFileSync(file, 'provider_email,external_provider_id\na@example.com,plain-1\nb@example.com,plain-2\n');
    const run = await importUsers([...credentials(), '--file', file, '--dry-run'], { via: 'pnpm' });
    expect(run.code, run.stderr).toBe(0);
    expect(Object.keys(JSON.parse(run.stdout)).sort()).toEqual(['created', 'failed', 'seconds', 'total', 'unchanged', 'updated']);
    expect(run.json).toMatchObject({ total: 2, failed: 0 });
    const usage = await importUsers(['--dry-run'], { via: 'pnpm' });
    expect(usage.code).toBe(2);
    expect(JSON.parse(usage.stdout)).toEqual({ error: { kind: 'usage', message: expect.stringContaining('--file') } });
  });

  it('usage: no --file; input: an unknown CSV column', async () => {
    const usage = await importUsers(['--dry-run']);
    expect(usage.code).toBe(2);
    expect(usage.json).toEqual({ error: { kind: 'usage', message: expect.stringContaining('--file') } });
    // An option given twice, in either form, as the CLI refuses it (parseArgs kept the last).
    const twice = await importUsers(['--dry-run', '--file', 'x.csv', '--concurrency=2', '--concurrency', '3']);
    expect(twice.code).toBe(2);
    expect(twice.json).toEqual({ error: { kind: 'usage', message: '--concurrency is given twice' } });
    const bad = join(dir, 'bad-header.csv');
    writeFileSync(bad, 'provider_email,external_provider_id,favourite_colour\na@example.com,1,blue\n');
    const input = await importUsers(['--file', bad, '--dry-run']);
    expect(input.code).not.toBe(0);
    expect(input.json).toEqual({ error: { kind: 'input', message: expect.stringContaining('favourite_colour') } });
    // A file without its header line: the first row is read as one, and its email is not quoted (a security audit saw it).
    const headless = join(dir, 'no-header.csv');
    writeFileSync(headless, 'hdr.person@example.com,imp-h\n');
    const noHeader = await importUsers(['--file', headless, '--dry-run']);
    expect(noHeader.code).not.toBe(0);
    expect(noHeader.json).toEqual({ error: { kind: 'input', message: expect.stringMatching(/^unknown CSV column\(s\) h\*\*\*@e\*\*\*\.com, imp-h; .*the first line must be the header/) } });
    expect(noHeader.stdout + noHeader.stderr).not.toContain('hdr.person');
    // A CSV the parser gives up on: its message quotes the value, masked when it is an email.
    const quoted = join(dir, 'bad-quote.csv');
    writeFileSync(quoted, 'provider_email,external_provider_id,specialty,other_specialty_name,speech_locale,secondary_speech_locale\njane.victim@example.com",r-2,,,ENGLISH_US,\n');
    const parse = await importUsers(['--file', quoted, '--dry-run']);
    expect(parse.code).not.toBe(0);
    expect(parse.json).toEqual({ error: { kind: 'input', message: expect.stringContaining('j***@e***.com') } });
    expect(parse.stdout + parse.stderr).not.toContain('jane.victim');
  });

  it('authentication: a key the client was not registered with stops the import instead of failing every row', async () => {
    const wrongKey = join(dir, 'wrong.pem');
    writeFileSync(wrongKey, rsaKeyPair().privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 });
    const run = await importUsers(['--base-url', api.baseUrl, '--client-id', clinic.client._id, '--private-key-file', wrongKey, '--file', csvFile()]);
    expect(run.code).not.toBe(0);
    expect(run.json).toEqual({ error: { kind: 'authentication', message: expect.stringContaining('credentials') } });
  });
});

const newUsersCsv = (name: string, n: number) => writeNewUsersCsv(dir, name, n);
const storedOf = (ids: string[]) => storedUsers(api.models, clinic.organization._id, ids);

describe('import-users: bad arguments are refused before any row is sent', () => {
  it('--report in a directory that does not exist: one usage error on stdout, no stack trace, no row sent (dry run or not)', async () => {
    const report = join(dir, 'no-such-dir', 'failed.ndjson');
    const dry = await importUsers(['--file', csvFile(), '--dry-run', '--report', report]);
    expect(dry.code).not.toBe(0);
    expect(dry.json).toEqual({ error: { kind: 'usage', message: expect.stringContaining('--report') } });
    expect(dry.stderr).not.toMatch(/Unhandled|ENOENT|at .*\.ts:\d+/);

    const { file, ids } = newUsersCsv('report-dir', 20);
    const real = await importUsers([...credentials(), '--file', file, '--report', report]);
    expect(real.code).not.toBe(0);
    expect(real.json).toEqual({ error: { kind: 'usage', message: expect.stringContaining('its directory does not exist') } });
    expect(await storedOf(ids)).toBe(0);
  });

  it('--report naming the --file itself (by another path too): a usage error, and the file is left as it was (it was emptied, and the run "succeeded" with 0 rows)', async () => {
    const { file } = newUsersCsv('report-is-input', 9);
    const before = readFileSync(file, 'utf8');
    for (const report of [file, join(dir, '.', 'report-is-input.csv')]) {
      const run = await importUsers(['--file', file, '--dry-run', '--report', report]);
      expect(run.code).not.toBe(0);
      expect(run.json).toEqual({ error: { kind: 'usage', message: expect.stringMatching(/--report .* is the --file being imported/) } });
      expect(readFileSync(file, 'utf8')).toBe(before);
    }
  });

  it('--file naming a directory is a usage error (it was an input error quoting EISDIR); a pipe is read like a file', async () => {
    const run = await importUsers(['--file', dir, '--dry-run']);
    expect(run.code).not.toBe(0);
    expect(run.json).toEqual({ error: { kind: 'usage', message: `--file ${dir} is a directory` } });
    const { file } = newUsersCsv('through-a-pipe', 5);
    const piped = await new Promise<Run>((resolve, reject) => {
      const child = spawn('sh', ['-c', `pnpm -s import-users --dry-run --file /dev/stdin < "${file}"`], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr: '', json: JSON.parse(stdout || '{}') as Record<string, any>, stderrLines: [] }));
    });
    expect(piped.code).toBe(0);
    expect(piped.json).toMatchObject({ total: 5, failed: 0 });
  });

  it('--base-url that is not an absolute http(s) URL is a usage error, not a retried "Invalid URL" per row', async () => {
    const { file } = newUsersCsv('base-url', 2);
    for (const baseUrl of ['not a url', `127.0.0.1:${new URL(api.baseUrl).port}/v1/connect/server`]) {
      const run = await importUsers(['--base-url', baseUrl, '--client-id', clinic.client._id, '--private-key-file', keyFile, '--file', file]);
      expect(run.code).not.toBe(0);
      expect(run.json).toEqual({ error: { kind: 'usage', message: expect.stringMatching(/^--base-url must be an absolute http\(s\) URL/) } });
    }
  });

  it('a public key or a file that is not PEM as --private-key-file: says what was expected and what the file holds', async () => {
    const publicKey = join(dir, 'client.pub.pem');
    // The half the server was given: the commonest mix-up of the two files.
    writeFileSync(publicKey, createPublicKey(clinic.privateKey).export({ type: 'spki', format: 'pem' }).toString());
    const notPem = join(dir, 'notes.txt');
    writeFileSync(notPem, 'my private key is in the vault\n');
    for (const [file, holds] of [
      [publicKey, 'this file holds a public key'],
      [notPem, 'this file is not PEM'],
    ] as const) {
      const run = await importUsers(['--base-url', api.baseUrl, '--client-id', clinic.client._id, '--private-key-file', file, '--file', csvFile()]);
      expect(run.code, 'exit 2, as the CLI\'s configuration errors').toBe(2);
      expect(run.json.error.kind).toBe('configuration');
      expect(run.json.error.message).toContain(`--private-key-file ${file} must be a PEM private key (PKCS#8 or PKCS#1); ${holds}`);
      expect(run.json.error.message).not.toMatch(/DECODER routines/);
    }
  });
});

describe('import-users: --audience, for an API reached by another name than its PUBLIC_BASE_URL', () => {
  it('through localhost to an API that knows itself as 127.0.0.1: refused, the error naming --audience (it named an option the importer did not have); with --audience the rows are imported', async () => {
    const { file, ids } = newUsersCsv('audience', 3);
    const byAnotherName = api.baseUrl.replace('//127.0.0.1:', '//localhost:');
    const args = ['--base-url', byAnotherName, '--client-id', clinic.client._id, '--private-key-file', keyFile, '--file', file];
    const refused = await importUsers(args);
    expect(refused.code).toBe(1);
    expect(refused.json.error.kind).toBe('authentication');
    expect(refused.json.error.message).toContain(`audience, which was ${byAnotherName}/oauth/token`);
    expect(refused.json.error.message).toContain('set --audience when --base-url reaches the server by another name');
    expect(refused.json.error.message).not.toMatch(/audience option|baseUrl/);
    expect(await storedOf(ids)).toBe(0);

    const imported = await importUsers([...args, '--audience', api.audience]);
    expect(imported.code).toBe(0);
    expect(imported.json).toMatchObject({ total: 3, created: 3, failed: 0 });
    expect(await storedOf(ids)).toBe(3);
  });

  it('--audience is checked as --base-url is (a usage error before any row is sent), and --help names it', async () => {
    const { file, ids } = newUsersCsv('audience-checked', 2);
    for (const audience of ['not a url', '/v1/connect/server/oauth/token', 'ftp://connect.example.org/oauth/token', 'https://user:S3cretPW@connect.example.org/oauth/token', 'https://connect.example.org/oauth/token?k=S3cretPW', '']) {
      const run = await importUsers([...credentials(), '--file', file, '--audience', audience]);
      expect(run.code, audience).toBe(2);
      expect(run.json.error.kind, audience).toBe('usage');
      expect(run.json.error.message, audience).toMatch(/^--audience (must|is required)/);
      expect(run.json.error.message).not.toContain('S3cretPW');
    }
    expect(await storedOf(ids)).toBe(0);
    const help = await importUsers(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^ {2}--audience URL /m);
  });
});

describe('import-users: a file that turns out unreadable part-way', () => {
  it('a CSV quote never closed after 300 good rows: the rows already sent finish and are counted, and the error says how far it got and where the last good row ended', async () => {
    const { file, ids } = newUsersCsv('quote-open', 300);
    writeFileSync(file, `${readFileSync(file, 'utf8')}"unclosed@example.com,unclosed,ENGLISH_US\n${'x,y,ENGLISH_US\n'.repeat(50)}`);
    const run = await importUsers([...credentials(), '--file', file, '--concurrency', '16']);
    expect(run.code).not.toBe(0);
    // Before: "Quote Not Closed ... (line 352)", no counts, and requests in flight dropped by the exit.
    // The CSV parser reads ahead and drops what it held when it fails at the end of the file, so
    // fewer than 300 rows may have been read; what the error says was read is what was imported.
    expect(run.json).toEqual({ error: { kind: 'input', message: expect.stringMatching(/the last row read ends at line \d+\): the import stopped there.*rows read before it stopped: \d+, \d+ created/) } });
    const [, lastLine, read, created] = /ends at line (\d+).*stopped: (\d+), (\d+) created/.exec(run.json.error.message)!.map(Number);
    expect(read).toBeGreaterThan(0);
    expect(created).toBe(read);
    expect(lastLine).toBe(read! + 1);
    expect(await storedOf(ids)).toBe(created);
  });

  it('an NDJSON file with a line over 1 MiB: an input error naming the line, not the heap running out', async () => {
    const file = join(dir, 'one-long-line.ndjson');
    writeFileSync(file, `{"provider_email":"a@example.com","external_provider_id":"a"}\n${'x'.repeat(3 << 20)}`);
    const run = await importUsers(['--file', file, '--dry-run']);
    expect(run.code).not.toBe(0);
    expect(run.json).toEqual({ error: { kind: 'input', message: expect.stringMatching(/line 2 is longer than 1 MiB/) } });
  });
});

describe('import-users: the API unreachable stops the import', () => {
  it('a port that refuses connections: one "unavailable" error after the first rows, not every row of the file', async () => {
    // Bound by listen(0), then closed: nothing listens there, so connections are refused.
    const port = await freePort();
    const report = join(dir, 'unreachable.ndjson');
    const run = await importUsers(['--base-url', `http://127.0.0.1:${port}/v1/connect/server`, '--client-id', clinic.client._id, '--private-key-file', keyFile, '--file', csvFile(), '--concurrency', '4', '--max-retries', '0', '--report', report]);
    expect(run.code).not.toBe(0);
    expect(run.json).toEqual({ error: { kind: 'unavailable', message: expect.stringContaining('ECONNREFUSED') } });
    // Only the rows already in flight when the first one failed, of the file's 10,000.
    const failed = readFileSync(report, 'utf8').trim().split('\n');
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.length).toBeLessThanOrEqual(4);
    expect(failed.every((l) => (JSON.parse(l) as { error: { kind: string } }).error.kind === 'unavailable')).toBe(true);
  });

  /** A real HTTP proxy in front of an API: the requests `drop(n)` picks (n counts from 1) have their connection dropped. */
  let proxy: { origin: string; upstream: string; drop: (n: number) => boolean; seen: number; holdUpsertsMs: number; upsertsInFlight: number; mostUpsertsInFlight: number; close: () => Promise<void> };
  let proxied: TestApi;
  beforeAll(async () => {
    const server = createServer((req, res) => {
      if (proxy.drop(++proxy.seen)) {
        req.socket.destroy();
        return;
      }
      const upsert = req.method === 'POST' && /\/users$/.test(req.url ?? '');
      if (upsert) {
        proxy.mostUpsertsInFlight = Math.max(proxy.mostUpsertsInFlight, ++proxy.upsertsInFlight);
        res.once('close', () => proxy.upsertsInFlight--);
      }
      const forward = httpRequest(`${proxy.upstream}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      });
      forward.on('error', () => res.destroy());
      // POST /users held a while when asked: the importer's rows in flight pile up to its concurrency.
      if (upsert && proxy.holdUpsertsMs > 0) setTimeout(() => req.pipe(forward), proxy.holdUpsertsMs);
      else req.pipe(forward);
    });
    const port = await listenOnFreePort(server);
    proxy = { origin: `http://127.0.0.1:${port}`, upstream: '', drop: () => false, seen: 0, holdUpsertsMs: 0, upsertsInFlight: 0, mostUpsertsInFlight: 0, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
    // The API over the same database, known by the proxy's address (the token audience).
    proxied = await startTestApi({ label: 'sdk_import_proxied', mongoUrl: api.env.MONGO_URL, env: { PUBLIC_BASE_URL: proxy.origin, RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0' } });
    proxy.upstream = proxied.origin;
  });
  afterAll(async () => {
    await proxied?.close();
    await proxy?.close();
  });

  /** Imports in-process, one row at a time, through a client that does not retry: each dropped connection fails its row. */
  const importThroughProxy = (file: string, drop: (n: number) => boolean) => {
    proxy.seen = 0;
    proxy.drop = drop;
    const client = new ConnectClient({ baseUrl: `${proxy.origin}/v1/connect/server`, clientId: clinic.client._id, privateKey: clinic.privateKey, maxRetries: 0 });
    return importInProcess({ file, client, concurrency: 1 });
  };

  it('pnpm import-users without --concurrency sends 8 rows at a time (the default), no more', async () => {
    const { file, ids } = newUsersCsv('default-concurrency', 48);
    proxy.seen = 0;
    proxy.drop = () => false;
    proxy.holdUpsertsMs = 150;
    proxy.mostUpsertsInFlight = 0;
    try {
      const run = await importUsers(['--base-url', `${proxy.origin}/v1/connect/server`, '--client-id', clinic.client._id, '--private-key-file', keyFile, '--file', file]);
      expect(run.code, run.stdout + run.stderr.slice(-2000)).toBe(0);
      expect(run.json).toMatchObject({ total: 48, created: 48, failed: 0 });
    } finally {
      proxy.holdUpsertsMs = 0;
    }
    expect(proxy.mostUpsertsInFlight).toBe(8);
    expect(await storedOf(ids)).toBe(48);
  });

  it('a blip (three rows fail unreachable, then the API is back) does not stop the run', async () => {
    const { file, ids } = newUsersCsv('blip', 12);
    // Request 1 is the token, 2 the first row; the next three rows lose their connection.
    const counts = await importThroughProxy(file, (n) => n >= 3 && n <= 5);
    expect(counts).toEqual({ total: 12, created: 9, updated: 0, unchanged: 0, failed: 3 });
    expect(await storedOf(ids)).toBe(9);
  });

  it(`the API gone mid-run: the import stops after ${unreachableLimit(1)} rows in a row fail unreachable (concurrency 1)`, async () => {
    const { file, ids } = newUsersCsv('gone', 50);
    const error = await importThroughProxy(file, (n) => n >= 3).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportAbortedError);
    expect((error as ImportAbortedError).kind).toBe('unavailable');
    expect((error as ImportAbortedError).message).toContain(`${unreachableLimit(1)} rows in a row`);
    expect((error as ImportAbortedError).counts).toEqual({ total: 1 + unreachableLimit(1), created: 1, updated: 0, unchanged: 0, failed: unreachableLimit(1) });
    expect(await storedOf(ids)).toBe(1);
  });
});
