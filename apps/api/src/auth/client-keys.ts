import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, customFetch, type RemoteJWKSet } from 'jose';
import { LRUCache } from 'lru-cache';
import type { OAuthClientDoc } from '@connect/shared';

export interface ClientKeyOptions {
  /** How long a JWKS fetch may take. */
  jwksTimeoutMs: number;
  /** Minimum time between two fetches of one JWKS URL (an unknown kid triggers one). */
  jwksCooldownMs: number;
  /** How long fetched keys are trusted before a refetch. */
  jwksMaxAgeMs: number;
  /** Largest JWKS document accepted. */
  jwksMaxBytes: number;
}

export const DEFAULT_CLIENT_KEY_OPTIONS: ClientKeyOptions = {
  jwksTimeoutMs: 3000,
  jwksCooldownMs: 5000,
  jwksMaxAgeMs: 10 * 60_000,
  jwksMaxBytes: 64 * 1024,
};

/**
 * The key that checks a client's assertions: its static public key (parsed once)
 * or its JWKS URL through jose's remote key set (cached, refetched on an unknown
 * kid, no redirects), with a fetch that enforces a size limit. Both are kept
 * per key or URL, bounded like the API's other caches.
 */
export class ClientKeys {
  private readonly pemKeys = new LRUCache<string, KeyObject>({ max: 10_000 });
  private readonly jwksSets = new LRUCache<string, RemoteJWKSet>({ max: 10_000 });

  constructor(private readonly options: ClientKeyOptions = DEFAULT_CLIENT_KEY_OPTIONS) {}

  keyFor(client: OAuthClientDoc): KeyObject | RemoteJWKSet {
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
      set = createRemoteJWKSet(new URL(url), {
        timeoutDuration: this.options.jwksTimeoutMs,
        cooldownDuration: this.options.jwksCooldownMs,
        cacheMaxAge: this.options.jwksMaxAgeMs,
        [customFetch]: (input, init) => fetchLimited(input, init, this.options.jwksMaxBytes),
      });
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
