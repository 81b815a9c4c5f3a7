import type { CallbackEvent } from './contract.ts';
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
  onRejected?: (error: CallbackVerificationError) => void | Promise<void>;
  /** A copy of an event already handled, answered 200 without calling onEvent. */
  onDuplicate?: (event: CallbackEvent) => void | Promise<void>;
  /**
   * A failure the answer does not show, for logging: `onEvent` threw (answered 500, the
   * sender retries), or the dedupe store failed to mark an event handled (answered 200;
   * a later copy will be handled again).
   */
  onError?: (error: unknown, during: 'onEvent' | 'dedupe') => void | Promise<void>;
}

export interface CallbackReply {
  status: number;
  body: Record<string, unknown>;
}

/**
 * The logging hooks: one that throws, or returns a promise that rejects, must neither turn a
 * final answer into a 500 the sender retries nor, unhandled, end the process.
 */
function hook(call: () => void | Promise<void> | undefined): void {
  try {
    const result = call();
    if (result && typeof result.then === 'function') result.then(undefined, () => undefined);
  } catch {
    /* the answer stands */
  }
}

/**
 * The reply protocol, the same for every adapter: 200 `{"request_uuid"}` once the
 * event is handled (or was already), 401 when the signature or its time is wrong,
 * 400 for a body that is not a callback (unknown type, bad JSON), 500 when onEvent
 * fails, and 503 (no Retry-After) while another copy of the same event is still
 * being handled. The sender retries 5xx and gives up on 4xx, so only "we could not
 * handle it now" may be a 5xx; a copy is acknowledged only once the event really
 * was handled, so a first copy that fails or dies mid-way loses nothing.
 */
export async function answerCallback(options: CallbackReceiverOptions, request: { headers: IncomingHeaders; rawBody: Buffer | string }): Promise<CallbackReply> {
  let event: CallbackEvent;
  try {
    event = verifyCallback({ headers: request.headers, rawBody: request.rawBody, secrets: options.secrets, scheme: options.scheme, toleranceSeconds: options.toleranceSeconds });
  } catch (err) {
    if (!(err instanceof CallbackVerificationError)) throw err;
    hook(() => options.onRejected?.(err));
    return { status: err.reason === 'malformed_body' ? 400 : 401, body: { error: err.reason, message: err.message } };
  }
  const id = event.request_uuid;
  const claim = options.dedupe ? await options.dedupe.claim(id) : 'claimed';
  if (claim === 'handled') {
    hook(() => options.onDuplicate?.(event));
    return { status: 200, body: { request_uuid: id } };
  }
  if (claim === 'in_progress') return { status: 503, body: { error: 'in_progress', message: 'another copy of this event is being handled; retry later' } };
  try {
    await options.onEvent(event);
  } catch (err) {
    hook(() => options.onError?.(err, 'onEvent'));
    // Unmark it, so the sender's retry is handled rather than dropped as a duplicate.
    await options.dedupe?.forget(id);
    return { status: 500, body: { error: 'handler_failed', message: 'the event could not be handled; retry later' } };
  }
  // Handled: answer 200 even if the mark cannot be written (the claim then lapses, and a later copy is handled again).
  await options.dedupe?.handled(id).catch((err: unknown) => hook(() => options.onError?.(err, 'dedupe')));
  return { status: 200, body: { request_uuid: id } };
}
