/**
 * "Nothing answers there", told before the drivers load. Loading mongoose, BullMQ and the
 * domain takes about a second on an idle machine and three or more on a busy one, which put
 * `unavailable` past the contract's 5 s (docs/operations.md, The CLI). So while they load,
 * the CLI opens a plain TCP connection to a one-host MongoDB or Redis URL and asks the
 * protocol's cheapest question (MongoDB's `hello`, Redis's `PING`):
 *
 * - refused, or a name that does not resolve: `refused`, at once;
 * - no connection, or no byte of an answer, within the budget: `silent` (a host that
 *   accepts and never answers, a stopped process, packets dropped);
 * - any answer at all (an error such as `-NOAUTH` included): `answered`, and the drivers
 *   take it from there.
 *
 * Over TLS (`rediss://`, `tls=true`) nothing is asked: only a connection that never comes is
 * judged (`silent`); once connected, the drivers judge. Anything else (the connection reset, closed without a word) is left to the drivers.
 * Node built-ins only: this runs before anything heavy is imported.
 */
import { connect } from 'node:net';

export interface HostPort {
  host: string;
  port: number;
  /** The URL asks for TLS: the probe judges the connection only, it asks nothing. */
  tls?: boolean;
}

/** Errors that mean nothing will answer at that address however long one waits. */
const FINAL = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * The one host and port of a `mongodb://` or `redis://`/`rediss://` URL; undefined for
 * anything else (several hosts, `mongodb+srv://`, Sentinel or Cluster URLs, a URL that does
 * not parse), which the drivers alone judge.
 */
export function singleHostOf(raw: string | undefined, kind: 'mongodb' | 'redis'): HostPort | undefined {
  if (!raw?.trim()) return undefined;
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    return undefined;
  }
  const schemes = kind === 'mongodb' ? ['mongodb:'] : ['redis:', 'rediss:'];
  if (!schemes.includes(url.protocol) || !url.hostname || url.hostname.includes(',')) return undefined;
  const port = url.port ? Number(url.port) : kind === 'mongodb' ? 27017 : 6379;
  const option = (name: string) => [...url.searchParams].find(([k]) => k.toLowerCase() === name)?.[1]?.toLowerCase() === 'true';
  const tls = kind === 'redis' ? url.protocol === 'rediss:' : option('tls') || option('ssl');
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port, ...(tls ? { tls } : {}) };
}

/** MongoDB's `{ hello: 1, $db: "admin" }` as an OP_MSG (wire protocol, opcode 2013), written out by hand. */
export function helloMessage(): Buffer {
  const doc = Buffer.alloc(31);
  let at = doc.writeInt32LE(31, 0);
  at = doc.writeUInt8(0x10, at); // int32 element
  at += doc.write('hello\0', at, 'latin1');
  at = doc.writeInt32LE(1, at);
  at = doc.writeUInt8(0x02, at); // string element
  at += doc.write('$db\0', at, 'latin1');
  at = doc.writeInt32LE(6, at);
  at += doc.write('admin\0', at, 'latin1');
  doc.writeUInt8(0, at);
  const header = Buffer.alloc(20);
  header.writeInt32LE(header.length + 1 + doc.length, 0); // messageLength
  header.writeInt32LE(1, 4); // requestID
  header.writeInt32LE(0, 8); // responseTo
  header.writeInt32LE(2013, 12); // OP_MSG
  header.writeUInt32LE(0, 16); // flagBits
  return Buffer.concat([header, Buffer.from([0]), doc]); // section kind 0: the body
}

const QUESTION: Record<'mongodb' | 'redis', () => Buffer> = {
  mongodb: helloMessage,
  redis: () => Buffer.from('*1\r\n$4\r\nPING\r\n'),
};

export type ProbeVerdict =
  | { kind: 'refused'; error: Error }
  | { kind: 'silent'; connected: boolean }
  | { kind: 'answered' }
  /** Something the probe does not judge (reset, closed without a word): the drivers will. */
  | { kind: 'unknown' };

/**
 * Connects once, asks the protocol's question (not over TLS), and says what came of it within
 * `budgetMs` (see the top of this file). Never rejects.
 */
export function probeDatastore(target: HostPort, kind: 'mongodb' | 'redis', budgetMs: number): Promise<ProbeVerdict> {
  return new Promise((resolve) => {
    let connected = false;
    const socket = connect({ host: target.host, port: target.port });
    const done = (verdict: ProbeVerdict) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(verdict);
    };
    const timer = setTimeout(() => done({ kind: 'silent', connected }), budgetMs);
    timer.unref();
    socket.once('connect', () => {
      connected = true;
      if (target.tls) return done({ kind: 'unknown' });
      socket.write(QUESTION[kind]());
    });
    socket.once('data', () => done({ kind: 'answered' }));
    socket.once('close', () => done({ kind: 'unknown' }));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code && FINAL.has(err.code) ? { kind: 'refused', error: err } : { kind: 'unknown' }));
  });
}
