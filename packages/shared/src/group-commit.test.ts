import { describe, expect, it } from 'vitest';
import { GroupCommit } from './group-commit.ts';

describe('GroupCommit', () => {
  it('writes items pushed in the same tick as one batch, and those pushed during a write as the next one', async () => {
    const batches: number[][] = [];
    let release!: () => void;
    const firstWrite = new Promise<void>((r) => (release = r));
    const group = new GroupCommit<number>(async (items) => {
      batches.push(items);
      if (batches.length === 1) await firstWrite;
    });
    const first = [group.push(1), group.push(2)];
    await Promise.resolve();
    await Promise.resolve();
    const second = [group.push(3), group.push(4), group.push(5)];
    release();
    await Promise.all([...first, ...second]);
    expect(batches).toEqual([[1, 2], [3, 4, 5]]);
  });

  it('fails each item on its own when the write answers per item, and every item when the write throws', async () => {
    const perItem = new GroupCommit<string>(async (items) => items.map((i) => (i === 'bad' ? new Error(`refused ${i}`) : undefined)));
    const outcomes = await Promise.allSettled([perItem.push('a'), perItem.push('bad'), perItem.push('c')]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason.message).toBe('refused bad');

    const whole = new GroupCommit<string>(async () => {
      throw new Error('connection lost');
    });
    const all = await Promise.allSettled([whole.push('a'), whole.push('b')]);
    expect(all.map((o) => (o.status === 'rejected' ? (o.reason as Error).message : 'ok'))).toEqual(['connection lost', 'connection lost']);
  });

  it('splits a queue longer than the largest batch', async () => {
    const sizes: number[] = [];
    const group = new GroupCommit<number>(async (items) => void sizes.push(items.length), 3);
    await Promise.all(Array.from({ length: 7 }, (_, i) => group.push(i)));
    expect(sizes).toEqual([3, 3, 1]);
  });
});
