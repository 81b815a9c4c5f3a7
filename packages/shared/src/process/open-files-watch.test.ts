import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { parseOpenFilesLimit, watchOpenFiles, type OpenFiles } from './open-files-watch.ts';

/** The watch's lines, as [level, msg]. */
function capture() {
  const lines: [number, string][] = [];
  const log = pino(new Writable({ write: (chunk: Buffer, _e, done) => (lines.push([JSON.parse(chunk.toString()).level, JSON.parse(chunk.toString()).msg]), done()) }));
  return { log, lines };
}

describe('watchOpenFiles: file descriptors running out, said in the log', () => {
  it('reads the soft limit of /proc/PID/limits, and none when unlimited', () => {
    const limits = 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 1048576              files\n';
    expect(parseOpenFilesLimit(limits)).toBe(1024);
    expect(parseOpenFilesLimit(limits.replace('1024 ', 'unlimited '))).toBeUndefined();
    expect(parseOpenFilesLimit('Max processes 10 10 processes')).toBeUndefined();
  });

  it('warns past 90 % of the limit, naming both figures and the way out, reminds while it lasts, and says once at info when it ends', async () => {
    const { log, lines } = capture();
    let files: OpenFiles = { open: 100, limit: 1024 };
    const watch = watchOpenFiles(log, { intervalMs: 3_600_000, remindEveryMs: 0, read: async () => files });
    await watch.check();
    expect(lines).toEqual([]);
    files = { open: 922, limit: 1024 };
    await watch.check();
    expect(lines).toHaveLength(1);
    expect(lines[0]![0]).toBe(40);
    expect(lines[0]![1]).toMatch(/^this process has 922 of its 1024 file descriptors open: .*can take no new connection.*ulimit -n/);
    await watch.check();
    expect(lines).toHaveLength(2); // reminded (remindEveryMs 0)
    files = { open: 500, limit: 1024 };
    await watch.check();
    await watch.check();
    expect(lines.slice(2)).toEqual([[30, 'file descriptors are back under 90 % of the limit (500 of 1024 open)']]);
    watch.stop();
  });

  it.runIf(process.platform === 'linux')('counts this process\'s real descriptors (Linux /proc): 50 connections more are about 100 descriptors more (both ends are in this process; other threads open and close a few meanwhile)', async () => {
    const watch = watchOpenFiles(pino({ level: 'silent' }), { intervalMs: 3_600_000 });
    const server = createServer((s) => s.on('error', () => undefined));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const before = (await watch.check())!;
    expect(before.limit).toBeGreaterThan(0);
    const port = (server.address() as { port: number }).port;
    const sockets: Socket[] = [];
    for (let i = 0; i < 50; i++) {
      const s = connect(port, '127.0.0.1');
      sockets.push(s);
      await once(s, 'connect');
    }
    await new Promise<void>((resolve) => {
      const poll = () => server.getConnections((_e, n) => (n >= 50 ? resolve() : setTimeout(poll, 10)));
      poll();
    });
    const after = (await watch.check())!;
    expect(after.open - before.open).toBeGreaterThanOrEqual(90);
    for (const s of sockets) s.destroy();
    server.close();
    watch.stop();
  });
});
