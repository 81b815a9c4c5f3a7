/**
 * A worker started without DOWNSTREAM_TARGETS fans every event out to no target and completes its
 * job, which marks the event published: meant for a deployment whose targets come later (they are
 * brought up to date by `targets resync`), a loss when an env file went missing in a rolling
 * restart. So it says so at start, naming the way back. Real FerretDB and Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../support/harness.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

let api: TestApi;
let worker: TestWorker | undefined;

beforeAll(async () => {
  api = await startTestApi({ label: 'no_targets' });
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
});

describe('a worker with no target', () => {
  it('warns at start that events go to no target and count as published, and names targets resync', async () => {
    worker = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: '[]' });
    const warning = worker.logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => /no DOWNSTREAM_TARGETS/.test(l.msg));
    expect(warning).toMatchObject({ level: 40 });
    expect(warning!.msg).toMatch(/count as published.*targets resync NAME/);
  });
});
