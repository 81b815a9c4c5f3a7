/**
 * A callback secret short enough to guess offline from one signed callback is taken (receivers
 * configured with it must keep verifying) but said loudly at start, by target and place, never by
 * value (docs/operations.md, Callback secrets). Real FerretDB and Redis, the worker's own start.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../support/harness.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

let api: TestApi;
const workers: TestWorker[] = [];

beforeAll(async () => {
  api = await startTestApi({ label: 'weak_secrets' });
});
afterAll(async () => {
  for (const w of workers) await w.close();
  await api?.close();
});

const warningsOf = (w: TestWorker) =>
  w.logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.msg.startsWith('weak callback secrets'));

describe('a worker started with weak callback secrets', () => {
  it('warns once, naming each weak secret by target and place and the way to rotate, never its value; strong secrets give no such line', async () => {
    const strong = 'f'.repeat(64);
    const weakWhsec = `whsec_${Buffer.from('sixteen-bytes!!!').toString('base64')}`;
    const weak = await startTestWorker({
      ...api.env,
      DOWNSTREAM_TARGETS: JSON.stringify([
        { name: 'dictation', url: 'http://127.0.0.1:9/cb', secrets: [strong, 'hunter2'] },
        { name: 'billing', url: 'http://127.0.0.1:9/hook', secrets: [weakWhsec], scheme: 'standard-webhooks' },
      ]),
    });
    workers.push(weak);
    const lines = warningsOf(weak);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40 });
    expect(lines[0]!.msg).toContain('target "dictation": secrets[1] is 7 bytes, under 16');
    expect(lines[0]!.msg).toContain('target "billing": secrets[0] is 16 bytes once decoded, under 24');
    expect(lines[0]!.msg).toContain('docs/operations.md');
    expect(weak.logs.lines.join('\n')).not.toContain('hunter2');
    expect(weak.logs.lines.join('\n')).not.toContain(weakWhsec.slice('whsec_'.length));

    const fine = await startTestWorker({
      ...api.env,
      DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'http://127.0.0.1:9/cb', secrets: [strong] }]),
    });
    workers.push(fine);
    // The start's other lines were written (the worker is up) and none of them is the warning.
    expect(fine.logs.lines.length).toBeGreaterThan(0);
    expect(warningsOf(fine)).toEqual([]);
  });
});
