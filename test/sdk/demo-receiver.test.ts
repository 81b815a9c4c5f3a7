/**
 * The demo receiver (scripts/demo-receiver.ts, on @connect/receiver) as a real
 * process, fed by the real worker: API → outbox → BullMQ → worker → signed
 * callbacks, in both schemes, with the nabla-connect target on two secrets.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ConnectClient } from '@connect/client';
import { signNablaConnect } from '@connect/worker';
import { waitFor } from '../support/child-process.ts';
import { registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { maskEmail } from '@connect/shared';
import { REPO_ROOT } from '@connect/local-services';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';

vi.setConfig({ testTimeout: 90_000 });

interface DemoReceiver {
  child: ChildProcess;
  url: string;
  lines: () => Record<string, unknown>[];
}

async function startDemoReceiver(env: Record<string, string>): Promise<DemoReceiver> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/demo-receiver.ts'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const lines = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const listening = await waitFor(() => lines().find((l) => l.msg === 'demo receiver listening'), 30_000, `the demo receiver to listen (output: ${out})`);
  return { child, url: `http://127.0.0.1:${listening.port as number}/callbacks`, lines };
}

const ncSecrets = [`old-${randomBytes(8).toString('hex')}`, `new-${randomBytes(8).toString('hex')}`];
const swSecret = `whsec_${randomBytes(24).toString('base64')}`;
let nc: DemoReceiver;
let sw: DemoReceiver;
let api: TestApi;
let worker: TestWorker;
let clinic: TestClient;
let sdk: ConnectClient;

beforeAll(async () => {
  [nc, sw] = await Promise.all([
    // The receiver knows both secrets of a rotation; the worker signs with both.
    startDemoReceiver({ DEMO_RECEIVER_SECRET: ncSecrets.join(',') }),
    startDemoReceiver({ DEMO_RECEIVER_SECRET: swSecret, DEMO_RECEIVER_SCHEME: 'standard-webhooks' }),
  ]);
  const targets = [
    { name: 'demo-nc', url: nc.url, secrets: ncSecrets, timeout_ms: 5000 },
    { name: 'demo-sw', url: sw.url, secrets: [swSecret], scheme: 'standard-webhooks', timeout_ms: 5000 },
  ];
  api = await startTestApi({ label: 'sdk_demo', env: { DOWNSTREAM_TARGETS: JSON.stringify(targets) } });
  worker = await startTestWorker(api.env);
  clinic = await registerTestClient(api.models);
  sdk = new ConnectClient({ baseUrl: api.baseUrl, clientId: clinic.client._id, privateKey: clinic.privateKey });
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  for (const r of [nc, sw]) r?.child.kill('SIGTERM');
});

const verified = (r: DemoReceiver, id: string) => r.lines().filter((l) => l.msg === 'verified callback' && l.external_provider_id === id);

describe('the demo receiver verifies real callbacks from the worker', () => {
  it('user.created, user.updated and user.deactivated arrive verified, in order, in both schemes', async () => {
    const id = `demo-${randomUUID()}`;
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id });
    await waitFor(() => verified(nc, id).length === 1 && verified(sw, id).length === 1, 60_000, 'user.created at both receivers');
    await sdk.upsertUser({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } });
    // Waiting for the update first: a deactivation that landed while v2 still waited could
    // coalesce with it (the newest state is sent, v2 recorded superseded), which is allowed.
    await waitFor(() => verified(nc, id).length === 2 && verified(sw, id).length === 2, 60_000, 'user.updated at both receivers');
    await sdk.deactivateUser(id);
    for (const r of [nc, sw]) {
      const lines = await waitFor(() => (verified(r, id).length === 3 ? verified(r, id) : false), 60_000, 'three verified callbacks');
      expect(lines.map((l) => [l.type, l.version])).toEqual([
        ['user.created', 1],
        ['user.updated', 2],
        ['user.deactivated', 3],
      ]);
      expect(lines[1]!.settings).toMatchObject({ speech_locale: 'FRENCH_FR' });
      // The provider's email never reaches the log.
      expect(JSON.stringify(r.lines())).not.toContain(`${id}@example.com`);
    }
  });

  it('an external id with an "@" is logged masked, exactly as the server masks emails (what `pnpm stack callbacks --wait` matches)', async () => {
    const tag = randomUUID().slice(0, 8);
    const ids = [`dr.${tag}@clinic.example.org`, `a@b@${tag}.com`, `first last ${tag}@x.org`, `${tag}@b.c0m`, `${tag}@localhost`];
    for (const id of ids) await sdk.upsertUser({ provider_email: `other-${randomUUID().slice(0, 8)}@example.com`, external_provider_id: id });
    expect(maskEmail(ids[0]!)).toBe('d***@c***.org');
    for (const id of ids) {
      await waitFor(() => verified(nc, maskEmail(id)).length === 1, 60_000, `the callback for ${id} logged under ${maskEmail(id)}`);
      expect(JSON.stringify(nc.lines())).not.toContain(id);
    }
  });

  it('a forged callback is answered 401 and logged as rejected; a replayed one 200 and dropped as a duplicate', async () => {
    const raw = JSON.stringify({ request_uuid: randomUUID(), type: 'user.created', occurred_at: new Date().toISOString(), data: {} });
    const forged = await fetch(nc.url, { method: 'POST', headers: { 'content-type': 'application/json', ...signNablaConnect(raw, ['not-the-secret'], new Date()) }, body: raw });
    expect(forged.status).toBe(401);
    await waitFor(() => nc.lines().some((l) => l.msg === 'rejected callback: bad or stale signature' && l.reason === 'bad_signature'), 10_000, 'the rejection log line');

    // Replay a callback the worker delivered, re-signed now with one of the receiver's secrets.
    const delivered = nc.lines().find((l) => l.msg === 'verified callback')!;
    const id = `replay-${randomUUID()}`;
    const user = { provider_email: `${id}@example.com`, external_provider_id: id, settings: null, created_at: new Date().toISOString(), updated_at: new Date().toISOString(), version: 1 };
    const replay = JSON.stringify({ request_uuid: delivered.request_uuid, type: 'user.created', occurred_at: new Date().toISOString(), data: { organization_id: 'o', version: 1, user } });
    const res = await fetch(nc.url, { method: 'POST', headers: { 'content-type': 'application/json', ...signNablaConnect(replay, [ncSecrets[1]!], new Date()) }, body: replay });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ request_uuid: delivered.request_uuid });
    await waitFor(() => nc.lines().some((l) => l.msg === 'duplicate callback dropped' && l.request_uuid === delivered.request_uuid), 10_000, 'the duplicate log line');
    expect(verified(nc, id)).toHaveLength(0);
  });
});
