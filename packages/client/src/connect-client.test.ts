import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { InvalidPrivateKeyError } from './access-token-source.ts';
import { ConnectNetworkError } from './connect-api-errors.ts';
import { ConnectClient } from './connect-client.ts';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const privatePem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const options = { baseUrl: 'http://127.0.0.1:3000/v1/connect/server', clientId: 'c-1', privateKey: privatePem };

/** A port nothing listens on: bound by listen(0), then closed, so a connection to it is refused. */
async function refusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('ConnectClient options: baseUrl', () => {
  it.each(['not a url', '127.0.0.1:3000/v1/connect/server', 'localhost:3000', '/v1/connect/server', 'ftp://connect.example.org/v1', 'http://x.example/v1?org=1', ''])(
    '%j is refused at construction with a TypeError naming baseUrl',
    (baseUrl) => {
      const make = () => new ConnectClient({ ...options, baseUrl });
      expect(make).toThrow(TypeError);
      expect(make).toThrow(/^baseUrl (must|is required)/);
    },
  );

  it.each(['https://user:S3cretPW@connect.example.org/v1/connect/server', 'https://connect.example.org/v1?api_key=S3cretPW', 'https://connect.example.org/v1#S3cretPW', 'htp://user:S3cretPW@x'])(
    '%j is refused without quoting its password, query or fragment',
    (baseUrl) => {
      let message = '';
      try {
        new ConnectClient({ ...options, baseUrl });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/^baseUrl must/);
      expect(message).not.toContain('S3cretPW');
    },
  );

  it.each([
    ['maxRetries', NaN],
    ['maxRetries', -1],
    ['maxRetries', 1.5],
    ['maxRetryWaitMs', NaN],
    ['timeoutMs', 0],
  ])('%s: %s is refused at construction with a TypeError naming it (NaN retried without end)', (name, value) => {
    expect(() => new ConnectClient({ ...options, [name]: value })).toThrow(new RegExp(`^${name} must be a whole number`));
  });

  it('getUser and deactivateUser say plainly that "." and ".." cannot travel in a URL path', async () => {
    const client = new ConnectClient(options);
    for (const id of ['.', '..']) {
      await expect(client.getUser(id)).rejects.toThrow(/cannot be sent in a URL path/);
      await expect(client.deactivateUser(id)).rejects.toThrow(/cannot be sent in a URL path/);
    }
  });

  it('an absolute http(s) URL is taken, without its trailing slashes', () => {
    const client = new ConnectClient({ ...options, baseUrl: 'https://connect.example.org/v1/connect/server//' });
    expect(client.baseUrl).toBe('https://connect.example.org/v1/connect/server');
    expect(client.tokenUrl).toBe('https://connect.example.org/v1/connect/server/oauth/token');
  });
});

describe('ConnectClient options: privateKey says what it was given instead', () => {
  const keyError = (privateKey: unknown): InvalidPrivateKeyError => {
    try {
      new ConnectClient({ ...options, privateKey: privateKey as string });
    } catch (err) {
      return err as InvalidPrivateKeyError;
    }
    throw new Error('the constructor accepted the key');
  };

  it.each([
    ['a public key (SPKI PEM)', rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString(), /holds a public key/],
    ['a public key (PKCS#1 PEM)', rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString(), /holds a public key/],
    ['a public KeyObject', rsa.publicKey, /is a public KeyObject/],
    ['text that is not PEM', 'hello world\n', /is not PEM/],
    ['an empty string', '', /is empty/],
    ['an encrypted private key', rsa.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'secret' }).toString(), /passphrase-protected/],
    ['an X25519 key (key agreement, no JWS algorithm)', generateKeyPairSync('x25519').privateKey, /no client assertion can be signed with \(unsupported key type x25519/],
  ])('%s', (_name, privateKey, reason) => {
    const error = keyError(privateKey);
    expect(error).toBeInstanceOf(InvalidPrivateKeyError);
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(/^privateKey must be a PEM private key \(PKCS#8 or PKCS#1\) or a private KeyObject; the value given /);
    expect(error.reason).toMatch(reason);
    // In words, not OpenSSL's "error:1E08010C:DECODER routines::unsupported".
    expect(error.message).not.toMatch(/DECODER routines/);
  });

  it('PKCS#8, PKCS#1 and SEC1 private keys and private KeyObjects are taken', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    for (const privateKey of [privatePem, rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), ec.export({ type: 'sec1', format: 'pem' }).toString(), ec]) {
      expect(() => new ConnectClient({ ...options, privateKey })).not.toThrow();
    }
  });
});

describe('ConnectClient: a server that cannot be reached', () => {
  it.each([
    ['the default transport', {}],
    ["a caller's fetch", { fetch: globalThis.fetch }],
  ])('a refused connection is a ConnectNetworkError once the retries are spent (%s)', async (_name, transport) => {
    const port = await refusedPort();
    const client = new ConnectClient({ ...options, ...transport, baseUrl: `http://127.0.0.1:${port}/v1/connect/server`, maxRetries: 0 });
    const error = await client.getUser('x').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectNetworkError);
    expect((error as ConnectNetworkError).message).toMatch(/^POST \/v1\/connect\/server\/oauth\/token: .*ECONNREFUSED/);
  });
});
