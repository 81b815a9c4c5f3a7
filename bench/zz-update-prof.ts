// Temporary harness (never committed): API CPU per cold-set update, with a CPU profile.
import { MongoClient } from 'mongodb';
import { startDatastores, startApi, databaseUrl, cpuMsOf, newRunId } from './start-stack.ts';
import { registerBenchClient, fetchAccessToken } from './bench-auth.ts';
import { seedUsers } from './bench-users.ts';
import { runLoad } from './load-users.ts';

const runId = newRunId();
const stores = await startDatastores(runId);
const db = databaseUrl(stores.mongoServerUrl, `zzprof_${runId.replace(/-/g, '_')}`);
const prof = process.argv.includes('--prof');
const api = await startApi('api', { mongoUrl: db, redisUrl: stores.redisUrl, queuePrefix: `zz-${runId}`, cpuProfile: prof });
const client = await registerBenchClient(db);
const token = await fetchAccessToken(client, api.tokenUrl);
const mongo = await new MongoClient(db).connect();
const N = 20_000;
await seedUsers(mongo.db().collection('provider_users'), client.organizationId, 'cold', 0, N);
await stores.settle();
const headers = { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' };
for (const kind of (process.argv.includes('--noop') ? ['noop'] : ['update']) as ('update' | 'noop')[]) {
  const before = cpuMsOf(api.process.pid!);
  const r = await runLoad({ kind, url: `${api.baseUrl}/users`, connections: 32, durationSec: 5, rounds: 4, warmupSec: 2, headers, idPrefix: 'cold', userCount: N });
  const cpu = cpuMsOf(api.process.pid!) - before;
  const ops = r.rounds.reduce((s, x) => s + x.requests * 1, 0) + (r.warmupRequests ?? 0);
  console.log(kind, JSON.stringify(r.statuses), r.rounds.map((x) => Math.round(x.rps)).join(','), 'cpu/op', (cpu / ops).toFixed(3));
}
api.process.kill('SIGTERM');
await new Promise((r) => api.process.once('exit', r));
await mongo.close();
await stores.stop();
