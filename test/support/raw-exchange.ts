import { connect } from 'node:net';

/**
 * Writes `first` on a raw connection, then `later.bytes` after `later.afterMs`, without closing our
 * side (a half-closed connection ends a request still being handled); resolves with everything the
 * server wrote until it closed the connection. For what fetch() cannot send: slow or stray bytes.
 */
export function rawExchange(port: number, first: string, later?: { bytes: string; afterMs: number }): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(first);
      if (later) setTimeout(() => socket.write(later.bytes), later.afterMs);
    });
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (received += d));
    // The server may reset the connection after its answer (it stops reading a refused request): the answer is still read.
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(received));
  });
}
