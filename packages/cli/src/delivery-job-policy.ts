import { deliveryPolicyFromEnv, type DeliveryPolicy } from '@connect/shared';

/**
 * Delivery jobs the CLI adds (resync, recover) get the worker's attempts and
 * retention, from the same variables (WORKER_RETRY_SCHEDULE, TARGET_*), so a
 * job does not retry more or less than the worker's own would.
 */
export function jobPolicy(env: Record<string, string | undefined> = process.env): DeliveryPolicy {
  // A bad value is a ConfigError: the CLI prints it as kind `configuration`, naming the variable.
  return deliveryPolicyFromEnv(env);
}
