export * from './api-deps.ts';
export * from './build-app.ts';
export { clientErrorHandler, connectMethodHandler, expectationFailedHandler } from './error-handler.ts';
export { repeatedMembersIn } from '@connect/shared';
export { LIST_PAGES_AT_ONCE } from './routes/users.ts';
export * from './shutdown.ts';
export * from './auth/access-tokens.ts';
export { MAX_KEYS_TRIED, USED_ASSERTION_KEPT_MS } from './auth/client-assertion.ts';
