import type { CallbackEvent } from '@connect/shared/contract';
import type { DedupeStore } from './dedupe-stores.ts';
import { CallbackVerificationError, verifyCallback, type CallbackScheme, type IncomingHeaders } from './verify-callback.ts';

export interface CallbackReceiverOptions {
  secrets: string | readonly string[];
  scheme?: CallbackScheme;
  toleranceSeconds?: number;
  /** Where handled ids are remembered. Without one, every copy of an event reaches onEvent. */
  dedupe?: DedupeStore;
  /** Handles one verified event, once per request_uuid when `dedupe` is set. Throwing answers 500: the sender retries. */
  onEvent: (event: CallbackEvent) => void | Promise<void>;
  /** A request refused (401/400), for logging. Never given the body of an unverified request. */
  onRejected?: (error: CallbackVerificationError) => void;
  /** A copy of an event already handled, answered 200 without calling onEvent. */
  onDuplicate?: (event: CallbackEvent) => void;
}

export interface CallbackReply {
  status: number;
  body: Record<string, unknown>;
}

/**
 * The reply protocol, the same for every adapter: 200 `{"request_uuid"}` once the
 * event is handled (or was already), 401 when the signature or its time is wrong,
 * 400 for a body that is not a callback (unknown type, bad JSON), 500 when onEvent
 * fails. The sender retries 5xx and gives up on 4xx, so only "we could not handle
 * it now" may be a 5xx.
 */
export async function answerCallback(options: CallbackReceiverOptions, request: { headers: IncomingHeaders; rawBody: Buffer | string }): Promise<CallbackReply> {
  let event: CallbackEvent;
  try {
    event = verifyCallback({ headers: request.headers, rawBody: request.rawBody, secrets: options.secrets, scheme: options.scheme, toleranceSeconds: options.toleranceSeconds });
  } catch (err) {
    if (!(err instanceof CallbackVerificationError)) throw err;
    options.onRejected?.(err);
    return { status: err.reason === 'malformed_body' ? 400 : 401, body: { error: err.reason, message: err.message } };
  }
  if (options.dedupe && (await options.dedupe.seen(event.request_uuid))) {
    options.onDuplicate?.(event);
    return { status: 200, body: { request_uuid: event.request_uuid } };
  }
  try {
    await options.onEvent(event);
  } catch {
    // Unmark it, so the sender's retry is handled rather than dropped as a duplicate.
    await options.dedupe?.forget(event.request_uuid);
    return { status: 500, body: { error: 'handler_failed', message: 'the event could not be handled; retry later' } };
  }
  return { status: 200, body: { request_uuid: event.request_uuid } };
}
