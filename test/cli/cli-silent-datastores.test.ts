/**
 * A datastore that accepts the CLI's connection, answers its first hello or PING, then goes
 * silent (FerretDB with its PostgreSQL stuck; Redis paused by a failover's CLIENT PAUSE): each
 * operation is bounded (datastores.ts, OPERATION_TIMEOUT_MS) and the error is `unavailable`.
 * Before, the command waited for ever. In-process, over the connections the CLI opens.
 * MongoDB: a FerretDB of the test's own whose PostgreSQL is reached through a TCP proxy that
 * starts holding every answer, so FerretDB still answers the driver's hello and heartbeats and
 * only the operation hangs (a proxy in front of FerretDB itself would hold the heartbeats too,
 * and the driver's monitor, not the operation's timeout, would end the wait). FerretDB only.
 * Redis: a proxy in front of it that starts holding answers once the connection is up.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LOCAL_POSTGRES, startFerretDb, startTcpProxy, type RunningService, type TcpProxy } from '@connect/local-services';
import { loadConfig } from '@connect/shared';
import { connectMongo, connectRedis, OPERATION_TIMEOUT_MS } from '@connect/cli/src/datastores.ts';
import { toCliError } from '@connect/cli/src/command.ts';

const onFerretDb = inject('mongoKind') === 'ferretdb';
if (!onFerretDb) console.log('[cli silent datastores] MongoDB half skipped: it stalls FerretDB\'s PostgreSQL, and the run uses MongoDB');

let pgProxy: TcpProxy;
let ferret: RunningService;
let redisProxy: TcpProxy;
const viaProxy = (url: string, proxy: TcpProxy) => {
  const u = new URL(url);
  u.port = String(proxy.port);
  return u.toString();
};

beforeAll(async () => {
  redisProxy = await startTcpProxy(Number(new URL(inject('redisUrl')).port));
  if (!onFerretDb) return;
  pgProxy = await startTcpProxy(LOCAL_POSTGRES.port, LOCAL_POSTGRES.host);
  ferret = await startFerretDb({ database: `cli_silent_${inject('runId')}`.replace(/[^a-z0-9_]/g, '_').slice(0, 60), pg: { ...LOCAL_POSTGRES, host: '127.0.0.1', port: pgProxy.port } });
}, 120_000);
afterAll(async () => {
  pgProxy?.setDelay(0);
  await ferret?.stop();
  await pgProxy?.close();
  await redisProxy?.close();
});

describe.concurrent(`the CLI's datastores going silent after connecting (each operation bounded at ${OPERATION_TIMEOUT_MS / 1000} s)`, () => {
  it.skipIf(!onFerretDb)('MongoDB (FerretDB answering, its PostgreSQL silent): the operation times out, as `unavailable`', async () => {
    const conn = await connectMongo(`${ferret.url}silent`);
    try {
      // A collection that exists: FerretDB answers a find on a missing one without asking PostgreSQL.
      await conn.db!.collection('organizations').insertOne({ _id: 'there' as never });
      expect(await conn.db!.collection('organizations').findOne({ _id: 'there' as never })).not.toBeNull();
      pgProxy.setDelay(10 * OPERATION_TIMEOUT_MS);
      const err = await conn.db!.collection('organizations').findOne({ _id: 'silent' as never }).catch((e: unknown) => e);
      // The operation's own socket timeout, not the monitor giving up on the server.
      expect((err as Error).name).toBe('MongoNetworkTimeoutError');
      expect(toCliError(err)).toMatchObject({ kind: 'unavailable' });
    } finally {
      pgProxy.setDelay(0);
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
