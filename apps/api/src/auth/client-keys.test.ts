import { createServer, type Server } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CLIENT_KEY_OPTIONS, remoteKeySet } from './client-keys.ts';

let server: Server;
let url: string;
let fetches = 0;
/** Held answers: while set, the server answers only once it resolves. */
let gate: Promise<void> | undefined;
let jwks: { keys: object[] } = { keys: [] };

beforeAll(async () => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] };
  server = createServer((req, res) => {
    fetches++;
    if (req.url === '/failing') return void res.writeHead(500).end('down');
    void (gate ?? Promise.resolve()).then(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}/jwks.json`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** A clock the test moves. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

describe('remoteKeySet: refetches of a JWKS on a key it does not hold, within a budget', () => {
  it('a burst of 3 refetches at once, then one per 5 s, and never more than the burst saved up', async () => {
    const c = clock();
    const set = remoteKeySet(url, DEFAULT_CLIENT_KEY_OPTIONS, c.now);
    await set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' });
    const base = fetches;
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await set.refetch());
    expect(answers).toEqual([true, true, true, false, false]);
    expect(fetches - base).toBe(3);
    c.advance(4_999);
    expect(await set.refetch()).toBe(false);
    c.advance(1);
    expect(await set.refetch()).toBe(true);
    expect(await set.refetch()).toBe(false);
    // An hour idle saves up the burst again, not more.
    c.advance(3_600_000);
    const later = [];
    for (let i = 0; i < 4; i++) later.push(await set.refetch());
    expect(later).toEqual([true, true, true, false]);
    expect(fetches - base).toBe(7);
  });

  it('an unknown kid fetches the set again at once, right after a fetch, and finds a key published since', async () => {
    const c = clock();
    const set = remoteKeySet(url, DEFAULT_CLIENT_KEY_OPTIONS, c.now);
    await set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' });
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const before = jwks;
    jwks = { keys: [...before.keys, { ...(await exportJWK(publicKey)), kid: 'k2', alg: 'ES256' }] };
    try {
      await expect(set({ alg: 'ES256', kid: 'k2' }, { payload: '', signature: '' })).resolves.toBeDefined();
      // A kid it still does not hold, once the budget is spent: refused without a fetch.
      const base = fetches;
      for (let i = 0; i < 3; i++) await expect(set({ alg: 'ES256', kid: `nope-${i}` }, { payload: '', signature: '' })).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
      expect(fetches - base).toBe(2);
    } finally {
      jwks = before;
    }
  });

  it('concurrent refetches share one fetch and spend one unit of the budget', async () => {
    const c = clock();
    const set = remoteKeySet(url, DEFAULT_CLIENT_KEY_OPTIONS, c.now);
    await set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' });
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    const base = fetches;
    const all = Array.from({ length: 10 }, () => set.refetch());
    // Every call is waiting on the one fetch the first started.
    await new Promise((r) => setTimeout(r, 50));
    release();
    gate = undefined;
    expect(await Promise.all(all)).toEqual(Array(10).fill(true));
    expect(fetches - base).toBe(1);
    expect([await set.refetch(), await set.refetch(), await set.refetch()]).toEqual([true, true, false]);
  });
});

describe('remoteKeySet: a JWKS URL that fails', () => {
  it('is tried again within the same budget, not at every assertion: 30 assertions make 4 fetches, then one per 5 s, and a fetch that succeeds ends it', async () => {
    const c = clock();
    const failingUrl = url.replace('/jwks.json', '/failing');
    const set = remoteKeySet(failingUrl, DEFAULT_CLIENT_KEY_OPTIONS, c.now);
    const base = fetches;
    const errors: string[] = [];
    for (let i = 0; i < 30; i++) {
      errors.push(await set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' }).then(() => 'ok', (err: Error) => err.message));
    }
    // The first fetch, then the burst of 3; the rest are refused with the last failure, unfetched.
    expect(fetches - base).toBe(4);
    expect(errors.slice(0, 4)).toEqual(Array(4).fill('the JWKS URL answered 500, not 200'));
    expect(errors[29]).toMatch(/^the JWKS URL failed 0 s ago \(the JWKS URL answered 500, not 200\); not fetched again yet \(one try per 5 s\)$/);
    c.advance(5_000);
    await expect(set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' })).rejects.toThrow('answered 500');
    await expect(set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' })).rejects.toThrow(/failed 0 s ago/);
    expect(fetches - base).toBe(5);
  });

  it('a URL that recovers: the next try within the budget loads the set, and its keys then serve without fetching', async () => {
    const c = clock();
    let failing = true;
    const flaky = createServer((_req, res) => {
      if (failing) return void res.writeHead(503).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
    });
    await new Promise<void>((r) => flaky.listen(0, '127.0.0.1', r));
    try {
      const set = remoteKeySet(`http://127.0.0.1:${(flaky.address() as { port: number }).port}/jwks.json`, DEFAULT_CLIENT_KEY_OPTIONS, c.now);
      for (let i = 0; i < 5; i++) await expect(set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' })).rejects.toThrow();
      failing = false;
      c.advance(5_000);
      await expect(set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' })).resolves.toBeDefined();
      failing = true;
      await expect(set({ alg: 'ES256', kid: 'k1' }, { payload: '', signature: '' })).resolves.toBeDefined();
    } finally {
      await new Promise<void>((r) => flaky.close(() => r()));
    }
  });
});
