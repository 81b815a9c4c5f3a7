/**
 * "Nothing listens there", told before the drivers load. Loading mongoose, BullMQ and the
 * domain takes about a second on an idle machine and three or more on a busy one, which put
 * a refused connection's `unavailable` past the contract's 5 s (docs/operations.md, The CLI).
 * So the CLI opens a plain TCP connection to a one-host MongoDB or Redis URL while they load:
 * refused, or a name that does not resolve, is the answer at once. Anything else (it connects,
 * or says nothing) is left to the drivers, which tell a silent host from a healthy one.
 * Node built-ins only: this runs before anything heavy is imported.
 */
import { connect } from 'node:net';

export interface HostPort {
  host: string;
  port: number;
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
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port };
}

/**
 * Connects once: the error when the address refuses (or does not resolve), undefined when it
 * accepts or has not answered within `ms` (then the drivers decide). Never rejects.
 */
export function refusalAt(target: HostPort, ms: number): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port: target.port });
    const done = (err?: Error) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(), ms);
    timer.unref();
    socket.once('connect', () => done());
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code && FINAL.has(err.code) ? err : undefined));
  });
}
