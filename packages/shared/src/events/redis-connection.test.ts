import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, expect, inject, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.ts';
import { checkRedisDatabase, parseRedisUrl, RedisDatabaseMissingError } from './redis-connection.ts';

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

describe('checkRedisDatabase: a database number the server lacks is told; a Redis that is away is left to the services', () => {
  const withDb = (db: string) => Object.assign(new URL(inject('redisUrl')), { pathname: `/${db}` }).toString();

  it('database 99 of a server with 16: refused, naming REDIS_URL; databases 0 and 15: fine', async () => {
    await expect(checkRedisDatabase(withDb('99'))).rejects.toThrow(RedisDatabaseMissingError);
    await expect(checkRedisDatabase(withDb('99'))).rejects.toThrow(/no database of the number REDIS_URL names \(ERR DB index is out of range\)/);
    await expect(checkRedisDatabase(withDb('0'))).resolves.toBeUndefined();
    await expect(checkRedisDatabase(withDb('15'))).resolves.toBeUndefined();
  });

  it('nothing listening, or a host that never answers: no verdict, within about twice its timeout', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((s) => (sockets.add(s), s.on('error', () => undefined)));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as AddressInfo).port;
    try {
      const started = performance.now();
      await expect(checkRedisDatabase(`redis://127.0.0.1:${port}/3`, 200)).resolves.toBeUndefined();
      expect(performance.now() - started).toBeLessThan(5_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
    await expect(checkRedisDatabase(`redis://127.0.0.1:${port}/3`, 200)).resolves.toBeUndefined();
  });
});
