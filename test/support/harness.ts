import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';
import { inject } from 'vitest';
import { buildApp, clientErrorHandler, connectMethodHandler, createApiDeps, expectationFailedHandler, HTTP_SERVER_OPTIONS, type ApiDeps, type ApiDepsOptions } from '@connect/api';
import { createLogger, loadConfig, registerClient, registerOrganization, type Models, type OAuthClientDoc, type OrganizationDoc } from '@connect/shared';
import { listenOnFreePort } from '@connect/local-services';

/** A MongoDB URL naming a database of the caller's own on the run's server. */
export function databaseUrl(label: string): string {
  const url = new URL(inject('mongoUrl'));
  url.pathname = `/${label.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 30)}_${randomUUID().slice(0, 8)}`;
  return url.toString();
}

export function uniquePrefix(label: string): string {
  return `t-${inject('runId')}-${label}-${randomUUID().slice(0, 6)}`;
}

/** Collects a process's pino lines so tests can assert what is (not) logged. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.lines.push(...chunk.toString().split('\n').filter(Boolean));
    cb();
  }
  get text(): string {
    return this.lines.join('\n');
  }
}

export interface TestApi {
  origin: string;
  /** Where this instance answers: its origin + BASE_PATH (what an integrator's client holds). */
  baseUrl: string;
  tokenUrl: string;
  /** PUBLIC_BASE_URL + BASE_PATH + /oauth/token: the audience of assertions. Equals tokenUrl unless PUBLIC_BASE_URL is set. */
  audience: string;
  app: FastifyInstance;
  /** The listening HTTP server (not `app.server`: see startTestApi). */
  server: Server;
  deps: ApiDeps;
  models: Models;
  logs: LogCapture;
  env: Record<string, string>;
  close: () => Promise<void>;
}

export interface StartApiOptions extends ApiDepsOptions {
  label?: string;
  env?: Record<string, string>;
  mongoUrl?: string;
  /** Settings the environment cannot express (e.g. a token lifetime under the 60 s floor), laid over the parsed configuration. */
  config?: Partial<ReturnType<typeof loadConfig>>;
}

/**
 * The real API, in this process, on a real port, over the run's MongoDB and Redis.
 *
 * The port comes from listen(0), never from a "free a moment ago" check: the
 * configuration (PUBLIC_BASE_URL, hence the token audience and issuer) needs the
 * port before the app exists, so a plain HTTP server binds port 0 first and
 * hands its requests to Fastify's router (`app.routing`) once the app is ready.
 */
export async function startTestApi(options: StartApiOptions = {}): Promise<TestApi> {
  // With the limits Fastify's own server gets (build-app.ts).
  const server = createServer(HTTP_SERVER_OPTIONS);
  const port = await listenOnFreePort(server);
  const env: Record<string, string> = {
    MONGO_URL: options.mongoUrl ?? databaseUrl(options.label ?? 'api'),
    REDIS_URL: inject('redisUrl'),
    PORT: String(port),
    HOST: '127.0.0.1',
    PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
    QUEUE_PREFIX: uniquePrefix(options.label ?? 'api'),
    LOG_LEVEL: 'debug',
    ...options.env,
  };
  let deps: ApiDeps;
  let app: FastifyInstance;
  let config: ReturnType<typeof loadConfig>;
  const logs = new LogCapture();
  try {
    config = { ...loadConfig(env), ...options.config };
    const log = createLogger(config.logLevel, 'api', logs);
    deps = await createApiDeps(config, log, options);
    app = await buildApp(deps);
    await app.ready();
  } catch (err) {
    server.close();
    throw err;
  }
  server.on('request', (req, res) => app.routing(req, res));
  // What Fastify's own server does with its clientErrorHandler option (build-app.ts).
  server.on('clientError', clientErrorHandler);
  server.on('checkExpectation', expectationFailedHandler);
  server.on('connect', connectMethodHandler);
  return {
    origin: `http://127.0.0.1:${port}`,
    baseUrl: `http://127.0.0.1:${port}${config.basePath}`,
    tokenUrl: `http://127.0.0.1:${port}${config.basePath}/oauth/token`,
    audience: config.tokenEndpointUrl,
    app,
    server,
    deps,
    models: deps.models,
    logs,
    env,
    close: async () => {
      // As Fastify's own close: answer 503 on kept-alive connections, stop accepting, finish what is in flight.
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      await app.close();
      server.closeIdleConnections();
      await stopped;
      await deps.close();
    },
  };
}

export interface TestClient {
  organization: OrganizationDoc;
  client: OAuthClientDoc;
  privateKey: KeyObject;
}

export function rsaKeyPair(): { privateKey: KeyObject; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

export async function registerTestClient(models: Models, options: { apiVersion?: string; name?: string } = {}): Promise<TestClient> {
  const organization = await registerOrganization(models, { name: options.name ?? 'Test clinic', apiVersion: options.apiVersion });
  const { privateKey, publicKeyPem } = rsaKeyPair();
  const client = await registerClient(models, { organizationId: organization._id, publicKeyPem });
  return { organization, client, privateKey };
}

export interface AssertionOptions {
  aud?: string;
  iss?: string;
  sub?: string;
  iat?: number;
  exp?: number;
  nbf?: number;
  jti?: string | null;
  alg?: string;
  kid?: string;
}

/** An assertion as the public sample client signs it: RS256, iss = sub = client id, aud = token URL, 60 s. */
export async function signAssertion(clientId: string, key: KeyObject, aud: string, o: AssertionOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {};
  if (o.jti !== null) claims.jti = o.jti ?? randomUUID();
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: o.alg ?? 'RS256', typ: 'JWT', ...(o.kid ? { kid: o.kid } : {}) })
    .setIssuer(o.iss ?? clientId)
    .setSubject(o.sub ?? clientId)
    .setAudience(o.aud ?? aud)
    .setIssuedAt(o.iat ?? now)
    .setExpirationTime(o.exp ?? (o.iat ?? now) + 60);
  if (o.nbf !== undefined) jwt.setNotBefore(o.nbf);
  return jwt.sign(key);
}

export interface HttpAnswer<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

export async function http<T = any>(url: string, init: RequestInit = {}): Promise<HttpAnswer<T>> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: any = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, body, text };
}

/** Sends raw bytes and reads the whole answer: for requests fetch() refuses to send. */
export function rawHttp(port: number, bytes: string): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    // The server may reset the connection after its answer (it stops reading a refused request): the answer is still read.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const [head = '', body = ''] = answer.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), headers: head, body });
    });
    socket.end(bytes);
  });
}

export async function requestToken(api: TestApi, c: TestClient, o: AssertionOptions = {}, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  const assertion = await signAssertion(c.client._id, c.privateKey, api.audience, o);
  return http(api.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    }),
  });
}

export async function getToken(api: TestApi, c: TestClient): Promise<string> {
  const res = await requestToken(api, c);
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${res.text}`);
  return res.body.access_token;
}

export function postUser(api: TestApi, token: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  return http(`${api.baseUrl}/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export function getUser(api: TestApi, token: string, externalProviderId: string): Promise<HttpAnswer> {
  return http(`${api.baseUrl}/users/${encodeURIComponent(externalProviderId)}`, {
    headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': '2026-03-23' },
  });
}
