/**
 * Gets a server access token the way an EHR backend does: signs a JWT client
 * assertion (RS256, iss = sub = client id, aud = token URL, 60 s, random jti)
 * with the client's private key and posts it to the token endpoint.
 *
 *   pnpm exec tsx scripts/request-token.ts --client-id ID --private-key-file ehr-private.pem \
 *     [--token-url http://localhost:3000/v1/connect/server/oauth/token]
 *
 * Prints the token endpoint's JSON answer.
 */
import { createPrivateKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';

const USAGE = 'usage: tsx scripts/request-token.ts --client-id ID --private-key-file FILE [--token-url URL]';
let values;
try {
  ({ values } = parseArgs({
    options: {
      'client-id': { type: 'string' },
      'private-key-file': { type: 'string' },
      'token-url': { type: 'string', default: 'http://localhost:3000/v1/connect/server/oauth/token' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (err) {
  console.error(`request-token: ${(err as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(`${USAGE}\nSigns a client assertion with the private key and prints the token endpoint's JSON answer.`);
  process.exit(0);
}
const clientId = values['client-id'];
const keyFile = values['private-key-file'];
const tokenUrl = values['token-url']!;
if (!clientId || !keyFile) {
  console.error(USAGE);
  process.exit(2);
}
/** One line on stderr, which the terminal shows even when stdout goes into $(...), then exit. */
function fail(message: string, code = 1): never {
  console.error(`request-token: ${message}`);
  process.exit(code);
}
let key;
try {
  key = createPrivateKey(readFileSync(keyFile, 'utf8'));
} catch (err) {
  fail(`cannot use --private-key-file ${keyFile}: ${(err as Error).message}`, 2);
}
const now = Math.floor(Date.now() / 1000);
const assertion = await new SignJWT({ jti: randomUUID() })
  .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
  .setIssuer(clientId)
  .setSubject(clientId)
  .setAudience(tokenUrl)
  .setIssuedAt(now)
  .setExpirationTime(now + 60)
  .sign(key);
const res = await fetch(tokenUrl, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
  }),
}).catch((err: Error) => fail(`cannot reach ${tokenUrl}: ${(err.cause as Error | undefined)?.message ?? err.message} (is the API running?)`));
const answer = (await res.json().catch(() => null)) as { error?: string; error_description?: string } | null;
console.log(JSON.stringify(answer, null, 2));
if (!res.ok) fail(`the token endpoint answered ${res.status}${answer?.error ? ` ${answer.error}: ${answer.error_description ?? ''}` : ''}`);
