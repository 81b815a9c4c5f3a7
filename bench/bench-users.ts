/**
 * The provider users the benchmark writes: request bodies for POST /users and
 * documents of the same shape as the API stores (upsert-provider-user.ts newUser),
 * so bulk-seeded users are indistinguishable from users the API created.
 */
import { randomUUID } from 'node:crypto';
import { ObjectId, type Collection } from 'mongodb';
import { outboxSlotOf, toProviderUserView, type ProviderUserDoc, type Settings } from '@connect/shared';

export const LOCALE_A = 'ENGLISH_US';
export const LOCALE_B = 'FRENCH_FR';

export function externalId(prefix: string, i: number): string {
  return `${prefix}-${i}`;
}

export function emailOf(prefix: string, i: number): string {
  return `${prefix}-${i}@bench.example.com`;
}

export function settingsWith(locale: string): Settings {
  return { specialty: { kind: 'CARDIOLOGY', other_specialty_name: null }, speech_locale: locale, secondary_speech_locale: null } as Settings;
}

/** The POST /users body for user `i` of a set, with the given primary locale. */
export function upsertBody(prefix: string, i: number, locale: string): string {
  return JSON.stringify({
    provider_email: emailOf(prefix, i),
    external_provider_id: externalId(prefix, i),
    settings: { specialty: { kind: 'CARDIOLOGY' }, speech_locale: locale },
  });
}

/** What the API would have stored after creating user `i` with LOCALE_A. */
export function storedUser(organizationId: string, prefix: string, i: number, now = new Date()): ProviderUserDoc {
  const eventId = randomUUID();
  const fields = {
    provider_email: emailOf(prefix, i),
    external_provider_id: externalId(prefix, i),
    settings: settingsWith(LOCALE_A),
    created_at: now,
    updated_at: now,
    version: 1,
  };
  return {
    _id: new ObjectId() as unknown as ProviderUserDoc['_id'],
    organization_id: organizationId,
    email_normalized: fields.provider_email.toLowerCase(),
    ...fields,
    created_event: { id: eventId, occurred_at: now, data: toProviderUserView(fields) },
    last_event: { id: eventId, type: 'user.created', occurred_at: now, version: 1 },
    outbox_slot: outboxSlotOf(now),
  };
}

/**
 * Inserts users `from`..`to-1` of a set in unordered batches of 2,500, four batches
 * in flight (FerretDB and PostgreSQL then keep both CPUs busy: about twice the rate of
 * one batch of 1,000 at a time). `at`: their created_at and updated_at (now by default).
 * Returns how many the server acknowledged (all of them: a refused document throws).
 */
export async function seedUsers(collection: Collection, organizationId: string, prefix: string, from: number, to: number, at?: Date): Promise<number> {
  const batch = 2500;
  let next = from;
  let inserted = 0;
  const lane = async () => {
    while (next < to) {
      const start = next;
      next = Math.min(to, start + batch);
      const docs = [];
      for (let i = start; i < next; i++) docs.push(storedUser(organizationId, prefix, i, at));
      // Not `inserted += await ...`: that reads `inserted` before the await, and four lanes would overwrite each other's sums.
      const { insertedCount } = await collection.insertMany(docs as never[], { ordered: false });
      inserted += insertedCount;
    }
  };
  await Promise.all(Array.from({ length: 4 }, lane));
  return inserted;
}
