import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  API_VERSIONS,
  apiVersionAtLeast,
  isApiVersion,
  isWellFormedApiVersion,
  type ApiVersion,
} from '@connect/shared';
import type { AccessTokens } from '../auth/access-tokens.ts';
import type { ClientDirectory } from '../auth/client-directory.ts';
import { EndpointNotInVersionError, UnauthorizedError, UnsupportedApiVersionError } from '../http-errors.ts';

export const API_VERSION_HEADER = 'x-nabla-api-version';
export const API_VERSION_QUERY = 'nabla-api-version';

export interface RequestAuth {
  clientId: string;
  organizationId: string;
  apiVersion: ApiVersion;
}

declare module 'fastify' {
  interface FastifyRequest {
    auth?: RequestAuth;
  }
}

// RFC 6750 §2.1: "Bearer" 1*SP b64token (the scheme case-insensitive, RFC 9110 §11.1).
const BEARER = /^Bearer +([A-Za-z0-9\-_.~+/]+=*)$/i;

/** The version a request asks for (header first, then query), or undefined when it asks none. */
export function requestedApiVersion(request: FastifyRequest): ApiVersion | undefined {
  const header = request.headers[API_VERSION_HEADER];
  const query = (request.query as Record<string, unknown> | undefined)?.[API_VERSION_QUERY];
  const raw = header ?? query;
  if (raw === undefined) return undefined;
  // Asked twice in the query is as ambiguous as two headers (which arrive joined by a comma, malformed).
  if (Array.isArray(raw) && raw.length > 1) throw new UnsupportedApiVersionError(`The API version is asked ${raw.length} times in the query; send ${API_VERSION_QUERY} once (or the ${API_VERSION_HEADER} header).`);
  const value = Array.isArray(raw) ? raw[0] : raw;
  // Node joins a header sent twice with ", ": say so, rather than "malformed" of two good versions.
  if (value === header && typeof value === 'string' && value.includes(',')) {
    throw new UnsupportedApiVersionError(`The ${API_VERSION_HEADER} header holds ${value.split(',').length} values (a header sent more than once arrives joined by commas); send it once, as YYYY-MM-DD. Known: ${API_VERSIONS.join(', ')}.`);
  }
  if (typeof value !== 'string' || !isWellFormedApiVersion(value.trim())) {
    throw new UnsupportedApiVersionError(`Malformed API version; send ${API_VERSION_HEADER}: YYYY-MM-DD. Known: ${API_VERSIONS.join(', ')}.`);
  }
  const v = value.trim();
  if (!isApiVersion(v)) throw new UnsupportedApiVersionError(`Unknown API version ${v}. Known: ${API_VERSIONS.join(', ')}.`);
  return v;
}

/** The known version a request names, or undefined when it names none or one that is malformed or unknown (never throws). */
export function explicitApiVersion(request: FastifyRequest): ApiVersion | undefined {
  try {
    return requestedApiVersion(request);
  } catch {
    return undefined;
  }
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The first API version a route exists in (its `authenticate` minimum), for the OpenAPI document. */
    apiVersionSince?: ApiVersion;
  }
}

export interface AuthenticateDeps {
  tokens: AccessTokens;
  clients: ClientDirectory;
}

/**
 * onRequest hook for every {base} route but the token endpoint: a valid access
 * token of an enabled client (else 401 with a WWW-Authenticate challenge), then the
 * API version (explicit, else the organization's pinned one), echoed in the
 * response, and checked against the route's minimum.
 */
export function authenticate(deps: AuthenticateDeps, minimumVersion: ApiVersion) {
  return async function onRequest(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const authorization = request.headers.authorization ?? '';
    // RFC 6750 §3.1: a request that sent a bearer token and was refused is told `invalid_token`;
    // one that sent none (or another scheme) gets the bare challenge.
    const tokenSent = /^Bearer\s/i.test(authorization);
    const match = BEARER.exec(authorization);
    if (!match) throw new UnauthorizedError(tokenSent, tokenSent ? 'The access token is malformed.' : undefined);
    let claims;
    try {
      claims = await deps.tokens.verify(match[1]!);
    } catch {
      throw new UnauthorizedError(true, 'The access token is invalid or expired.');
    }
    const active = await deps.clients.cached(claims.clientId, claims.issuedAt);
    if (!active || active.organization._id !== claims.organizationId) {
      throw new UnauthorizedError(true, 'The access token is invalid or expired.');
    }
    const apiVersion = requestedApiVersion(request) ?? active.organization.api_version;
    reply.header(API_VERSION_HEADER, apiVersion);
    if (!apiVersionAtLeast(apiVersion, minimumVersion)) throw new EndpointNotInVersionError(minimumVersion, apiVersion);
    request.auth = { clientId: claims.clientId, organizationId: claims.organizationId, apiVersion };
  };
}
