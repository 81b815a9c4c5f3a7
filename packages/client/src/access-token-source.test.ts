import { generateKeyPairSync } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { AccessTokenSource, algorithmFor, signClientAssertion } from './access-token-source.ts';

describe('AccessTokenSource', () => {
  it('shares one issue among concurrent callers and caches until shortly before expiry', async () => {
    let now = 1_000_000;
    let issued = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const source = new AccessTokenSource(async () => {
      issued++;
      await gate;
      return { accessToken: `t${issued}`, expiresInSeconds: 3600 };
    }, () => now);
    const all = Promise.all(Array.from({ length: 50 }, () => source.get()));
    release();
    expect(new Set(await all)).toEqual(new Set(['t1']));
    expect(issued).toBe(1);
    now += 3600_000 - 61_000;
    expect(await source.get()).toBe('t1');
    now += 2_000; // inside the last minute: refreshed before the server would refuse it
    expect(await source.get()).toBe('t2');
  });

  it('invalidate drops only the token that failed, so many 401s cause one refresh', async () => {
    let issued = 0;
    const source = new AccessTokenSource(async () => ({ accessToken: `t${++issued}`, expiresInSeconds: 3600 }));
    const stale = await source.get();
    source.invalidate(stale);
    const fresh = await source.get();
    source.invalidate(stale); // a late 401 for the old token
    expect(await source.get()).toBe(fresh);
    expect(issued).toBe(2);
  });

  it('a failed issue is not cached: the next call tries again', async () => {
    let calls = 0;
    const source = new AccessTokenSource(async () => {
      if (++calls === 1) throw new Error('down');
      return { accessToken: 'ok', expiresInSeconds: 60 };
    });
    await expect(source.get()).rejects.toThrow('down');
    expect(await source.get()).toBe('ok');
  });
});

describe('client assertion', () => {
  it('RS256 for RSA, ES256 for P-256, EdDSA for Ed25519', () => {
    expect(algorithmFor(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey)).toBe('RS256');
    expect(algorithmFor(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)).toBe('ES256');
    expect(algorithmFor(generateKeyPairSync('ed25519').privateKey)).toBe('EdDSA');
  });

  it('iss = sub = client id, aud = token URL, a fresh jti, 60 s, kid when given', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const input = { clientId: 'c-1', tokenUrl: 'https://x.example/v1/connect/server/oauth/token', key, keyId: 'k1' };
    const [a, b] = [await signClientAssertion(input), await signClientAssertion(input)];
    const claims = decodeJwt(a);
    expect(claims).toMatchObject({ iss: 'c-1', sub: 'c-1', aud: input.tokenUrl });
    expect(claims.exp! - claims.iat!).toBe(60);
    expect(claims.jti).not.toBe(decodeJwt(b).jti);
    expect(decodeProtectedHeader(a)).toMatchObject({ alg: 'ES256', kid: 'k1' });
  });
});
