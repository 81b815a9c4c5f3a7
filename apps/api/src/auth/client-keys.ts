import { createPublicKey, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, errors, type FlattenedJWSInput, type JSONWebKeySet, type JWSHeaderParameters } from 'jose';
import { LRUCache } from 'lru-cache';
import type { OAuthClientDoc } from '@connect/shared';

export interface ClientKeyOptions {
  /** How long a JWKS fetch may take. */
  jwksTimeoutMs: number;
  /**
   * Fetches of one JWKS URL made because an assertion names a key the cached set does not hold
   * (an unknown kid, or a signature no cached key verifies): a burst of `jwksRefetchBurst` at once,
   * then one per `jwksCooldownMs` on average.
   */
  jwksCooldownMs: number;
  jwksRefetchBurst: number;
  /** How long fetched keys are trusted before a refetch. */
  jwksMaxAgeMs: number;
  /** Largest JWKS document accepted. */
  jwksMaxBytes: number;
}

export const DEFAULT_CLIENT_KEY_OPTIONS: ClientKeyOptions = {
  jwksTimeoutMs: 3000,
  jwksCooldownMs: 5000,
  jwksRefetchBurst: 3,
  jwksMaxAgeMs: 10 * 60_000,
  jwksMaxBytes: 64 * 1024,
};

/**
 * A client's JWKS: jose's key selection over the set last fetched from the URL. Fetched when
 * first needed and again once older than `jwksMaxAgeMs`; fetched again at once when an
 * assertion names a key the set does not hold, within a budget per URL (ClientKeyOptions), so
 * that a client rotating its key is not refused for the seconds after a fetch (a fixed 5 s
 * cooldown refused a new kid used right after the old one), while assertions naming random kids
 * cannot make the API fetch the URL more than a few times at once and one per 5 s after. The
 * same budget holds for a URL whose fetch failed: tried again within it, not at every assertion.
 * Concurrent fetches of one URL are one fetch. No redirects, bounded in time and size.
 */
export interface RemoteKeySet {
  (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<KeyObject | CryptoKey | Uint8Array>;
  /**
   * Fetches the set again, for a key it may have gained since (a signature no cached key
   * verifies): true once fetched, false when the budget says not now. A fetch under way is awaited
   * instead, free.
   */
  refetch(): Promise<boolean>;
}

export function remoteKeySet(url: string, options: ClientKeyOptions, now: () => number = Date.now): RemoteKeySet {
  let local: ReturnType<typeof createLocalJWKSet> | undefined;
  let fetchedAt = 0;
  let pending: Promise<void> | undefined;
  /** Why the last fetch failed, and when; undefined once one succeeds. */
  let failure: { error: Error; at: number } | undefined;
  // The budget of refetches: a token bucket, full at first.
  let tokens = options.jwksRefetchBurst;
  let filledAt = now();
  const load = (): Promise<void> =>
    (pending ??= fetchKeySet(url, options)
      .then(
        (set) => {
          local = createLocalJWKSet(set);
          fetchedAt = now();
          failure = undefined;
        },
        (error: Error) => {
          failure = { error, at: now() };
          throw error;
        },
      )
      .finally(() => {
        pending = undefined;
      }));
  const spend = (): boolean => {
    const t = now();
    tokens = Math.min(options.jwksRefetchBurst, tokens + (options.jwksCooldownMs > 0 ? (t - filledAt) / options.jwksCooldownMs : Infinity));
    filledAt = t;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  };
  const refetch = async (): Promise<boolean> => {
    if (pending) {
      await pending;
      return true;
    }
    if (!spend()) return false;
    await load();
    return true;
  };
  /**
   * The set's first fetch, and its renewal once older than jwksMaxAgeMs. After a failed fetch,
   * each try spends the refetch budget, and without budget the request is refused with the last
   * failure, unfetched: a URL that fails (or that answers no key set: an API's own /metrics)
   * was fetched again for every assertion naming the client, 30 fetches in 1.6 s.
   */
  const ensureLoaded = async (): Promise<void> => {
    if (pending) return pending;
    if (failure && !spend()) {
      const ago = Math.round((now() - failure.at) / 1000);
      throw new errors.JOSEError(`the JWKS URL failed ${ago} s ago (${failure.error.message}); not fetched again yet (one try per ${options.jwksCooldownMs / 1000} s)`);
    }
    return load();
  };
  const getKey = async (header: JWSHeaderParameters, token: FlattenedJWSInput) => {
    if (!local || now() - fetchedAt > options.jwksMaxAgeMs) await ensureLoaded();
    try {
      return await local!(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey) || !(await refetch())) throw err;
      return local!(header, token);
    }
  };
  return Object.assign(getKey, { refetch });
}

async function fetchKeySet(url: string, options: ClientKeyOptions): Promise<JSONWebKeySet> {
  const res = await fetchLimited(url, { headers: { accept: 'application/json, application/jwk-set+json' }, redirect: 'manual', signal: AbortSignal.timeout(options.jwksTimeoutMs) }, options.jwksMaxBytes);
  if (res.status !== 200) throw new errors.JOSEError(`the JWKS URL answered ${res.status}, not 200`);
  try {
    return (await res.json()) as JSONWebKeySet;
  } catch {
    throw new errors.JWKSInvalid('the JWKS document is not JSON');
  }
}

/**
 * The key that checks a client's assertions: its static public key (parsed once)
 * or its JWKS URL's key set (remoteKeySet). Both are kept per key or URL, bounded
 * like the API's other caches.
 */
export class ClientKeys {
  private readonly pemKeys = new LRUCache<string, KeyObject>({ max: 10_000 });
  private readonly jwksSets = new LRUCache<string, RemoteKeySet>({ max: 10_000 });

  constructor(private readonly options: ClientKeyOptions = DEFAULT_CLIENT_KEY_OPTIONS) {}

  keyFor(client: OAuthClientDoc): KeyObject | RemoteKeySet {
    if (client.public_key_pem) {
      let key = this.pemKeys.get(client.public_key_pem);
      if (!key) {
        key = createPublicKey(client.public_key_pem);
        this.pemKeys.set(client.public_key_pem, key);
      }
      return key;
    }
    const url = client.jwks_url!;
    let set = this.jwksSets.get(url);
    if (!set) {
      set = remoteKeySet(url, this.options);
      this.jwksSets.set(url, set);
    }
    return set;
  }
}

async function fetchLimited(url: string, init: RequestInit, maxBytes: number): Promise<Response> {
  const res = await fetch(url, init);
  const declared = Number(res.headers.get('content-length') ?? 0);
  if (declared > maxBytes) {
    await res.body?.cancel();
    throw new Error('JWKS document too large');
  }
  const reader = res.body?.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (reader) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel();
        throw new Error('JWKS document too large');
      }
      chunks.push(value);
    }
  }
  return new Response(Buffer.concat(chunks), { status: res.status, headers: res.headers });
}
