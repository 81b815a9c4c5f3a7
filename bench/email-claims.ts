/**
 * `pnpm bench --email-claims [--smoke]`: what EMAIL_UNIQUENESS=claims costs a create
 * (docs/guarantees.md, "Email claims"), side by side with the default unique index. One API
 * per mode, each on a database of its own on the same server, POST /users creates at
 * concurrency 32, the modes alternating round by round (which goes first swaps each
 * round). Prints a Markdown table; writes no results file. --smoke: one short round, for CI.
 */
import mongoose from 'mongoose';
import { EMAIL_UNIQUENESS_MODES, type EmailUniqueness } from '@connect/shared';
import { fetchAccessToken, registerBenchClient } from './bench-auth.ts';
import { runLoad } from './load-users.ts';
import { spread, summarise, type RoundStats, type Spread } from './round-stats.ts';
import { commitMeasured } from './report.ts';
import { databaseUrl, deleteQueueKeys, newRunId, startApi, startDatastores, type ApiProcess, type Datastores } from './start-stack.ts';

const CONCURRENCY = 32;

export async function runEmailClaimsCli(argv: string[], say: (msg: string) => void): Promise<number> {
  const smoke = argv.includes('--smoke');
  const rounds = smoke ? 1 : 5;
  const seconds = smoke ? 1 : 5;
  const runId = newRunId();
  const stores = await startDatastores(runId);
  const apis = new Map<EmailUniqueness, ApiProcess>();
  try {
    const tokens = new Map<EmailUniqueness, string>();
    for (const mode of EMAIL_UNIQUENESS_MODES) {
      const mongoUrl = databaseUrl(stores.mongoServerUrl, `claims_${mode}_${runId.replace(/-/g, '_')}`);
      const api = await startApi(`api-${mode}`, { mongoUrl, redisUrl: stores.redisUrl, queuePrefix: `bench-claims-${mode}-${runId}`, extraEnv: { EMAIL_UNIQUENESS: mode } });
      apis.set(mode, api);
      // The API made the indexes of its mode; registering must not make them in this process's.
      tokens.set(mode, await fetchAccessToken(await registerBenchClient(mongoUrl, { name: `Bench clinic (${mode})`, makeIndexes: false }), api.tokenUrl));
    }
    const byMode = new Map<EmailUniqueness, RoundStats[]>(EMAIL_UNIQUENESS_MODES.map((m) => [m, []]));
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [...EMAIL_UNIQUENESS_MODES] : [...EMAIL_UNIQUENESS_MODES].reverse();
      for (const mode of order) {
        const api = apis.get(mode)!;
        const result = await runLoad({
          kind: 'create',
          url: `${api.baseUrl}/users`,
          connections: CONCURRENCY,
          durationSec: seconds,
          rounds: 1,
          warmupSec: r === 0 && !smoke ? 2 : 0,
          headers: { authorization: `Bearer ${tokens.get(mode)}` },
          idPrefix: `claims-bench-${mode}-${r}`,
        });
        const round = result.rounds[0]!;
        byMode.get(mode)!.push(round);
        say(`round ${r + 1}/${rounds} ${mode}: ${round.rps.toFixed(0)} creates/s (statuses ${JSON.stringify(result.statuses)})`);
      }
    }
    const index = summarise(byMode.get('index')!);
    const claims = summarise(byMode.get('claims')!);
    const ratios = byMode.get('claims')!.map((c, i) => c.rps / byMode.get('index')![i]!.rps);
    const ratio = spread(ratios);
    const shown = (s: Spread, digits: number) => `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
    const commit = commitMeasured();
    process.stdout.write(
      [
        `# Email claims: the cost of a create${smoke ? ' (smoke: figures meaningless)' : ''}`,
        '',
        `Commit ${commit.sha}${commit.dirty ? ' with uncommitted changes' : ''} · ${stores.kind === 'mongo-url' ? 'MONGO_URL' : 'FerretDB on PostgreSQL'} · POST /users creates at concurrency ${CONCURRENCY}, ${rounds} round(s) of ${seconds} s per mode, alternating`,
        '',
        '| EMAIL_UNIQUENESS | creates/s, median (min–max) | p50 ms | p99 ms |',
        '|---|---|---|---|',
        `| index | ${shown(index.rps, 0)} | ${index.p50.median.toFixed(0)} | ${index.p99.median.toFixed(0)} |`,
        `| claims | ${shown(claims.rps, 0)} | ${claims.p50.median.toFixed(0)} | ${claims.p99.median.toFixed(0)} |`,
        '',
        `creates/s, claims / index, per round: ${shown(ratio, 2)}`,
        '',
      ].join('\n'),
    );
    return 0;
  } finally {
    for (const api of apis.values()) await api.stop();
    await dropWhatItMade(stores, [...apis.values()]);
    await stores.stop();
  }
}

/** The queue keys of each API and, on a MONGO_URL, its database (a FerretDB started here goes with its PostgreSQL database). */
async function dropWhatItMade(stores: Datastores, apis: ApiProcess[]): Promise<void> {
  await deleteQueueKeys(stores.redisUrl, apis.map((a) => a.queuePrefix));
  if (stores.kind !== 'mongo-url') return;
  for (const api of apis) {
    const conn = await mongoose.createConnection(api.mongoUrl).asPromise();
    await conn.dropDatabase().catch(() => undefined);
    await conn.close();
  }
}
