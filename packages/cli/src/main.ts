/**
 * `pnpm cli <command>`: operator commands over the same domain code as the API.
 * Every command prints exactly one JSON document on stdout (SPEC §3); failures
 * print `{"error": {...}}` and exit non-zero. Logs go to stderr only.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import mongoose from 'mongoose';
import {
  ConfigError,
  DomainError,
  createModels,
  disableClient,
  getProviderUser,
  loadConfig,
  registerClient,
  registerOrganization,
  type Config,
  type Models,
} from '@connect/shared';

class UsageError extends Error {}

const USAGE = `usage: pnpm cli <command>
  org create --name N [--api-version V]
  client create --org ID (--public-key-file F | --jwks-url U)
  client disable ID
  user get --org ID --external-provider-id X
  deliveries list [--target NAME] [--status pending|delivered|failed|superseded]
  deliveries show ID
  deliveries replay ID | --all-failed
    deliveries recover --target NAME --since ISO [--until ISO]
  targets list | pause NAME | resume NAME
  targets resync NAME [--org ID] [--force] [--batch-size N] [--max-waiting N]`;

export interface CliContext {
  config: Readonly<Config>;
  models: Models;
}

function option(values: Record<string, string | boolean | undefined>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`--${name} is required\n${USAGE}`);
  return v;
}

async function run(argv: string[], ctx: CliContext): Promise<unknown> {
  const [noun, verb, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    strict: true,
    options: {
      name: { type: 'string' },
      'api-version': { type: 'string' },
      org: { type: 'string' },
      'public-key-file': { type: 'string' },
      'jwks-url': { type: 'string' },
      'external-provider-id': { type: 'string' },
      status: { type: 'string' },
      target: { type: 'string' },
      'all-failed': { type: 'boolean' },
      force: { type: 'boolean' },
      since: { type: 'string' },
      until: { type: 'string' },
      'batch-size': { type: 'string' },
      'max-waiting': { type: 'string' },
    },
  });
  const { models } = ctx;
  switch (`${noun} ${verb}`) {
    case 'org create': {
      const org = await registerOrganization(models, { name: option(values, 'name'), apiVersion: values['api-version'] as string | undefined });
      return { id: org._id, name: org.name, api_version: org.api_version, created_at: org.created_at.toISOString() };
    }
    case 'client create': {
      const file = values['public-key-file'] as string | undefined;
      let publicKeyPem: string | undefined;
      if (file) {
        try {
          publicKeyPem = readFileSync(file, 'utf8');
        } catch {
          throw new UsageError(`cannot read --public-key-file ${file}`);
        }
      }
      const client = await registerClient(models, {
        organizationId: option(values, 'org'),
        publicKeyPem,
        jwksUrl: values['jwks-url'] as string | undefined,
      });
      return {
        client_id: client._id,
        organization_id: client.organization_id,
        key: client.jwks_url ? { jwks_url: client.jwks_url } : { public_key: 'pem' },
        enabled: client.enabled,
        token_url: ctx.config.tokenEndpointUrl,
        created_at: client.created_at.toISOString(),
      };
    }
    case 'client disable': {
      const id = positionals[0];
      if (!id) throw new UsageError(`client disable needs a client id\n${USAGE}`);
      const client = await disableClient(models, id);
      return { client_id: client._id, enabled: client.enabled, disabled_at: client.disabled_at?.toISOString() ?? null };
    }
    case 'user get':
      return getProviderUser(models, ctx.config.downstreamTargets, option(values, 'org'), option(values, 'external-provider-id'));
    case 'deliveries list':
    case 'deliveries show':
    case 'deliveries replay':
      return (await import('./deliveries-command.ts')).runDeliveriesCommand(ctx, verb, {
        status: values.status as string | undefined,
        target: values.target as string | undefined,
        allFailed: values['all-failed'] === true,
        id: positionals[0],
      });
    case 'targets list':
    case 'targets pause':
    case 'targets resume':
      return (await import('./targets-command.ts')).runTargetsCommand(ctx, verb, positionals[0]);
    case 'targets resync':
      return (await import('./resync-command.ts')).runResyncCommand(ctx, {
        target: positionals[0],
        org: values.org as string | undefined,
        force: values.force === true,
        batchSize: values['batch-size'] as string | undefined,
        maxWaiting: values['max-waiting'] as string | undefined,
      });
    case 'deliveries recover':
      return (await import('./recover-command.ts')).runRecoverCommand(ctx, { target: values.target as string | undefined, since: values.since as string | undefined, until: values.until as string | undefined });
    default:
      throw new UsageError(USAGE);
  }
}

function fail(kind: string, message: string, extra: Record<string, unknown> = {}): never {
  process.stdout.write(`${JSON.stringify({ error: { kind, message, ...extra } }, null, 2)}\n`);
  process.exit(kind === 'usage' || kind === 'configuration' ? 2 : 1);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2).filter((a, i) => !(i === 0 && a === '--'));
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === 'help') fail('usage', USAGE);
  let config: Readonly<Config>;
  try {
    config = loadConfig(process.env, { require: { redis: false } });
  } catch (err) {
    if (err instanceof ConfigError) fail('configuration', err.message, { variable: err.variable });
    throw err;
  }
  const conn = await mongoose.createConnection(config.mongoUrl, { serverSelectionTimeoutMS: 10_000 }).asPromise();
  try {
    // Indexes are the API's to create at start; organizations and clients are keyed by _id.
    const models = createModels(conn);
    const result = await run(argv, { config, models });
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (err) {
    if (err instanceof UsageError) fail('usage', err.message);
    // The CLI's error kinds are spelled with underscores (`not_found`), the API's problem types with hyphens.
    if (err instanceof DomainError) fail(err.slug === 'not-found' ? 'not_found' : err.slug, err.message, err.errors ? { errors: err.errors } : {});
    if (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) fail('usage', `${err.message}\n${USAGE}`);
    fail('internal', (err as Error).message);
  } finally {
    await conn.close();
  }
}

await main();
