/**
 * The setup most delivery tests share: the API (in this process, on a real
 * port) with some downstream targets, one worker over the same environment, and
 * an OAuth client with a token. Receivers and proxies stay the test's own: it
 * starts them first (their URLs go into the targets) and closes them after
 * `stack.close()`.
 */
import type { DownstreamTarget } from '@connect/shared';
import { startTestWorker, type TestWorker, type TestWorkerOptions } from '../worker/worker-under-test.ts';
import { getToken, registerTestClient, startTestApi, type StartApiOptions, type TestApi, type TestClient } from './harness.ts';

/** One entry of DOWNSTREAM_TARGETS as a test writes it (the worker fills in the defaults). */
export type TargetEntry = Pick<DownstreamTarget, 'name' | 'url'> & Partial<Omit<DownstreamTarget, 'name' | 'url'>>;

/** A target whose secret the test does not check: `<name>-secret`, and a 5 s timeout unless `extra` says otherwise. */
export function target(name: string, url: string, extra: Partial<TargetEntry> = {}): TargetEntry {
  return { name, url, secrets: [`${name}-secret`], timeout_ms: 5000, ...extra };
}

export interface DeliveryStackOptions {
  label: string;
  targets: TargetEntry[];
  /** The API's options; `env` is laid over DOWNSTREAM_TARGETS. */
  api?: Omit<StartApiOptions, 'label'>;
  /** Variables laid over the API's environment for the worker only (e.g. a direct MONGO_URL where the API goes through a proxy). */
  workerEnv?: Record<string, string>;
  /** The worker's options, or a function of the worker's environment that gives them. */
  worker?: TestWorkerOptions | ((env: Record<string, string>) => TestWorkerOptions);
}

export interface DeliveryStack {
  api: TestApi;
  worker: TestWorker;
  clinic: TestClient;
  /** A bearer token of `clinic`. */
  token: string;
  /** Stops the worker, then the API. */
  close(): Promise<void>;
}

export async function startDeliveryStack(o: DeliveryStackOptions): Promise<DeliveryStack> {
  const api = await startTestApi({ ...o.api, label: o.label, env: { DOWNSTREAM_TARGETS: JSON.stringify(o.targets), ...o.api?.env } });
  let worker: TestWorker | undefined;
  try {
    const env = { ...api.env, ...o.workerEnv };
    worker = await startTestWorker(env, typeof o.worker === 'function' ? o.worker(env) : o.worker);
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const started = worker;
    return {
      api,
      worker,
      clinic,
      token,
      close: async () => {
        await started.close();
        await api.close();
      },
    };
  } catch (err) {
    await worker?.close();
    await api.close();
    throw err;
  }
}
