import { describe, expect, it } from 'vitest';
import { progressWriter } from './resync-command.ts';

const at = (users_scanned: number, done = false) => ({ target: 'fresh', users_scanned, enqueued: users_scanned - 1, skipped: 1, total: 1000, resumed_after: 0, done });

describe('targets resync progress on stderr', () => {
  it('a terminal gets one bar redrawn in place, ending with a newline when done', () => {
    const out: string[] = [];
    const write = progressWriter({ isTTY: true, write: (s) => out.push(s) });
    write(at(500));
    write(at(1000, true));
    expect(out[0]).toBe('\r[###############...............]  50% 500/1000 users, 499 enqueued, 1 skipped');
    expect(out[1]).toBe('\r[##############################] 100% 1000/1000 users, 999 enqueued, 1 skipped\n');
  });

  it('without a count of the users (the database did not give it within 5 s) shows the users scanned, no bar', () => {
    const out: string[] = [];
    const write = progressWriter({ isTTY: true, write: (s) => out.push(s) });
    write({ ...at(500), total: null });
    write({ ...at(1000, true), total: null });
    expect(out).toEqual(['\r500 users scanned, 499 enqueued, 1 skipped', '\r1000 users scanned, 999 enqueued, 1 skipped\n']);
  });

  it('declares its long operations: a batch read may take longer than the 10 s other commands get (FerretDB sorts the collection)', async () => {
    const { resyncCommand } = await import('./resync-command.ts');
    expect(resyncCommand.operationTimeoutMs).toBeGreaterThan(60_000);
  });

  it('anything else gets JSON lines, at most one per interval, and always the last', () => {
    const out: string[] = [];
    let clock = 0;
    const write = progressWriter({ isTTY: false, write: (s) => out.push(s) }, 3000, () => clock);
    write(at(100));
    clock = 1000;
    write(at(200)); // within 3 s of the last line: not written
    clock = 3500;
    write(at(300));
    clock = 3600;
    write(at(1000, true));
    expect(out.map((l) => JSON.parse(l).progress.scanned)).toEqual([100, 300, 1000]);
    expect(JSON.parse(out.at(-1)!)).toEqual({ progress: { target: 'fresh', scanned: 1000, total: 1000, enqueued: 999, skipped: 1, done: true } });
  });
});
