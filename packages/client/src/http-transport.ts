import { STATUS_CODES } from 'node:http';
import { Agent, errors, request, type Dispatcher } from 'undici';

/** What the client needs of one HTTP answer, whatever carried it. */
export interface HttpAnswer {
  status: number;
  statusText: string;
  /** A response header by lower-case name. */
  header(name: string): string | undefined;
  text: string;
}

export interface HttpRequest {
  method: string;
  headers: Record<string, string>;
  body?: string;
  /** The caller's: abandons the exchange. */
  signal?: AbortSignal | undefined;
}

/** One exchange: resolves with the answer (any status), rejects when the server never answered in time. */
export type HttpTransport = (url: string, init: HttpRequest) => Promise<HttpAnswer>;

type Phase = 'connect' | 'headers' | 'body';

/** What an attempt that ran out of time throws: undici's error for the phase it was in, as undici's own timeouts said it. */
function timeoutError(phase: Phase, url: string, timeoutMs: number): Error {
  if (phase === 'body') return new errors.BodyTimeoutError();
  if (phase === 'headers') return new errors.HeadersTimeoutError();
  const { hostname, port, protocol } = new URL(url);
  return new errors.ConnectTimeoutError(`Connect Timeout Error (attempted address: ${hostname}:${port || (protocol === 'https:' ? 443 : 80)}, timeout: ${timeoutMs}ms)`);
}

/** An interceptor that calls `onSent` when undici starts writing the request on a connected socket. */
function noticingSent(onSent: () => void): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (opts, handler) =>
    dispatch(opts, {
      onRequestStart: (controller, context) => {
        onSent();
        handler.onRequestStart?.(controller, context);
      },
      onRequestUpgrade: (controller, statusCode, headers, socket) => handler.onRequestUpgrade?.(controller, statusCode, headers, socket),
      onResponseStart: (controller, statusCode, headers, statusMessage) => handler.onResponseStart?.(controller, statusCode, headers, statusMessage),
      onResponseData: (controller, chunk) => handler.onResponseData?.(controller, chunk),
      onResponseEnd: (controller, trailers) => handler.onResponseEnd?.(controller, trailers),
      onResponseError: (controller, error) => handler.onResponseError?.(controller, error),
    });
}

/**
 * The default: undici's `request` on a keep-alive agent of the client's own. A bulk
 * import profiled with Node's global `fetch` spent about half of the importer's CPU in
 * fetch's WHATWG layers (Request/Response objects, web streams, one AbortSignal per call),
 * more than the API spent serving the same rows; `request` skips those layers.
 *
 * `timeoutMs` bounds the whole attempt, as with a caller's fetch, on a timer of its own: undici's
 * phase timeouts (connect, headers, body) run on a clock of about 1 s, so 300 ms asked for gave
 * about 1,000 and 2,500 gave 3,000, and a body trickling in never timed out at all. The error is
 * still undici's for the phase the attempt was in (Connect, Headers or Body Timeout Error). The
 * agent keeps its own timeouts as a backstop: they end what the deadline abandoned (a connection
 * still being made).
 */
export function undiciTransport(timeoutMs: number): HttpTransport {
  const agent = new Agent({ headersTimeout: timeoutMs, bodyTimeout: timeoutMs, connectTimeout: timeoutMs });
  return (url, init) =>
    new Promise<HttpAnswer>((resolve, reject) => {
      const { signal } = init;
      if (signal?.aborted) return reject(signal.reason as Error);
      let phase: Phase = 'connect';
      const attempt = new AbortController();
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      // Settled here, not by undici: a request still waiting for its connection learns of an abort
      // only once connected, and the attempt must end on time (or when the caller says) all the same.
      const stop = (reason: unknown) => {
        settle();
        attempt.abort(reason);
        reject(reason as Error);
      };
      const timer = setTimeout(() => stop(timeoutError(phase, url, timeoutMs)), timeoutMs);
      const onAbort = () => stop(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const dispatcher = agent.compose(noticingSent(() => (phase = 'headers')));
      request(url, { method: init.method as Dispatcher.HttpMethod, headers: init.headers, body: init.body, dispatcher, signal: attempt.signal })
        .then(async (answer) => {
          phase = 'body';
          const text = await answer.body.text();
          return {
            status: answer.statusCode,
            statusText: STATUS_CODES[answer.statusCode] ?? '',
            header: (name: string) => {
              const value = answer.headers[name];
              return Array.isArray(value) ? value.join(', ') : value;
            },
            text,
          };
        })
        .then(
          (answer) => {
            settle();
            resolve(answer);
          },
          (err: unknown) => {
            settle();
            reject(err as Error);
          },
        );
    });
}

/** A caller's `fetch` (tests, proxies, instrumentation), with the per-attempt timeout as an abort signal. */
export function fetchTransport(fetchImpl: typeof globalThis.fetch, timeoutMs: number): HttpTransport {
  return async (url, init) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    const response = await fetchImpl(url, { ...init, signal: init.signal ? AbortSignal.any([init.signal, timeout]) : timeout });
    const text = await response.text();
    return { status: response.status, statusText: response.statusText, header: (name) => response.headers.get(name) ?? undefined, text };
  };
}
