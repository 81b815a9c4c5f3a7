import { execFile } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';
import { http, postUser, rsaKeyPair, signAssertion, startTestApi, type TestApi } from '../support/harness.ts';

const run = promisify(execFile);
let api: TestApi;

let viaPnpm = true;

/** The first call goes through `pnpm cli` exactly as documented; the rest run the same entry point directly (faster). */
async function cli(...args: string[]): Promise<{ code: number; json: any; stdout: string }> {
  const [cmd, argv] = viaPnpm ? ['pnpm', ['-s', 'cli', ...args]] : [process.execPath, ['--import', 'tsx', 'packages/cli/src/main.ts', ...args]];
  viaPnpm = false;
  try {
    const { stdout } = await run(cmd as string, argv as string[], { cwd: REPO_ROOT, env: { ...process.env, ...api.env } });
    return { code: 0, json: JSON.parse(stdout), stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, json: JSON.parse(e.stdout), stdout: e.stdout };
  }
}

beforeAll(async () => {
  api = await startTestApi({ label: 'cli', clientCacheTtlMs: 200 });
});
afterAll(async () => api?.close());

describe('pnpm cli: one JSON document on stdout per command', () => {
  it('registers an organization and a client whose assertions get tokens; disables it; reads a user', async () => {
    const org = await cli('org', 'create', '--name', 'St. Elsewhere', '--api-version', '2026-03-23');
    expect(org.code).toBe(0);
    expect(org.json).toEqual({ id: expect.any(String), name: 'St. Elsewhere', api_version: '2026-03-23', created_at: expect.any(String) });

    const { privateKey, publicKeyPem } = rsaKeyPair();
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    writeFileSync(join(dir, 'public.pem'), publicKeyPem);
    const client = await cli('client', 'create', '--org', org.json.id, '--public-key-file', join(dir, 'public.pem'));
    expect(client.code).toBe(0);
    expect(client.json).toMatchObject({ client_id: expect.any(String), organization_id: org.json.id, enabled: true, token_url: api.tokenUrl });

    const assertion = await signAssertion(client.json.client_id, privateKey, api.tokenUrl);
    const tokenRes = await http(api.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }),
    });
    expect(tokenRes.status).toBe(200);
    const id = randomUUID();
    expect((await postUser(api, tokenRes.body.access_token, { provider_email: 'cli@example.com', external_provider_id: id })).status).toBe(201);

    const user = await cli('user', 'get', '--org', org.json.id, '--external-provider-id', id);
    expect(user.code).toBe(0);
    expect(user.json).toMatchObject({ provider_email: 'cli@example.com', external_provider_id: id, version: 1, sync: [] });

    const disabled = await cli('client', 'disable', client.json.client_id);
    expect(disabled.code).toBe(0);
    expect(disabled.json).toMatchObject({ client_id: client.json.client_id, enabled: false, disabled_at: expect.any(String) });
    await new Promise((r) => setTimeout(r, 300));
    expect((await postUser(api, tokenRes.body.access_token, { provider_email: 'cli@example.com', external_provider_id: id })).status).toBe(401);
  }, 120_000);

  it('a JWKS-URL client', async () => {
    const org = await cli('org', 'create', '--name', 'JWKS clinic');
    const client = await cli('client', 'create', '--org', org.json.id, '--jwks-url', 'https://ehr.example.com/.well-known/jwks.json');
    expect(client.code).toBe(0);
    expect(client.json.key).toEqual({ jwks_url: 'https://ehr.example.com/.well-known/jwks.json' });
  }, 120_000);

  it('errors are JSON too, with a non-zero exit code', async () => {
    const unknownOrg = await cli('client', 'create', '--org', 'nope', '--jwks-url', 'https://ehr.example.com/jwks');
    expect(unknownOrg.code).not.toBe(0);
    expect(unknownOrg.json.error.kind).toBe('not-found');
    const badVersion = await cli('org', 'create', '--name', 'x', '--api-version', '1999-01-01');
    expect(badVersion.code).not.toBe(0);
    expect(badVersion.json.error.kind).toBe('validation');
    const usage = await cli('frobnicate');
    expect(usage.code).toBe(2);
    expect(usage.json.error.kind).toBe('usage');
    const missingUser = await cli('user', 'get', '--org', 'nope', '--external-provider-id', 'x');
    expect(missingUser.json.error.kind).toBe('not-found');
  }, 120_000);
});
