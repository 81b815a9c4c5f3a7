import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { undiciTransport } from './http-transport.ts';

describe('undiciTransport: the caller\'s signal', () => {
  it('abandons an attempt still connecting at once (undici hears of an abort only once connected, or when its connect timeout ends it)', async () => {
    // Accepts TCP and says nothing: an https request stays in its TLS handshake.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket.on('error', () => {})));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const controller = new AbortController();
    try {
      const attempt = undiciTransport(60_000)(`https://127.0.0.1:${port}/v1/connect/server/oauth/token`, { method: 'POST', headers: {}, signal: controller.signal }).catch((e: unknown) => e);
      setTimeout(() => controller.abort(new Error('the caller gave up')), 100);
      expect(await attempt).toEqual(new Error('the caller gave up'));
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});
