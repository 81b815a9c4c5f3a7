import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { PROBLEM_TYPE_BASE } from '@connect/shared';
import type { ApiDeps } from '../api-deps.ts';
import { instanceOf, sendProblem } from '../error-handler.ts';
import { asServiceUnavailable } from '../service-unavailable.ts';

export const ADMIN_QUEUES_PATH = '/admin/queues';

/** Constant time whatever the lengths: digests are compared, so not even the length leaks. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (v: string) => createHash('sha256').update(v).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** `Authorization: Bearer <ADMIN_TOKEN>`, or Basic with ADMIN_TOKEN as the password (what a browser prompts for); nothing after it. */
export function adminTokenGiven(request: FastifyRequest, adminToken: string): boolean {
  const match = /^(\S+) +(\S+) *$/.exec(request.headers.authorization ?? '');
  if (!match) return false;
  const [, scheme, value] = match as unknown as [string, string, string];
  if (/^bearer$/i.test(scheme)) return sameSecret(value, adminToken);
  if (/^basic$/i.test(scheme)) {
    const decoded = Buffer.from(value, 'base64').toString();
    const colon = decoded.indexOf(':');
    return colon >= 0 && sameSecret(decoded.slice(colon + 1), adminToken);
  }
  return false;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * A browser's cross-site request: a page elsewhere posting to the dashboard with
 * the Basic credentials the browser has cached (CSRF). Browsers say where a
 * request comes from (`Sec-Fetch-Site`, or at least `Origin`) on every
 * state-changing request; tools such as curl send neither and are not browsers.
 */
export function crossSiteRequest(request: FastifyRequest, publicOrigin: string): boolean {
  if (SAFE_METHODS.has(request.method)) return false;
  const site = request.headers['sec-fetch-site'];
  if (typeof site === 'string') return site !== 'same-origin' && site !== 'none';
  const origin = request.headers.origin;
  if (typeof origin !== 'string') return false;
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return true;
  }
  return host !== request.headers.host && origin !== publicOrigin;
}

/**
 * The queue dashboard (bull-board) at /admin/queues, only with ADMIN_TOKEN. Without
 * ADMIN_TOKEN configured the dashboard is not mounted at all.
 */
export async function adminQueuesRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const adminToken = deps.config.adminToken;
  if (!adminToken) return;
  const publicOrigin = new URL(deps.config.publicBaseUrl).origin;
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(ADMIN_QUEUES_PATH);
  createBullBoard({
    queues: [new BullMQAdapter(deps.queue), ...deps.deliveryQueues.map((q) => new BullMQAdapter(q))],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Connect queues' } },
  });
  await app.register(
    async (admin) => {
      admin.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
        if (crossSiteRequest(request, publicOrigin)) {
          return sendProblem(reply, {
            type: PROBLEM_TYPE_BASE + 'cross-site-request',
            title: 'Forbidden',
            status: 403,
            detail: 'The queue dashboard takes changes only from its own pages, not from another site.',
          });
        }
        if (adminTokenGiven(request, adminToken)) return;
        reply.header('www-authenticate', 'Basic realm="Connect queues", charset="UTF-8"');
        return sendProblem(reply, {
          type: PROBLEM_TYPE_BASE + 'unauthorized',
          title: 'Unauthorized',
          status: 401,
          detail: 'The queue dashboard needs the ADMIN_TOKEN (Bearer, or Basic with it as the password).',
        });
      });
      // bull-board answers its own failures (Redis down, a bug) with the error's text in a 500:
      // the dashboard's answers are problem+json like every other, and say nothing internal.
      admin.addHook('onSend', async (request, reply, payload) => {
        if (reply.statusCode < 500 || reply.getHeader('content-type')?.toString().startsWith('application/problem+json')) return payload;
        const text = typeof payload === 'string' ? payload : '';
        const outage = asServiceUnavailable({ message: /"message":"((?:[^"\\]|\\.)*)"/.exec(text)?.[1] ?? '' });
        request.log.warn({ err: text.slice(0, 300), status: reply.statusCode }, 'queue dashboard failed');
        if (outage) reply.header('retry-after', String(outage.retryAfterSeconds));
        reply.status(outage ? 503 : 500).type('application/problem+json');
        return JSON.stringify({
          type: PROBLEM_TYPE_BASE + (outage ? 'service-unavailable' : 'internal'),
          title: outage ? outage.title : 'Internal error',
          status: outage ? 503 : 500,
          detail: outage ? outage.message : 'The queue dashboard failed; it has been logged.',
          instance: instanceOf(request),
        });
      });
      await admin.register(serverAdapter.registerPlugin() as never);
    },
    { prefix: ADMIN_QUEUES_PATH },
  );
}
