import { generateKeyPairSync } from 'node:crypto';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { algorithmFor, InvalidPrivateKeyError } from './access-token-source.ts';
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
    ['an X25519 key (key agreement, no JWS algorithm)', generateKeyPairSync('x25519').privateKey, /holds an X25519 key, which cannot sign/],
  ])('%s', (_name, privateKey, reason) => {
    const error = keyError(privateKey);
    expect(error).toBeInstanceOf(InvalidPrivateKeyError);
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(/^privateKey must be a PEM private key \(PKCS#8 or PKCS#1\) or a private KeyObject; the value given /);
    expect(error.reason).toMatch(reason);
    // In words, not OpenSSL's "error:1E08010C:DECODER routines::unsupported".
    expect(error.message).not.toMatch(/DECODER routines/);
  });

  // The server verifies RS256, PS256, ES256 and EdDSA only (apps/api/src/auth/client-assertion.ts):
  // such a key was taken, signed ES384/ES512, and every call failed later as "Client authentication failed".
  it.each([
    ['a P-384 EC key (it signed ES384)', generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey, /holds a P-384 EC key, which signs ES384/],
    ['a P-521 EC key (it signed ES512)', generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey, /holds a P-521 EC key, which signs ES512/],
    ['a secp256k1 EC key', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey, /holds an EC key on curve secp256k1/],
    ['a 1024-bit RSA key (refused by jose at the first token request, as a TypeError from a call)', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey, /holds an RSA key of 1024 bits/],
    ['a 1024-bit RSA-PSS key', generateKeyPairSync('rsa-pss', { modulusLength: 1024 }).privateKey, /holds an RSA-PSS key of 1024 bits/],
    ['an Ed448 key', generateKeyPairSync('ed448').privateKey, /holds an Ed448 key/],
  ])('%s is refused at construction, naming the keys the server accepts and what to do', (_name, privateKey, reason) => {
    const error = keyError(privateKey);
    expect(error).toBeInstanceOf(InvalidPrivateKeyError);
    expect(error.reason).toMatch(reason);
    expect(error.reason).toContain('use an RSA key of 2048 bits or more, a P-256 EC key or an Ed25519 key');
    expect(error.reason).toMatch(/register its public key/);
    expect(() => algorithmFor(privateKey)).toThrow(/^no client assertion the server accepts can be signed with an? /);
  });

  it('PKCS#8, PKCS#1 and SEC1 private keys and private KeyObjects are taken', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const accepted = [privatePem, rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), ec.export({ type: 'sec1', format: 'pem' }).toString(), ec, generateKeyPairSync('ed25519').privateKey, generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).privateKey];
    for (const privateKey of accepted) {
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

/** An HTTP server on a port of its own (listen(0)); `close` ends it and every connection it holds. */
async function httpServer(handle: RequestListener): Promise<{ baseUrl: string; close: () => Promise<void> }> {
  const server = createHttpServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    baseUrl: `http://127.0.0.1:${port}/v1/connect/server`,
    close: () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      return closed;
    },
  };
}

/** A TCP server that accepts connections and says nothing: an https request to it is still connecting (no TLS handshake). */
async function silentServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('ConnectClient: timeoutMs on the default transport', () => {
  it('a server that never answers: the call fails with the timeout error, a ConnectNetworkError naming the headers timeout', async () => {
    const server = await httpServer(() => {});
    try {
      const error = await new ConnectClient({ ...options, baseUrl: server.baseUrl, timeoutMs: 300, maxRetries: 0 }).getUser('x').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectNetworkError);
      expect((error as ConnectNetworkError).message).toBe('POST /v1/connect/server/oauth/token: Headers Timeout Error');
      expect(((error as ConnectNetworkError).cause as { code?: string }).code).toBe('UND_ERR_HEADERS_TIMEOUT');
    } finally {
      await server.close();
    }
  });

  it('a TLS handshake never answered: the connect timeout error, as undici words it', async () => {
    const { port, close } = await silentServer();
    try {
      const error = await new ConnectClient({ ...options, baseUrl: `https://127.0.0.1:${port}/v1/connect/server`, timeoutMs: 300, maxRetries: 0 }).getUser('x').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectNetworkError);
      expect((error as ConnectNetworkError).message).toBe(`POST /v1/connect/server/oauth/token: Connect Timeout Error (attempted address: 127.0.0.1:${port}, timeout: 300ms)`);
    } finally {
      await close();
    }
  });

  it('bounds the whole exchange, as with a caller\'s fetch: a body trickling in every 100 ms ends the call with the body timeout (it ran for as long as the server kept sending)', async () => {
    const trickles = new Set<NodeJS.Timeout>();
    const server = await httpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"access_token":"');
      const trickle = setInterval(() => res.write('a'), 100);
      trickles.add(trickle);
      res.on('close', () => clearInterval(trickle));
    });
    try {
      const error = await new ConnectClient({ ...options, baseUrl: server.baseUrl, timeoutMs: 300, maxRetries: 0 }).getUser('x').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectNetworkError);
      expect((error as ConnectNetworkError).message).toBe('POST /v1/connect/server/oauth/token: Body Timeout Error');
    } finally {
      for (const trickle of trickles) clearInterval(trickle);
      await server.close();
    }
  });
});

describe('ConnectClient options: audience', () => {
  it.each(['not a url', '/v1/connect/server/oauth/token', 'ftp://connect.example.org/oauth/token', 'https://user:S3cretPW@connect.example.org/oauth/token', 'https://connect.example.org/oauth/token?k=S3cretPW', ''])(
    '%j is refused at construction with a TypeError naming audience, quoting no secret',
    (audience) => {
      const make = () => new ConnectClient({ ...options, audience });
      expect(make).toThrow(TypeError);
      expect(make).toThrow(/^audience must /);
      expect(make).not.toThrow(/S3cretPW/);
    },
  );

  it('an absolute http(s) URL is taken as given (the server compares it exactly)', () => {
    expect(new ConnectClient({ ...options, audience: 'https://connect.example.org/v1/connect/server/oauth/token/' }).audience).toBe('https://connect.example.org/v1/connect/server/oauth/token/');
  });
});
