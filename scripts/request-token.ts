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

const { values } = parseArgs({
  options: {
    'client-id': { type: 'string' },
    'private-key-file': { type: 'string' },
    'token-url': { type: 'string', default: 'http://localhost:3000/v1/connect/server/oauth/token' },
  },
});
const clientId = values['client-id'];
const keyFile = values['private-key-file'];
const tokenUrl = values['token-url']!;
if (!clientId || !keyFile) {
  console.error('usage: tsx scripts/request-token.ts --client-id ID --private-key-file FILE [--token-url URL]');
  process.exit(2);
}
const now = Math.floor(Date.now() / 1000);
const assertion = await new SignJWT({ jti: randomUUID() })
  .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
  .setIssuer(clientId)
  .setSubject(clientId)
  .setAudience(tokenUrl)
  .setIssuedAt(now)
  .setExpirationTime(now + 60)
  .sign(createPrivateKey(readFileSync(keyFile, 'utf8')));
const res = await fetch(tokenUrl, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    grant_type: 'client_credentials',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
  }),
});
console.log(JSON.stringify(await res.json(), null, 2));
process.exit(res.ok ? 0 : 1);
