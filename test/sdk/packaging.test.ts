/**
 * The SDKs as an outside project gets them: each package is built and packed
 * (`pnpm pack`, which applies `publishConfig`), the tarball is unpacked into a
 * fresh project's node_modules next to its declared dependencies only, and
 * plain Node (no tsx, no export conditions) imports it as ESM and with
 * require(), uses it, and strict TypeScript checks a consumer against its
 * types under both `node16` and `bundler` resolution.
 *
 * Dependencies are linked from this repository's store rather than installed
 * from the registry, so the test runs offline; only what the packed
 * package.json declares is linked, so a missing declaration fails here.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';

vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });
const run = promisify(execFile);

const SDKS = ['client', 'receiver'] as const;
type Sdk = (typeof SDKS)[number];
const work = mkdtempSync(join(tmpdir(), 'sdk-packaging-'));
const consumer = join(work, 'consumer');
const packed: Record<Sdk, { manifest: Record<string, any>; files: string[] }> = {} as never;
/** Plain Node as an outside project runs it: none of the test runner's loaders or conditions. */
const plainEnv = { PATH: process.env.PATH!, HOME: process.env.HOME ?? work };

/** Builds the package into a staging folder (not the repository's dist/) and packs it there. */
async function buildAndPack(sdk: Sdk): Promise<string> {
  const source = join(REPO_ROOT, 'packages', sdk);
  const stage = join(work, `stage-${sdk}`);
  mkdirSync(stage, { recursive: true });
  for (const f of ['package.json', 'README.md']) cpSync(join(source, f), join(stage, f));
  await run(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(source, 'tsconfig.build.json'), '--outDir', join(stage, 'dist'), '--sourceMap', 'false'], { cwd: source });
  const { stdout } = await run('pnpm', ['pack', '--pack-destination', work], { cwd: stage, env: { ...process.env, CI: '1' } });
  const tarball = stdout.trim().split('\n').pop()!.trim();
  expect(tarball).toMatch(new RegExp(`connect-${sdk}-.*\\.tgz$`));
  return tarball;
}

/** node_modules/NAME in the consumer → the package this repository installed for `from`. */
function linkDependency(name: string, from: string, into = consumer): void {
  const target = realpathSync(join(from, 'node_modules', name));
  const link = join(into, 'node_modules', name);
  if (existsSync(link)) return; // both SDKs depend on it
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(target, link, 'dir');
}

