/**
 * A datastore that accepts the CLI's connection, answers its first hello or PING, then goes
 * silent (FerretDB with its PostgreSQL stuck; Redis paused by a failover's CLIENT PAUSE): each
 * operation is bounded (datastores.ts, OPERATION_TIMEOUT_MS) and the error is `unavailable`.
 * Before, the command waited for ever. In-process, over the connections the CLI opens, with a
 * TCP proxy that starts holding every answer once the connection is up.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { loadConfig } from '@connect/shared';
import { connectMongo, connectRedis, OPERATION_TIMEOUT_MS } from '@connect/cli/src/datastores.ts';
import { toCliError } from '@connect/cli/src/command.ts';

let mongoProxy: TcpProxy;
let redisProxy: TcpProxy;
const viaProxy = (url: string, proxy: TcpProxy) => {
  const u = new URL(url);
  u.port = String(proxy.port);
  return u.toString();
};

beforeAll(async () => {
  mongoProxy = await startTcpProxy(Number(new URL(inject('mongoUrl')).port));
  redisProxy = await startTcpProxy(Number(new URL(inject('redisUrl')).port));
});
afterAll(async () => {
  await mongoProxy?.close();
  await redisProxy?.close();
});

describe.concurrent(`the CLI's datastores going silent after connecting (each operation bounded at ${OPERATION_TIMEOUT_MS / 1000} s)`, () => {
  it('MongoDB: the operation fails, as `unavailable`', async () => {
    const conn = await connectMongo(viaProxy(inject('mongoUrl'), mongoProxy));
    try {
      expect(await conn.db!.collection('organizations').findOne({})).not.toBeUndefined();
      mongoProxy.setDelay(10 * OPERATION_TIMEOUT_MS);
      const err = await conn.db!.collection('organizations').findOne({ _id: 'silent' as never }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(toCliError(err)).toMatchObject({ kind: 'unavailable' });
    } finally {
      mongoProxy.setDelay(0);
      await conn.close().catch(() => undefined);
    }
  }, 6 * OPERATION_TIMEOUT_MS);

  it('Redis: the command fails, as `unavailable`', async () => {
    const config = loadConfig({ MONGO_URL: inject('mongoUrl'), REDIS_URL: viaProxy(inject('redisUrl'), redisProxy) });
    const redis = await connectRedis(config);
    try {
      expect(await redis.ping()).toBe('PONG');
      redisProxy.setDelay(10 * OPERATION_TIMEOUT_MS);
      const err = await redis.set('cli-silent-test', '1', 'PX', 1000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(toCliError(err)).toMatchObject({ kind: 'unavailable' });
    } finally {
      redisProxy.setDelay(0);
      redis.disconnect();
    }
  }, 6 * OPERATION_TIMEOUT_MS);
});
