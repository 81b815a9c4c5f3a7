import { STATUS_CODES } from 'node:http';
import { Agent, request, type Dispatcher } from 'undici';

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

/**
 * The default: undici's `request` on a keep-alive agent of the client's own. A bulk
 * import profiled with Node's global `fetch` spent about half of the importer's CPU in
 * fetch's WHATWG layers (Request/Response objects, web streams, one AbortSignal per call),
 * more than the API spent serving the same rows; `request` skips those layers.
 */
export function undiciTransport(timeoutMs: number): HttpTransport {
  // The timeout bounds each phase (connecting, waiting for the headers, each wait for body data),
  // not the whole exchange as an AbortSignal per call would; it needs no timer per call.
  const agent = new Agent({ headersTimeout: timeoutMs, bodyTimeout: timeoutMs, connectTimeout: timeoutMs });
  return async (url, init) => {
    const answer = await request(url, { method: init.method as Dispatcher.HttpMethod, headers: init.headers, body: init.body, dispatcher: agent, signal: init.signal });
    const text = await answer.body.text();
    return {
      status: answer.statusCode,
      statusText: STATUS_CODES[answer.statusCode] ?? '',
      header: (name) => {
        const value = answer.headers[name];
        return Array.isArray(value) ? value.join(', ') : value;
      },
      text,
    };
  };
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
