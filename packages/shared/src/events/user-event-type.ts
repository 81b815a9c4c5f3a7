import { z } from 'zod';

/**
 * Every event a user can emit. `user.deactivated` and `user.reactivated` come
 * with the preview lifecycle (docs/api-lifecycle.md) but are delivered to every
 * target whatever version an organization uses: downstream services must learn
 * that a provider left, or they keep serving a leaver.
 */
export const USER_EVENT_TYPES = ['user.created', 'user.updated', 'user.deactivated', 'user.reactivated'] as const;
export const userEventTypeSchema = z.enum(USER_EVENT_TYPES).meta({ id: 'UserEventType' });
export type UserEventType = z.infer<typeof userEventTypeSchema>;
