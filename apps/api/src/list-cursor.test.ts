import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidCursorError } from './http-errors.ts';
import { decodeCursor, deriveCursorKey, encodeCursor } from './list-cursor.ts';

const key = deriveCursorKey(generateKeyPairSync('ed25519').privateKey);
const bound = { org: 'org_1', status: null };

describe('list cursors: opaque, authenticated, bound to their list', () => {
  it('round-trips the key to continue after', () => {
    expect(decodeCursor(key, encodeCursor(key, { ...bound, after: 'p-099' }), bound)).toBe('p-099');
  });

  it('is the same on every instance sharing the signing key, and different under another key', () => {
    const pem = generateKeyPairSync('ed25519').privateKey;
    expect(deriveCursorKey(pem).equals(deriveCursorKey(pem))).toBe(true);
    const otherKey = deriveCursorKey(generateKeyPairSync('ed25519').privateKey);
    expect(() => decodeCursor(otherKey, encodeCursor(key, { ...bound, after: 'x' }), bound)).toThrow(InvalidCursorError);
  });

  it('refuses an altered payload, an altered MAC, another organization or another status filter', () => {
    const cursor = encodeCursor(key, { ...bound, after: 'p-099' });
    const [payload, mac] = cursor.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify({ v: 1, ...bound, after: 'p-000' })).toString('base64url');
    expect(() => decodeCursor(key, `${forged}.${mac}`, bound)).toThrow(InvalidCursorError);
    expect(() => decodeCursor(key, `${payload}.${mac.slice(1)}`, bound)).toThrow(InvalidCursorError);
    expect(() => decodeCursor(key, cursor, { org: 'org_2', status: null })).toThrow(InvalidCursorError);
    expect(() => decodeCursor(key, cursor, { org: 'org_1', status: 'active' })).toThrow(InvalidCursorError);
    expect(() => decodeCursor(key, 'not-a-cursor', bound)).toThrow(InvalidCursorError);
  });
});
