import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { REPO_ROOT } from '@connect/local-services';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ADMIN_TOKEN = 'browser-admin-token-0123456789';
const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  // .ci/run installs Debian's chromium; a developer machine may not have it.
  console.warn(`[browser test] SKIPPED: no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
}

let api: TestApi;
let browser: Browser;

beforeAll(async () => {
  if (!haveChromium) return;
  // One target, so the dashboard shows its delivery queue (one queue per target).
  api = await startTestApi({ label: 'browser', env: { ADMIN_TOKEN, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'http://127.0.0.1:9/callbacks', secrets: ['browser-secret'] }]) } });
  const clinic = await registerTestClient(api.models);
  const token = await getToken(api, clinic);
  await postUser(api, token, { provider_email: `${randomUUID()}@example.com`, external_provider_id: randomUUID() });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  await api?.close();
});

describe.skipIf(!haveChromium)('What a person sees, in headless Chromium', () => {
  it('/docs shows the POST /users operation', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    await page.goto(`${api.origin}/docs`);
    const op = page.locator('.opblock-post', { hasText: `${api.deps.config.basePath}/users` }).first();
    await op.waitFor({ timeout: 20_000 });
    expect(await op.textContent()).toContain('Create or update a provider user');
    await expect(page.locator('.opblock-summary-path', { hasText: '/oauth/token' }).count()).resolves.toBeGreaterThan(0);
    await page.screenshot({ path: join(ARTIFACTS, 'docs.png'), fullPage: false });
    await page.close();
  });

  it('/admin/queues shows both queues to the holder of ADMIN_TOKEN', async () => {
    const context = await browser.newContext({ httpCredentials: { username: 'ops', password: ADMIN_TOKEN }, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const res = await page.goto(`${api.origin}/admin/queues`);
    expect(res?.status()).toBe(200);
    await page.getByText('user-events').first().waitFor({ timeout: 20_000 });
    await page.getByText('deliveries').first().waitFor({ timeout: 20_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'queues.png') });
    await context.close();

    // Without credentials the browser is challenged (Chromium then refuses to navigate at all).
    const anonymous = await browser.newContext();
    const denied = await anonymous.request.get(`${api.origin}/admin/queues`);
    expect(denied.status()).toBe(401);
    expect(denied.headers()['www-authenticate']).toMatch(/^Basic/);
    await anonymous.close();
  });
});
