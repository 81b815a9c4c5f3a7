import { afterEach, describe, expect, it } from 'vitest';
import { MongoClient, MongoNetworkError } from 'mongodb';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { databaseUrl } from '../support/harness.ts';
import { eventually } from '../worker/callback-receiver.ts';

/**
 * The MongoDB driver's patch (patches/mongodb@7.8.0.patch; docs/operations.md, "The MongoDB driver
 * patch"). A socket destroyed whose 'close' is not emitted yet (the moment between the two is one
 * turn of the event loop, and a database that drops every connection at once makes it likely)
 * takes no write and emits neither 'drain' nor 'error'. The driver wrote a command there and waited
 * for 'drain': the command never ended. When that command was the monitor's heartbeat, the monitor
 * never checked the server again, and once an operation's network error had marked the server
 * Unknown, every operation of the client failed server selection for as long as the process lived
 * (a worker, cut from its database for a moment under load in CI, never delivered again).
 *
 * These tests reach into the driver's internals (the topology's servers, a monitor's connection):
 * that is where the fault is, and no public API destroys a socket at that moment.
 */

interface DriverConnection {
  socket: { destroy(): void; destroyed: boolean };
  closed: boolean;
  command(ns: { db: string; collection: string; toString(): string }, cmd: Record<string, unknown>, options: Record<string, unknown>): Promise<unknown>;
}
interface DriverServer {
  description: { type: string };
  monitor?: { connection: DriverConnection | null };
}

function serverOf(client: MongoClient): DriverServer {
  const servers = (client as unknown as { topology?: { s: { servers: Map<string, DriverServer> } } }).topology?.s.servers;
  const server = servers && [...servers.values()][0];
  if (!server) throw new Error('the client knows no server (the driver\'s internals moved: see this file\'s comment)');
  return server;
}

/** Settles with what `promise` gave, or with 'still waiting' if it has not settled in `ms`. */
function outcomeWithin(promise: Promise<unknown>, ms: number): Promise<unknown> {
  return Promise.race([promise.then((v) => ({ answered: v }), (err: unknown) => err), new Promise((r) => setTimeout(() => r('still waiting'), ms).unref())]);
}

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close().catch(() => undefined);
});

describe('the MongoDB driver, a socket destroyed whose close is not emitted yet', () => {
  it('a command written on that connection fails at once as a network error, instead of waiting for a drain that never comes', async () => {
    const client = new MongoClient(databaseUrl('driver_closing'), { serverSelectionTimeoutMS: 10_000 });
    open.push(client);
    await client.db().command({ ping: 1 });
    const connection = await eventually(() => serverOf(client).monitor?.connection ?? false, 15_000, 50);
    connection.socket.destroy();
    // Same turn of the event loop: destroyed, its 'close' still to come.
    expect(connection.closed).toBe(false);
    const outcome = await outcomeWithin(connection.command({ db: 'admin', collection: '$cmd', toString: () => 'admin.$cmd' }, { ping: 1 }, {}), 10_000);
    expect(outcome).toBeInstanceOf(MongoNetworkError);
    expect(String((outcome as Error).message)).toMatch(/closed/);
    expect(connection.closed).toBe(true);
  });

  it('the monitor whose heartbeat met that socket checks again, so the client finds its server after the database drops every connection', async () => {
    const url = new URL(databaseUrl('driver_closing'));
    const link: TcpProxy = await startTcpProxy(Number(url.port), url.hostname);
    open.push(link);
    url.port = String(link.port);
    // A heartbeat every 500 ms (the least the driver takes), so the test need not wait 10 s for one.
    const client = new MongoClient(url.toString(), { serverSelectionTimeoutMS: 2_000, heartbeatFrequencyMS: 500 });
    open.push(client);
    await client.db().command({ ping: 1 });
    await eventually(() => serverOf(client).monitor?.connection ?? false, 15_000, 50);

    // The next heartbeat starts on a connection whose socket is destroyed and not yet closed: the
    // started event is emitted before the driver looks at the connection, in the same turn.
    let destroyedAtHeartbeat = false;
    const heartbeats: string[] = [];
    client.on('serverHeartbeatFailed', () => heartbeats.push('failed'));
    client.on('serverHeartbeatSucceeded', () => heartbeats.push('succeeded'));
    client.once('serverHeartbeatStarted', () => {
      const connection = serverOf(client).monitor?.connection;
      if (connection && !connection.closed) {
        connection.socket.destroy();
        destroyedAtHeartbeat = true;
      }
    });
    await eventually(() => destroyedAtHeartbeat, 15_000, 20);
    // That heartbeat fails (it hung for good before the patch), and the next finds the server.
    await eventually(() => expect(heartbeats.slice(0, 2)).toEqual(['failed', 'succeeded']), 15_000, 50);

    // Then the database drops every connection: the next operation's network error marks the
    // server Unknown, and only a heartbeat brings it back.
    link.cut();
    await expect(client.db().command({ ping: 1 })).rejects.toThrow();
    await eventually(() => serverOf(client).description.type === 'Unknown', 15_000, 50);
    link.restore();
    await eventually(() => client.db().command({ ping: 1 }), 20_000, 200);
    expect(serverOf(client).description.type).not.toBe('Unknown');
  });
});
