import { createServer, type Socket } from 'node:net';
import { describe, expect, inject, it } from 'vitest';
import { helloMessage, probeDatastore, singleHostOf } from './datastore-probe.ts';

describe('singleHostOf: the one address of a plain MongoDB or Redis URL, nothing else', () => {
  it('reads host and port, with the default port, credentials and IPv6 brackets', () => {
    expect(singleHostOf('mongodb://u:p@db.internal:27018/connect?authSource=admin', 'mongodb')).toEqual({ host: 'db.internal', port: 27018 });
    expect(singleHostOf('mongodb://127.0.0.1/connect', 'mongodb')).toEqual({ host: '127.0.0.1', port: 27017 });
    expect(singleHostOf('redis://:secret@[::1]:6380/0', 'redis')).toEqual({ host: '::1', port: 6380 });
    expect(singleHostOf('rediss://cache.internal', 'redis')).toEqual({ host: 'cache.internal', port: 6379, tls: true });
    expect(singleHostOf('mongodb://db.internal/connect?TLS=true', 'mongodb')).toEqual({ host: 'db.internal', port: 27017, tls: true });
    expect(singleHostOf('mongodb://db.internal/connect?ssl=true', 'mongodb')).toEqual({ host: 'db.internal', port: 27017, tls: true });
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

/** A TCP server whose connections get `answer(socket)`; closed (its sockets too) by the returned function. */
async function server(onConnection: (socket: Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets: Socket[] = [];
  const s = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as { port: number }).port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((r) => s.close(() => r()));
    },
  };
}

describe('probeDatastore: refused and silent told within the budget, anything that answers left to the drivers', () => {
  it('a closed port: refused, with the refusal', async () => {
    const closed = await server(() => undefined);
    await closed.close();
    const verdict = await probeDatastore({ host: '127.0.0.1', port: closed.port }, 'mongodb', 5_000);
    expect(verdict).toMatchObject({ kind: 'refused', error: { code: 'ECONNREFUSED', message: expect.stringMatching(/^connect ECONNREFUSED 127\.0\.0\.1:\d+$/) } });
  });

  it("a name that does not resolve: refused, with the resolver's answer", async () => {
    expect(await probeDatastore({ host: 'no-such-host.invalid', port: 27017 }, 'redis', 5_000)).toMatchObject({ kind: 'refused', error: { code: 'ENOTFOUND' } });
  });

  it('a host that accepts and never says a word: silent (connected) once the budget is spent, having been asked the question', async () => {
    const asked: Buffer[] = [];
    const silent = await server((socket) => socket.on('data', (d: Buffer) => asked.push(d)));
    try {
      expect(await probeDatastore({ host: '127.0.0.1', port: silent.port }, 'redis', 300)).toEqual({ kind: 'silent', connected: true });
      expect(Buffer.concat(asked).toString()).toBe('*1\r\n$4\r\nPING\r\n');
    } finally {
      await silent.close();
    }
  });

  it('any answer at all is "answered", an error included (a Redis wanting AUTH)', async () => {
    const noAuth = await server((socket) => socket.once('data', () => socket.write('-NOAUTH Authentication required.\r\n')));
    try {
      expect(await probeDatastore({ host: '127.0.0.1', port: noAuth.port }, 'redis', 5_000)).toEqual({ kind: 'answered' });
    } finally {
      await noAuth.close();
    }
  });

  it('closed without a word, or TLS once connected: not judged (the drivers will)', async () => {
    const closing = await server((socket) => socket.end());
    const quiet = await server(() => undefined);
    try {
      expect(await probeDatastore({ host: '127.0.0.1', port: closing.port }, 'mongodb', 5_000)).toEqual({ kind: 'unknown' });
      // Over TLS the probe asks nothing (a plain question would get no answer), so a quiet host is not judged once it accepts.
      expect(await probeDatastore({ host: '127.0.0.1', port: quiet.port, tls: true }, 'mongodb', 5_000)).toEqual({ kind: 'unknown' });
    } finally {
      await closing.close();
      await quiet.close();
    }
  });

  it("the real datastores answer the probe's questions: MongoDB (or FerretDB) its hello, Redis its PING", async () => {
    const mongo = singleHostOf(inject('mongoUrl'), 'mongodb');
    const redis = singleHostOf(inject('redisUrl'), 'redis');
    expect(mongo && redis).toBeTruthy();
    expect(await probeDatastore(mongo!, 'mongodb', 5_000)).toEqual({ kind: 'answered' });
    expect(await probeDatastore(redis!, 'redis', 5_000)).toEqual({ kind: 'answered' });
  });

  it('the hello is a well-formed OP_MSG: its length fields add up and its body is { hello: 1, $db: "admin" }', () => {
    const msg = helloMessage();
    expect(msg.readInt32LE(0)).toBe(msg.length);
    expect(msg.readInt32LE(12)).toBe(2013);
    const body = msg.subarray(21);
    expect(body.readInt32LE(0)).toBe(body.length);
    expect(body.subarray(4).toString('latin1')).toBe('\x10hello\0\x01\0\0\0\x02$db\0\x06\0\0\0admin\0\0');
  });
});
