export * from './delivery-policy.ts';
export * from './delivery-queues.ts';
export * from './delivery-store.ts';
export * from './replay-deliveries.ts';
export * from './target-admin.ts';
export * from './target-health.ts';
export * from './recover-deliveries.ts';
export * from './resync-target.ts';
