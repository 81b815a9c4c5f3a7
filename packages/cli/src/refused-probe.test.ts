import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { refusalAt, singleHostOf } from './refused-probe.ts';

describe('singleHostOf: the one address of a plain MongoDB or Redis URL, nothing else', () => {
  it('reads host and port, with the default port, credentials and IPv6 brackets', () => {
    expect(singleHostOf('mongodb://u:p@db.internal:27018/connect?authSource=admin', 'mongodb')).toEqual({ host: 'db.internal', port: 27018 });
    expect(singleHostOf('mongodb://127.0.0.1/connect', 'mongodb')).toEqual({ host: '127.0.0.1', port: 27017 });
    expect(singleHostOf('redis://:secret@[::1]:6380/0', 'redis')).toEqual({ host: '::1', port: 6380 });
    expect(singleHostOf('rediss://cache.internal', 'redis')).toEqual({ host: 'cache.internal', port: 6379 });
  });

  it('leaves to the drivers what is not one plain host: several hosts, SRV, Sentinel, Cluster, the wrong scheme, nothing, garbage', () => {
    for (const [url, kind] of [
      ['mongodb://a:27017,b:27017/connect?replicaSet=rs0', 'mongodb'],
      ['mongodb+srv://cluster.example.com/connect', 'mongodb'],
      ['redis+sentinel://s1:26379,s2:26379/mymaster', 'redis'],
      ['redis+cluster://n1:7000', 'redis'],
      ['redis://127.0.0.1:6379', 'mongodb'],
      [undefined, 'mongodb'],
      ['   ', 'redis'],
      ['not a url', 'mongodb'],
    ] as const) {
      expect(singleHostOf(url, kind), String(url)).toBeUndefined();
    }
  });
});

describe('refusalAt: told at once only when nothing will ever answer there', () => {
  it('a closed port: the refusal', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    await new Promise<void>((r) => server.close(() => r()));
    expect(await refusalAt({ host: '127.0.0.1', port }, 5_000)).toMatchObject({ code: 'ECONNREFUSED', message: expect.stringMatching(/^connect ECONNREFUSED 127\.0\.0\.1:\d+$/) });
  });

  it('a name that does not resolve: the resolver\'s answer', async () => {
    expect(await refusalAt({ host: 'no-such-host.invalid', port: 27017 }, 5_000)).toMatchObject({ code: 'ENOTFOUND' });
  });

  it('a host that accepts, even one that never says a word: nothing (the drivers judge it)', async () => {
    const sockets: import('node:net').Socket[] = [];
    const silent = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      expect(await refusalAt({ host: '127.0.0.1', port: (silent.address() as { port: number }).port }, 5_000)).toBeUndefined();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});
