export { checkAudience, checkBaseUrl, ConnectClient, PREVIEW_API_VERSION } from './connect-client.ts';
export type { CallOptions, ConnectClientOptions, ConnectUser, ConnectUserWithSync, ListUsersOptions, UpsertOutcome, UpsertResult, UpsertUserInput, UsersPage } from './connect-client.ts';
export {
  AuthenticationError,
  ConnectApiError,
  ConnectNetworkError,
  EmailConflictError,
  EmailMismatchError,
  NotFoundError,
  RateLimitedError,
  ValidationError,
} from './connect-api-errors.ts';
export type { FieldError, Problem } from './connect-api-errors.ts';
export { algorithmFor, InvalidPrivateKeyError, signClientAssertion } from './access-token-source.ts';