beforeAll(async () => {
  mkdirSync(join(consumer, 'node_modules', '@connect'), { recursive: true });
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'outside-project', private: true, type: 'module' }));
  for (const sdk of SDKS) {
    const tarball = await buildAndPack(sdk);
    const { stdout } = await run('tar', ['-tzf', tarball]);
    const dir = join(consumer, 'node_modules', '@connect', sdk);
    mkdirSync(dir);
    await run('tar', ['-xzf', tarball, '-C', dir, '--strip-components=1']);
    const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<string, any>;
    packed[sdk] = { manifest, files: stdout.trim().split('\n').map((f) => f.replace(/^package\//, '')) };
    const from = join(REPO_ROOT, 'packages', sdk);
    for (const dep of Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })) linkDependency(dep, from);
  }
  linkDependency('@types/node', REPO_ROOT);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the packed SDKs (pnpm pack): installable outside this repository', () => {
  it.each(SDKS)('@connect/%s: no workspace or server dependency, exports with types, only built JavaScript, declarations and the README', (sdk) => {
    const { manifest, files } = packed[sdk];
    const text = JSON.stringify(manifest);
    expect(text).not.toContain('workspace:');
    expect(text).not.toContain('@connect/shared');
    expect(Object.keys(manifest.dependencies ?? {})).not.toEqual(expect.arrayContaining(['mongodb', 'mongoose', 'bullmq', 'ioredis', 'pino']));
    expect(manifest.exports['.']).toEqual({ types: expect.stringMatching(/\.d\.ts$/), default: expect.stringMatching(/\.js$/) });
    expect(files).toContain(manifest.exports['.'].types.replace(/^\.\//, ''));
    expect(files).toContain(manifest.exports['.'].default.replace(/^\.\//, ''));
    expect(files).toContain('README.md');
    expect(files.filter((f) => !/\.(js|d\.ts)$/.test(f) && f !== 'package.json' && f !== 'README.md')).toEqual([]);
    expect(files.filter((f) => /\.test\./.test(f))).toEqual([]);
  });

  it('plain Node imports them as ESM and uses them: a client is built, a signed callback verifies, a forged one is refused', async () => {
    writeFileSync(
      join(consumer, 'esm.mjs'),
      `
import { createHmac, generateKeyPairSync } from 'node:crypto';
import * as client from '@connect/client';
import * as receiver from '@connect/receiver';
const names = ['ConnectClient', 'ConnectApiError', 'EmailMismatchError', 'EmailConflictError', 'ValidationError', 'AuthenticationError', 'RateLimitedError', 'NotFoundError', 'ConnectNetworkError'];
const missing = names.filter((n) => typeof client[n] !== 'function');
for (const n of ['verifyCallback', 'CallbackVerificationError', 'MemoryDedupeStore', 'RedisDedupeStore', 'connectReceiver', 'createCallbackHandler']) if (typeof receiver[n] !== 'function') missing.push(n);
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const sdk = new client.ConnectClient({ baseUrl: 'https://connect.example.org/v1/connect/server', clientId: 'c1', privateKey });
const body = JSON.stringify({ request_uuid: '7d0e5c2a-8a7b-4c1e-9f3a-2b6c1d0e9f8a', type: 'user.created', occurred_at: new Date().toISOString(),
  data: { organization_id: 'org-1', version: 1, user: { provider_email: 'a@example.org', external_provider_id: 'e1', settings: null, created_at: new Date().toISOString(), updated_at: new Date().toISOString(), version: 1 } } });
const timestamp = new Date().toISOString();
const signature = createHmac('sha256', 's3cret').update(timestamp).update(body).digest('hex');
const event = receiver.verifyCallback({ headers: { 'x-nabla-connect-timestamp': timestamp, 'x-nabla-connect-signature': signature }, rawBody: body, secrets: ['s3cret'] });
let forged;
try { receiver.verifyCallback({ headers: { 'x-nabla-connect-timestamp': timestamp, 'x-nabla-connect-signature': signature }, rawBody: body + ' ', secrets: ['s3cret'] }); } catch (e) { forged = e; }
console.log(JSON.stringify({ missing, tokenUrl: sdk.tokenUrl, event: event.type, user: event.data.user.external_provider_id, forged: forged instanceof receiver.CallbackVerificationError ? forged.reason : String(forged) }));
`,
    );
    const { stdout } = await run(process.execPath, ['esm.mjs'], { cwd: consumer, env: plainEnv });
    expect(JSON.parse(stdout)).toEqual({ missing: [], tokenUrl: 'https://connect.example.org/v1/connect/server/oauth/token', event: 'user.created', user: 'e1', forged: 'bad_signature' });
  });

  it('a CommonJS project can require() them (Node 20.19+ loads ES modules from require)', async () => {
    writeFileSync(join(consumer, 'cjs.cjs'), `const { ConnectClient } = require('@connect/client'); const { verifyCallback } = require('@connect/receiver'); console.log(typeof ConnectClient, typeof verifyCallback);`);
    const { stdout } = await run(process.execPath, ['cjs.cjs'], { cwd: consumer, env: plainEnv });
    expect(stdout.trim()).toBe('function function');
  });

  it('strict TypeScript checks a receiver that uses only the node:http handler, with fastify (an optional peer) not installed', async () => {
    const bare = join(work, 'consumer-without-fastify');
    const dir = join(bare, 'node_modules', '@connect', 'receiver');
    mkdirSync(dirname(dir), { recursive: true });
    // A copy, not a link: a linked package would resolve its imports from the first consumer, which has fastify.
    cpSync(join(consumer, 'node_modules', '@connect', 'receiver'), dir, { recursive: true });
    for (const dep of Object.keys(packed.receiver.manifest.dependencies ?? {})) linkDependency(dep, join(REPO_ROOT, 'packages', 'receiver'), bare);
    linkDependency('@types/node', REPO_ROOT, bare);
    writeFileSync(join(bare, 'package.json'), JSON.stringify({ name: 'receiving-service', private: true, type: 'module' }));
    writeFileSync(
      join(bare, 'use.ts'),
      `
import { createServer } from 'node:http';
import { createCallbackHandler, verifyCallback, type CallbackEvent } from '@connect/receiver';
createServer(createCallbackHandler({ secrets: ['s3cret'], onEvent: (event: CallbackEvent) => console.log(event.type) })).listen(4000);
export const check = (rawBody: Buffer, headers: Record<string, string>) => verifyCallback({ headers, rawBody, secrets: ['s3cret'] }).data.version;
`,
    );
    writeFileSync(join(bare, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'node16', moduleResolution: 'node16', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['use.ts'] }));
    expect(existsSync(join(bare, 'node_modules', 'fastify'))).toBe(false);
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: bare, env: plainEnv }).then(
      () => '',
      (err: Error & { stdout?: string }) => err.stdout ?? err.message,
    );
    expect(result).toBe('');
  });

  it.each(['node16', 'bundler'] as const)('strict TypeScript (moduleResolution %s) checks a consumer against the shipped declarations', async (resolution) => {
    writeFileSync(
      join(consumer, 'use.ts'),
      `
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { ConnectClient, ValidationError, type UpsertResult } from '@connect/client';
import { connectReceiver, MemoryDedupeStore, type CallbackEvent } from '@connect/receiver';

export async function provision(): Promise<UpsertResult> {
  const client = new ConnectClient({ baseUrl: 'https://connect.example.org/v1/connect/server', clientId: 'c1', privateKey: readFileSync('ehr.key', 'utf8'), maxRetryWaitMs: 10_000 });
  try {
    return await client.upsertUser({ provider_email: 'a@example.org', external_provider_id: 'e1', settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'CARDIOLOGY' } } }, { signal: AbortSignal.timeout(5000) });
  } catch (err) {
    if (err instanceof ValidationError) console.error(err.errors.map((e) => e.path));
    throw err;
  }
}

export async function receive(): Promise<void> {
  const app = Fastify();
  await app.register(connectReceiver, {
    secrets: ['s3cret'],
    dedupe: new MemoryDedupeStore(),
    onEvent: (event: CallbackEvent) => {
      const version: number = event.data.version;
      const id: string = event.data.user.external_provider_id;
      console.log(event.type, version, id);
    },
  });
}
`,
    );
    const compilerOptions =
      resolution === 'node16'
        ? { module: 'node16', moduleResolution: 'node16' }
        : { module: 'esnext', moduleResolution: 'bundler' };
    writeFileSync(join(consumer, `tsconfig.${resolution}.json`), JSON.stringify({ compilerOptions: { ...compilerOptions, target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['use.ts'] }));
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', `tsconfig.${resolution}.json`], { cwd: consumer, env: plainEnv }).then(
      () => '',
      (err: Error & { stdout?: string }) => err.stdout ?? err.message,
    );
    expect(result).toBe('');
  });
});
