import { ConfigError, deliveryPolicyFromEnv, ValidationError, type DeliveryPolicy } from '@connect/shared';

/**
 * Delivery jobs the CLI adds (resync, recover) get the worker's attempts and
 * retention, from the same variables (WORKER_RETRY_SCHEDULE, TARGET_*), so a
 * job does not retry more or less than the worker's own would.
 */
export function jobPolicy(env: Record<string, string | undefined> = process.env): DeliveryPolicy {
  try {
    return deliveryPolicyFromEnv(env);
  } catch (err) {
    if (err instanceof ConfigError) throw new ValidationError([{ path: err.variable, message: err.message }]);
    throw err;
  }
}
