import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.ts';
import { parseRedisUrl } from './redis-connection.ts';

describe('REDIS_URL forms', () => {
  it('one server, with or without TLS', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379/2')).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379/2' });
    expect(parseRedisUrl('rediss://:pw@redis.example.com:6380')).toEqual({ kind: 'single', url: 'rediss://:pw@redis.example.com:6380' });
  });
  it('Sentinel: the sentinels, the master name, the database and the password', () => {
    expect(parseRedisUrl('redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3')).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26379 },
        { host: '::1', port: 26380 },
      ],
      name: 'mymaster',
      password: 's3cret',
      db: 3,
      tls: false,
    });
    expect(() => parseRedisUrl('redis+sentinel://10.0.0.1:26379')).toThrow(/master name/);
  });
  it('Cluster: the seed nodes', () => {
    expect(parseRedisUrl('rediss+cluster://a:7000,b:7001')).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'a', port: 7000 },
        { host: 'b', port: 7001 },
      ],
      password: undefined,
      tls: true,
    });
  });
  it('anything else is refused at start, naming REDIS_URL; a cluster needs a hash-tagged QUEUE_PREFIX', () => {
    const base = { MONGO_URL: 'mongodb://127.0.0.1/x' };
    expect(() => loadConfig({ ...base, REDIS_URL: 'http://x' })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, REDIS_URL: 'redis+cluster://a:7000' })).toThrow(/QUEUE_PREFIX: must contain a hash tag/);
    expect(loadConfig({ ...base, REDIS_URL: 'redis+cluster://a:7000', QUEUE_PREFIX: '{connect}' }).queuePrefix).toBe('{connect}');
  });
});
