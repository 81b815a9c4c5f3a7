import { describe, expect, it } from 'vitest';
import { onlyIdPushedDown } from './each-by-id.ts';

interface Row {
  _id: string;
  status: string;
  target: string;
  version: number;
  updated_at: Date;
  deleted: boolean;
  failed_at: Date | null;
}

describe('onlyIdPushedDown', () => {
  it('writes top-level equalities other than _id as one-value $in, and leaves _id, operators and operator objects as they are', () => {
    const at = new Date(0);
    const range = { $lt: at };
    const either = [{ failed_at: null }];
    expect(onlyIdPushedDown<Row>({ _id: 'a.t', status: 'pending', target: 't', version: 3, updated_at: range, $or: either, deleted: false, failed_at: at })).toEqual({
      _id: 'a.t',
      status: { $in: ['pending'] },
      target: { $in: ['t'] },
      version: { $in: [3] },
      updated_at: range,
      $or: either,
      deleted: { $in: [false] },
      failed_at: { $in: [at] },
    });
  });
});
