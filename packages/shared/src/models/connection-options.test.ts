import { describe, expect, it } from 'vitest';
import { mongoConnectionOptions } from './models.ts';

describe('mongoConnectionOptions', () => {
  it('caps the pool at 20 (under FerretDB 1.24\'s 50 PostgreSQL connections, see the function) unless MONGO_URL sets maxPoolSize', () => {
    expect(mongoConnectionOptions('mongodb://db:27017/connect')).toEqual({ maxPoolSize: 20, serverSelectionTimeoutMS: 10_000 });
    expect(mongoConnectionOptions('mongodb://db:27017/connect?replicaSet=rs0&maxPoolSize=64')).toEqual({ serverSelectionTimeoutMS: 10_000 });
  });
});
