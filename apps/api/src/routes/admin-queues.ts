import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { PROBLEM_TYPE_BASE } from '@connect/shared';
import type { ApiDeps } from '../api-deps.ts';
import { sendProblem } from '../error-handler.ts';

export const ADMIN_QUEUES_PATH = '/admin/queues';

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** `Authorization: Bearer <ADMIN_TOKEN>`, or Basic with ADMIN_TOKEN as the password (what a browser prompts for). */
export function adminTokenGiven(request: FastifyRequest, adminToken: string): boolean {
  const header = request.headers.authorization ?? '';
  const [scheme, value] = header.split(' ', 2);
  if (!value) return false;
  if (/^bearer$/i.test(scheme!)) return sameSecret(value, adminToken);
  if (/^basic$/i.test(scheme!)) {
    const decoded = Buffer.from(value, 'base64').toString();
    const colon = decoded.indexOf(':');
    return colon >= 0 && sameSecret(decoded.slice(colon + 1), adminToken);
  }
  return false;
}

/**
 * The queue dashboard (bull-board) at /admin/queues, only with ADMIN_TOKEN. Without
 * ADMIN_TOKEN configured the dashboard is not mounted at all.
 */
export async function adminQueuesRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const adminToken = deps.config.adminToken;
  if (!adminToken) return;
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
        if (adminTokenGiven(request, adminToken)) return;
        reply.header('www-authenticate', 'Basic realm="Connect queues", charset="UTF-8"');
        return sendProblem(reply, {
          type: PROBLEM_TYPE_BASE + 'unauthorized',
          title: 'Unauthorized',
          status: 401,
          detail: 'The queue dashboard needs the ADMIN_TOKEN (Bearer, or Basic with it as the password).',
        });
      });
      await admin.register(serverAdapter.registerPlugin() as never);
    },
    { prefix: ADMIN_QUEUES_PATH },
  );
}
