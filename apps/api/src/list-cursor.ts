import { createHmac, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { UserStatus } from '@connect/shared';
import { InvalidCursorError } from './http-errors.ts';

/**
 * GET {base}/users cursors: opaque to clients, and authenticated so that a
 * client cannot forge one (to probe another organization, or to start at an
 * arbitrary key). The cursor binds the organization and the status filter it
 * was issued for: reused with another token or filter, it is refused (400),
 * never quietly applied. Format: base64url(JSON) "." base64url(HMAC-SHA256).
 */
interface CursorState {
  /** Format version, so a later change can refuse old cursors cleanly. */
  v: 1;
  org: string;
  status: UserStatus | null;
  after: string;
}

/**
 * The HMAC key, derived from the service's token-signing key so that every API
 * instance (they share that key) accepts the others' cursors with nothing more
 * to configure; HKDF keeps the two uses apart.
 */
export function deriveCursorKey(signingKey: KeyObject): Buffer {
  const material = signingKey.export({ format: 'der', type: 'pkcs8' });
  return Buffer.from(hkdfSync('sha256', material, Buffer.alloc(0), 'connect-provisioning list cursor v1', 32));
}

const mac = (key: Buffer, payload: string) => createHmac('sha256', key).update(payload).digest();

export function encodeCursor(key: Buffer, state: Omit<CursorState, 'v'>): string {
  const payload = Buffer.from(JSON.stringify({ v: 1, ...state })).toString('base64url');
  return `${payload}.${mac(key, payload).toString('base64url')}`;
}

/** The key to continue after; InvalidCursorError when the cursor was altered or issued for another list. */
export function decodeCursor(key: Buffer, cursor: string, expected: { org: string; status: UserStatus | null }): string {
  const [payload, signature, ...rest] = cursor.split('.');
  if (!payload || !signature || rest.length > 0) throw new InvalidCursorError();
  // Decoding base64url is lenient (padding, "+/" for "-_", stray characters are skipped): a signature
  // is taken only in the one spelling encodeCursor gives, so no altered cursor passes.
  const given = Buffer.from(signature, 'base64url');
  if (given.toString('base64url') !== signature) throw new InvalidCursorError();
  const wanted = mac(key, payload);
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) throw new InvalidCursorError();
  let state: CursorState;
  try {
    state = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as CursorState;
  } catch {
    throw new InvalidCursorError();
  }
  if (state.v !== 1 || state.org !== expected.org || state.status !== expected.status || typeof state.after !== 'string') {
    throw new InvalidCursorError();
  }
  return state.after;
}
