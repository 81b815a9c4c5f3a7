/**
 * A worker started without DOWNSTREAM_TARGETS fans every event out to no target and completes its
 * job, which marks the event published: meant for a deployment whose targets come later (they are
 * brought up to date by `targets resync`), a loss when an env file went missing in a rolling
 * restart. So it says so at start, naming the way back; and when the variable is not set at all
 * while MongoDB shows targets were delivered to, the worker process refuses to start (an explicit
 * `[]` is "no target, on purpose"). Real FerretDB and Redis, real worker processes.
 */
import { ObjectId } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectionsOf } from '@connect/shared';
import { startTestApi, type TestApi } from '../support/harness.ts';
import { spawnWorker, startTestWorker, type TestWorker, type WorkerChild } from './worker-under-test.ts';

let api: TestApi;
let worker: TestWorker | undefined;
const children: WorkerChild[] = [];

beforeAll(async () => {
  api = await startTestApi({ label: 'no_targets' });
});
afterAll(async () => {
  for (const c of children) c.child.kill('SIGKILL');
  await worker?.close();
  await api?.close();
});

/** The environment of a worker process with neither DOWNSTREAM_TARGETS nor DOWNSTREAM_TARGETS_FILE. */
function withoutTargets(): Record<string, string> {
  const { DOWNSTREAM_TARGETS: _t, DOWNSTREAM_TARGETS_FILE: _f, ...env } = api.env;
  return env;
}

/** Resolves when the worker says it is ready, or rejects with its output when it exits first. */
async function ready(w: WorkerChild): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (w.output().includes('"msg":"worker ready"')) {
        clearInterval(timer);
        resolve();
      }
    }, 50);
    void w.exited.then(({ code }) => {
      clearInterval(timer);
      reject(new Error(`the worker exited ${code} before it was ready: ${w.output().slice(-2000)}`));
    });
  });
}

describe('a worker with no target', () => {
  it('warns at start that events go to no target and count as published, and names targets resync', async () => {
    worker = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: '[]' });
    const warning = worker.logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => /no DOWNSTREAM_TARGETS/.test(l.msg));
    expect(warning).toMatchObject({ level: 40 });
    expect(warning!.msg).toMatch(/count as published.*targets resync NAME/);
  });

  it('starts with DOWNSTREAM_TARGETS unset while no target was ever delivered to (a deployment whose targets come later)', async () => {
    expect(await collectionsOf(api.models).syncStates.countDocuments({})).toBe(0);
    const w = spawnWorker(withoutTargets());
    children.push(w);
    await ready(w);
    w.child.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);
  });

  it('refuses to start with DOWNSTREAM_TARGETS unset once MongoDB holds sync states of a target: exit 1, a configuration error naming it; an explicit [] starts', async () => {
    await collectionsOf(api.models).syncStates.insertOne({
      _id: `dictation:${new ObjectId().toHexString()}`,
      organization_id: 'org-1',
      user_id: new ObjectId(),
      target: 'dictation',
      status: 'delivered',
      version: 1,
      delivered_version: 1,
      attempts: 1,
      last_attempt_at: new Date(),
      last_error: null,
      updated_at: new Date(),
    });
    const refused = spawnWorker(withoutTargets());
    children.push(refused);
    const { code } = await refused.exited;
    expect(code, refused.output().slice(-2000)).toBe(1);
    expect(refused.output()).toMatch(/^configuration error: DOWNSTREAM_TARGETS: is not set, but this deployment delivers to "dictation".*DOWNSTREAM_TARGETS='\[\]'/m);
    expect(refused.output()).not.toContain('"msg":"worker ready"');
    expect(refused.output()).not.toMatch(/\n\s+at /);

    // Said on purpose: the worker runs (and warns).
    const onPurpose = spawnWorker(withoutTargets(), { DOWNSTREAM_TARGETS: '[]' });
    children.push(onPurpose);
    await ready(onPurpose);
    expect(onPurpose.output()).toContain('no DOWNSTREAM_TARGETS');
    onPurpose.child.kill('SIGTERM');
    expect((await onPurpose.exited).code).toBe(0);
  });
});
